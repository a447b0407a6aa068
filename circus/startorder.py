"""Start order that waits: the arbiter's part that starts watchers after what they need.

``depends_on = db, cache:started, migrate:completed`` (:mod:`circus.depends`) holds a
watcher's processes back until each watcher it names meets its condition. A start
(circusd's own, ``start``, ``add --start``, ``reloadconfig``) goes like this:

* what the targets need, and is stopped without meeting the condition asked, is started
  too, whatever its ``autostart`` (systemd's ``Requires=``), and so on down the graph;
* the watchers that depend on nothing start as before: by priority, highest first,
  ``warmup_delay`` after each;
* each dependent waits, in a task of its own, until its dependencies meet their
  conditions, then starts; a slow dependency holds up its dependents only;
* a dependency that can no longer meet its condition (``fatal``, stopped, being stopped,
  ended with another status, left stopped itself) leaves the dependent stopped, with an
  error in the log naming why.

Waiting polls nothing: every watcher tells :class:`Changes` when its state changes, when
one of its processes becomes ready, and when it ends on its own; each waiter then looks
again. ``circusctl wait`` (:meth:`StartOrder.wait_ready`) and circusd's ``READY=1``
(:meth:`StartOrder.settle`) wait the same way.

Stopping goes the other way: dependents first (:func:`circus.depends.stop_groups`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from circus import depends, reaper
from circus.errors import CommandError, NotFoundError
from circus.states import WatcherState

log = logging.getLogger("circus.arbiter")

T = TypeVar("T")
STOPPED = WatcherState.STOPPED


class WaitError(CommandError):
    """A watcher waited for will not be ready (or not in time); the reason says why."""


class Changes:
    """An arbiter-level notification: something a start or a wait may depend on changed.

    A change is about one watcher (its lower-case name) or about everything (None); a
    waiter is woken by the changes about the watchers it names, and by those about
    everything, so that a change costs one look per waiter concerned.
    """

    def __init__(self) -> None:
        self._waiters: dict[str | None, set[asyncio.Event]] = {}

    def notify(self, key: str | None = None) -> None:
        if not self._waiters:
            return  # nobody waits: every spawn's ready change comes here, keep it cheap
        woken = (self._waiters.get(key, set()) | self._waiters.get(None, set())
                 if key is not None else set().union(*self._waiters.values()))
        for event in woken:
            event.set()

    async def until(self, check: Callable[[], T | None], limit: float | None = None,
                    about: Iterable[str] | None = None) -> T:
        """*check* now and after each change *about* these watchers (lower-case names;
        None: any) until it returns something other than None; TimeoutError after
        *limit* seconds (None: no limit)."""
        event = asyncio.Event()
        keys: list[str | None] = [None] if about is None else list(about)
        for key in keys:
            self._waiters.setdefault(key, set()).add(event)
        try:
            async with asyncio.timeout(limit):
                while True:
                    event.clear()
                    result = check()
                    if result is not None:
                        return result
                    await event.wait()
        finally:
            for key in keys:
                waiters = self._waiters.get(key)
                if waiters is not None:
                    waiters.discard(event)
                    if not waiters:
                        del self._waiters[key]


@dataclass
class _Run:
    """One start: what it launches, what it has launched, what it left stopped and why."""

    launch: set[str] = field(default_factory=set)  # lower-case names
    launched: set[str] = field(default_factory=set)  # their start() returned
    blocked: dict[str, str] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)  # name -> start()'s result
    errors: list[Exception] = field(default_factory=list)


class StartOrder:
    """Starts, stops and waits for an arbiter's watchers in dependency order."""

    def __init__(self, arbiter: Any) -> None:
        self.arbiter = arbiter
        self.changes = Changes()
        self.pending: Counter[str] = Counter()  # starts on their way, by watcher
        self.blocked: dict[str, str] = {}  # left stopped by a start, and why
        self._halted: Counter[str] = Counter()  # stops on their way, by watcher

    # -- what the arbiter wires ---------------------------------------------------------

    def attach(self, watcher: Any) -> None:
        """Hear of *watcher*'s ready processes and of its end (and pass the end on to
        ``essential``); its state changes come through the arbiter's ``_state_changed``."""
        watcher.on_ready_change = self.changed
        watcher.on_ended = self._ended

    def _ended(self, watcher: Any, code: int | None) -> None:
        reaper.essential_ended(self.arbiter, watcher, code)
        self.changed(watcher)

    def changed(self, watcher: Any = None) -> None:
        """*watcher* changed (None: anything may have: a quit, a removal)."""
        self.changes.notify(None if watcher is None else watcher.name.lower())

    def _quitting(self) -> bool:
        event = getattr(self.arbiter, "_quit", None)
        return bool(event is not None and event.is_set())

    def _watchers(self) -> dict[str, Any]:
        return {w.name.lower(): w for w in self.arbiter.watchers}

    def _lookup(self, name: str) -> Any:
        """The arbiter's watcher called *name*, or None."""
        try:
            return self.arbiter.get_watcher(name)
        except NotFoundError:
            return None

    def _present(self, watcher: Any) -> bool:
        """*watcher* is still the arbiter's (not removed, nor replaced under its name)."""
        current: object = self._lookup(watcher.name)
        return current is watcher

    def _notify(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.changes.notify(key)

    # -- marks set by commands at admission ------------------------------------------------

    def expect(self, names: Iterable[str]) -> list[str]:
        """A start of *names* is on its way (``wait`` waits for it rather than fail)."""
        keys = [n.lower() for n in names]
        self.pending.update(keys)
        for key in keys:  # a new attempt: why the last one failed is no longer the answer
            self.blocked.pop(key, None)
        return keys

    def expected(self, keys: Iterable[str]) -> None:
        """The start announced by :meth:`expect` is over."""
        done = list(keys)
        self.pending.subtract(done)
        self.pending = +self.pending
        self._notify(done)

    def halt(self, names: Iterable[str]) -> list[str]:
        """A stop of *names* is on its way: the starts waiting on them give up now."""
        keys = [n.lower() for n in names]
        self._halted.update(keys)
        self._notify(keys)
        return keys

    def resume(self, keys: Iterable[str]) -> None:
        self._halted.subtract(keys)
        self._halted = +self._halted

    # -- starting ----------------------------------------------------------------------

    async def start_all(self, autostart_only: bool, warmup: float) -> dict[str, str]:
        """Start every watcher (with *autostart_only*, those with ``autostart`` and not
        ``on_demand``); return those left stopped, and why."""
        ordered = sorted(self.arbiter.watchers, key=lambda w: -w.priority)
        targets = [w for w in ordered
                   if not autostart_only or (w.autostart and not w.on_demand)]
        run = await self.start(targets, warmup)
        return run.blocked

    async def start(self, targets: Sequence[Any], warmup: float = 0.0) -> _Run:
        """Start *targets*, and first what they need (see the module docstring). Returns
        once each has started or been left stopped; the first error a start raised is
        raised again then."""
        run = _Run()
        launch = self._closure(targets, run)
        keys = self.expect(w.name for w in launch)
        gated = [w for w in launch if self._gated(w)]
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._start_roots(
                    [w for w in launch if w not in gated], warmup, run))
                for watcher in gated:
                    tasks.create_task(self._start_gated(watcher, run))
        finally:
            self.expected(k for k in keys if k not in run.launched)
        if run.errors:
            raise run.errors[0]
        return run

    def _closure(self, targets: Sequence[Any], run: _Run) -> list[Any]:
        """*targets*, then each stopped watcher they need (directly or not) that does not
        meet the condition asked of it."""
        by_name = self._watchers()
        launch = list(targets)
        queue = [w for w in targets if w.state is STOPPED]
        while queue:
            watcher = queue.pop(0)
            for dep in depends.parse(watcher.depends_on or ""):
                needed = by_name.get(dep.name.lower())
                if (needed is None or needed in launch or needed.state is not STOPPED
                        or depends.met(needed, dep.condition) is True):
                    continue
                launch.append(needed)
                queue.append(needed)
        run.launch = {w.name.lower() for w in launch}
        return launch

    @staticmethod
    def _gated(watcher: Any) -> bool:
        return watcher.state is STOPPED and bool((watcher.depends_on or "").strip())

    async def _start_roots(self, roots: Sequence[Any], warmup: float, run: _Run) -> None:
        for watcher in sorted(roots, key=lambda w: -w.priority):
            await self._launch(watcher, run)
            if warmup > 0:
                await asyncio.sleep(warmup)

    async def _launch(self, watcher: Any, run: _Run) -> None:
        key = watcher.name.lower()
        try:
            run.results[key] = await watcher.start()
        except Exception as exc:  # its dependents learn it did not start; raised after
            run.errors.append(exc)
        finally:
            run.launched.add(key)
            self.expected([key])

    async def _start_gated(self, watcher: Any, run: _Run) -> None:
        wanted = depends.parse(watcher.depends_on or "")
        log.info("%s: waiting for %s", watcher.name, ", ".join(str(d) for d in wanted))
        about = [watcher.name.lower(), *(d.name.lower() for d in wanted)]
        verdict = await self.changes.until(lambda: self._verdict(watcher, wanted, run),
                                           about=about)
        if verdict is True:
            await self._launch(watcher, run)
            return
        key = watcher.name.lower()
        run.blocked[key] = self.blocked[key] = str(verdict)
        (log.info if self._quitting() else log.error)("%s: not started: %s", watcher.name,
                                                      verdict)
        run.launched.add(key)
        self.expected([key])

    def _verdict(self, watcher: Any, wanted: Sequence[depends.Dependency], run: _Run
                 ) -> bool | str | None:
        """True: start *watcher* now; a reason: it will not be; None: wait."""
        key = watcher.name.lower()
        if self._quitting():
            return "circusd is quitting"
        if self._halted[key]:
            return f"{watcher.name} is being stopped"
        if not self._present(watcher):
            return f"{watcher.name} was removed"
        if watcher.state is not STOPPED:
            return True  # started meanwhile by someone else
        for dep in wanted:
            needed = self._lookup(dep.name)
            if needed is None:
                return f"no watcher is named {dep.name!r}"
            name = needed.name.lower()
            if self._halted[name]:
                return f"{needed.name} is being stopped"
            if name in run.blocked:
                return f"{needed.name} was not started ({run.blocked[name]})"
            if name in run.launch and name not in run.launched:
                return None  # this start has not started it yet
            met = depends.met(needed, dep.condition)
            if isinstance(met, str):
                return met
            if met is True:
                continue
            if needed.state is STOPPED:
                return self._stopped(needed)
            return None
        return True

    def _stopped(self, watcher: Any) -> str:
        """Why the stopped *watcher* is stopped, as far as circusd knows."""
        key = watcher.name.lower()
        if key in self.blocked:
            return f"{watcher.name} is stopped: not started ({self.blocked[key]})"
        code = getattr(watcher, "ended_with", None)
        if code is not None:
            return f"{watcher.name} is stopped: it ended with status {code}"
        return f"{watcher.name} is stopped"

    # -- stopping ----------------------------------------------------------------------

    def dependents(self, watchers: Iterable[Any]) -> list[Any]:
        """The watchers that need any of *watchers*, directly or not (not themselves)."""
        graph = depends.of(self.arbiter.watchers)
        by_name = self._watchers()
        given = {w.name.lower() for w in watchers}
        found: list[str] = []
        for name in sorted(given):
            found += [n for n in depends.dependents(graph, name)
                      if n not in given and n not in found]
        return [by_name[n] for n in found if n in by_name]

    async def stop(self, watchers: Sequence[Any], by_priority: bool = True) -> None:
        """Stop *watchers*, dependents before their dependencies, then (*by_priority*)
        lowest priority first; the others together."""
        for group in depends.stop_groups(list(watchers), by_priority):
            await asyncio.gather(*(w.stop() for w in group))

    async def stop_all(self) -> None:
        """Stop every watcher: the plugins first (so none of them starts a watcher being
        stopped), then the rest in :meth:`stop`'s order."""
        watchers = self.arbiter.watchers
        await asyncio.gather(*(w.stop() for w in watchers if w.name.startswith("plugin:")))
        await self.stop(watchers)

    # -- waiting -------------------------------------------------------------------------

    async def wait_ready(self, watcher: Any, limit: float | None) -> float:
        """Wait until *watcher* is active with every process ready (or, ``respawn =
        false``, has ended with status 0); the seconds waited. WaitError says why not."""
        began = time.monotonic()
        try:
            verdict = await self.changes.until(lambda: self._ready(watcher), limit,
                                               about=[watcher.name.lower()])
        except TimeoutError:
            raise WaitError(f"{watcher.name} not ready within {limit:g}s "
                            f"({self.progress(watcher)})") from None
        if verdict is not True:
            raise WaitError(str(verdict))
        return time.monotonic() - began

    def _ready(self, watcher: Any) -> bool | str | None:
        key = watcher.name.lower()
        if self._quitting():
            return "circusd is quitting"
        if not self._present(watcher):
            return f"{watcher.name} was removed"
        met = depends.met(watcher, "ready")
        if met is not False:
            return met
        if watcher.state is not STOPPED:
            return None
        if key in self.blocked:
            return self._stopped(watcher)
        if self.pending[key]:
            return None  # a start is on its way (waiting for what it depends on)
        if getattr(watcher, "ended_with", None) == 0:
            return True  # respawn = false: it ran, and ended well
        return self._stopped(watcher)

    def progress(self, watcher: Any) -> str:
        """Where *watcher* is on its way to ready, for a timeout's message."""
        if watcher.state is STOPPED and self.pending[watcher.name.lower()]:
            return f"waiting for {watcher.depends_on}"
        processes = list(watcher.processes.values())
        ready = sum(1 for p in processes if p.ready)
        return (f"{watcher.details()['health']}, {ready} of {watcher.numprocesses} "
                f"process{'es' if watcher.numprocesses != 1 else ''} ready")

    async def settle(self) -> dict[str, str]:
        """Wait until every watcher started at circusd's start (or since) is ready, or
        will not be; those that will not, and why (circusd's ``READY=1``)."""
        watchers = [w for w in self.arbiter.watchers
                    if (w.autostart and not w.on_demand) or w.state is not STOPPED]
        problems: dict[str, str] = {}

        async def one(watcher: Any) -> None:
            try:
                await self.wait_ready(watcher, None)
            except WaitError as exc:
                problems[watcher.name] = str(exc)

        async with asyncio.TaskGroup() as tasks:
            for watcher in watchers:
                tasks.create_task(one(watcher))
        return problems


def of(arbiter: Any) -> StartOrder:
    """The start order of *arbiter* (commands see the arbiter through ArbiterAPI)."""
    order = getattr(arbiter, "order", None)
    if not isinstance(order, StartOrder):
        raise CommandError("this arbiter has no start order")
    return order


__all__ = ["Changes", "StartOrder", "WaitError", "of"]
