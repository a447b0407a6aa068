"""``options``: every option of a watcher."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from circus.commands.base import Command, Props, Reply, format_options, make_message
from circus.commands.get import wire_options
from circus.errors import ArgumentError

if TYPE_CHECKING:
    from circus.arbiter import Arbiter


class Options(Command):
    """\
    Get the options of a watcher
    ============================

    Every option of the watcher with its current value, including the free-form keys of
    its configuration section (``flapping.attempts`` ...).

    ZMQ Message
    -----------

    ::

        {"command": "options", "properties": {"name": "<name>"}}

    Response: ``{"status": "ok", "options": {"<key>": <value>, ...}}``.

    Command line
    ------------

    ::

        $ circusctl options <name>
    """

    name = "options"
    usage = "options <name>"
    required = ("name",)

    def message(self, *args: str, **opts: Any) -> Props:
        if len(args) != 1:
            raise ArgumentError(f"usage: {self.usage}")
        return make_message(self.name, name=args[0])

    def validate(self, arbiter: Arbiter, props: Props) -> None:
        super().validate(arbiter, props)
        self.watcher(arbiter, props)

    inline = True  # reads state only: answered without a task

    def answer(self, arbiter: Arbiter, props: Props) -> Reply:
        return {"options": wire_options(self.watcher(arbiter, props).options())}

    def console_msg(self, reply: Reply) -> str:
        if reply.get("status") == "error":
            return super().console_msg(reply)
        return format_options(reply.get("options", {}))
