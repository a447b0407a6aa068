"""``get``: the value of some options of a watcher."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from circus.commands.base import Command, Props, Reply, format_options, make_message
from circus.errors import ArgumentError, MessageError, NotFoundError
from circus.tiers import Tier

if TYPE_CHECKING:
    from circus.types import ArbiterAPI, WatcherAPI


# Circus shows these as an empty string / object when unset; clients index into them.
_EMPTY = {"args": "", "stdout_stream_conf": {}, "stderr_stream_conf": {}}


def wire_options(options: dict[str, Any]) -> dict[str, Any]:
    """Option values as Circus sends them: an unset ``args`` or stream is empty, not null,
    and an unset ``working_dir`` is the directory the processes really start in."""
    result = {k: _EMPTY[k] if v is None and k in _EMPTY else v for k, v in options.items()}
    if "working_dir" in result and result["working_dir"] is None:
        result["working_dir"] = os.getcwd()
    return result


def option_value(watcher: WatcherAPI, key: str) -> Any:
    """The value of option *key* of *watcher*. Raises NotFoundError."""
    try:
        return wire_options({key: watcher.get_option(key)})[key]
    except KeyError:
        raise NotFoundError(f"{key!r} option not found") from None


class Get(Command):
    """\
    Get the value of watcher options
    ================================

    Values are JSON: numbers stay numbers, ``env`` is an object, streams are shown as
    ``stdout_stream_conf`` / ``stderr_stream_conf`` objects. A key that is not an option
    of the watcher is refused (errno 3). ``circusctl options <name>`` lists them all.

    ZMQ Message
    -----------

    ::

        {"command": "get", "properties": {"name": "<name>", "keys": ["<key>", ...]}}

    Response: ``{"status": "ok", "options": {"<key>": <value>, ...}}``.

    Command line
    ------------

    ::

        $ circusctl get <name> <key> [<key> ...]
    """

    name = "get"
    tier = Tier.READER
    usage = "get <name> <key> [<key> ...]"
    required = ("name", "keys")

    def message(self, *args: str, **opts: Any) -> Props:
        if len(args) < 2:
            raise ArgumentError(f"usage: {self.usage}")
        return make_message(self.name, name=args[0], keys=list(args[1:]))

    def validate(self, arbiter: ArbiterAPI, props: Props) -> None:
        super().validate(arbiter, props)
        self.watcher(arbiter, props)  # NotFoundError
        keys = props["keys"]
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise MessageError(f"'keys' should be a list of option names, got {keys!r}")
        # an unknown key is refused by answer(), which reads each value once

    inline = True  # reads state only: answered without a task

    def answer(self, arbiter: ArbiterAPI, props: Props) -> Reply:
        watcher = self.watcher(arbiter, props)
        return {"options": {key: option_value(watcher, key) for key in props["keys"]}}

    def console_msg(self, reply: Reply) -> str:
        if reply.get("status") == "error":
            return super().console_msg(reply)
        return format_options(reply.get("options", {}))
