"""``stop``: stop one watcher, the watchers a pattern matches, or all."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from circus.commands._lifecycle import LifecycleCommand
from circus.commands.base import Props, Reply, Scope
from circus.tiers import Tier

if TYPE_CHECKING:
    from circus.types import ArbiterAPI, WatcherAPI


class Stop(LifecycleCommand):
    """\
    Stop the arbiter or a watcher
    =============================

    Each process gets the watcher's ``stop_signal``; those still running after
    ``graceful_timeout`` seconds are killed with their process group. Without a name every
    watcher stops and circusd keeps running: those that depend on others
    (``depends_on``) before what they depend on, then lowest ``priority`` first.

    The watchers that depend on a watcher stopped, directly or not, cannot run without it:
    they are stopped first, and the reply names those that were running as
    ``dependents``. A start waiting for a watcher being stopped gives up.

    ZMQ Message
    -----------

    ::

        {"command": "stop",
         "properties": {"name": "<name>", "waiting": false, "match": "glob"}}

    Response: ``{"status": "ok"}``, with ``"dependents": [names]`` when some were
    stopped along; with ``waiting`` and one watcher, ``{"status": "ok", "info": null}``.

    Command line
    ------------

    ::

        $ circusctl stop [<name>] [--waiting] [--match simple|glob|regex]
    """

    name = "stop"
    tier = Tier.OPERATOR
    usage = "stop [<name>] [--waiting] [--match simple|glob|regex]"

    def console_msg(self, reply: Reply) -> str:
        dependents = reply.get("dependents")
        if reply.get("status") == "error" or not dependents:
            return super().console_msg(reply)
        return f"ok (stopped first, as they depend on it: {', '.join(map(str, dependents))})"

    def _plan(self, arbiter: ArbiterAPI, props: Props
              ) -> tuple[list[WatcherAPI], list[WatcherAPI]]:
        """The watchers named, and those that depend on them (stopped first)."""
        if "name" not in props:
            return list(arbiter.watchers), []
        from circus.startorder import of

        targets = list(self.match_watchers(arbiter, props))
        return targets, of(arbiter).dependents(targets)

    @staticmethod
    def _running(watchers: list[WatcherAPI]) -> list[str]:
        return [w.name for w in watchers if w.status != "stopped"]

    def scope(self, arbiter: ArbiterAPI, props: Props) -> Scope:
        if "name" not in props:
            return Scope.all()
        targets, dependents = self._plan(arbiter, props)
        return Scope.of(w.name for w in targets + dependents)

    def preempt(self, arbiter: ArbiterAPI, props: Props, targets: bool
                ) -> tuple[list[WatcherAPI], list[str]]:
        """Spawning stops at once on the watchers to stop, even while the stop waits for
        the commands ahead of it (a spawn burst ends at its next spawn); a start waiting
        for one of them gives up."""
        from circus.startorder import of

        named, dependents = self._plan(arbiter, props)
        watchers = named + dependents
        for watcher in watchers:
            watcher.halt_spawning()
        return watchers, of(arbiter).halt(w.name for w in watchers)

    def admitted(self, arbiter: ArbiterAPI, props: Props) -> Reply | None:
        running = self._running(self._plan(arbiter, props)[1])
        return {"dependents": running} if running else None

    async def resume(self, arbiter: ArbiterAPI, props: Props,
                     token: tuple[list[WatcherAPI], list[str]]) -> Reply | None:
        from circus.startorder import of

        try:
            return await self.execute(arbiter, props)
        finally:
            for watcher in token[0]:
                watcher.resume_spawning()
            of(arbiter).resume(token[1])

    async def execute(self, arbiter: ArbiterAPI, props: Props) -> Reply | None:
        if "name" not in props:
            await arbiter.stop_watchers()
            return None
        from circus.startorder import of

        targets, dependents = self._plan(arbiter, props)
        running = self._running(dependents)
        await of(arbiter).stop(targets + dependents, by_priority=False)
        reply: dict[str, Any] = {"info": None} if len(targets) == 1 else {}
        if running:
            reply["dependents"] = running
        return reply or None
