"""Every exit status of circusd's children, collected in one place.

circusd spends no descriptor per child to see it die. The kernel sends ``SIGCHLD``; the
event loop's signal handler (so on the loop thread) then peeks at the waitable children
with ``waitid(P_ALL, WEXITED | WNOHANG | WNOWAIT)`` and collects each by its pid:

* a *worker* (a pid registered with :meth:`Children.track`) gets its status passed to
  its callback, the :class:`~circus.process.Process` that drains its output and reports;
* an *orphan* (a child circusd did not start: a worker's descendant handed to circusd
  as subreaper, see :mod:`circus.reaper`) is collected and logged;
* a child of circusd's own code (a hook's ``subprocess.run``: it shares circusd's
  session, which workers and their descendants never do) is left for whoever waits
  for it.

``waitid`` reports one waitable child at a time, the oldest first, so a child that must be
left alone hides those behind it. That case is short-lived (the hook's own ``wait``
follows at once) and rare: the loop looks again after :data:`RETRY`, and once it has
waited :data:`SCAN_AFTER` it looks at each child by its pid instead.

Spawning happens in a thread of its own or in the spawn server (see :mod:`circus.spawn`
and :mod:`circus.spawnserver`), so a child may die before its pid is registered. Each
spawn is *in flight* (:meth:`Children.begin_spawn`) from before the child exists until
its pid is registered. A zombie that is not registered while a spawn is in flight may be
that spawn's child; it is counted an orphan only when it cannot be: it is not the leader
of its own session (spawned children are), or it started before the oldest spawn in
flight began (its start time in ``/proc/<pid>/stat``). Otherwise it is left until a spawn
ends, which looks again.

Where no signal handler can be installed (an event loop in a thread other than the main
one), each worker gets a pidfd registered with its loop instead, one descriptor each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from circus.kernel import boot_ticks, children_of, read_stat

log = logging.getLogger(__name__)

# A blocked peek is tried again after RETRY seconds; after SCAN_AFTER seconds blocked the
# children are looked at one by one.
RETRY = 0.002
SCAN_AFTER = 0.02

StatusCallback = Callable[[int], None]  # called with the wait status (os.waitpid's)


class _Pending:
    """A child whose spawn registered it but whose callback is not there yet."""

    def __repr__(self) -> str:
        return "PENDING"


PENDING = _Pending()
Entry = StatusCallback | _Pending | None  # None: someone else collects it (Process.wait)


@dataclass
class Children:
    """circusd's children and who collects their exit status (one per process:
    :data:`CHILDREN`)."""

    known: dict[int, Entry] = field(default_factory=dict)
    own_session: int = field(default_factory=lambda: os.getsid(0))
    _early: dict[int, int] = field(default_factory=dict)  # statuses before their callback
    _pidfds: dict[int, int] = field(default_factory=dict)
    _loop: asyncio.AbstractEventLoop | None = None
    _listeners: int = 0
    _handler: bool = False
    _scanned: bool = False  # a SIGCHLD pass ran in this loop iteration
    _retry: asyncio.TimerHandle | None = None
    _blocked_since: float | None = None
    _spawn_lock: threading.Lock = field(default_factory=threading.Lock)
    _flights: dict[int, int] = field(default_factory=dict)  # spawns in flight: boot ticks
    _serial: int = 0
    _deferred: bool = False  # a zombie waits for the spawn in flight to end
    churn: int = 0  # workers tracked plus workers collected, ever (circus/quietgc.py)

    # -- listening ------------------------------------------------------------------------

    def listen(self) -> bool:
        """Collect statuses on SIGCHLD in the running loop (refcounted). False where no
        signal handler can be had: workers then get a pidfd each."""
        self._listeners += 1
        if self._listeners > 1:
            return self._handler
        loop = asyncio.get_running_loop()
        self._loop = loop
        self.own_session = os.getsid(0)
        if threading.current_thread() is threading.main_thread():
            try:
                loop.add_signal_handler(signal.SIGCHLD, self._on_sigchld)
                self._handler = True
                # A mass stop sends thousands of SIGCHLDs and fills the loop's wakeup
                # pipe; a byte that does not fit is harmless (one pass collects them
                # all) and must not print "Exception ignored" to circusd's stderr.
                wakeup = signal.set_wakeup_fd(-1)
                signal.set_wakeup_fd(wakeup, warn_on_full_buffer=False)
            except (ValueError, RuntimeError, NotImplementedError):
                self._handler = False
        self.reap()  # what died before the handler
        return self._handler

    def unlisten(self) -> None:
        if self._listeners == 0:
            return
        self._listeners -= 1
        if self._listeners > 0:
            return
        self.reap()
        if self._handler and self._loop is not None and not self._loop.is_closed():
            self._loop.remove_signal_handler(signal.SIGCHLD)
        self._handler = False
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self._loop = None

    @property
    def listening(self) -> bool:
        """SIGCHLD is handled on the running loop (else pidfds are used)."""
        if not self._handler or self._loop is None:
            return False
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    # -- the registry ---------------------------------------------------------------------

    @contextlib.contextmanager
    def spawning(self) -> Iterator[Callable[[int], None]]:
        """Held (by any thread) while a child is made; yields the function that
        registers its pid, to be called before the block ends."""
        token = self.begin_spawn()
        try:
            yield self.register
        finally:
            self.end_spawn(token)

    def begin_spawn(self) -> int:
        """A spawn is in flight from now until :meth:`end_spawn` with the token returned
        (spawns made by the spawn server overlap: several can be in flight)."""
        with self._spawn_lock:
            self._serial += 1
            self._flights[self._serial] = boot_ticks()
            return self._serial

    def end_spawn(self, token: int) -> None:
        """The spawn *token* began is over: its pid, if any, was registered."""
        with self._spawn_lock:
            self._flights.pop(token, None)
            deferred, self._deferred = self._deferred, False
        loop = self._loop
        if deferred and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.reap)

    def register(self, pid: int) -> None:
        """*pid* was just spawned (by a spawn in flight); its callback comes later."""
        self.known.setdefault(pid, PENDING)


    def track(self, pid: int, on_status: StatusCallback | None) -> None:
        """*pid* is a worker: its status goes to *on_status* (on the loop thread), or,
        with None, to whoever calls waitpid for it (nobody else collects it)."""
        self.churn += 1
        status = self._early.pop(pid, None)
        if status is not None:
            self.known.pop(pid, None)
            if on_status is not None:
                asyncio.get_running_loop().call_soon(on_status, status)
            return
        self.known[pid] = on_status
        if on_status is not None and not self.listening:
            self._watch_pidfd(pid)

    def untrack(self, pid: int) -> None:
        self.known.pop(pid, None)
        self._early.pop(pid, None)
        self._close_pidfd(pid)

    def _watch_pidfd(self, pid: int) -> None:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:  # already collected: cannot happen for a worker
            return
        except OSError as exc:  # pragma: no cover - kernels without pidfd (< 5.3)
            raise RuntimeError("circus needs pidfd_open (Linux 5.3 or newer)") from exc
        self._pidfds[pid] = fd
        asyncio.get_running_loop().add_reader(fd, self._on_pidfd, pid)

    def _close_pidfd(self, pid: int) -> None:
        fd = self._pidfds.pop(pid, None)
        if fd is not None:
            with contextlib.suppress(RuntimeError, ValueError):
                asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)

    def _on_pidfd(self, pid: int) -> None:
        self._close_pidfd(pid)
        self._take(pid)

    @contextlib.contextmanager
    def hushed(self) -> Iterator[None]:
        """While circusd signals many of its children at once: no SIGCHLD for their exits.

        Each SIGCHLD interrupts the loop thread wherever it is, writes a byte to the
        loop's wakeup pipe and, read back, schedules a handler call: about a fifth of
        circusd's CPU time in a stop of 10,000 went there, in the middle of the loop that
        signals them. For the
        time of the block the disposition of SIGCHLD is the default, which the kernel
        treats as ignored at the source (it does not reap, unlike ``SIG_IGN``: children
        stay waitable). Afterwards the handler is back and one pass collects what
        exited meanwhile; workers with output pipes are collected at their pipes' end
        in any case.
        """
        if not self.listening:
            yield
            return
        previous = signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        try:
            yield
        finally:
            signal.signal(signal.SIGCHLD, previous)
            signal.siginterrupt(signal.SIGCHLD, False)  # as the loop installed it
            if self._loop is not None:
                self._loop.call_soon(self._on_sigchld)  # after this iteration's pass

    # -- collecting -----------------------------------------------------------------------

    def _on_sigchld(self) -> None:
        """One pass per loop iteration however many SIGCHLDs it handles (the loop runs the
        handler once per signal it read; a mass stop sends hundreds)."""
        if self._scanned or self._loop is None:
            return
        self._scanned = True
        self._loop.call_soon(self._next_iteration)
        self.reap()

    def _next_iteration(self) -> None:
        self._scanned = False

    def reap(self) -> None:
        """Collect every child that is ready and ours to collect."""
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                info = None
            if info is None:
                self._blocked_since = None
                return
            if not self._take(info.si_pid):
                self._blocked(info.si_pid)
                return

    def collect(self, pid: int) -> None:
        """*pid* has most likely exited (its output pipes reached their end): collect it
        now, by its pid. ``waitid(P_ALL)`` walks every child of circusd to find one that
        exited, so that a mass stop of N processes would cost N walks of N children."""
        if self.listening and pid in self.known:
            self._collect_worker(pid, seen=False)

    def _take(self, pid: int) -> bool:
        """Collect *pid* (``waitid`` saw it waitable) if it is ours to; False if it must
        be left as it is."""
        if pid not in self.known:
            return self._is_orphan(pid) and _collect_orphan(pid)
        return self._collect_worker(pid, seen=True)

    def _collect_worker(self, pid: int, *, seen: bool) -> bool:
        """Collect the worker *pid* with one ``waitpid`` (a ``WNOWAIT`` peek first would
        cost a second wait per process); False if it is not collected. *seen*: ``waitid``
        reported it waitable, so that ``ECHILD`` means someone else collected it; otherwise
        ``ECHILD`` means it is not ours yet (a spawn server's batch still holds it, and its
        SIGCHLD comes)."""
        entry = self.known[pid]
        if entry is None or pid in self._pidfds:
            return False  # its own waiter, or its pidfd callback, collects it
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            if not seen:
                return False
            log.warning("the exit status of pid %d was collected elsewhere", pid)
            done, status = pid, 255 << 8
        if not done:
            return False
        self._settle(pid, entry, status)
        return True

    def _settle(self, pid: int, entry: StatusCallback | _Pending, status: int) -> None:
        """*pid* was collected with *status*: hand it to its callback (or keep it for
        the callback its spawn is about to register)."""
        del self.known[pid]
        self.churn += 1
        if isinstance(entry, _Pending):
            self._early[pid] = status
        else:
            entry(status)

    def _is_orphan(self, pid: int) -> bool:
        stat = read_stat(pid)
        if stat is None:
            return True  # no /proc entry to judge by: collect it
        if stat.session == self.own_session:
            return False  # circusd's own code started it and waits for it
        with self._spawn_lock:
            since = min(self._flights.values(), default=None)
        if since is None:  # no spawn in flight: every spawned pid is registered
            return pid not in self.known
        if stat.session != pid or stat.start < since:
            return True  # cannot be the child of a spawn in flight
        self._deferred = True  # the spawn's end looks again
        return False

    def _blocked(self, pid: int) -> None:
        """A child that must be left hides the others: look again shortly."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        now = loop.time()
        if self._blocked_since is None:
            self._blocked_since = now
        elif now - self._blocked_since >= SCAN_AFTER:
            self._scan(pid)
        if self._retry is None:
            self._retry = loop.call_later(RETRY, self._retry_due)

    def _retry_due(self) -> None:
        self._retry = None
        self.reap()

    def _scan(self, blocked: int) -> None:
        """Look at every child by its pid (one ``waitid`` each), past the blocked one."""
        for pid in children_of(os.getpid()):
            if pid == blocked:
                continue
            try:
                info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                continue
            if info is not None:
                self._take(pid)


def _collect_orphan(pid: int) -> bool:
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True  # collected meanwhile by someone else
    if done:
        log.debug("reaped orphan %d (%s)", pid, os.waitstatus_to_exitcode(status))
    return bool(done)


CHILDREN = Children()

__all__ = ["CHILDREN", "PENDING", "Children"]
