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
import logging
import random
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from circus.errors import OptionError
from circus.hooks import Hook, Skip
from circus.keys import UNSET, key_for, together
from circus.options import WATCHER_OPTIONS, WatcherSettings
from circus.process import Process, describe_exit
from circus.sockets import sockets_for_spawn
from circus.spawn import Spawner, WorkerIds
from circus.states import WATCHER_TRANSITIONS, WatcherState, check_transition
from circus.streams.ring import OutputRing
from circus.streams.router import OutputRouter
from circus.tasks import TaskOwner

if TYPE_CHECKING:
    from circus.streams import Stream

log = logging.getLogger(__name__)

Publish = Callable[[str, dict[str, Any]], None]
Reload = Literal["needed", "always", "never"]

# A process that exits sooner than this after its spawn counts as a quick death; quick
# deaths in a row make the watcher wait before respawning, so a command that crashes at
# once does not spin a core.
QUICK_DEATH = 1.0
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0
# Yield to the event loop every this many spawns, so commands and deaths are handled
# while a large watcher starts.
SPAWN_BATCH = 32

_UNSET: Any = object()


def _no_publish(topic: str, payload: dict[str, Any]) -> None:
    pass


class Watcher(WatcherSettings):
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
        # -- option store: the options' values, as the option table names them ----------
        given = {
            "cmd": cmd,
            "args": args,
            "numprocesses": numprocesses,
            "warmup_delay": warmup_delay,
            "working_dir": working_dir,
            "shell": shell,
            "uid": uid,
            "max_retry": max_retry,
            "gid": gid,
            "send_hup": send_hup,
            "graceful_timeout": graceful_timeout,
            "executable": executable,
            "priority": priority,
            "singleton": singleton,
        }
        self.custom_options: dict[str, Any] = {}
        for key, value in options.items():
            if key in WATCHER_OPTIONS:
                given[key] = value
            else:
                self.custom_options[key] = value
        # the option table's types and checks, whichever way the watcher is made
        for key, value in given.items():
            if value != WATCHER_OPTIONS[key].default:
                try:
                    value = WATCHER_OPTIONS[key].wire(value)
                except (ValueError, TypeError) as exc:
                    raise OptionError(key, str(exc)) from None
            setattr(self, key, value)
        if self.singleton and self.numprocesses > 1:
            raise ValueError(f"watcher {name!r} is a singleton: numprocesses must be 0 or 1")
        self.env: dict[str, str] = dict(env or {})
        self.rlimits: dict[str, int | None] = dict(rlimits or {})
        self.prereload_fn = prereload_fn
        self.stream_backend = stream_backend
        self.stdout_stream_conf: dict[str, Any] | None = (
            dict(stdout_stream) if stdout_stream else None
        )
        self.stderr_stream_conf: dict[str, Any] | None = (
            dict(stderr_stream) if stderr_stream else None
        )
        self.router = OutputRouter(name, self.topic_name, self._publish_output,
                                   lambda: self.processes.values())
        self.router.set_streams({"stdout_stream": self.stdout_stream_conf,
                                 "stderr_stream": self.stderr_stream_conf})
        self.spawner = Spawner(self)
        self.hooks: dict[str, Hook] = {
            hook_name: _build_hook(hook_name, spec) for hook_name, spec in (hooks or {}).items()
        }
        self.publish: Publish = publish or _no_publish
        self.arbiter: Any = None  # set by the arbiter; given to hooks
        self.sockets: dict[str, int] = {}  # socket name -> fd, set by the arbiter

        self.state = WatcherState.STOPPED
        self.on_state_change: Callable[[Watcher], None] | None = None  # set by the arbiter
        self.processes: dict[int, Process] = {}  # pid -> process, oldest first
        self._lock = asyncio.Lock()
        self._tasks = TaskOwner(f"watcher {name}")
        self._wakeup: asyncio.Event | None = None
        self._keeper: asyncio.Task[Any] | None = None
        self._age_timers: dict[int, asyncio.TimerHandle] = {}
        self._quick_deaths = 0
        self._spawn_failures = 0
        self._wids = WorkerIds()
        self._stopped_event: asyncio.Event | None = None
        self._spawn_retry: asyncio.TimerHandle | None = None  # a before_spawn hook's Skip
        # `stopped` (the seed's "not started yet") is accepted for compatibility: a watcher
        # is always created stopped, and `autostart` decides whether the arbiter starts it.

    # -- small helpers ---------------------------------------------------------------------

    @property
    def topic_name(self) -> str:
        return self.name.lower().replace(" ", "_")

    @property
    def status(self) -> str:
        """The state as Circus reports it: ``active``, ``stopped``, ``starting``, ``stopping``."""
        return self.state.value

    def emit(self, event: str, **payload: Any) -> None:
        """Publish the event ``watcher.<name>.<event>`` (``time`` is added if missing)."""
        payload.setdefault("time", time.time())
        try:
            self.publish(f"watcher.{self.topic_name}.{event}", payload)
        except Exception:  # a broken subscriber socket must not break supervision
            log.exception("%s: could not publish %s", self.name, event)

    def _publish_output(self, topic: str, payload: dict[str, Any]) -> None:
        self.publish(topic, payload)

    def _set_state(self, new: WatcherState) -> None:
        """The one place the state changes; the allowed changes are in circus/states.py."""
        if new is self.state:
            return
        check_transition(WATCHER_TRANSITIONS, self.state, new, f"watcher {self.name}")
        log.debug("%s: %s -> %s", self.name, self.state.value, new.value)
        self.state = new
        if self.on_state_change is not None:
            self.on_state_change(self)

    def _is_stopped(self) -> bool:
        # a method, not `self.state is ...` inline: an await may have changed the state
        return self.state is WatcherState.STOPPED

    @property
    def pids(self) -> list[int]:
        return list(self.processes)

    def get_process(self, pid: int) -> Process | None:
        return self.processes.get(pid)

    # -- output: the router's --------------------------------------------------------------

    @property
    def output(self) -> OutputRing:
        """The latest output of the processes, for ``tail``."""
        return self.router.ring

    @property
    def output_wanted(self) -> bool:
        """Set by the arbiter while someone follows the output (``tail -f``)."""
        return self.router.wanted

    @output_wanted.setter
    def output_wanted(self, wanted: bool) -> None:
        self.router.wanted = wanted

    @property
    def stdout_stream(self) -> Stream | None:
        return self.router.streams["stdout_stream"]

    @stdout_stream.setter
    def stdout_stream(self, stream: Stream | None) -> None:
        self.router.streams["stdout_stream"] = stream

    @property
    def stderr_stream(self) -> Stream | None:
        return self.router.streams["stderr_stream"]

    @stderr_stream.setter
    def stderr_stream(self, stream: Stream | None) -> None:
        self.router.streams["stderr_stream"] = stream

    def spawn_env(self) -> dict[str, str]:
        """The environment every process of this watcher starts with."""
        return self.spawner.env()

    # -- spawning -------------------------------------------------------------------------

    def spawn_process(self) -> Process:
        """Start one process now (no hooks); raise OSError/ValueError if it cannot start."""
        wid = self._wids.take()
        try:
            if not getattr(self.sockets, "per_process", None):
                process = self._start_process(wid, self.sockets)
            else:
                # so_reuseport: a socket of its own for this process, closed here once
                # it is spawned
                with sockets_for_spawn(self.sockets, self.cmd, self.args, self.stdin_socket,
                                       self.use_sockets) as sockets:
                    process = self._start_process(wid, sockets)
        except BaseException:
            self._wids.release(wid)
            raise
        self.processes[process.pid] = process
        self._spawn_failures = 0
        if self.max_age > 0:
            delay = self.max_age + random.randint(0, max(self.max_age_variance, 0))
            loop = asyncio.get_running_loop()
            self._age_timers[process.pid] = loop.call_later(delay, self._expire, process)
        log.debug("%s: spawned pid %d (wid %d)", self.name, process.pid, wid)
        self.emit("spawn", process_pid=process.pid, time=process.started)
        return process

    def _start_process(self, wid: int, sockets: Mapping[str, int]) -> Process:
        process = Process(wid, self.spawner.spec(wid, sockets), name=self.name,
                          on_output=self.router.feed, on_exit=self._on_exit)
        if self.router.paused:
            process.pause_reading()
        return process

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
            process = self.spawn_process()
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            self._spawn_failures += 1
            log.error("%s: could not spawn %r: %s", self.name, self.cmd, exc)
            return None
        if "after_spawn" in self.hooks and not await self.call_hook(
            "after_spawn", pid=process.pid
        ):
            await self._stop_process(process)
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
            return None

    def _defer_spawns(self, delay: float) -> None:
        """before_spawn returned Skip: no spawn now; the keeper tries again after *delay*."""
        log.info("%s: the before_spawn hook skipped a spawn; asking again in %.1fs",
                 self.name, delay)
        loop = asyncio.get_running_loop()
        self._spawn_retry = loop.call_later(delay, self._spawn_retry_due)

    def _spawn_retry_due(self) -> None:
        self._spawn_retry = None
        self._wake()

    def _retries_exhausted(self) -> bool:
        return self.max_retry != -1 and self._spawn_failures > self.max_retry

    async def _spawn_missing(self) -> list[int]:
        """Spawn until numprocesses run; return the new pids."""
        started: list[int] = []
        count = 0
        while self.state in (WatcherState.ACTIVE, WatcherState.STARTING):
            missing = self.numprocesses - len(self.processes)
            if missing <= 0:
                break
            process = await self._spawn_guarded()
            if process is None:
                if self._is_stopped() or self._spawn_retry is not None:
                    break
                if self._retries_exhausted():
                    log.error(
                        "%s: %d spawns failed in a row, stopping the watcher",
                        self.name, self._spawn_failures,
                    )
                    await self._stop_all()
                    break
                await asyncio.sleep(BACKOFF_FIRST)
                continue
            started.append(process.pid)
            count += 1
            if self.warmup_delay > 0 and missing > 1:
                await asyncio.sleep(self.warmup_delay)
            elif count % SPAWN_BATCH == 0:
                await asyncio.sleep(0)
        return started

    # -- deaths ---------------------------------------------------------------------------

    def _on_exit(self, process: Process) -> None:
        """Called by the process as soon as its exit status is collected."""
        if self.processes.pop(process.pid, None) is not None:
            self._wids.release(process.wid)
        self.router.forget(process.pid)
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
        if process.stopping or self.state is not WatcherState.ACTIVE:
            return
        if process.age() < QUICK_DEATH:
            self._quick_deaths += 1
        else:
            self._quick_deaths = 0
        if self.respawn:
            self._wake()
        elif not self.processes:
            # respawn = false: the last process is gone, so is the watcher
            self._set_state(WatcherState.STOPPED)
            self.emit("stop")

    async def _reap_hooks(self, process: Process) -> None:
        now = time.time()
        await self.call_hook("before_reap", process_pid=process.pid, time=now)
        await self.call_hook(
            "after_reap",
            process_pid=process.pid,
            time=now,
            exit_code=process.returncode,
            process_status=process.returncode,
        )

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    async def _keep(self) -> None:
        """The keeper: respawn after deaths while the watcher is active."""
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if self._quick_deaths > 1:
                delay = min(BACKOFF_FIRST * 2 ** (self._quick_deaths - 2), BACKOFF_MAX)
                log.warning("%s: processes exit right after starting; respawning in %.1fs",
                            self.name, delay)
                await asyncio.sleep(delay)
            async with self._lock:
                if self.state is WatcherState.ACTIVE:
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
                await self._stop_process(process)

    # -- hooks ------------------------------------------------------------------------------

    async def call_hook(self, hook_name: str, **extra: Any) -> bool | Skip:
        """Run the hook *hook_name* if there is one; True if absent or it succeeded.

        A hook's :class:`~circus.hooks.Skip` is returned as is (it is truthy).
        """
        hook = self.hooks.get(hook_name)
        if hook is None:
            return True
        ok, exc = await hook.call(watcher=self, arbiter=self.arbiter, **extra)
        if exc is None:
            self.emit("hook_success", name=hook_name)
        else:
            self.emit("hook_failure", name=hook_name, error=str(exc))
        return ok

    # -- stopping processes ---------------------------------------------------------------

    def _notify_kill(self, pid: int, signum: int) -> None:
        self.emit("kill", process_pid=pid)

    async def _stop_process(
        self,
        process: Process,
        sig: int | None = None,
        graceful_timeout: float | None = None,
    ) -> int:
        sig = self.stop_signal if sig is None else sig
        timeout = self.graceful_timeout if graceful_timeout is None else graceful_timeout
        timer = self._age_timers.pop(process.pid, None)
        if timer is not None:
            timer.cancel()
        send = True
        if "before_signal" in self.hooks and not process.exited:
            send = bool(await self.call_hook("before_signal", pid=process.pid, signum=sig))
        process.mark_stopping()
        code = await process.stop(
            sig,
            timeout,
            stop_children=self.stop_children,
            notify=self._notify_kill,
            send=send,
        )
        if "after_signal" in self.hooks:
            await self.call_hook("after_signal", pid=process.pid, signum=sig)
        return code

    async def _stop_processes(self, processes: Iterable[Process], **kw: Any) -> list[int]:
        procs = list(processes)
        for process in procs:
            process.mark_stopping()  # no respawn for these, whatever order deaths come in
        await asyncio.gather(*(self._stop_process(p, **kw) for p in procs))
        return [p.pid for p in procs]

    async def _stop_all(self) -> list[int]:
        """Stop every process and leave the watcher stopped (lock held by the caller)."""
        if self.state is WatcherState.STOPPED and not self.processes:
            return []
        self._set_state(WatcherState.STOPPING)
        await self.call_hook("before_stop")
        stopped = await self._stop_processes(list(self.processes.values()))
        self._set_state(WatcherState.STOPPED)
        if self._spawn_retry is not None:  # a skipped spawn is not retried once stopped
            self._spawn_retry.cancel()
            self._spawn_retry = None
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
        self._spawn_failures = 0
        self._quick_deaths = 0
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
        return {"started": started, "kept": kept}

    async def start(self) -> dict[str, list[int]]:
        """Start the processes; on an active watcher only the missing ones.

        Returns ``{"started": [pids], "kept": [pids]}``.
        """
        async with self._lock:
            return await self._start_locked()

    async def stop(self) -> None:
        """Stop every process (stop_signal, graceful_timeout, SIGKILL); state ``stopped``."""
        async with self._lock:
            await self._stop_all()

    async def restart(self) -> dict[str, list[int]]:
        async with self._lock:
            stopped = await self._stop_all()
            result = await self._start_locked()
            return {"stopped": stopped, **result}

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
        elif sequential:
            for process in old:
                await self._stop_process(process)
                if not await self._reload_spawn(started):
                    break
            result = {"stopped": [p.pid for p in old], "started": started, "kept": []}
        else:
            for _ in range(self.numprocesses):
                if not await self._reload_spawn(started):
                    break
            await self._stop_processes(old)
            result = {"stopped": [p.pid for p in old], "started": started, "kept": []}
        # top up if spawns failed or deaths happened meanwhile
        result["started"].extend(await self._spawn_missing())
        self.emit("reload")
        log.info("%s: reloaded", self.name)
        return result

    async def _reload_spawn(self, started: list[int]) -> bool:
        """One new process of a reload, then warmup_delay; False once the watcher stopped."""
        new = await self._spawn_guarded()
        if new is not None:
            started.append(new.pid)
        elif self.state is WatcherState.STOPPED:
            return False  # a spawn hook refused: the watcher is stopped
        if self.warmup_delay > 0:
            await asyncio.sleep(self.warmup_delay)
        return True

    async def _reconcile(self) -> None:
        """Bring the process count to numprocesses: spawn or stop the oldest."""
        if self.state is not WatcherState.ACTIVE:
            return
        extra = len(self.processes) - self.numprocesses
        if extra > 0:
            await self._stop_processes(list(self.processes.values())[:extra])
        else:
            await self._spawn_missing()

    async def set_numprocesses(self, n: int) -> int:
        async with self._lock:
            n = max(int(n), 0)
            if self.singleton and n > 1:
                raise OptionError("numprocesses", "a singleton watcher runs at most one process")
            self.numprocesses = n
            await self._reconcile()
            return self.numprocesses

    async def incr(self, nb: int = 1) -> int:
        """Add *nb* processes; return the new target."""
        if self.singleton:
            return self.numprocesses
        return await self.set_numprocesses(self.numprocesses + nb)

    async def decr(self, nb: int = 1) -> int:
        """Remove *nb* processes (the oldest); return the new target."""
        if self.singleton:
            return self.numprocesses
        return await self.set_numprocesses(max(self.numprocesses - nb, 0))

    async def kill(
        self,
        pid: int | None = None,
        signum: int | None = None,
        graceful_timeout: float | None = None,
    ) -> None:
        """Stop one process (or all) like ``stop`` does; the watcher stays active and respawns."""
        if pid is not None and pid not in self.processes:
            raise KeyError(pid)
        await asyncio.gather(
            *(self.kill_process(p, signum, graceful_timeout) for p in self._targets(pid))
        )

    def _targets(self, pid: int | None) -> list[Process]:
        """Every process, or the one with *pid* (none if it is not ours)."""
        if pid is None:
            return list(self.processes.values())
        process = self.processes.get(pid)
        return [process] if process is not None else []

    @staticmethod
    def _signal_one(process: Process, signum: int, recursive: bool) -> None:
        process.send_signal(signum)
        if recursive:
            process.send_signal_children(signum, recursive=True)

    def send_signal(
        self,
        signum: int,
        pid: int | None = None,
        childpid: int | None = None,
        children: bool = False,
        recursive: bool = False,
    ) -> None:
        """Send *signum* to the processes (or one), their children, or their descendants."""
        for process in self._targets(pid):
            if childpid is not None:
                process.send_signal_child(childpid, signum)
            elif children:
                process.send_signal_children(signum, recursive=recursive)
            else:
                self._signal_one(process, signum, recursive)

    async def signal_processes(
        self,
        signum: int,
        pid: int | None = None,
        childpid: int | None = None,
        children: bool = False,
        recursive: bool = False,
    ) -> None:
        """:meth:`send_signal` with the before_signal/after_signal hooks around each process.

        A refusing before_signal keeps that process from getting the signal (SIGKILL is
        always sent). Signals to children bypass the hooks, as in Circus.
        """
        hooked = "before_signal" in self.hooks or "after_signal" in self.hooks
        if not hooked or childpid is not None or children:
            self.send_signal(signum, pid, childpid, children, recursive)
            return
        for process in self._targets(pid):
            allowed = await self.call_hook("before_signal", pid=process.pid, signum=signum)
            if not allowed and signum != signal.SIGKILL:
                continue
            self._signal_one(process, signum, recursive)
            await self.call_hook("after_signal", pid=process.pid, signum=signum)

    # -- the seed's names for these operations -----------------------------------------------

    def send_msg(self, topic: str, msg: Mapping[str, Any]) -> None:
        """Publish the event ``watcher.<name>.<topic>`` with *msg* as payload."""
        self.emit(topic, **msg)

    async def reap_processes(self) -> list[int]:
        """Collect exited processes. Exits are collected the moment they happen (pidfd),
        so this only reports the pids of processes that have exited but not yet been removed
        (none, unless called from inside an exit callback)."""
        return [pid for pid, p in self.processes.items() if p.exited]

    async def manage_processes(self) -> None:
        """Bring the running processes to ``numprocesses`` (spawn or stop the oldest)."""
        async with self._lock:
            await self._reconcile()

    async def reap_and_manage_processes(self) -> None:
        await self.reap_processes()
        await self.manage_processes()

    async def spawn_processes(self) -> list[int]:
        """Spawn the missing processes of an active watcher; return their pids."""
        async with self._lock:
            return await self._spawn_missing()

    async def kill_process(
        self,
        process: Process,
        sig: int | None = signal.SIGTERM,
        graceful_timeout: float | None = None,
    ) -> int:
        """Stop one process with *sig* (None: stop_signal), SIGKILL after *graceful_timeout*
        (None: the watcher's); it is respawned."""
        code = await self._stop_process(process, sig, graceful_timeout)
        self._wake()
        return code

    async def kill_processes(self, sig: int = signal.SIGTERM) -> None:
        await asyncio.gather(*(self.kill_process(p, sig) for p in self._targets(None)))

    def send_signal_child(self, pid: int, child_pid: int, signum: int) -> None:
        """Send *signum* to *child_pid*, a child of the watcher's process *pid*."""
        process = self.processes.get(pid)
        if process is None:
            raise KeyError(pid)
        process.send_signal_child(child_pid, signum)

    # -- option store: read and changed through the key families of circus/keys.py --------

    def options(self) -> dict[str, Any]:
        """Every option and its value, as the ``options`` command shows them."""
        result: dict[str, Any] = {}
        for key, opt in WATCHER_OPTIONS.items():
            if opt.listed:
                result[key] = getattr(self, key)
        result["env"] = dict(self.env)
        result["rlimits"] = dict(self.rlimits)
        result["stdout_stream_conf"] = _stream_conf_public(self.stdout_stream_conf)
        result["stderr_stream_conf"] = _stream_conf_public(self.stderr_stream_conf)
        result["hooks"] = {name: hook.path for name, hook in self.hooks.items()}
        for key, value in self.custom_options.items():
            result.setdefault(key, value)
        return dict(sorted(result.items()))

    def get_option(self, key: str) -> Any:
        """The value of *key* as ``get`` shows it; KeyError if the watcher has none."""
        if key in ("rlimits", "stdout_stream_conf", "stderr_stream_conf"):
            return self.options()[key]
        family = key_for(key, self.custom_options)
        if family is None:
            raise KeyError(key)
        value = family.read(self, key)
        if value is None and family.pattern.endswith(".<key>"):
            raise KeyError(key)  # a stream or custom key the watcher does not have
        return family.public(value)

    def has_hook(self, name: str) -> bool:
        return name in self.hooks

    def hook_specs(self) -> dict[str, tuple[str, bool]]:
        """``{hook: (path, ignore_failure)}``."""
        return {name: (hook.path, hook.ignore_failure) for name, hook in self.hooks.items()}

    def set_hook(self, name: str, spec: Any) -> None:
        """Install the hook *name* (a spec of :meth:`Hook.build`), or remove it (None)."""
        if spec is None:
            self.hooks.pop(name, None)
        else:
            self.hooks[name] = _build_hook(name, spec)

    def check_options(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """*changes* typed and checked as a whole; nothing is applied.

        Raises:
            OptionError: naming the key that is unknown or whose value cannot be used.
        """
        checked: dict[str, Any] = {}
        for key, value in changes.items():
            family = key_for(key, self.custom_options)
            if family is None:
                raise OptionError(key, "not a watcher option")
            try:
                checked[key] = value if value is UNSET else family.from_wire(key, value)
                if key.startswith("hooks") and value is not UNSET:
                    hooks = checked[key] if key == "hooks" else {key[6:]: checked[key]}
                    for name, spec in hooks.items():
                        Hook.build(name, spec)  # the hook can be imported
            except (ValueError, TypeError, ImportError) as exc:
                raise OptionError(key, str(exc)) from None
        table = {key: checked.get(key, getattr(self, key)) for key in WATCHER_OPTIONS}
        for key, default in (("singleton", False), ("numprocesses", 1)):
            if checked.get(key) is UNSET:
                table[key] = default
        broken = together(table)
        if broken is not None:
            raise OptionError(*broken)
        return checked

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
        needs_reload = False
        streams_changed: set[str] = set()
        for key, value in checked.items():
            family = key_for(key, self.custom_options)
            assert family is not None  # checked by check_options
            if value is UNSET:
                family.unset(self, key)
            else:
                family.write(self, key, value)
            needs_reload = needs_reload or family.reload
            if family.stream is not None:
                streams_changed.add(family.stream)
            self.emit("updated")
        self.spawner.invalidate()
        self.router.set_streams({which: getattr(self, which + "_conf")
                                 for which in streams_changed})
        if reload == "always":
            needs_reload = bool(set(checked) - {"numprocesses"})
        if needs_reload and reload != "never" and self.state is not WatcherState.STOPPED:
            await self._reload_locked(graceful=True, sequential=False)
            return True
        if "numprocesses" in checked or checked.get("respawn"):
            await self._reconcile()  # respawn switched on: replace what died meanwhile
        return False

    # -- end of the option store ------------------------------------------------------------

    # -- lifetime ------------------------------------------------------------------------------

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
        keeper, pending tasks and ``max_age`` timers are cancelled.
        """
        for process in self.processes.values():
            process.close_pipes()
        self.processes.clear()
        for timer in self._age_timers.values():
            timer.cancel()
        self._age_timers.clear()
        await self._tasks.close(timeout=1.0)

    def info(self) -> dict[int, Any]:
        return {pid: process.info() for pid, process in self.processes.items()}

    def __repr__(self) -> str:
        return f"<Watcher {self.name} {self.state.value} {len(self.processes)}/{self.numprocesses}>"


def _build_hook(name: str, spec: Any) -> Hook:
    try:
        return Hook.build(name, spec)
    except (ImportError, ValueError) as exc:
        raise OptionError(f"hooks.{name}", str(exc)) from exc


class _HookRefused(Exception):
    """A before_spawn / after_spawn hook refused: the watcher stops."""


def _stream_conf_public(conf: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if conf is None:
        return None
    return {k: v for k, v in conf.items() if isinstance(v, str | int | float | bool)}


__all__ = ["Watcher"]
