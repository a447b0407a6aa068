"""``start``: start one watcher, the watchers a pattern matches, or all."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from circus.commands._lifecycle import LifecycleCommand
from circus.commands.base import MATCH, WAITING, Flag, Props, Reply, Scope
from circus.commands.wait import TIMEOUT, timeout_prop, wait_ready
from circus.errors import CommandError
from circus.tiers import Tier

if TYPE_CHECKING:
    from circus.types import ArbiterAPI, WatcherAPI

WAIT = Flag("wait", "reply once every watcher started is ready (implies --waiting)")


class Start(LifecycleCommand):
    """\
    Start the arbiter or a watcher
    ==============================

    Without a name every watcher starts, highest ``priority`` first. With a name, the
    watchers it matches start (``--match`` glob by default, or simple or regex). On an
    active watcher only missing processes are spawned.

    A watcher with ``depends_on`` starts once each watcher it names meets its condition.
    Those of them that are stopped (and have not completed, for ``:completed``) are
    started first, and what they depend on too; the reply lists them as
    ``dependencies``. A dependency that cannot meet its condition (``fatal``, stopped,
    ended with another status) leaves the watcher stopped: with ``waiting`` the reply is
    an error naming why.

    With ``wait`` (which implies ``waiting``) the reply comes once every watcher started
    is active with all its processes ready, as ``wait`` says it, within ``timeout``
    seconds if given; otherwise it is an error naming each watcher that is not and why.
    A start that goes on past the timeout is not stopped.

    ZMQ Message
    -----------

    ::

        {"command": "start",
         "properties": {"name": "<name>", "waiting": false, "match": "glob",
                        "wait": false, "timeout": <seconds>}}

    Response: ``{"status": "ok"}``; with ``waiting`` and one watcher,
    ``{"status": "ok", "info": {"started": [pids], "kept": [pids]}}``, and
    ``"dependencies": [names]`` when others were started first.

    Command line
    ------------

    ::

        $ circusctl start [<name>] [--waiting] [--match simple|glob|regex]
                          [--wait [--timeout <seconds>]]

    With ``--wait`` circusctl sends its ``--timeout`` (60 seconds when not given), exits
    0 once ready, and 3 with the reason on stderr otherwise.
    """

    name = "start"
    tier = Tier.OPERATOR
    usage = "start [<name>] [--waiting] [--match simple|glob|regex] [--wait] [--timeout <s>]"
    flags: ClassVar[tuple[Flag, ...]] = (WAITING, MATCH, WAIT, TIMEOUT)

    def validate(self, arbiter: ArbiterAPI, props: Props) -> None:
        super().validate(arbiter, props)
        timeout_prop(props)
        if self.bool_prop(props, "wait"):
            props["waiting"] = True  # the reply is the point of waiting

    def scope(self, arbiter: ArbiterAPI, props: Props) -> Scope:
        """The watchers matched, and what they depend on (they may be started too)."""
        if "name" not in props:
            return Scope.all()
        from circus import depends

        graph = depends.of(arbiter.watchers)
        names = [w.name for w in self.match_watchers(arbiter, props)]
        for name in list(names):
            names += depends.dependencies(graph, name)
        return Scope.of(names)

    def preempt(self, arbiter: ArbiterAPI, props: Props, targets: bool) -> list[str]:
        """From now on a ``wait`` for these watchers waits for this start rather than
        fail because they are stopped."""
        from circus.startorder import of

        watchers = (arbiter.watchers if "name" not in props
                    else self.match_watchers(arbiter, props))
        return of(arbiter).expect(w.name for w in watchers)

    async def resume(self, arbiter: ArbiterAPI, props: Props, token: list[str]
                     ) -> Reply | None:
        from circus.startorder import of

        try:
            return await self.execute(arbiter, props)
        finally:
            of(arbiter).expected(token)

    async def execute(self, arbiter: ArbiterAPI, props: Props) -> Reply | None:
        from circus.startorder import of

        order = of(arbiter)
        watchers: list[WatcherAPI]
        if "name" not in props:
            watchers = list(arbiter.watchers)
            start: Any = arbiter.start_watchers()
        else:
            watchers = list(self.match_watchers(arbiter, props))
            start = order.start(watchers)
        if self.bool_prop(props, "wait"):
            task = arbiter.background(start, name="command-start")
            await wait_ready(arbiter, watchers, timeout_prop(props))  # WaitError: why not
            start = task
        run = await start
        if run is None:  # every watcher: arbiter.start_watchers()
            blocked = {w.name: order.blocked[w.name.lower()] for w in watchers
                       if w.name.lower() in order.blocked}
        else:
            blocked = {w.name: run.blocked[w.name.lower()] for w in arbiter.watchers
                       if w.name.lower() in run.blocked}
        if blocked:
            raise CommandError("; ".join(f"{name} not started: {why}"
                                         for name, why in blocked.items()))
        if run is None or len(watchers) != 1:
            return None
        reply: dict[str, Any] = {"info": run.results.get(watchers[0].name.lower())}
        others = sorted(n for n in run.results if n != watchers[0].name.lower())
        if others:
            names = {w.name.lower(): w.name for w in arbiter.watchers}
            reply["dependencies"] = [names.get(n, n) for n in others]
        return reply
