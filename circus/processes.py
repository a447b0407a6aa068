"""The processes of one watcher, and what reaches them without supervising them.

:class:`ProcessSet` holds a watcher's running processes and everything that acts on them
directly: the events it publishes, its hooks, the signals a user sends, and the output
router their output goes through. :class:`~circus.watcher.Watcher` builds on it with the
supervision: the state machine, keeping N alive, respawn, backoff, ``max_age``, stopping
and reloading.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import signal
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from circus import descriptors
from circus.cgroup import WatcherCgroup
from circus.children import CHILDREN
from circus.descriptors import SharedOutput
from circus.hooks import Skip
from circus.process import Process
from circus.reaper import REAPER, Claim
from circus.spawn import Spawner, SpawnSpec
from circus.streams.router import OutputRouter
from circus.util.convert import signal_name
from circus.watcher_options import OptionStore

if TYPE_CHECKING:
    from circus.streams import Stream
    from circus.streams.ring import OutputRing
    from circus.types import ArbiterAPI

log = logging.getLogger(__name__)

Publish = Callable[[str, dict[str, Any]], None]


def _no_publish(topic: str, payload: dict[str, Any]) -> None:
    pass


def _no_change(process: Process, running: bool) -> None:
    pass


def _always() -> bool:
    return True


class ProcessSet(OptionStore):
    """A watcher's processes, events, hooks, signals and output (see the module docstring)."""

    spawner: Spawner
    _spawn_retry: asyncio.TimerHandle | None

    def _init_processes(self, publish: Publish | None) -> None:
        self.publish: Publish = publish or _no_publish
        # set by the arbiter: False while no subscriber would receive an event, so that a
        # stop of 10,000 does not build 20,000 payloads for nobody
        self.events_wanted: Callable[[], bool] = _always
        self.arbiter: ArbiterAPI | None = None  # set by the arbiter; given to hooks
        self.processes: dict[int, Process] = {}  # pid -> process, oldest first
        # set by the arbiter (circus/state.py): options changed; a process came or went
        self.on_change: Callable[[Any, list[str]], None] | None = None
        self.on_processes_changed: Callable[[Process, bool], None] = _no_change
        self.run_id = ""  # names the circusd run in each spawn's CIRCUS_ORIGIN mark
        # set by the arbiter: called with the watcher and an exit status (None: none)
        # when it stops for good without being asked to (see Watcher._ended)
        self.on_ended: Callable[[ProcessSet, int | None], None] | None = None
        self._cgroup: WatcherCgroup | None = None  # with the cgroup option (cgroup.py)
        self.router = OutputRouter(self.name, self.topic_name, self._publish_output,
                                   self._readers)
        self._shared: SharedOutput | None = None  # while descriptors are short
        self.backoff_reason: str | None = None  # a resource error holds the spawns back
        self.ended_with: int | None = None  # status of its last end on its own (depends_on)
        self._resource_delay = 0.0
        self.router.set_streams({"stdout_stream": self.stdout_stream_conf,
                                 "stderr_stream": self.stderr_stream_conf})

    def _readers(self) -> list[Any]:
        readers: list[Any] = list(self.processes.values())
        return readers + [self._shared] if self._shared is not None else readers

    # -- what a spawn costs in descriptors (circus/descriptors.py) -------------------------

    def spawn_spec(self, wid: int, sockets: Mapping[str, int]) -> SpawnSpec:
        """The spec of the next process; its output goes through the watcher's shared
        pipes when circusd's descriptor table is short."""
        spec = self.spawner.spec(wid, sockets)
        piped = tuple(name for name, pipe in (("stdout", spec.pipe_stdout),
                                              ("stderr", spec.pipe_stderr)) if pipe)
        if not piped:
            return spec
        if self._shared is None and descriptors.room() >= 2 * len(piped):
            descriptors.TABLE.took(len(piped))
            return spec
        if self._shared is None and descriptors.room() < 0:
            raise OSError(errno.EMFILE, descriptors.describe_shortage())
        if self._shared is None:
            log.warning("%s: %s. The output of the processes it starts from now on goes "
                        "through one pipe per stream, without their pids (docs/output.md)",
                        self.name, descriptors.describe_shortage(full=False))
            self._shared = SharedOutput(piped, self.router.feed)
        return dataclasses.replace(spec, shared_out=self._shared.write_ends)

    def spawns_ended(self) -> None:
        """The watcher stopped: no spawn retried (a hook's Skip, a resource error), no
        backoff, and the shared pipes go (no process uses them any more)."""
        if self._spawn_retry is not None:
            self._spawn_retry.cancel()
            self._spawn_retry = None
        self.resource_recovered()
        if self._shared is not None:
            self._shared.close()
            self._shared = None
            descriptors.TABLE.forget()

    def resource_backoff(self, exc: OSError) -> None:
        """A spawn failed for want of a resource: keep what runs, say so once, try again
        later (doubling the wait up to 5 s)."""
        reason = descriptors.describe_resource_error(exc)
        self._resource_delay = min(max(self._resource_delay * 2, 0.1), 5.0)
        if reason != self.backoff_reason:
            log.error("%s: cannot spawn: %s; retrying with backoff, the running processes "
                      "keep running", self.name, reason)
            self.emit("backoff", reason=reason, errno=exc.errno)
        self.backoff_reason = reason
        descriptors.TABLE.forget()
        loop = asyncio.get_running_loop()
        self._spawn_retry = loop.call_later(self._resource_delay, self._spawn_retry_due)

    def resource_recovered(self) -> None:
        if self.backoff_reason is not None:
            log.info("%s: spawning again (%s no more)", self.name, self.backoff_reason)
            self.backoff_reason = None
            self._resource_delay = 0.0

    def _spawn_retry_due(self) -> None:
        self._spawn_retry = None
        self._wake()

    @property
    def topic_name(self) -> str:
        return self.name.lower().replace(" ", "_")

    def emit(self, event: str, **payload: Any) -> None:
        """Publish the event ``watcher.<name>.<event>`` (``time`` is added if missing)."""
        if not self.events_wanted():
            return
        payload.setdefault("time", time.time())
        try:
            self.publish(f"watcher.{self.topic_name}.{event}", payload)
        except Exception:  # a broken subscriber socket must not break supervision
            log.exception("%s: could not publish %s", self.name, event)

    def _publish_output(self, topic: str, payload: dict[str, Any]) -> None:
        self.publish(topic, payload)

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

    def send_signal_child(self, pid: int, child_pid: int, signum: int) -> None:
        """Send *signum* to *child_pid*, a child of the watcher's process *pid*."""
        process = self.processes.get(pid)
        if process is None:
            raise KeyError(pid)
        process.send_signal_child(child_pid, signum)


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

    def info(self) -> dict[int, Any]:
        """CPU, memory and identity of each process, by pid (the ``stats`` command)."""
        return {pid: process.info() for pid, process in self.processes.items()}

    # -- stopping ---------------------------------------------------------------------------

    def _notify_kill(self, pid: int, signum: int) -> None:
        self.emit("kill", process_pid=pid)

    async def stop_process(self, process: Process, sig: int | None = None,
                           graceful_timeout: float | None = None, *,
                           orphans: bool = True) -> int:
        """Stop *process*: *sig* (default stop_signal) between the before_signal and
        after_signal hooks, SIGKILL after *graceful_timeout* (default the watcher's);
        then, unless *orphans* is false (the caller does it), what it left behind."""
        sig = self.stop_signal if sig is None else sig
        timeout = self.graceful_timeout if graceful_timeout is None else graceful_timeout
        send = True
        if "before_signal" in self.hooks and not process.exited:
            send = bool(await self.call_hook("before_signal", pid=process.pid, signum=sig))
        code = await process._stop(sig, timeout, stop_children=self.stop_children,
                                  notify=self._notify_kill, send=send)
        if orphans:  # what it left behind goes with it (circus/reaper.py)
            await REAPER.stop_orphans(_claim((process,)), sig, timeout)
        if "after_signal" in self.hooks:
            await self.call_hook("after_signal", pid=process.pid, signum=sig)
        return code

    async def stop_processes(self, processes: Iterable[Process], sig: int | None = None,
                             graceful_timeout: float | None = None) -> list[int]:
        """Stop *processes* together (as :meth:`stop_process`); return their pids."""
        procs = list(processes)
        for process in procs:
            process.mark_stopping()  # no respawn for these, whatever order deaths come in
        if (len(procs) > 1 and not self.stop_children and "before_signal" not in self.hooks
                and "after_signal" not in self.hooks
                and all(p.exit_future() is not None for p in procs)):
            await self._stop_together(procs, sig, graceful_timeout)
        else:
            await asyncio.gather(*(self.stop_process(p, sig, graceful_timeout, orphans=False)
                                   for p in procs))
        # what they left behind goes with them: one pass over circusd's children for the
        # whole batch, not one per process (n processes would cost n passes of n children)
        await REAPER.stop_orphans(
            _claim(procs), self.stop_signal if sig is None else sig,
            self.graceful_timeout if graceful_timeout is None else graceful_timeout)
        return [p.pid for p in procs]

    async def _stop_together(self, procs: list[Process], sig: int | None,
                             graceful_timeout: float | None) -> None:
        """What :meth:`stop_process` does for each, with one timer for all: the signals
        in one go, one wait for every exit, SIGKILL for those still running at the
        deadline, then what each left in its group (no task nor timer per process:
        10,000 processes stop in a fraction of the time)."""
        sig = self.stop_signal if sig is None else sig
        timeout = self.graceful_timeout if graceful_timeout is None else graceful_timeout
        deadline = time.monotonic() + max(timeout, 0.0)
        with CHILDREN.hushed():
            for process in procs:
                if process.returncode is None:
                    process.send_signal(sig)
                    self._notify_kill(process.pid, sig)
        exits = [f for f in (p.exit_future() for p in procs) if f is not None and not f.done()]
        if exits:
            await asyncio.wait(exits, timeout=max(timeout, 0.0))
        late = [p for p in procs if p.returncode is None]
        for process in late:
            log.warning("%s: pid %d ignored %s for %.1fs, sending SIGKILL", self.name,
                        process.pid, signal_name(sig), timeout)
            if process.kill_group(signal.SIGKILL):
                self._notify_kill(process.pid, signal.SIGKILL)
            process.send_signal(signal.SIGKILL)
        for process in late:
            await process._wait()
        for process in procs:
            await process.reap_group(sig, deadline)

    async def stop_leftovers(self, keep_running: bool = False) -> list[int]:
        """Stop the orphans of the watcher's earlier processes; with *keep_running*, not
        those of the processes still running. Without *keep_running*, what is left in the
        watcher's cgroup goes too, and the cgroup is removed. Returns the pids signalled."""
        keep = frozenset(p.origin for p in self.processes.values()
                         if p.origin) if keep_running else frozenset()
        pids = await REAPER.stop_orphans(Claim(watcher=self.name, keep=keep),
                                         self.stop_signal, self.graceful_timeout)
        group = self._cgroup
        if not keep_running and group is not None and not self.processes:
            swept = await group.stop(self.stop_signal, self.graceful_timeout,
                                     busy=lambda: bool(self.processes))
            if swept is not None:
                pids += swept
                if self._cgroup is group:
                    self._cgroup = None
        return pids

    # -- the cgroup option (circus/cgroup.py) -------------------------------------------------

    def cgroup_procs(self) -> int | None:
        """The ``cgroup.procs`` a new process moves itself to (the cgroup is made at the
        first spawn); None without the option. OSError if it cannot be made."""
        if not self.cgroup:
            return None
        if self._cgroup is None:
            self._cgroup = WatcherCgroup(self.name)
        return self._cgroup.procs_fd()

    def release_cgroup(self) -> None:
        """The processes were released (``rm --nostop``): they leave the watcher's cgroup."""
        if self._cgroup is not None:
            self._cgroup.release()
            self._cgroup = None

    def _ended(self, code: int | None = None) -> None:
        """The watcher stopped for good without being asked to (the arbiter decides
        whether circusd quits: ``essential``)."""
        self.ended_with = code
        if self.on_ended is not None:
            self.on_ended(self, code)

    def _wake(self) -> None:
        """A process was killed to be replaced: the watcher's keeper overrides this."""

    async def kill(
        self,
        pid: int | None = None,
        signum: int | None = None,
        graceful_timeout: float | None = None,
    ) -> None:
        """Stop one process (or all) like ``stop`` does; the watcher stays active and respawns."""
        if pid is not None and pid not in self.processes:
            raise KeyError(pid)
        await self.stop_processes(self._targets(pid), signum, graceful_timeout)
        self._wake()

    async def kill_process(
        self,
        process: Process,
        sig: int | None = signal.SIGTERM,
        graceful_timeout: float | None = None,
    ) -> int:
        """Stop one process with *sig* (None: stop_signal), SIGKILL after *graceful_timeout*
        (None: the watcher's); it is respawned."""
        code = await self.stop_process(process, sig, graceful_timeout)
        self._wake()
        return code

    async def kill_processes(self, sig: int = signal.SIGTERM) -> None:
        await self.kill(None, sig)

    # -- the seed's names --------------------------------------------------------------------

    def send_msg(self, topic: str, msg: Mapping[str, Any]) -> None:
        """Publish the event ``watcher.<name>.<topic>`` with *msg* as payload."""
        self.emit(topic, **msg)

    async def reap_processes(self) -> list[int]:
        """Collect exited processes. Exits are collected the moment they happen (pidfd),
        so this only reports the pids of processes that have exited but not yet been removed
        (none, unless called from inside an exit callback)."""
        return [pid for pid, p in self.processes.items() if p.exited]


def _claim(processes: Iterable[Process]) -> Claim:
    """The orphans of *processes*: their sessions, and their ``CIRCUS_ORIGIN`` marks."""
    procs = list(processes)
    return Claim(sessions=frozenset(p.pid for p in procs),
                 origins=frozenset(p.origin for p in procs if p.origin))
