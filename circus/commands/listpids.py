"""``listpids``: the pids of one watcher (the seed's command; ``list NAME`` does the same)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from circus.commands.base import Props, Reply, WatcherQuery
from circus.tiers import Tier

if TYPE_CHECKING:
    from circus.types import ArbiterAPI


class ListPids(WatcherQuery):
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
    tier = Tier.READER
    usage = "listpids <name>"
    def answer(self, arbiter: ArbiterAPI, props: Props) -> Reply:
        return {"pids": sorted(self.watcher(arbiter, props).pids)}

    def console_msg(self, reply: Reply) -> str:
        if reply.get("status") == "error":
            return super().console_msg(reply)
        return ",".join(str(p) for p in reply.get("pids", []))
