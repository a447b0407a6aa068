"""Health: what a watcher knows of its processes' lives, and its restart policy.

A watcher counts *failures in a row*: a spawn that fails, or a process that exits sooner
than ``min_uptime`` seconds after its spawn (a *quick death*). A process that lived
``min_uptime`` or more resets the count, and so does starting the watcher. From the second
failure in a row, the next spawn waits ``backoff_initial × backoff_factor^(n−2)`` seconds,
capped at ``backoff_max``, plus up to ``backoff_jitter`` of that at random (so that many
watchers failing together do not retry in step). Once the count passes ``max_retry``
(``-1``: never) the watcher gives up: it is stopped and its health is ``fatal`` until a
user starts it again.

The health word of a watcher, as ``status`` with ``details`` shows it:

==========  ===========================================================================
running     active, every process asked for runs and has been up ``min_uptime``
starting    being started, a process is missing, or one is younger than ``min_uptime``
backoff     the next spawn waits (failures in a row, or a resource error)
stopping    its processes are being stopped
stopped     stopped by a user (or never started)
fatal       gave up after ``max_retry`` failures in a row
==========  ===========================================================================
"""

from __future__ import annotations

import random
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from circus.process import Process


@dataclass(frozen=True, slots=True)
class LastExit:
    """How a process ended: an exit code, or the signal that killed it; and when."""

    code: int | None
    signal: int | None
    time: float  # epoch seconds
    reason: str | None = None  # stopped by circusd: why (not ready in time)

    @classmethod
    def of(cls, returncode: int | None) -> LastExit:
        if returncode is not None and returncode < 0:
            return cls(None, -returncode, time.time())
        return cls(returncode, None, time.time())

    def as_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"code": self.code, "signal": self.signal, "time": self.time}
        if self.reason is not None:
            wire["reason"] = self.reason
        return wire

    def describe(self) -> str:
        """``exit 3``, ``SIGKILL``: short enough for a table cell."""
        if self.reason is not None:
            return self.reason
        if self.signal is not None:
            try:
                return signal.Signals(self.signal).name
            except ValueError:
                return f"signal {self.signal}"
        return f"exit {self.code}"


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """The backoff between failed starts; the watcher's options, read at each use."""

    initial: float = 0.1
    factor: float = 2.0
    maximum: float = 5.0
    jitter: float = 0.1

    def delay(self, failures: int) -> float:
        """Seconds to wait before the spawn that follows *failures* failures in a row."""
        if failures < 2:
            return 0.0
        # the exponent is bounded so that a long run of failures cannot overflow a float
        base = min(self.initial * self.factor ** min(failures - 2, 64), self.maximum)
        return base * (1.0 + random.uniform(0.0, max(self.jitter, 0.0)))


class Health:
    """Restarts, the last exit, failures in a row, a pending backoff, and ``fatal``."""

    def __init__(self) -> None:
        self.restarts = 0
        self.failures = 0
        self.last_exit: LastExit | None = None
        self.next_spawn_at: float | None = None  # time.monotonic() of a delayed spawn
        self.fatal: str | None = None  # why the watcher gave up
        # wid -> the restart count its next process gets: a process died there on its own
        self._owed: dict[int, int] = {}

    def started(self) -> None:
        """A user (or autostart) started the watcher: a fresh count."""
        self.restarts = 0
        self.failures = 0
        self.fatal = None
        self.next_spawn_at = None
        self._owed.clear()

    def exited(self, process: Process, min_uptime: float) -> bool:
        """A process ended on its own; True if it was a quick death."""
        self.last_exit = LastExit.of(process.returncode)
        self._owed[process.wid] = process.restarts + 1
        quick = process.age() < min_uptime or not process.ready
        self.failures = self.failures + 1 if quick else 0
        return quick

    def spawn_failed(self) -> None:
        self.failures += 1

    def not_ready(self, process: Process, reason: str) -> None:
        """*process* was not ready in time: its replacement is a restart."""
        self.last_exit = LastExit(None, None, time.time(), reason)
        self._owed[process.wid] = process.restarts + 1

    def replacing(self, process: Process) -> None:
        """*process* is stopped to be replaced (unhealthy): its replacement is a restart."""
        self._owed[process.wid] = process.restarts + 1

    def adopted(self, process: Process) -> None:
        """A new process runs: if it replaces one that died, it is a restart."""
        owed = self._owed.pop(process.wid, None)
        if owed is None and self._owed:
            owed = self._owed.pop(next(iter(self._owed)))  # it took another free wid
        if owed is not None:
            self.restarts += 1
            process.restarts = owed

    def forget_owed(self) -> None:
        """The watcher stopped: nothing it had running is waiting for a replacement."""
        self._owed.clear()
        self.next_spawn_at = None

    def exhausted(self, max_retry: int) -> bool:
        return max_retry != -1 and self.failures > max_retry

    def waiting(self, delay: float) -> None:
        self.next_spawn_at = time.monotonic() + delay if delay > 0 else None

    def next_spawn_in(self) -> float | None:
        if self.next_spawn_at is None:
            return None
        return max(self.next_spawn_at - time.monotonic(), 0.0)

    def gave_up(self) -> str:
        """Give up: the reason, for the log, the event and ``status``."""
        last = f" (last: {self.last_exit.describe()})" if self.last_exit else ""
        self.fatal = f"{self.failures} failed starts in a row{last}"
        self.next_spawn_at = None
        self._owed.clear()
        return self.fatal


    def word(self, watcher: Any, min_uptime: float) -> str:
        """The health word of *watcher* (see the module's table)."""
        state = watcher.state.value
        if state == "stopped":
            return "fatal" if self.fatal else "stopped"
        if state == "stopping":
            return "stopping"
        if watcher.backoff_reason or self.next_spawn_at is not None:
            return "backoff"
        processes = watcher.processes.values()
        if state == "starting" or len(watcher.processes) < watcher.numprocesses or any(
            not p.ready or p.age() < min_uptime for p in processes
        ):
            return "starting"
        return "running"

    def describe(self, watcher: Any, min_uptime: float) -> dict[str, Any]:
        """The ``details`` of ``status`` for one watcher."""
        wait = self.next_spawn_in()
        return {
            "health": self.word(watcher, min_uptime),
            "reason": self.fatal or watcher.backoff_reason,
            "restarts": self.restarts,
            "failures": self.failures,
            "last_exit": None if self.last_exit is None else self.last_exit.as_wire(),
            "next_spawn_in": None if wait is None else round(wait, 3),
            "numprocesses": watcher.numprocesses,
            "processes": [
                {"pid": p.pid, "wid": p.wid, "uptime": round(p.age(), 3),
                 "restarts": p.restarts, "health": process_health(p, min_uptime),
                 "ready": p.ready,
                 "ready_after": None if p.ready_after is None else round(p.ready_after, 3),
                 "status": p.status_text}
                for p in watcher.processes.values()
            ],
        }


def process_health(process: Process, min_uptime: float) -> str:
    if process.stopping:
        return "stopping"
    if not process.ready:
        return "starting"
    return "starting" if process.age() < min_uptime else "running"


__all__ = ["Health", "LastExit", "RestartPolicy", "process_health"]
