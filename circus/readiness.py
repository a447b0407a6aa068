"""Readiness: when a watcher's process counts as up, and liveness once it is.

A process is *ready* when its watcher's ``ready`` check says so (``circus.probes`` parses
the specs and runs the checks):

==============  ===========================================================================
``spawned``     at once (Circus 0.19's behaviour, and the default)
``notify``      it sends ``READY=1`` on ``$NOTIFY_SOCKET`` (the systemd protocol)
``fd:N``        it writes a newline on its descriptor N (s6's protocol)
``tcp:``...     the check passes, polled every ``ready_interval``
``log:REGEX``   a line of its output matches
==============  ===========================================================================

A process not ready within ``ready_timeout`` is stopped and counts as a failed start
(:mod:`circus.health`); it is never assumed ready. Once ready, a ``health`` check (if any)
runs every ``health_interval``; ``health_failures`` failures in a row restart the process,
and so does a ``ready = notify`` process that sends no ``WATCHDOG=1`` within
``watchdog_sec``. Each change is published: ``ready``, ``unhealthy``.

:class:`Readiness` is one watcher's: the keeper calls :meth:`Readiness.watch` for each new
process and :meth:`Readiness.forget` when it ends; reloads, ``depends_on`` and
``circusctl wait`` await :meth:`Readiness.wait_ready`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from circus.process import Process
    from circus.spawn import SpawnSpec

log = logging.getLogger("circus.watcher")


class Waiter:
    """What one process is waiting on: its timers, tasks and notification pipe."""

    def __init__(self) -> None:
        self.timer: asyncio.TimerHandle | None = None  # ready_timeout, or the watchdog
        self.task: asyncio.Task[Any] | None = None  # waiting on fd:N
        self.poller: Any = None  # a probes.Poller: readiness, then liveness
        self.matchers: dict[str, Any] = {}  # log:REGEX, one per stream
        self.fd_note: Any = None  # fd:N

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.task is not None:
            self.task.cancel()
            self.task = None
        if self.poller is not None:
            self.poller.cancel()
            self.poller = None
        if self.fd_note is not None:
            self.fd_note.close()
            self.fd_note = None


class Readiness:
    """The readiness and liveness of one watcher's processes."""

    def __init__(self, owner: Any) -> None:
        self.owner = owner  # the Watcher: options, emit, processes, the restart of one
        self._waiters: dict[int, Waiter] = {}
        self._ready: dict[int, asyncio.Event] = {}

    # -- the spec --------------------------------------------------------------------------

    @property
    def kind(self) -> str:
        text = str(self.owner.ready or "spawned")
        return text.split(":", 1)[0]

    def spec_for(self, wid: int) -> Any:
        """The ``ready`` spec with worker *wid*'s templates filled in."""
        from circus import probes

        return probes.parse_ready(self.owner.spawner.fill(self.owner.ready, wid))

    def health_spec_for(self, process: Process) -> Any:
        from circus import probes

        return probes.parse_health(self.owner.spawner.fill(self.owner.health, process.wid))

    # -- a new process -----------------------------------------------------------------------

    def prepare_spawn(self) -> Any:
        """Before a spawn: for ``fd:N``, the pipe whose write end the child gets as N."""
        if self.kind != "fd":
            return None
        from circus import probes

        return probes.FdNotification()

    def shape(self, spec: SpawnSpec, fd_note: Any, wid: int) -> SpawnSpec:
        """The spawn spec with what the check needs: ``$NOTIFY_SOCKET`` (and the
        watchdog's ``WATCHDOG_USEC``), or the ``fd:N`` pipe as descriptor N."""
        kind = self.kind
        if kind == "notify":
            address = self.owner.notify_address()
            env = dict(spec.env)
            if address:
                env["NOTIFY_SOCKET"] = address
            if self.owner.watchdog_sec > 0:
                env["WATCHDOG_USEC"] = str(int(self.owner.watchdog_sec * 1e6))
            return dataclasses.replace(spec, env=env)
        if fd_note is not None:
            return dataclasses.replace(spec, ready_fd=(fd_note.write_fd,
                                                       self.spec_for(wid).fd))
        return spec

    def watch(self, process: Process, fd_note: Any = None) -> None:
        """A process was adopted: start waiting for it to be ready."""
        kind = self.kind
        if kind == "spawned":
            self._became_ready(process, quiet=True)
            return
        waiter = self._waiters[process.pid] = Waiter()
        loop = asyncio.get_running_loop()
        waiter.timer = loop.call_later(max(self.owner.ready_timeout, 0.0), self._too_late,
                                       process)
        if kind == "log":
            from circus import probes

            pattern = self.spec_for(process.wid).pattern
            waiter.matchers = {name: probes.LogMatcher(pattern)
                               for name in ("stdout", "stderr")}
        elif kind == "fd" and fd_note is not None:
            fd_note.close_write()
            waiter.fd_note = fd_note
            waiter.task = self._spawn(self._wait_fd(process, fd_note), f"ready-fd-{process.pid}")
        elif kind != "notify":
            def result(reason: str | None) -> None:
                if reason is None:
                    self._became_ready(process)

            waiter.poller = self._poller(
                self.spec_for(process.wid), self.owner.ready_interval,
                min(max(self.owner.ready_interval, 1.0), 10.0), until_pass=True,
                on_result=result)

    def forget(self, process: Process) -> None:
        waiter = self._waiters.pop(process.pid, None)
        if waiter is not None:
            waiter.cancel()
        event = self._ready.pop(process.pid, None)
        if event is not None:
            event.set()  # whoever waits sees it gone

    def close(self) -> None:
        for waiter in self._waiters.values():
            waiter.cancel()
        self._waiters.clear()

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = self.owner._tasks.spawn(coro, name=name)
        return task

    # -- what makes a process ready ------------------------------------------------------------

    def output(self, pid: int, name: str, data: bytes) -> None:
        """A chunk of a process's *name* stream (``log:REGEX``)."""
        waiter = self._waiters.get(pid)
        matcher = waiter.matchers.get(name) if waiter is not None else None
        if matcher is None or waiter is None:
            return
        if matcher.feed(data):
            waiter.matchers = {}
            process = self.owner.processes.get(pid)
            if process is not None:
                self._became_ready(process)

    def _poller(self, spec: Any, interval: float, timeout: float, *, until_pass: bool,
                on_result: Callable[[str | None], object], delay: float = 0.0) -> Any:
        from circus import probes

        poller = probes.Poller(spec, interval=max(interval, 0.01), timeout=max(timeout, 0.01),
                               on_result=on_result, until_pass=until_pass,
                               env=self.owner.spawner.env(), cwd=self.owner.working_dir,
                               delay=delay)
        poller.start()
        return poller

    def notified(self, process: Process, fields: Mapping[str, str]) -> None:
        """A ``$NOTIFY_SOCKET`` message from *process*."""
        if "STATUS" in fields:
            process.status_text = fields["STATUS"]
        waiter = self._waiters.get(process.pid)
        if fields.get("READY") == "1" and not process.ready and self.kind == "notify":
            self._became_ready(process)
        if waiter is None:
            return
        if "EXTEND_TIMEOUT_USEC" in fields and not process.ready:
            with contextlib.suppress(ValueError):
                extra = int(fields["EXTEND_TIMEOUT_USEC"]) / 1e6
                self._rearm(process, waiter, extra, self._too_late)
        if fields.get("WATCHDOG") == "1" and process.ready and self.owner.watchdog_sec > 0:
            self._rearm(process, waiter, self.owner.watchdog_sec, self._watchdog_missed)
        if fields.get("STOPPING") == "1":
            process.status_text = process.status_text or "stopping"

    def _rearm(self, process: Process, waiter: Waiter, delay: float,
               then: Callable[[Process], None]) -> None:
        if waiter.timer is not None:
            waiter.timer.cancel()
        waiter.timer = asyncio.get_running_loop().call_later(max(delay, 0.0), then, process)

    async def _wait_fd(self, process: Process, fd_note: Any) -> None:
        if await fd_note.wait():
            self._became_ready(process)
        fd_note.close()

    def _became_ready(self, process: Process, quiet: bool = False) -> None:
        if process.exited or process.ready:
            return
        process.ready_after = max(time.time() - process.started, 0.0)
        waiter = self._waiters.get(process.pid)
        if waiter is not None:
            waiter.cancel()
        elif self.owner.health:
            waiter = self._waiters[process.pid] = Waiter()
        if waiter is not None:
            if self.owner.health:
                waiter.poller = self._liveness(process)
            if self.kind == "notify" and self.owner.watchdog_sec > 0:
                self._rearm(process, waiter, self.owner.watchdog_sec, self._watchdog_missed)
        event = self._ready.pop(process.pid, None)
        if event is not None:
            event.set()
        if not quiet:
            log.info("%s: pid %d ready after %.3fs", self.owner.name, process.pid,
                     process.ready_after)
            self.owner.emit("ready", process_pid=process.pid,
                            after=round(process.ready_after, 6))
        self.owner.on_ready(process)

    def _too_late(self, process: Process) -> None:
        """ready_timeout passed: stopped, and a failed start."""
        if process.exited or process.ready or process.stopping:
            return
        reason = f"not ready within {self.owner.ready_timeout:g}s ({self.owner.ready})"
        log.warning("%s: pid %d %s; stopping it", self.owner.name, process.pid, reason)
        self.owner.emit("unready", process_pid=process.pid, reason=reason)
        self.owner.not_ready(process, reason)

    # -- liveness ------------------------------------------------------------------------

    def _liveness(self, process: Process) -> Any:
        limit = max(self.owner.health_failures, 1)
        poller: Any = None

        def result(reason: str | None) -> None:
            if reason is not None and poller is not None and poller.failures >= limit:
                poller.cancel()
                self._unhealthy(process, f"{poller.failures} failed health checks in a "
                                         f"row (last: {reason})")

        interval = self.owner.health_interval
        poller = self._poller(self.health_spec_for(process), interval,
                              self.owner.health_timeout, until_pass=False,
                              on_result=result, delay=interval)
        return poller

    def _watchdog_missed(self, process: Process) -> None:
        if process.exited or process.stopping:
            return
        self._unhealthy(process, f"no WATCHDOG=1 within {self.owner.watchdog_sec:g}s")

    def _unhealthy(self, process: Process, reason: str) -> None:
        log.warning("%s: pid %d unhealthy: %s; restarting it", self.owner.name, process.pid,
                    reason)
        self.owner.emit("unhealthy", process_pid=process.pid, reason=reason)
        self.owner.restart_process(process)

    # -- waiting -------------------------------------------------------------------------

    async def wait_ready(self, processes: Iterable[Process], limit: float) -> str | None:
        """Wait until every one of *processes* is ready; the reason if one is not (it
        exited, or *limit* seconds passed)."""
        pending: list[tuple[Process, asyncio.Event]] = []
        for process in processes:
            if process.ready:
                continue
            if process.exited:
                return f"pid {process.pid} exited before it was ready"
            event = self._ready.setdefault(process.pid, asyncio.Event())
            pending.append((process, event))
        current: Process | None = None
        try:
            async with asyncio.timeout(limit):
                for current, event in pending:
                    await event.wait()
                    if not current.ready:
                        return (f"pid {current.pid} ended before it was ready"
                                if current.exited or current.stopping
                                else f"pid {current.pid} not ready")
        except TimeoutError:
            pid = current.pid if current is not None else "?"
            return f"pid {pid} not ready within {limit:g}s"
        return None


class NotifyHub:
    """circusd's one ``$NOTIFY_SOCKET`` for every watcher with ``ready = notify``.

    An abstract address (no file, so workers running as other users can send too; the
    kernel's sender pid is what authenticates a message). A message goes to the process
    with the sender's pid, or with the pid of its nearest ancestor among them (a script
    that does not ``exec`` its server); a sender that is no worker's is ignored.
    """

    def __init__(self, watchers: Callable[[], Iterable[Any]]) -> None:
        import os

        from circus.notify import NotifyServer

        self._watchers = watchers
        self._server = NotifyServer(f"@circus/{os.getpid()}/{id(self):x}/notify",
                                    self._message)
        self._server.open()

    @property
    def address(self) -> str:
        return self._server.address

    def _message(self, pid: int, fields: dict[str, str]) -> None:
        from circus.kernel import read_stat

        for _ in range(8):  # the sender, then its ancestors
            for watcher in self._watchers():
                process = watcher.processes.get(pid)
                if process is not None:
                    watcher.readiness.notified(process, fields)
                    return
            stat = read_stat(pid)
            if stat is None or stat.ppid <= 1:
                return
            pid = stat.ppid

    def close(self) -> None:
        self._server.close()


__all__ = ["NotifyHub", "Readiness"]
