"""What workers leave behind: circusd as a child subreaper.

A worker that forks and exits, or whose child calls ``setsid()`` and outlives it, leaves
*orphans*. Normally they are handed to init and nobody supervises them again. While an
arbiter runs, circusd marks itself a child subreaper (``prctl(PR_SET_CHILD_SUBREAPER)``):
the kernel hands the orphaned descendants of its workers to circusd instead. This module
then does three things with them.

Reaping
-------
Workers are collected by their own pidfd (see :mod:`circus.process`); an orphan has
none. On ``SIGCHLD`` (a loop signal handler, so on the loop thread) circusd lists its
children (``/proc/self/task/*/children``, the kernel's own list, a few hundred bytes)
and collects, with ``waitpid(pid, WNOHANG)`` on that one pid, each child that is

* a zombie (``/proc/<pid>/stat`` state ``Z``),
* not a process circusd started itself (the pids registered with :func:`Reaper.track`:
  every :class:`~circus.process.Process`; their statuses belong to their pidfd callback),
* not in circusd's own session: workers and their descendants never are (each worker
  leads a new session, and a session cannot be joined, only created). A child that
  circusd's own code starts without a new session (a hook's ``subprocess.run``) is
  therefore never collected here and keeps its exit status for whoever waits for it.

``waitid(P_ALL, WNOWAIT)`` was the other candidate: it peeks at *one* waitable child at a
time, so a zombie that must be left alone (a worker waiting for its pidfd callback, a
hook's child) hides every other zombie behind it until it is collected. Reading the
children list names them all at once and costs about as much. A zombie waits for the
loop to run the signal handler: well under 10 ms unless the loop is busy. What holds it
longest is spawning: ``posix_spawn`` keeps the interpreter until the new child has been
scheduled and has called ``exec``, under a millisecond on an idle machine but 10-50 ms
when every core is busy; a watcher's spawn loop yields after any spawn that ends 5 ms
after its last yield. Where no signal handler can be installed (an arbiter running in
a thread other than the main one), the same scan runs every :data:`POLL` seconds.

The registry (:meth:`Reaper.track`) is the set of workers' pids: their statuses belong to
their own pidfd callback.

Knowing where an orphan came from
---------------------------------
Every process a watcher spawns gets ``CIRCUS_ORIGIN=<circusd pid>.<serial>.<run>.<watcher>``
in its environment (:class:`Origin`), a value unique to that spawn; descendants
inherit it unless they clear their environment. An orphan is attributed by its session
(a session id that is the pid of one of the watcher's processes: it never called
``setsid()``) or by that variable (``/proc/<pid>/environ``, readable by circusd as the
same user or as root). A descendant that both clears its environment *and* starts a
new session escapes attribution: it is still reaped, but is not stopped with its
watcher (when circusd is PID 1, ``quit`` stops it too).

Stopping them with their watcher
--------------------------------
When a process is stopped (``stop``, ``reload``, ``rm``, ``quit``, ``decr``, ``kill``,
``max_age``), once it has exited, the orphans attributed to it, and everything below
them, get the watcher's ``stop_signal``; after ``graceful_timeout`` whatever is left
gets ``SIGKILL`` (:meth:`Reaper.stop_orphans`). Descendants found once stay claimed, so
a great-grandchild whose parent dies in between is still stopped. ``stop``, ``rm`` and
``quit`` also sweep the orphans of the watcher's earlier processes (those that died on
their own), and ``reload`` those of every process that is no longer running.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from circus.children import CHILDREN
from circus.kernel import (
    PR_SET_CHILD_SUBREAPER,
    Stat,
    children_of,
    is_subreaper,
    pdeathsig_setter,
    prctl,
    read_env,
    read_stat,
)

log = logging.getLogger(__name__)

ORIGIN_VAR = "CIRCUS_ORIGIN"

# Where no SIGCHLD handler can be installed, the children are scanned this often.
POLL = 0.1
# How often a stop looks again at the orphans it is waiting for.
STOP_POLL = 0.01
# After SIGKILL, how long a stop waits for the orphans to disappear before giving up.
KILL_WAIT = 2.0

_serial = itertools.count(1)


def read_origin(pid: int) -> str | None:
    """The ``CIRCUS_ORIGIN`` value in the environment of *pid*, if any."""
    return read_env(pid, ORIGIN_VAR)


class Origin(NamedTuple):
    """The ``CIRCUS_ORIGIN`` mark of one spawn: ``<circusd pid>.<serial>.<run>.<watcher>``.

    *run* names the circusd run for the process record (``<config id>-<circusd start
    time>``, see circus/state.py), or is ``-`` when there is none. The watcher comes last:
    its name may hold dots.
    """

    circusd: int
    serial: int
    run: str
    watcher: str

    def __str__(self) -> str:
        return f"{self.circusd}.{self.serial}.{self.run or '-'}.{self.watcher}"

    @classmethod
    def parse(cls, text: str) -> Origin | None:
        pid, serial, run, watcher = (text.split(".", 3) + ["", "", "", ""])[:4]
        if not (pid.isdigit() and serial.isdigit() and watcher):
            return None
        return cls(int(pid), int(serial), "" if run == "-" else run, watcher)


def new_origin(watcher: str, run: str = "") -> str:
    """A fresh ``CIRCUS_ORIGIN`` value for one spawn of *watcher* in the circusd *run*."""
    return str(Origin(os.getpid(), next(_serial), run, watcher))


@dataclass(frozen=True)
class Claim:
    """Which orphans a stop is about.

    ``sessions`` and ``origins`` name the processes of one worker; ``watcher`` (with
    ``keep``: origins of processes still running) all earlier processes of a watcher;
    ``arbiter`` every process this circusd started; ``everything`` any orphan at all.
    """

    sessions: frozenset[int] = frozenset()
    origins: frozenset[str] = frozenset()
    watcher: str | None = None
    keep: frozenset[str] = frozenset()
    arbiter: bool = False
    everything: bool = False

    def matches(self, stat: Stat, pid: int) -> bool:
        if self.everything or stat.session in self.sessions:
            return True
        origin = read_origin(pid)
        if origin is None:
            return False
        if origin in self.origins:
            return True
        mark = Origin.parse(origin)
        if mark is None or mark.circusd != os.getpid() or origin in self.keep:
            return False
        if self.arbiter:
            return True
        return self.watcher is not None and mark.watcher.lower() == self.watcher.lower()


@dataclass
class Reaper:
    """circusd's children that it did not start: reaped, attributed, stopped.

    One per process (:data:`REAPER`): being a subreaper and having children are
    properties of the process. Arbiters :meth:`install` it when they open and
    :meth:`uninstall` it when they close.
    """

    _users: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _timer: asyncio.TimerHandle | None = None
    _set_subreaper: bool = False

    # -- lifetime ----------------------------------------------------------------------

    @property
    def active(self) -> bool:
        return self._users > 0

    def install(self, subreaper: bool = True) -> None:
        """Start collecting on the running loop; with *subreaper*, adopt orphans first."""
        self._users += 1
        if self._users > 1:
            return
        loop = asyncio.get_running_loop()
        self._loop = loop
        if subreaper and not is_subreaper():
            try:
                prctl(PR_SET_CHILD_SUBREAPER, 1)
                self._set_subreaper = True
            except OSError as exc:
                log.warning("cannot become a child subreaper (%s): orphans of workers "
                            "go to init and are not stopped with their watcher", exc)
        if not CHILDREN.listen():  # no SIGCHLD handler here: orphans are polled for
            self._timer = loop.call_later(POLL, self._poll)

    def uninstall(self) -> None:
        if self._users == 0:
            return
        self._users -= 1
        if self._users > 0:
            return
        CHILDREN.unlisten()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._set_subreaper:
            with contextlib.suppress(OSError):
                prctl(PR_SET_CHILD_SUBREAPER, 0)
            self._set_subreaper = False
        self._loop = None

    def _poll(self) -> None:
        CHILDREN.reap()
        if self._loop is not None and self._users:
            self._timer = self._loop.call_later(POLL, self._poll)

    # -- orphans -----------------------------------------------------------------------

    def _unknown_children(self) -> Iterable[tuple[int, Stat]]:
        known, own = CHILDREN.known, CHILDREN.own_session
        for pid in children_of(os.getpid()):
            if pid in known:
                continue
            stat = read_stat(pid)
            if stat is not None and stat.session != own:
                yield pid, stat

    def orphans(self, claim: Claim, claimed: dict[int, int] | None = None) -> dict[int, int]:
        """Live orphans *claim* names, and all their descendants: ``{pid: start}``.

        A pid in *claimed* (with the same start time) counts as named.
        """
        claimed = claimed or {}
        found: dict[int, int] = {}
        stack: list[int] = []
        zombies = False
        for pid, stat in self._unknown_children():
            if stat.state == "Z":
                zombies = True
                continue
            if claimed.get(pid) == stat.start or claim.matches(stat, pid):
                found[pid] = stat.start
                stack.append(pid)
        while stack:
            for child in children_of(stack.pop()):
                info = read_stat(child)
                if info is None or info.state == "Z" or child in found:
                    continue
                found[child] = info.start
                stack.append(child)
        if zombies:  # the same pass reaps: stop_orphans needs no reap() of its own
            CHILDREN.reap()
        return found

    async def stop_orphans(self, claim: Claim, sig: int, graceful_timeout: float) -> list[int]:
        """Stop the orphans *claim* names: *sig*, then SIGKILL after *graceful_timeout*.

        Returns the pids that were signalled. Nothing happens unless the reaper is
        installed (an arbiter is open).
        """
        if not self.active:
            return []
        claimed: dict[int, int] = {}
        deadline = time.monotonic() + max(graceful_timeout, 0.0)
        killed_at: float | None = None
        while True:
            alive = self.orphans(claim, claimed)
            if not alive:
                break
            now = time.monotonic()
            fresh = [pid for pid in alive if claimed.get(pid) != alive[pid]]
            claimed.update(alive)
            if now >= deadline:
                if killed_at is None:
                    killed_at = now
                    log.warning("orphans %s ignored %s for %.1fs, sending SIGKILL",
                                sorted(alive), signal.Signals(sig).name, graceful_timeout)
                elif now - killed_at > KILL_WAIT:
                    log.error("orphans %s survive SIGKILL; giving up", sorted(alive))
                    break
                _signal(alive, signal.SIGKILL)
            else:
                _signal(fresh, sig)
            await asyncio.sleep(STOP_POLL)
        return sorted(claimed)


def _signal(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


REAPER = Reaper()


def exit_status(code: int | None) -> int:
    """circusd's exit status for a process's *code*: as a shell reports it (128 + N when
    killed by signal N); 1 when there is none (a spawn failed, a hook refused)."""
    if code is None:
        return 1
    return 128 - code if code < 0 else code & 0xFF


def essential_ended(arbiter: Any, watcher: Any, code: int | None) -> None:
    """A watcher of *arbiter* stopped for good: if it is ``essential``, circusd quits with
    its exit status."""
    if not watcher.essential or watcher not in arbiter.watchers:
        return
    arbiter.exit_status = exit_status(code)
    log.warning("essential watcher %s ended: circusd quits with status %d", watcher.name,
                arbiter.exit_status)
    arbiter.request_quit()


async def stop_all_orphans(graceful_timeout: float = 5.0) -> list[int]:
    """At quit: stop every orphan of this circusd's processes, and when circusd is PID 1
    (a container's init) every orphan at all."""
    claim = Claim(arbiter=True, everything=os.getpid() == 1)
    return await REAPER.stop_orphans(claim, signal.SIGTERM, graceful_timeout)


__all__ = ["ORIGIN_VAR", "REAPER", "Claim", "Origin", "Reaper", "essential_ended", "exit_status",
           "new_origin", "pdeathsig_setter", "stop_all_orphans"]
