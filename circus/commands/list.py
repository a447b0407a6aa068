"""``list``: the watchers, or the pids of one watcher."""

from __future__ import annotations

from typing import TYPE_CHECKING

from circus.commands.base import OptionalWatcherQuery, Props, Reply
from circus.tiers import Tier

if TYPE_CHECKING:
    from circus.types import ArbiterAPI


class List(OptionalWatcherQuery):
    """\
    Get list of watchers or processes in a watcher
    ==============================================

    Without a name: the names of all watchers, sorted and lower-cased. With a name: the
    OS pids of that watcher's live processes.

    ZMQ Message
    -----------

    ::

        {"command": "list", "properties": {"name": "<name>"}}

    Response: ``{"status": "ok", "watchers": [...]}`` or
    ``{"status": "ok", "pids": [...]}``.

    Command line
    ------------

    ::

        $ circusctl list [<name>]
    """

    name = "list"
    tier = Tier.READER
    usage = "list [<name>]"

    def answer(self, arbiter: ArbiterAPI, props: Props) -> Reply:
        if "name" in props:
            watcher = self.watcher(arbiter, props)
            return {"pids": sorted(watcher.pids)}
        return {"watchers": sorted(w.name.lower() for w in arbiter.watchers)}

    def console_msg(self, reply: Reply) -> str:
        if reply.get("status") == "error":
            return super().console_msg(reply)
        if "pids" in reply:
            return ",".join(str(p) for p in reply["pids"])
        return ",".join(reply.get("watchers", []))
