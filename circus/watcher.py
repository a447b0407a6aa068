"""Watcher: N processes of one command, kept alive.

A watcher owns its processes, its hooks and one small task, the *keeper*, that is woken
when a process exits and spawns the replacement. What a process is started with comes
from its :class:`~circus.spawn.Spawner` (``self.spawner``); what the processes write goes
to its :class:`~circus.streams.router.OutputRouter` (``self.router``). Commands that change
the watcher (start, stop, reload, incr, set, …) take the watcher's lock, so they run one
after the other in the order they arrived instead of failing.

State machine (values are the wire strings; the allowed changes are listed in
:data:`circus.states.WATCHER_TRANSITIONS`)::

    stopped --start--> starting --(all spawned)--> active --stop--> stopping --> stopped
                            \\--(before_start refuses, spawn fails max_retry times)--> stopped
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from circus import descriptors, spawnserver
from circus.errors import OptionError
from circus.hooks import Skip
from circus.keeper import SPAWN_BATCH, SPAWN_SLICE, SPAWN_WIDTH, Keeper
from circus.limits import require_target
from circus.process import Process
from circus.processes import Publish
from circus.sockets import sockets_for_spawn
from circus.spawn import Spawner, WorkerIds
from circus.states import WATCHER_TRANSITIONS, WatcherState, check_transition
from circus.syncapi import dual, offline_when
from circus.tasks import TaskOwner

log = logging.getLogger(__name__)

Reload = Literal["needed", "always", "never"]



def _nothing_runs(watcher: Watcher) -> bool:
    return not watcher.processes  # stopping it needs no loop

class Watcher(Keeper):
    """A group of identical processes.

    Args follow Circus's ``Watcher``: ``name``, ``cmd``, ``args``, ``numprocesses``,
    ``warmup_delay``, ``working_dir``, ``shell``, ``uid``, ``max_retry``, ``gid``,
    ``send_hup``, ``env``, ``stopped``, ``graceful_timeout``, ``prereload_fn``,
    ``rlimits``, ``executable``, ``stdout_stream``, ``stderr_stream``, ``priority``,
    ``singleton`` and every other option of the option table (``respawn``, ``max_age``,
    ``stop_signal``, ``copy_env``, …) as keywords. Keys that are not options are kept in
    :attr:`custom_options` (plugins read them, e.g. ``flapping.attempts``).

    ``publish(topic, payload)`` receives the watcher's events; the arbiter passes its
    publisher.
    """

    def __init__(
        self,
        name: str,
        cmd: str,
        args: str | Sequence[str] | None = None,
        numprocesses: int = 1,
        warmup_delay: float = 0.0,
        working_dir: str | None = None,
        shell: bool = False,
        uid: int | str | None = None,
        max_retry: int = 5,
        gid: int | str | None = None,
        send_hup: bool = False,
        env: Mapping[str, str] | None = None,
        stopped: bool = True,
        graceful_timeout: float = 30.0,
        prereload_fn: Callable[[Watcher], Any] | None = None,
        rlimits: Mapping[str, int | None] | None = None,
        executable: str | None = None,
        stdout_stream: Mapping[str, Any] | None = None,
        stderr_stream: Mapping[str, Any] | None = None,
        stream_backend: str = "thread",
        priority: int = 0,
        singleton: bool = False,
        hooks: Mapping[str, Any] | None = None,
        publish: Publish | None = None,
        **options: Any,
    ) -> None:
        self.name = name
        given: dict[str, Any] = {
            "cmd": cmd, "args": args, "numprocesses": numprocesses,
            "warmup_delay": warmup_delay, "working_dir": working_dir, "shell": shell,
            "uid": uid, "max_retry": max_retry, "gid": gid, "send_hup": send_hup,
            "graceful_timeout": graceful_timeout, "executable": executable,
            "priority": priority, "singleton": singleton, **options,
        }
        self._init_options(given, env=env, rlimits=rlimits, hooks=hooks,
                           stdout_stream=stdout_stream, stderr_stream=stderr_stream)
        self.prereload_fn = prereload_fn
        self.stream_backend = stream_backend
        self._init_processes(publish)
        self.spawner = Spawner(self)
        self.sockets: dict[str, int] = {}  # socket name -> fd, set by the arbiter

        self.state = WatcherState.STOPPED
        self.on_state_change: Callable[[Watcher], None] | None = None  # set by the arbiter
        self._lock = asyncio.Lock()
        self._tasks = TaskOwner(f"watcher {name}")
        self._init_keeper()
        self._wids = WorkerIds()
        self._spawn_retry: asyncio.TimerHandle | None = None  # a before_spawn hook's Skip
        self._halts = 0  # stop requests on their way: no spawn while > 0 (halt_spawning)
        self._halted = asyncio.Event()  # set while _halts > 0: cuts a backoff short
        # `stopped` (the seed's "not started yet") is accepted for compatibility: a watcher
        # is always created stopped, and `autostart` decides whether the arbiter starts it.

    # -- small helpers ---------------------------------------------------------------------

    @property
    def status(self) -> str:
        """``active``, ``stopped``, ``starting`` or ``stopping``, as Circus 0.19 says it;
        :meth:`details` has the health word."""
        return self.state.value

    def _set_state(self, new: WatcherState) -> None:
        """The one place the state changes; the allowed changes are in circus/states.py."""
        if new is self.state:
            return
        check_transition(WATCHER_TRANSITIONS, self.state, new, f"watcher {self.name}")
        log.debug("%s: %s -> %s", self.name, self.state.value, new.value)
        self.state = new
        if self.on_state_change is not None:
            self.on_state_change(self)

    def loop_for_calls(self) -> asyncio.AbstractEventLoop | None:
        """Its arbiter's loop: where a call from plain code runs (circus/syncapi.py)."""
        return self.arbiter.loop_for_calls() if self.arbiter is not None else None

    def _is_stopped(self) -> bool:
        # a method, not `self.state is ...` inline: an await may have changed the state
        return self.state is WatcherState.STOPPED

    # -- spawning -------------------------------------------------------------------------

    async def _spawn_process(self) -> Process:
        """Start one process now (no hooks); raise OSError/ValueError if it cannot start."""
        wid = self._wids.take()
        process: Process | None = None
        # so_reuseport: a socket of its own for each process, closed once it is spawned
        plan = (sockets_for_spawn(self.sockets, self.cmd, self.args, self.stdin_socket,
                                  self.use_sockets)
                if getattr(self.sockets, "per_process", None)
                else contextlib.nullcontext(self.sockets))
        fd_note = self.readiness.prepare_spawn()  # ready = fd:N: the pipe it writes on
        try:
            with plan as sockets:
                spec = self.readiness.shape(self.spawn_spec(wid, sockets), fd_note, wid)
                process = Process(wid, spec, name=self.name, on_output=self._output_feed(),
                                  on_exit=self._on_exit, spawn=False)
                await process._start()
        finally:
            # a child that was made is known even when the spawn was cancelled meanwhile
            if process is not None and process.pid:
                self._adopt(process)
                self.readiness.watch(process, fd_note)
            else:
                self._wids.release(wid)
                if fd_note is not None:
                    fd_note.close()
        return process

    # the keeper awaits the plain coroutine; the seed's library callers get the dual form
    spawn_process = dual(_spawn_process)

    def _output_feed(self) -> Callable[[Any, str, bytes], None]:
        if self.readiness.kind != "log":
            return self.router.feed
        router, readiness = self.router, self.readiness

        def feed(process: Any, name: str, data: bytes) -> None:
            router.feed(process, name, data)
            readiness.output(process.pid, name, data)

        return feed

    def _adopt(self, process: Process) -> None:
        if self.router.paused:
            process.pause_reading()
        self.processes[process.pid] = process
        self.on_processes_changed(process, True)
        self.vitals.adopted(process)
        self.resource_recovered()
        self._timers_for(process)
        log.debug("%s: spawned pid %d (wid %d)", self.name, process.pid, process.wid)
        self.emit("spawn", process_pid=process.pid, time=process.started)

    async def _spawn_one(self) -> Process | None:
        """Spawn with hooks. None: a hook skipped or refused, or the spawn failed (counted)."""
        if "before_spawn" in self.hooks:
            if self._spawn_retry is not None:
                return None  # the hook said "not now": the keeper asks again later
            verdict = await self.call_hook("before_spawn")
            if isinstance(verdict, Skip):
                self._defer_spawns(verdict.delay)
                return None
            if not verdict:
                raise _HookRefused("before_spawn")
        try:
            process = await self._spawn_process()
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            if isinstance(exc, OSError) and descriptors.is_resource_error(exc):
                self.resource_backoff(exc)  # not the command's fault: never stops it
                return None
            self.vitals.spawn_failed()
            log.error("%s: could not spawn %r: %s", self.name, self.cmd, exc)
            return None
        if "after_spawn" in self.hooks and not await self.call_hook(
            "after_spawn", pid=process.pid
        ):
            await self.stop_process(process)
            raise _HookRefused("after_spawn")
        return process

    async def _spawn_guarded(self) -> Process | None:
        """Spawn one; a refusing spawn hook stops the watcher (None is returned then)."""
        try:
            return await self._spawn_one()
        except _HookRefused as refused:
            log.warning("%s: the %s hook refused a spawn; stopping the watcher",
                        self.name, refused)
            await self._stop_all()
            self._ended()
            return None

    def _defer_spawns(self, delay: float) -> None:
        """before_spawn returned Skip: no spawn now; the keeper tries again after *delay*."""
        log.info("%s: the before_spawn hook skipped a spawn; asking again in %.1fs",
                 self.name, delay)
        loop = asyncio.get_running_loop()
        self._spawn_retry = loop.call_later(delay, self._spawn_retry_due)

    async def _spawn_missing(self) -> list[int]:
        """Spawn until numprocesses run; return the new pids. A process that dies
        meanwhile is the keeper's to replace (after its backoff), not this pass's."""
        started: list[int] = []
        todo = self.numprocesses - len(self.processes)
        count, next_yield = 0, time.monotonic() + SPAWN_SLICE
        while True:
            width = self._spawn_width()
            if width > 1:  # the spawn server makes them side by side
                failed = await self._spawn_window(started, todo, width)
            elif self._may_spawn(todo, started, 0):
                process = await self._spawn_guarded()
                failed = process is None
                if process is not None:
                    started.append(process.pid)
            else:
                break
            if failed:
                if self._is_stopped() or self._spawn_retry is not None:
                    break
                if self.vitals.exhausted(self.max_retry):
                    await self._give_up()
                    break
                await self._backoff()  # a stop cuts it short
                continue
            if width > 1:
                break  # the window ran until nothing was missing, or a halt
            count += 1
            if self.warmup_delay > 0 and self._may_spawn(todo, started, 0):
                await asyncio.sleep(self.warmup_delay)
            elif count >= SPAWN_BATCH or time.monotonic() >= next_yield:
                await asyncio.sleep(0)
                count, next_yield = 0, time.monotonic() + SPAWN_SLICE
        return started

    def _spawn_width(self) -> int:
        """How many spawns may be in flight at once: one at a time when hooks or
        ``warmup_delay`` pace them, or without a spawn server."""
        if (self.warmup_delay > 0 or "before_spawn" in self.hooks
                or "after_spawn" in self.hooks or spawnserver.current() is None):
            return 1
        return SPAWN_WIDTH

    # -- stopping processes ---------------------------------------------------------------

    async def _stop_all(self) -> list[int]:
        """Stop every process and leave the watcher stopped (lock held by the caller)."""
        if self.state is WatcherState.STOPPED and not self.processes:
            return []
        self._set_state(WatcherState.STOPPING)
        await self.call_hook("before_stop")
        stopped = await self.stop_processes(list(self.processes.values()))
        await self.stop_leftovers()  # of processes that had exited on their own
        self._set_state(WatcherState.STOPPED)
        self.spawns_ended()
        self.vitals.forget_owed()
        await self.call_hook("after_stop")
        self.emit("stop")
        log.info("%s: stopped", self.name)
        return stopped

    # -- public operations ------------------------------------------------------------------

    async def _start_locked(self) -> dict[str, list[int]]:
        kept = list(self.processes)
        if self.state is WatcherState.ACTIVE:
            started = await self._spawn_missing()
            return {"started": started, "kept": kept}
        if not await self.call_hook("before_start"):
            log.warning("%s: before_start hook refused; the watcher stays stopped", self.name)
            return {"started": [], "kept": kept}
        # STOPPED -> STARTING: a start command, autostart, or a reload of a stopped watcher
        self._set_state(WatcherState.STARTING)
        self.vitals.started()
        self.ended_with = None
        self._ensure_keeper()
        started = await self._spawn_missing()
        if self.state is not WatcherState.STARTING:  # spawns failed: already stopped
            return {"started": started, "kept": kept}
        # STARTING -> ACTIVE: every process asked for was spawned
        self._set_state(WatcherState.ACTIVE)
        self.emit("start")
        log.info("%s: started %d process(es)", self.name, len(self.processes))
        if not await self.call_hook("after_start"):
            log.warning("%s: after_start hook refused; stopping", self.name)
            await self._stop_all()
            self._ended()
        return {"started": started, "kept": kept}

    @dual
    async def start(self) -> dict[str, list[int]]:
        """Start the processes; on an active watcher only the missing ones.

        Returns ``{"started": [pids], "kept": [pids]}``.
        """
        async with self._lock:
            return await self._start_locked()

    @dual
    @offline_when(_nothing_runs)
    async def stop(self) -> None:
        """Stop every process (stop_signal, graceful_timeout, SIGKILL); state ``stopped``."""
        self.halt_spawning()  # a spawn burst holding the lock ends at its next spawn
        try:
            async with self._lock:
                await self._stop_all()
        finally:
            self.resume_spawning()

    def halt_spawning(self) -> None:
        """A stop is on its way: no spawn (checked before each) until resume_spawning."""
        self._halts += 1
        self._halted.set()

    def resume_spawning(self) -> None:
        self._halts = max(self._halts - 1, 0)
        if not self._halts:
            self._halted.clear()

    @dual
    async def restart(self) -> dict[str, list[int]]:
        async with self._lock:
            stopped = await self._stop_all()
            result = await self._start_locked()
            return {"stopped": stopped, **result}

    @dual
    async def reload(self, graceful: bool = True, sequential: bool = False) -> dict[str, Any]:
        """Reload: new processes first, then the old ones stop (or SIGHUP with send_hup)."""
        async with self._lock:
            return await self._reload_locked(graceful, sequential)

    async def _reload_locked(self, graceful: bool, sequential: bool) -> dict[str, Any]:
        if self.prereload_fn is not None:
            pending = self.prereload_fn(self)
            if asyncio.iscoroutine(pending):
                await pending
        if self.state is WatcherState.STOPPED:
            outcome = await self._start_locked()
            self.emit("reload")
            return {"stopped": [], **outcome}
        if not graceful:
            stopped = await self._stop_all()
            outcome = await self._start_locked()
            self.emit("reload")
            return {"stopped": stopped, **outcome}
        old = list(self.processes.values())
        result: dict[str, Any]
        started: list[int] = []
        if self.send_hup:
            for process in old:
                process.send_signal(signal.SIGHUP)
            result = {"stopped": [], "started": started, "kept": [p.pid for p in old]}
        elif self.readiness.kind != "spawned":
            # new processes first, and the old ones stop only once the new are ready: one
            # at a time with sequential, all at once otherwise
            batch = 1 if sequential else max(len(old), self.numprocesses, 1)
            await self._reload_when_ready(old, started, batch)
            result = {"stopped": [p.pid for p in old], "started": started, "kept": []}
        elif sequential:
            for process in old:
                await self.stop_process(process)
                if not await self._reload_spawn(started):
                    break
            result = {"stopped": [p.pid for p in old], "started": started, "kept": []}
        else:
            for _ in range(self.numprocesses):
                if not await self._reload_spawn(started):
                    break
            await self.stop_processes(old)
            result = {"stopped": [p.pid for p in old], "started": started, "kept": []}
        # top up if spawns failed or deaths happened meanwhile
        result["started"].extend(await self._spawn_missing())
        await self.stop_leftovers(keep_running=True)
        self.emit("reload")
        log.info("%s: reloaded", self.name)
        return result

    async def _reconcile(self) -> None:
        """Bring the process count to numprocesses: spawn or stop the oldest."""
        if self.state is not WatcherState.ACTIVE:
            return
        extra = len(self.processes) - self.numprocesses
        if extra > 0:
            await self.stop_processes(list(self.processes.values())[:extra])
        else:
            await self._spawn_missing()

    @dual
    async def set_numprocesses(self, n: int) -> int:
        async with self._lock:
            n = max(int(n), 0)
            if self.singleton and n > 1:
                raise OptionError("numprocesses", "a singleton watcher runs at most one process")
            require_target(self.arbiter, self.name, n, self.max_processes, self.numprocesses)
            self.numprocesses = n
            if self.on_change is not None:
                self.on_change(self, ["numprocesses"])
            await self._reconcile()
            return self.numprocesses

    @dual
    async def incr(self, nb: int = 1) -> int:
        """Add *nb* processes; return the new target."""
        if self.singleton:
            return self.numprocesses
        return await self.set_numprocesses(self.numprocesses + nb)

    @dual
    async def decr(self, nb: int = 1) -> int:
        """Remove *nb* processes (the oldest); return the new target."""
        if self.singleton:
            return self.numprocesses
        return await self.set_numprocesses(max(self.numprocesses - nb, 0))

    # -- the seed's names for these operations -----------------------------------------------

    @dual
    async def manage_processes(self) -> None:
        """Bring the running processes to ``numprocesses`` (spawn or stop the oldest)."""
        async with self._lock:
            await self._reconcile()

    @dual
    async def reap_and_manage_processes(self) -> None:
        await self.reap_processes()
        await self.manage_processes()

    @dual
    async def spawn_processes(self) -> list[int]:
        """Spawn the missing processes of an active watcher; return their pids."""
        async with self._lock:
            return await self._spawn_missing()

    # ProcessSet's coroutines, callable from plain code too (circus/syncapi.py)

    @dual
    async def kill(self, pid: int | None = None, signum: int | None = None,
                   graceful_timeout: float | None = None) -> None:
        """Stop one process (or all) like ``stop`` does; the watcher stays active and
        replaces them."""
        await super().kill(pid, signum, graceful_timeout)

    @dual
    async def kill_process(self, process: Process, sig: int | None = signal.SIGTERM,
                           graceful_timeout: float | None = None) -> int:
        """Stop *process* with *sig* (None: stop_signal); it is replaced."""
        return await super().kill_process(process, sig, graceful_timeout)

    @dual
    async def kill_processes(self, sig: int = signal.SIGTERM) -> None:
        await super().kill_processes(sig)

    @dual
    async def reap_processes(self) -> list[int]:
        return await super().reap_processes()

    # -- options: the values live in OptionStore; here, what a change does to processes ----

    @dual
    async def set_options(self, changes: Mapping[str, Any], reload: Reload = "needed") -> bool:
        """Check, then apply option changes; a running watcher is then reloaded gracefully
        if a changed key needs new processes (*reload* ``"needed"``), if anything but
        ``numprocesses`` changed (``"always"``, as ``reloadconfig`` does), or not at all
        (``"never"``).

        ``set``, ``reloadconfig`` and library callers all come through here. A value of
        :data:`circus.keys.UNSET` takes a key back to its default.

        Returns True if a graceful reload was done.
        """
        checked = self.check_options(changes)
        async with self._lock:
            return await self._set_options_locked(checked, reload)

    async def _set_options_locked(self, checked: Mapping[str, Any], reload: Reload) -> bool:
        needs_reload, streams = self.write_options(checked)
        for _key in checked:
            self.emit("updated")
        if self.on_change is not None:
            self.on_change(self, list(checked))
        self.spawner.invalidate()
        self.router.set_streams({which: getattr(self, which + "_conf") for which in streams})
        if reload == "always":
            needs_reload = bool(set(checked) - {"numprocesses"})
        if needs_reload and reload != "never" and self.state is not WatcherState.STOPPED:
            await self._reload_locked(graceful=True, sequential=False)
            return True
        if "numprocesses" in checked or checked.get("respawn"):
            await self._reconcile()  # respawn switched on: replace what died meanwhile
        return False

    # -- lifetime ------------------------------------------------------------------------------

    @dual
    async def close(self) -> None:
        """Stop the processes, the keeper and the streams; the watcher cannot be reused."""
        await self.stop()
        await self._tasks.close(timeout=5.0)
        self._keeper = None
        for process in list(self.processes.values()):
            process.close_pipes()
        await self.router.close()

    async def detach(self) -> None:
        """Forget the processes without stopping them (``rm --nostop``).

        They keep running, no longer read (their pipes are closed) nor replaced: the
        keeper, pending tasks and ``max_age`` timers are cancelled. circusd still collects
        their exit status when they end (no zombie), without a word from this watcher.
        """
        for process in self.processes.values():
            process.on_exit = None
            process.on_output = None
            process.close_pipes()
        self.processes.clear()
        for timer in self._age_timers.values():
            timer.cancel()
        self._age_timers.clear()
        await self._tasks.close(timeout=1.0)

    def __repr__(self) -> str:
        return f"<Watcher {self.name} {self.state.value} {len(self.processes)}/{self.numprocesses}>"


class _HookRefused(Exception):
    """A before_spawn / after_spawn hook refused: the watcher stops."""


__all__ = ["Watcher"]
