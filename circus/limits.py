"""How many processes circusd may run: the one place that knows.

A change is judged as *what it needs* (:class:`Need`: the target of one watcher after the
change, and the targets of every other watcher) against *what can be had*
(:class:`Budget`). :func:`shortfall` answers with None, or with a reason naming the limit,
its value, where the value comes from and how to raise it. Every door that changes a
target asks it first: the configuration loader (``circusd`` start and ``reloadconfig``),
``incr``, ``set numprocesses``, ``add`` and the library's ``Watcher.set_numprocesses``.

Two ceilings apply:

* ``max_processes`` of a watcher: the most that watcher may run (unset: only the daemon's).
* ``[circus] max_processes``: the most all watchers may run together, counted as the sum of
  their ``numprocesses`` (stopped watchers too: starting them needs no further check).

The daemon's default comes from the machine, computed once per circusd (before it starts
anything, so its own children are not counted against it)::

    per user:    soft RLIMIT_NPROC   - the tasks (threads) of circusd's real uid now
    whole host:  kernel.pid_max      - the tasks of the whole host now (/proc/loadavg)
    default    = the smaller of the two, minus a headroom of 1/8 of its limit (64 at least)

RLIMIT_NPROC counts threads, not processes, and an unlimited one drops out (only
``kernel.pid_max`` is left). The kernel does not hold root to RLIMIT_NPROC; circusd still
does, as the number the administrator chose for one user. The headroom keeps the last
pids of the host for logins, shells and the services an operator needs to repair things.
"""

from __future__ import annotations

import functools
import os
import resource
from typing import Any, NamedTuple

from circus import descriptors
from circus.errors import CommandError

PID_MAX_FILE = "/proc/sys/kernel/pid_max"
PID_MAX_FALLBACK = 32768  # the kernel's own default
HEADROOM_MIN = 64


class LimitError(CommandError):
    """A change would take more than a limit allows; nothing was changed."""


class Budget(NamedTuple):
    """What can be had: at most *processes* over all watchers.

    (NamedTuples, not dataclasses: ``circusctl`` imports this module through the key
    table, and dataclasses would add to its start-up time.)

    *source* says where the number comes from (``from RLIMIT_NPROC 96369``, ``set in the
    configuration``), for error messages and ``globaloptions``.
    """

    processes: int
    source: str

    @classmethod
    def of(cls, max_processes: int | None) -> Budget:
        """The budget for a ``[circus] max_processes`` value (None: derived, see above)."""
        if max_processes is not None:
            return cls(max_processes, "set in the configuration")
        return machine_budget()


class Need(NamedTuple):
    """What a change needs: watcher *watcher* runs *processes*, the others *others*.

    *watcher_max* is that watcher's own ``max_processes`` (None: unset).
    """

    watcher: str
    processes: int
    others: int = 0
    watcher_max: int | None = None


def shortfall(need: Need, budget: Budget) -> str | None:
    """None if *need* fits in *budget*; otherwise why not, naming the limit and its value."""
    reason = watcher_shortfall(need.processes, need.watcher_max, need.watcher)
    if reason is not None:
        return reason
    total = need.processes + need.others
    if total <= budget.processes:
        return None
    where = f"[circus] max_processes, {budget.source}"
    raise_it = "raise [circus] max_processes to allow more"
    if need.others == 0:
        return (f"numprocesses {need.processes} is over the limit of {budget.processes} "
                f"processes for all watchers ({where}); {raise_it}")
    return (f"numprocesses {need.processes} for {need.watcher!r} would bring all watchers "
            f"to {total} processes, over the limit of {budget.processes} ({where}); "
            f"{raise_it}")


def watcher_shortfall(processes: int, watcher_max: int | None, name: str | None = None
                      ) -> str | None:
    """None if *processes* is within a watcher's own ``max_processes``; else why not."""
    if watcher_max is None or processes <= watcher_max:
        return None
    whose = f"watcher {name!r}" if name else "this watcher"
    return (f"numprocesses {processes} is over the limit of {watcher_max} processes for "
            f"{whose} (its max_processes); raise max_processes to allow more")


def require(need: Need, budget: Budget) -> None:
    """Raise :class:`LimitError` unless *need* fits in *budget*."""
    reason = shortfall(need, budget)
    if reason is not None:
        raise LimitError(reason)


def budget_of(arbiter: Any) -> Budget:
    """The budget of an arbiter: its ``max_processes`` option, or the machine's default."""
    options = getattr(arbiter, "options", None) or {}
    return Budget.of(options.get("max_processes"))


def require_target(arbiter: Any, name: str, target: int, watcher_max: int | None,
                   current: int = 0) -> None:
    """Raise :class:`LimitError` unless watcher *name* may run *target* processes.

    *arbiter* (None for a watcher on its own: only *watcher_max* applies) gives the other
    watchers' targets and the budget. A target not above *current* (the watcher's target
    now) always passes: lowering is never refused.
    """
    if target <= current:
        return
    if descriptors.room() < 0:  # even a process on a shared pipe would eat the reserve
        descriptors.TABLE.forget()
        if descriptors.room() < 0:
            raise LimitError(f"cannot run more processes of {name}: "
                             + descriptors.describe_shortage())
    if arbiter is None:
        reason = watcher_shortfall(target, watcher_max, name)
        if reason is not None:
            raise LimitError(reason)
        return
    others = sum(w.numprocesses for w in arbiter.watchers if w.name.lower() != name.lower())
    require(Need(name, target, others, watcher_max), budget_of(arbiter))


# -- the machine's default ---------------------------------------------------------------


@functools.cache
def machine_budget() -> Budget:
    """The default ``[circus] max_processes`` of this machine (computed once; see above)."""
    candidates: list[tuple[int, int, str]] = []  # (room, limit, name)
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[0]
    if nproc != resource.RLIM_INFINITY and nproc > 0:
        candidates.append((nproc - user_tasks(os.getuid()), nproc, "RLIMIT_NPROC"))
    pid_max = read_pid_max()
    candidates.append((pid_max - host_tasks(), pid_max, "kernel.pid_max"))
    room, limit, name = min(candidates)
    ceiling = max(room - max(HEADROOM_MIN, limit // 8), 1)
    return Budget(ceiling, f"from {name} {limit}")


def read_pid_max() -> int:
    try:
        with open(PID_MAX_FILE) as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return PID_MAX_FALLBACK


def host_tasks() -> int:
    """Tasks (processes and threads) on the host now: the 4th field of /proc/loadavg."""
    try:
        with open("/proc/loadavg") as fh:
            return int(fh.read().split()[3].split("/")[1])
    except (OSError, ValueError, IndexError):
        return 0


def user_tasks(uid: int) -> int:
    """Tasks (threads) whose real uid is *uid*, as RLIMIT_NPROC counts them."""
    total = 0
    try:
        entries = os.listdir("/proc")
    except OSError:
        return 0
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as fh:
                fields = dict(line.split(":", 1) for line in fh if ":" in line)
        except (OSError, ValueError):
            continue  # gone meanwhile, or unreadable
        try:
            if int(fields["Uid"].split()[0]) == uid:
                total += int(fields.get("Threads", "1").strip())
        except (KeyError, ValueError, IndexError):
            continue
    return total


__all__ = ["Budget", "LimitError", "Need", "budget_of", "machine_budget", "require",
           "require_target", "shortfall", "watcher_shortfall"]
