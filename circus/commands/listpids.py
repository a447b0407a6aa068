"""``listpids``: the pids of one watcher (the seed's command; ``list NAME`` does the same)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from circus.commands.base import Command, Props, Reply, make_message
from circus.errors import ArgumentError

if TYPE_CHECKING:
    from circus.arbiter import Arbiter


class ListPids(Command):
    """\
    Get list of pids in a watcher
    =============================

    ZMQ Message
    -----------

    ::

        {"command": "listpids", "properties": {"name": "<name>"}}

    Response: ``{"status": "ok", "pids": [<pid>, ...]}``.

    Command line
    ------------

    ::

        $ circusctl listpids <name>
    """

    name = "listpids"
    usage = "listpids <name>"
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
        return {"pids": sorted(self.watcher(arbiter, props).pids)}

    def console_msg(self, reply: Reply) -> str:
        if reply.get("status") == "error":
            return super().console_msg(reply)
        return ",".join(str(p) for p in reply.get("pids", []))
