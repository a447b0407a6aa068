"""``stop``: stop one watcher, the watchers a pattern matches, or all."""

from __future__ import annotations

from typing import TYPE_CHECKING

from circus.commands._lifecycle import LifecycleCommand
from circus.commands.base import Props, Reply

if TYPE_CHECKING:
    from circus.types import ArbiterAPI, WatcherAPI


class Stop(LifecycleCommand):
    """\
    Stop the arbiter or a watcher
    =============================

    Each process gets the watcher's ``stop_signal``; those still running after
    ``graceful_timeout`` seconds are killed with their process group. Without a name every
    watcher stops (lowest ``priority`` first) and circusd keeps running.

    ZMQ Message
    -----------

    ::

        {"command": "stop",
         "properties": {"name": "<name>", "waiting": false, "match": "glob"}}

    Response: ``{"status": "ok"}``; with ``waiting`` and one watcher,
    ``{"status": "ok", "info": null}``.

    Command line
    ------------

    ::

        $ circusctl stop [<name>] [--waiting] [--match simple|glob|regex]
    """

    name = "stop"
    usage = "stop [<name>] [--waiting] [--match simple|glob|regex]"

    def preempt(self, arbiter: ArbiterAPI, props: Props, targets: bool) -> list[WatcherAPI]:
        """Spawning stops at once on the watchers to stop, even while the stop waits for
        the commands ahead of it (a spawn burst ends at its next spawn)."""
        watchers = list(arbiter.watchers if "name" not in props
                        else self.match_watchers(arbiter, props))
        for watcher in watchers:
            watcher.halt_spawning()
        return watchers

    async def resume(self, arbiter: ArbiterAPI, props: Props, token: list[WatcherAPI]
                     ) -> Reply | None:
        try:
            return await self.execute(arbiter, props)
        finally:
            for watcher in token:
                watcher.resume_spawning()

    async def execute(self, arbiter: ArbiterAPI, props: Props) -> Reply | None:
        if "name" not in props:
            await arbiter.stop_watchers()
            return None
        watchers = self.match_watchers(arbiter, props)
        import asyncio  # daemon side only

        await asyncio.gather(*(w.stop() for w in watchers))
        return {"info": None} if len(watchers) == 1 else None
