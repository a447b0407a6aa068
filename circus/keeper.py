"""The keeper: what a watcher does when one of its processes ends.

:class:`Keeper` is the part of :class:`~circus.watcher.Watcher` that watches deaths: it
records each one in the watcher's :class:`~circus.health.Health`, wakes the *keeper* task
that spawns the replacement after the restart policy's backoff, gives up (``fatal``) after
``max_retry`` failed starts in a row, and replaces processes that reach ``max_age``. The
watcher provides the spawning and stopping it calls (the stubs below).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from typing import Any

from circus.errors import CommandError
from circus.health import Health, RestartPolicy
from circus.process import Process, describe_exit
from circus.processes import ProcessSet
from circus.readiness import Readiness
from circus.spawn import WorkerIds
from circus.states import WatcherState
from circus.tasks import TaskOwner

log = logging.getLogger("circus.watcher")

# Yield to the event loop every this many spawns or seconds, whichever comes first, so
# commands (a new target, a stop) and deaths are handled while a large watcher starts.
SPAWN_BATCH = 32
SPAWN_SLICE = 0.005
# Spawns of one watcher in flight at once when the spawn server makes them (they are made
# side by side; a stop waits for at most this many to land)
SPAWN_WIDTH = 16


class Keeper(ProcessSet):
    """Deaths, restarts, backoff, ``fatal`` and ``max_age`` of a watcher's processes."""

    # the watcher's, set in its __init__
    state: WatcherState
    _lock: asyncio.Lock
    _tasks: TaskOwner
    _wids: WorkerIds
    _halted: asyncio.Event  # set while a stop is on its way: cuts a backoff short

    def _init_keeper(self) -> None:
        self.vitals = Health()  # restarts, the last exit, failed starts in a row, fatal
        self._wakeup: asyncio.Event | None = None
        self._keeper: asyncio.Task[Any] | None = None
        self._age_timers: dict[int, asyncio.TimerHandle] = {}
        self._stable_timer: asyncio.TimerHandle | None = None
        self.readiness = Readiness(self)  # when each process is up, and stays healthy
        self.notify_socket: str | None = None  # $NOTIFY_SOCKET, set by the arbiter
        # called with the watcher when one of its processes becomes ready (the arbiter's
        # start order waits on it)
        self.on_ready_change: Callable[[Any], None] | None = None

    # -- what the watcher provides ------------------------------------------------------------

    def _set_state(self, new: WatcherState) -> None:
        raise NotImplementedError

    async def _spawn_missing(self) -> list[int]:
        raise NotImplementedError

    async def _spawn_guarded(self) -> Process | None:
        raise NotImplementedError

    async def _stop_all(self) -> list[int]:
        raise NotImplementedError

    _halts: int  # stop requests on their way (Watcher.halt_spawning)

    # -- health ---------------------------------------------------------------------------------

    def details(self) -> dict[str, Any]:
        """Health, restarts, the last exit, the next spawn and each process (``status``
        with ``details``)."""
        return self.vitals.describe(self, self.min_uptime)

    def restart_policy(self) -> RestartPolicy:
        return RestartPolicy(self.backoff_initial, self.backoff_factor, self.backoff_max,
                             self.backoff_jitter)

    def _watch_stability(self, process: Process) -> None:
        """After failed starts, a process that stays up min_uptime resets their count."""
        if self._stable_timer is not None:
            self._stable_timer.cancel()

        def stable() -> None:
            self._stable_timer = None
            if not process.exited and not process.stopping:
                self.vitals.failures = 0

        loop = asyncio.get_running_loop()
        self._stable_timer = loop.call_later(self.min_uptime, stable)

    async def _backoff(self) -> None:
        """Wait as the restart policy says after failed starts in a row (commands run)."""
        delay = self.restart_policy().delay(self.vitals.failures)
        if delay <= 0:
            return
        log.warning("%s: %d failed starts in a row; next spawn in %.1fs", self.name,
                    self.vitals.failures, delay)
        self.vitals.waiting(delay)
        last = self.vitals.last_exit
        self.emit("backoff", delay=round(delay, 3), failures=self.vitals.failures,
                  last_exit=None if last is None else last.as_wire())
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._halted.wait(), delay)
        finally:
            self.vitals.waiting(0)

    def _may_spawn(self, todo: int, started: list[int], flying: int) -> bool:
        """One more spawn of this pass is wanted (the target is read again each time: a
        new target or a stop ends a burst at once)."""
        return (self.state in (WatcherState.ACTIVE, WatcherState.STARTING)
                and not self._halts
                and min(self.numprocesses - len(self.processes), todo - len(started)) > flying)

    async def _spawn_window(self, started: list[int], todo: int, width: int) -> bool:
        """Spawns with up to *width* in flight until none is wanted; after a failure, none
        is asked for and the ones in flight land. True if one failed."""
        failed = False
        flying: set[asyncio.Future[Process | None]] = set()
        try:
            while True:
                while (not failed and len(flying) < width
                       and self._may_spawn(todo, started, len(flying))):
                    flying.add(asyncio.ensure_future(self._spawn_guarded()))
                if not flying:
                    return failed
                done, flying = await asyncio.wait(flying, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    process = task.result()
                    if process is None:
                        failed = True
                    else:
                        started.append(process.pid)
        finally:
            for task in flying:
                task.cancel()
            if flying:
                await asyncio.gather(*flying, return_exceptions=True)

    async def _give_up(self) -> None:
        """max_retry failed starts in a row: stop everything, health ``fatal`` (lock held)."""
        reason = self.vitals.gave_up()
        log.error("%s: gave up after %s; `circusctl start %s` tries again", self.name,
                  reason, self.name)
        self.emit("fatal", reason=reason)
        await self._stop_all()
        self._ended()

    # -- deaths ---------------------------------------------------------------------------

    def _on_exit(self, process: Process) -> None:
        """Called by the process as soon as its exit status is collected."""
        if self.processes.pop(process.pid, None) is not None:
            self._wids.release(process.wid)
            self.on_processes_changed(process, False)
        self.router.forget(process.pid)
        self.readiness.forget(process)
        timer = self._age_timers.pop(process.pid, None)
        if timer is not None:
            timer.cancel()
        code = process.returncode
        if process.stopping:
            log.debug("%s: pid %d stopped (%s)", self.name, process.pid, code)
        elif code == 0:
            log.info("%s: pid %d exited with status 0", self.name, process.pid)
        else:
            log.warning("%s: pid %d exited unexpectedly (%s)", self.name, process.pid,
                        describe_exit(code))
        self.emit("reap", process_pid=process.pid, exit_code=code)
        if "before_reap" in self.hooks or "after_reap" in self.hooks:
            self._tasks.spawn(self._reap_hooks(process), name=f"reap-hooks-{process.pid}")
        if process.stopping or self.state not in (WatcherState.ACTIVE, WatcherState.STARTING):
            return
        self.vitals.exited(process, self.min_uptime)
        if self.respawn:
            self._wake()
        elif not self.processes:
            # respawn = false: the last process is gone, so is the watcher
            self._set_state(WatcherState.STOPPED)
            self.emit("stop")
            self._tasks.spawn(self.stop_leftovers(), name=f"leftovers-{self.name}")
            self._ended(code)

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    async def _keep(self) -> None:
        """The keeper: respawn after deaths while the watcher is active."""
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if not self.vitals.exhausted(self.max_retry):
                await self._backoff()  # outside the lock: commands are not held up
            async with self._lock:
                if self.state is not WatcherState.ACTIVE:
                    continue
                if self.vitals.exhausted(self.max_retry):
                    await self._give_up()
                else:
                    await self._spawn_missing()

    def _ensure_keeper(self) -> None:
        if self._keeper is None or self._keeper.done():
            self._wakeup = asyncio.Event()
            self._keeper = self._tasks.spawn(self._keep(), name=f"keeper-{self.name}")

    def _expire(self, process: Process) -> None:
        self._age_timers.pop(process.pid, None)
        if process.exited or process.stopping:
            return
        self._tasks.spawn(self._recycle(process), name=f"max-age-{process.pid}")

    async def _recycle(self, process: Process) -> None:
        """max_age: start a replacement, then stop the old process."""
        async with self._lock:
            if process.exited or self.state is not WatcherState.ACTIVE:
                return
            log.info("%s: pid %d reached max_age, replacing it", self.name, process.pid)
            await self._spawn_guarded()
            if self.state is WatcherState.ACTIVE:
                await self.stop_process(process)

    def _timers_for(self, process: Process) -> None:
        """A new process: its max_age timer, and after failed starts a stability check."""
        loop = asyncio.get_running_loop()
        if self.max_age > 0:
            delay = self.max_age + random.randint(0, max(self.max_age_variance, 0))
            self._age_timers[process.pid] = loop.call_later(delay, self._expire, process)
        if self.vitals.failures:
            self._watch_stability(process)

    # -- readiness (circus/readiness.py calls these) -------------------------------------------

    def notify_address(self) -> str | None:
        """``$NOTIFY_SOCKET`` for ``ready = notify`` (the arbiter's, bound at first use)."""
        arbiter = getattr(self, "arbiter", None)
        if self.notify_socket is None and arbiter is not None:
            self.notify_socket = arbiter.notify_address()
        return self.notify_socket

    def on_ready(self, process: Process) -> None:
        if self.on_ready_change is not None:
            self.on_ready_change(self)

    def not_ready(self, process: Process, reason: str) -> None:
        """ready_timeout passed: a failed start; the process is stopped and replaced."""
        self.vitals.spawn_failed()
        self.vitals.not_ready(process, reason)
        self._tasks.spawn(self._replace(process), name=f"unready-{process.pid}")

    def restart_process(self, process: Process) -> None:
        """A liveness check failed (or the watchdog): stop it; the keeper replaces it."""
        self.vitals.replacing(process)
        self._tasks.spawn(self._replace(process), name=f"unhealthy-{process.pid}")

    async def _reload_when_ready(self, old: list[Process], started: list[int],
                                 batch: int) -> None:
        """Replace *old* *batch* processes at a time, each batch stopped once its
        replacements are ready. A replacement not ready in time ends the reload: it is
        stopped, what is left of *old* keeps serving, and ReloadError says why."""
        remaining = list(old)
        target = max(self.numprocesses, 0)
        while len(started) < target or remaining:
            fresh: list[int] = []
            for _ in range(min(batch, target - len(started))):
                if not await self._reload_spawn(fresh):
                    break
            if self._halts or self.state is WatcherState.STOPPED:
                started.extend(fresh)
                return
            if not fresh and len(started) < target:
                raise ReloadError(f"{self.name}: no new process could be spawned; the "
                                  f"reload stopped and {len(remaining)} old process(es) "
                                  "keep serving")
            new = [self.processes[pid] for pid in fresh if pid in self.processes]
            problem = await self.readiness.wait_ready(new, self.ready_timeout)
            if problem is None and len(new) < len(fresh):
                problem = "a new process exited before it was ready"
            if problem is not None:
                await self.stop_processes(new)
                raise ReloadError(f"{self.name}: {problem}; the reload stopped and "
                                  f"{len(remaining)} old process(es) keep serving")
            started.extend(fresh)
            done, remaining = remaining[:max(len(fresh), 1)], remaining[max(len(fresh), 1):]
            await self.stop_processes(done)
            if not fresh and not remaining:
                break

    async def _reload_spawn(self, started: list[int]) -> bool:
        """One new process of a reload, then warmup_delay; False once the watcher stopped."""
        new = None if self._halts else await self._spawn_guarded()
        if new is not None:
            started.append(new.pid)
        elif self._halts or self.state is WatcherState.STOPPED:
            return False  # a stop is on its way, or a spawn hook refused (watcher stopped)
        if self.warmup_delay > 0:
            await asyncio.sleep(self.warmup_delay)
        elif len(started) % SPAWN_BATCH == 0:
            await asyncio.sleep(0)
        return True

    async def _replace(self, process: Process) -> None:
        await self.stop_process(process)
        if self.state is WatcherState.ACTIVE:
            self._wake()


class ReloadError(CommandError):
    """A reload that waits for readiness ended early: the old processes keep serving."""


__all__ = ["Keeper", "ReloadError"]
