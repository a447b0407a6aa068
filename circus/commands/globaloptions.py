"""``globaloptions``: the arbiter's options."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from circus.commands.base import Command, Props, Reply, format_options, make_message
from circus.errors import ArgumentError, MessageError
from circus.tiers import Tier

if TYPE_CHECKING:
    from circus.types import ArbiterAPI

# Circus reports this stats endpoint even when circusd-stats does not run.
DEFAULT_STATS_ENDPOINT = "tcp://127.0.0.1:5557"
KEYS = ("endpoint", "stats_endpoint", "pubsub_endpoint", "check_delay", "multicast_endpoint")


class GlobalOptions(Command):
    """\
    Get the arbiter options
    =======================

    The options of circusd itself: ``endpoint``, ``pubsub_endpoint``,
    ``stats_endpoint``, ``multicast_endpoint`` and ``check_delay``; with ``option``, only
    that one.

    ZMQ Message
    -----------

    ::

        {"command": "globaloptions", "properties": {"option": "<option>"}}

    Response: ``{"status": "ok", "options": {"<option>": <value>, ...}}``.

    Command line
    ------------

    ::

        $ circusctl globaloptions [<option>]
    """

    name = "globaloptions"
    tier = Tier.READER
    usage = "globaloptions [<option>]"

    def message(self, *args: str, **opts: Any) -> Props:
        if len(args) > 1:
            raise ArgumentError(f"usage: {self.usage}")
        return make_message(self.name, **({"option": args[0]} if args else {}))

    def validate(self, arbiter: ArbiterAPI, props: Props) -> None:
        super().validate(arbiter, props)
        option = self.str_prop(props, "option")
        if option is not None and option not in KEYS:
            raise MessageError(f"{option!r} not an existing option (one of {', '.join(KEYS)})")

    inline = True  # reads state only: answered without a task

    def answer(self, arbiter: ArbiterAPI, props: Props) -> Reply:
        values: dict[str, Any] = {
            "endpoint": arbiter.endpoint,
            "pubsub_endpoint": arbiter.pubsub_endpoint,
            "stats_endpoint": arbiter.stats_endpoint or DEFAULT_STATS_ENDPOINT,
            "multicast_endpoint": arbiter.multicast_endpoint or "",  # "": discovery is off
            "check_delay": arbiter.check_delay,
        }
        option = props.get("option")
        if option is not None:
            return {"options": {option: values[option]}}
        return {"options": values}

    def console_msg(self, reply: Reply) -> str:
        if reply.get("status") == "error":
            return super().console_msg(reply)
        return format_options(reply.get("options", {}))
