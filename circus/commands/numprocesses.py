"""``numprocesses``: how many processes run, in one watcher or in all."""

from __future__ import annotations

from typing import TYPE_CHECKING

from circus.commands.base import OptionalWatcherQuery, Props, Reply
from circus.tiers import Tier

if TYPE_CHECKING:
    from circus.types import ArbiterAPI


class NumProcesses(OptionalWatcherQuery):
    """\
    Get the number of processes
    ===========================

    The number of live processes of one watcher, or of all watchers together. Use
    ``get <name> numprocesses`` for the configured target.

    ZMQ Message
    -----------

    ::

        {"command": "numprocesses", "properties": {"name": "<name>"}}

    Response: ``{"status": "ok", "numprocesses": <n>}``.

    Command line
    ------------

    ::

        $ circusctl numprocesses [<name>]
    """

    name = "numprocesses"
    tier = Tier.READER
    usage = "numprocesses [<name>]"

    def answer(self, arbiter: ArbiterAPI, props: Props) -> Reply:
        if "name" in props:
            watcher = self.watcher(arbiter, props)
            return {"numprocesses": len(watcher.processes), "watcher_name": props["name"]}
        return {"numprocesses": arbiter.numprocesses()}

    def console_msg(self, reply: Reply) -> str:
        if reply.get("status") == "error":
            return super().console_msg(reply)
        return str(reply.get("numprocesses"))
