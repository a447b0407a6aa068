"""``incr``: add processes to a watcher."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from circus.commands.base import WAITING, Command, Props, Reply, make_message
from circus.errors import ArgumentError

if TYPE_CHECKING:
    from circus.arbiter import Arbiter


class IncrProc(Command):
    """\
    Increment the number of processes in a watcher
    ==============================================

    Adds ``<nb>`` processes (default 1) to the watcher. A singleton watcher is left
    unchanged. The reply always carries the new target.

    ZMQ Message
    -----------

    ::

        {"command": "incr", "properties": {"name": "<name>", "nb": <nb>, "waiting": false}}

    Response: ``{"status": "ok", "numprocesses": <n>}``.

    Command line
    ------------

    ::

        $ circusctl incr <name> [<nb>] [--waiting]
    """

    name = "incr"
    required = ("name",)
    flags = (WAITING,)
    sign = 1

    def message(self, *args: str, **opts: Any) -> Props:
        if len(args) not in (1, 2):
            raise ArgumentError(f"usage: {self.name} <name> [<nb>] [--waiting]")
        props: dict[str, Any] = {"name": args[0], **opts}
        if len(args) == 2:
            try:
                props["nb"] = int(args[1])
            except ValueError:
                raise ArgumentError(f"<nb> must be an integer, got {args[1]!r}") from None
        return make_message(self.name, **props)

    def validate(self, arbiter: Arbiter, props: Props) -> None:
        super().validate(arbiter, props)
        self.watcher(arbiter, props)
        self.int_prop(props, "nb", default=1, minimum=0)

    async def execute(self, arbiter: Arbiter, props: Props) -> Reply:
        watcher = self.watcher(arbiter, props)
        if watcher.singleton:
            return {"numprocesses": watcher.numprocesses, "singleton": True}
        nb = self.int_prop(props, "nb", default=1, minimum=0)
        target = max(watcher.numprocesses + self.sign * nb, 0)
        if self.bool_prop(props, "waiting"):
            return {"numprocesses": await watcher.set_numprocesses(target)}
        # Reply with the new target at once; the processes follow in the background.
        arbiter.background(watcher.set_numprocesses(target), name=f"{self.name}-{watcher.name}")
        return {"numprocesses": target}

    def console_msg(self, reply: Reply) -> str:
        if reply.get("status") == "error":
            return super().console_msg(reply)
        if reply.get("singleton"):
            return "This watcher is a Singleton - not changing the number of processes"
        return str(reply.get("numprocesses", "ok"))
