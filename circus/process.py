"""Process: one child, from spawn to the collection of its exit status.

How deaths are seen
-------------------
By :mod:`circus.children`: on SIGCHLD the event loop collects the status of every child
that exited and hands it to its Process (:meth:`Process._on_status`). No descriptor per
child, no thread per child, no polling, and never a status that belongs to someone else.

Output
------
stdout/stderr, when piped, are non-blocking pipes registered with the loop. Whatever
the child wrote before it exited is drained before its exit is reported, so the last
lines are never lost. A grandchild that keeps the pipe open gets a short grace period
before our end is closed.

Spawning
--------
What to start is one :class:`~circus.spawn.SpawnSpec`. The usual path is a single
``posix_spawn`` call (glibc uses vfork + exec), the program looked up on the child's
``PATH``, made in circusd's spawning thread without the interpreter
lock (:meth:`Process.start`). A spec that sets a user, a group, a umask, ``rlimits``,
a ``pdeathsig`` or a working directory other than circusd's (or passes descriptors on a
libc whose posix_spawn cannot) goes through ``subprocess.Popen`` instead, without
``preexec_fn`` so that CPython can still use vfork; only ``rlimits`` and ``pdeathsig`` need a
``preexec_fn``. Each child is the leader of a new session and process group, so a final
SIGKILL reaches everything it started that did not leave the group. What it leaves
outside its group is the business of :mod:`circus.reaper`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any

from circus.children import CHILDREN
from circus.kernel import children_of
from circus.reaper import ORIGIN_VAR
from circus.spawn import Pipes, SpawnSpec, build_argv, start_child, start_child_soon
from circus.states import PROCESS_TRANSITIONS, ProcessState, check_transition
from circus.syncapi import dual, offline_when
from circus.util.convert import cpu_time_text, human_bytes, signal_name
from circus.util.imports import lazy_import

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import psutil
else:
    psutil = lazy_import("psutil")  # only stats and children need it

# Values of Process.status, as Circus exposes them.
RUNNING = 0
DEAD_OR_ZOMBIE = 1
UNEXISTING = 2
OTHER = 3

# How long a grandchild holding an output pipe open may keep us reading after the
# process itself exited.
PIPE_GRACE = 1.0
READ_SIZE = 65536


OutputCallback = Callable[["Process", str, bytes], None]
ExitCallback = Callable[["Process"], None]
SignalCallback = Callable[[int, int], None]


def _loopless(process: Process, *args: Any, **kwargs: Any) -> bool:
    return process._loop is None  # started outside any loop: wait() polls, no loop needed


class Process:
    """One child process.

    Args:
        wid: the worker id, unique within the watcher (``$(circus.wid)``).
        spec: how to start it (command line already substituted, environment, user,
            limits, descriptors): see :class:`~circus.spawn.SpawnSpec`. Or, as Circus
            has it, the command line, followed by ``args``, ``working_dir``, ``shell``,
            ``uid``, ``gid``, ``env`` (the whole environment), ``rlimits``,
            ``executable`` and any other field of the spec as a keyword.
        name: the watcher's name, for logs.
        on_output: called with (process, "stdout" or "stderr", chunk) for what is read
            from a piped stream.
        on_exit: called with the process once its exit status is collected.
        spawn: start the child at once (as Circus does); otherwise call :meth:`spawn`.

    :attr:`state` is its life cycle (:class:`~circus.states.ProcessState`); the numeric
    :attr:`status` is what Circus reports of the running process.
    """

    def __init__(
        self,
        wid: int,
        spec: SpawnSpec | str,
        *seed_args: Any,
        name: str = "",
        on_output: OutputCallback | None = None,
        on_exit: ExitCallback | None = None,
        spawn: bool = True,
        **spec_fields: Any,
    ) -> None:
        if isinstance(spec, str):
            fields = ("args", "working_dir", "shell", "uid", "gid", "env", "rlimits",
                      "executable")
            if len(seed_args) > len(fields):
                raise TypeError(f"Process() takes at most {len(fields) + 2} positional "
                                "arguments")
            spec_fields.update(zip(fields, seed_args, strict=False))
            spec_fields["env"] = dict(spec_fields.get("env") or {})
            spec_fields["rlimits"] = dict(spec_fields.get("rlimits") or {})
            spec = SpawnSpec(spec, **spec_fields)
        elif seed_args or spec_fields:
            raise TypeError("Process(wid, spec): the spec already says how to start it")
        self.wid = wid
        self.spec = spec
        self.name = name
        self.on_output = on_output
        self.on_exit = on_exit

        self.state = ProcessState.CREATED
        self.pid = 0
        self.started = 0.0  # epoch seconds
        self.returncode: int | None = None  # exit status, or -signal
        self.restarts = 0  # how many processes ran in this one's place before it
        self.ready_after: float | None = None  # seconds from spawn to ready (readiness.py)
        self.status_text: str | None = None  # its last STATUS= (ready = notify)
        self._popen: subprocess.Popen[bytes] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._exited: asyncio.Future[int] | None = None
        self._pipes: dict[int, tuple[str, IO[bytes]]] = {}
        self._pipe_timer: asyncio.TimerHandle | None = None
        self._reading_paused = False
        self._cpu_mark: tuple[float, float] | None = None  # CPU seconds, when (stats)
        if spawn:
            self.spawn()

    # -- what it runs (read from the spec) -------------------------------------------------

    @property
    def cmd(self) -> str:
        return self.spec.cmd

    @property
    def args(self) -> str | Sequence[str] | None:
        return self.spec.args

    @property
    def env(self) -> Mapping[str, str]:
        return self.spec.env

    @property
    def working_dir(self) -> str | None:
        return self.spec.working_dir

    @property
    def uid(self) -> int | str | None:
        return self.spec.uid

    @property
    def gid(self) -> int | str | None:
        return self.spec.gid

    @property
    def rlimits(self) -> Mapping[str, int | None]:
        return self.spec.rlimits

    @property
    def executable(self) -> str | None:
        return self.spec.executable

    @property
    def origin(self) -> str | None:
        """The ``CIRCUS_ORIGIN`` mark its descendants inherit (see circus/reaper.py)."""
        return self.spec.env.get(ORIGIN_VAR)

    # -- life cycle ------------------------------------------------------------------------

    def _set_state(self, new: ProcessState) -> None:
        check_transition(PROCESS_TRANSITIONS, self.state, new, f"{self.name} pid {self.pid}")
        self.state = new

    @property
    def stopping(self) -> bool:
        """circusd asked it to stop (it may have exited since): no respawn for it."""
        return self.state in (ProcessState.STOPPING, ProcessState.STOPPED)

    def mark_stopping(self) -> None:
        """Record that circusd is stopping it; nothing once it has exited."""
        if self.state is ProcessState.RUNNING:
            self._set_state(ProcessState.STOPPING)

    # -- spawning --------------------------------------------------------------------

    def spawn(self) -> None:
        """Start the child now, in this thread. Raises OSError (missing program, bad
        cwd, …) or ValueError."""
        self._started(*start_child(self.spec))

    def loop_for_calls(self) -> asyncio.AbstractEventLoop | None:
        """The loop it was started in: where a call from plain code runs (syncapi.py)."""
        return self._loop

    async def _start(self) -> None:
        """Start the child from circusd's spawning thread (see :mod:`circus.spawn`): the
        event loop runs on meanwhile. Raises as :meth:`spawn`."""
        made = asyncio.ensure_future(start_child_soon(self.spec))
        try:
            result = await asyncio.shield(made)
        except asyncio.CancelledError:
            # the child is made regardless: know it (so it is stopped), then give up
            with contextlib.suppress(Exception):
                self._started(*await made)
            raise
        self._started(*result)

    # circusd's own code awaits the plain coroutines (_start, _wait, _stop): a spawn or a
    # stop of thousands of processes pays nothing for syncapi's dispatch. Library callers
    # get the dual forms.
    start = dual(_start)

    def _started(self, pid: int, popen: subprocess.Popen[bytes] | None, pipes: Pipes) -> None:
        self.pid, self._popen, self._pipes = pid, popen, pipes
        self.started = time.time()
        self._set_state(ProcessState.RUNNING)
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None  # used without an event loop: wait() polls instead
        if self._loop is None:
            CHILDREN.track(pid, None)  # wait() collects it
            return
        self._exited = self._loop.create_future()
        for fd in self._pipes:
            self._loop.add_reader(fd, self._read_pipe, fd)
        CHILDREN.track(pid, self._on_status)

    # -- the child's exit ---------------------------------------------------------------

    def _collect(self, *, block: bool) -> bool:
        """Collect the status ourselves (a process started outside an event loop)."""
        try:
            pid, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            log.warning("%s: exit status of pid %d was collected elsewhere", self.name, self.pid)
            pid, status = self.pid, 255 << 8
        if pid == 0:
            return False
        CHILDREN.untrack(self.pid)
        self._on_status(status)
        return True

    def _on_status(self, status: int) -> None:
        """The child exited with the wait *status*: drain its output, report."""
        self.returncode = os.waitstatus_to_exitcode(status)
        self._set_state(ProcessState.STOPPED if self.stopping else ProcessState.EXITED)
        if self._popen is not None:
            # Tell Popen the child is gone, so it never waits for (or reuses) this pid.
            self._popen.returncode = self.returncode
        self._drain_pipes()
        if self._exited is not None and not self._exited.done():
            self._exited.set_result(self.returncode)
        if self.on_exit is not None:
            self.on_exit(self)

    # -- output -------------------------------------------------------------------------

    def _read_pipe(self, fd: int) -> None:
        entry = self._pipes.get(fd)
        if entry is None:
            return
        name, pipe = entry
        try:
            data = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close_pipe(fd)
            if not self._pipes and self.returncode is None and self._loop is not None:
                CHILDREN.collect(self.pid)  # it has most likely exited: by its pid
            return
        if self.on_output is not None:
            self.on_output(self, name, data)

    def _drain_pipes(self) -> None:
        """Read everything the child left in its pipes; keep a grandchild's open a moment."""
        for fd in list(self._pipes):
            name = self._pipes[fd][0]
            while True:
                try:
                    data = os.read(fd, READ_SIZE)
                except BlockingIOError:
                    break
                except OSError:
                    data = b""
                if not data:
                    self._close_pipe(fd)
                    break
                if self.on_output is not None:
                    self.on_output(self, name, data)
        if self._pipes and self._loop is not None:
            self._pipe_timer = self._loop.call_later(PIPE_GRACE, self.close_pipes)

    def pause_reading(self) -> None:
        """Stop reading the pipes: the child blocks once they are full (backpressure)."""
        if self._loop is not None and not self._reading_paused:
            self._reading_paused = True
            for fd in self._pipes:
                self._loop.remove_reader(fd)

    def resume_reading(self) -> None:
        if self._loop is not None and self._reading_paused:
            self._reading_paused = False
            for fd in self._pipes:
                self._loop.add_reader(fd, self._read_pipe, fd)

    def _close_pipe(self, fd: int) -> None:
        entry = self._pipes.pop(fd, None)
        if entry is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(fd)
        entry[1].close()

    def close_pipes(self) -> None:
        """Stop reading the child's output (a grandchild may still hold the pipes)."""
        if self._pipe_timer is not None:
            self._pipe_timer.cancel()
            self._pipe_timer = None
        for fd in list(self._pipes):
            self._close_pipe(fd)

    # -- waiting and stopping -------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Its watcher's ``ready`` check passed (at once with ``ready = spawned``)."""
        return self.ready_after is not None

    @property
    def exited(self) -> bool:
        return self.returncode is not None

    async def _wait(self) -> int:
        """Wait for the child to exit; return its exit status (or minus the signal)."""
        if self.returncode is not None:
            return self.returncode
        if self._exited is None:
            # spawned outside an event loop, so there is no pidfd reader: poll cheaply
            while not self._collect(block=False):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            assert self.returncode is not None
            return self.returncode
        return await asyncio.shield(self._exited)

    wait = dual(offline_when(_loopless)(_wait))

    def send_signal(self, sig: int) -> None:
        """Send *sig* to the process; nothing if it has already been collected."""
        if self.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    def kill_group(self, sig: int = signal.SIGKILL) -> bool:
        """Send *sig* to the whole process group; False if the group is gone."""
        if not self.pid:
            return False
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def group_alive(self) -> bool:
        return self.kill_group(0)

    async def _stop(
        self,
        sig: int = signal.SIGTERM,
        graceful_timeout: float = 30.0,
        *,
        stop_children: bool = False,
        notify: SignalCallback | None = None,
        send: bool = True,
    ) -> int:
        """Ask the process to stop with *sig*; SIGKILL its group after *graceful_timeout*.

        Processes it left in its group after exiting get the rest of the timeout, then
        SIGKILL, so a stop leaves nothing of the process behind.

        Args:
            notify: called with (pid, signum) for each signal sent.
            send: False skips the stop signal (a before_signal hook refused it): the
                process still gets SIGKILL once graceful_timeout has passed.

        Returns:
            The exit status (minus the signal number if it was killed by one).
        """
        self.mark_stopping()
        deadline = time.monotonic() + max(graceful_timeout, 0.0)
        if self.returncode is None:
            if send:
                targets = self.children_pids() if stop_children else []
                self.send_signal(sig)
                if notify is not None:
                    notify(self.pid, sig)
                for child in targets:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(child, sig)
                        if notify is not None:
                            notify(child, sig)
            try:
                async with asyncio.timeout(max(deadline - time.monotonic(), 0)):
                    await self._wait()
            except TimeoutError:
                log.warning(
                    "%s: pid %d ignored %s for %.1fs, sending SIGKILL",
                    self.name, self.pid, signal_name(sig), graceful_timeout,
                )
                if self.kill_group(signal.SIGKILL) and notify is not None:
                    notify(self.pid, signal.SIGKILL)
                self.send_signal(signal.SIGKILL)
                await self._wait()
        await self.reap_group(sig, deadline)
        assert self.returncode is not None
        return self.returncode

    stop = dual(offline_when(_loopless)(_stop))

    def exit_future(self) -> asyncio.Future[int] | None:
        """Done once the exit status is collected; None outside an event loop."""
        return self._exited

    async def reap_group(self, sig: int, deadline: float) -> None:
        """Stop what the process left behind in its process group."""
        if not self.group_alive():
            return
        self.kill_group(sig)
        while self.group_alive():
            if time.monotonic() >= deadline:
                self.kill_group(signal.SIGKILL)
                return
            await asyncio.sleep(0.02)

    # -- information -----------------------------------------------------------------------

    @property
    def stdout(self) -> IO[bytes] | None:
        """The read end of the child's stdout pipe (None when it is not piped)."""
        return self._pipe("stdout")

    @property
    def stderr(self) -> IO[bytes] | None:
        return self._pipe("stderr")

    def _pipe(self, name: str) -> IO[bytes] | None:
        for pipe_name, pipe in self._pipes.values():
            if pipe_name == name:
                return pipe
        return None

    def age(self) -> float:
        """Seconds since the process started."""
        return time.time() - self.started

    @property
    def status(self) -> int:
        if self.returncode is not None:
            return UNEXISTING
        try:
            st = self._ps().status()
        except psutil.NoSuchProcess:
            return UNEXISTING
        if st in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            return DEAD_OR_ZOMBIE
        if st in (psutil.STATUS_RUNNING, psutil.STATUS_SLEEPING, psutil.STATUS_DISK_SLEEP):
            return RUNNING
        return OTHER

    def _ps(self) -> psutil.Process:
        # a new one each time: one kept per process would cost circusd ~2 KiB each
        return psutil.Process(self.pid)

    def _cpu_percent(self, proc: psutil.Process) -> float:
        """psutil's cpu_percent, from two figures kept here instead of a psutil object."""
        times = proc.cpu_times()
        used, now = times.user + times.system, time.monotonic()
        last, self._cpu_mark = self._cpu_mark, (used, now)
        if last is None or now <= last[1]:
            return 0.0
        return round(100 * (used - last[0]) / (now - last[1]), 1)

    def children_pids(self, recursive: bool = False) -> list[int]:
        """The pids of the process's children (all descendants with *recursive*)."""
        if self.returncode is not None:
            return []
        # the kernel's own children lists: psutil would read the stat of every process
        # on the host to find them, once per process stopped with stop_children
        found = children_of(self.pid)
        if not recursive:
            return found
        result, stack = [], list(found)
        while stack:
            pid = stack.pop()
            result.append(pid)
            stack.extend(children_of(pid))
        return result

    def children(self) -> list[int]:
        return self.children_pids()

    def is_child(self, pid: int) -> bool:
        return pid in self.children_pids()

    def send_signal_child(self, pid: int, sig: int) -> None:
        """Send *sig* to the child *pid* of this process (ValueError if it is not one)."""
        if not self.is_child(pid):
            raise ValueError(f"{pid} is not a child of process {self.pid}")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)

    def send_signal_children(self, sig: int, recursive: bool = False) -> None:
        for pid in self.children_pids(recursive=recursive):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def info(self) -> dict[str, Any] | str:
        """CPU, memory and identity of the process, as the ``stats`` command reports it."""
        if self.returncode is not None:
            return "No such process (stopped?)"
        try:
            proc = self._ps()
            info = process_info(proc, cpu=self._cpu_percent)
        except psutil.NoSuchProcess:
            return "No such process (stopped?)"
        info["age"] = self.age()
        info["started"] = self.started
        info["wid"] = self.wid
        return info

    def __repr__(self) -> str:
        return f"<Process {self.name}#{self.wid} pid={self.pid} rc={self.returncode}>"


def describe_exit(code: int | None) -> str:
    """An exit status for a log line: ``status 3``, ``killed by SIGKILL``."""
    if code is None:
        return "unknown status"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"status {code}"


def process_info(proc: psutil.Process, *, with_children: bool = True,
                 cpu: Callable[[psutil.Process], float] | None = None) -> dict[str, Any]:
    """The ``<procinfo>`` mapping of PROTOCOL.md §5 for one psutil process."""
    info: dict[str, Any] = {"pid": proc.pid}
    with proc.oneshot():
        for key, getter in (
            ("cpu", lambda: cpu(proc) if cpu is not None else proc.cpu_percent(interval=None)),
            ("mem", lambda: round(proc.memory_percent(), 3)),
            ("mem_info1", lambda: human_bytes(proc.memory_info().rss)),
            ("mem_info2", lambda: human_bytes(proc.memory_info().vms)),
            ("ctime", lambda: cpu_time_text(sum(proc.cpu_times()[:2]))),
            ("username", proc.username),
            ("nice", proc.nice),
            ("cmdline", lambda: os.path.basename((proc.cmdline() or [proc.name()])[0])),
            ("create_time", proc.create_time),
        ):
            try:
                info[key] = getter()
            except psutil.NoSuchProcess:
                raise
            except (psutil.Error, OSError, IndexError):
                info[key] = "N/A"
    info["age"] = time.time() - info["create_time"] if info["create_time"] != "N/A" else "N/A"
    children: list[dict[str, Any]] = []
    if with_children:
        for pid in children_of(proc.pid):
            with contextlib.suppress(psutil.Error):
                children.append(process_info(psutil.Process(pid), with_children=False))
    info["children"] = children
    return info


__all__ = ["Process", "SpawnSpec", "build_argv", "describe_exit", "process_info"]
