"""``restart``: stop then start one watcher, the matched watchers, or all."""

from __future__ import annotations

from typing import TYPE_CHECKING

from circus.commands._lifecycle import LifecycleCommand
from circus.commands.base import Props, Reply
from circus.tiers import Tier

if TYPE_CHECKING:
    from circus.types import ArbiterAPI


class Restart(LifecycleCommand):
    """\
    Restart the arbiter or a watcher
    ================================

    With a name, the matched watchers are stopped and started again (new pids). Without
    a name the whole arbiter restarts inside the same circusd process: every watcher
    stops, the configuration file is read again, and the watchers start.

    ZMQ Message
    -----------

    ::

        {"command": "restart",
         "properties": {"name": "<name>", "waiting": false, "match": "glob"}}

    Response: ``{"status": "ok"}``; with ``waiting`` and one watcher,
    ``{"status": "ok", "info": {"stopped": [...], "started": [...], "kept": [...]}}``.

    Command line
    ------------

    ::

        $ circusctl restart [<name>] [--waiting] [--match simple|glob|regex]
    """

    name = "restart"
    tier = Tier.OPERATOR
    usage = "restart [<name>] [--waiting] [--match simple|glob|regex]"

    def rewrites(self, arbiter: ArbiterAPI, props: Props) -> bool:
        return "name" not in props  # reads the configuration file again

    async def execute(self, arbiter: ArbiterAPI, props: Props) -> Reply | None:
        if "name" not in props:
            await arbiter.restart()
            return None
        watchers = self.match_watchers(arbiter, props)
        results = [await w.restart() for w in watchers]
        return {"info": results[0]} if len(watchers) == 1 else None
