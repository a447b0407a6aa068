"""Read-only views of ``/proc``: a daemon's children, their command lines, CPU time and memory.

Every figure in the benchmarks is checked against the kernel rather than trusted from the
supervisor under test: a child "runs" when ``/proc`` shows it as a child of the daemon with the
expected command line (so a forked child that has not reached ``exec`` yet does not count).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _read_bytes(path: str) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def children_of(pid: int) -> list[int]:
    """Return the pids of *pid*'s children (zombies included) as the kernel lists them.

    Uses ``/proc/PID/task/TID/children`` (one small file per thread of the daemon); when the
    kernel lacks it (``CONFIG_PROC_CHILDREN``), falls back to scanning every ``/proc/*/stat``.
    """
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return []
    found: list[int] = []
    saw_file = False
    for tid in tids:
        raw = _read_bytes(f"/proc/{pid}/task/{tid}/children")
        if raw is None:
            continue
        saw_file = True
        found.extend(int(p) for p in raw.split())
    if saw_file:
        return found
    return _children_by_scan(pid)


def _children_by_scan(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        raw = _read_bytes(f"/proc/{entry}/stat")
        if raw is None:
            continue
        # The comm field may hold spaces and parentheses: split after the last ")".
        fields = raw[raw.rfind(b")") + 2 :].split()
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def cmdline(pid: int) -> list[bytes] | None:
    """Return the argv of *pid* (empty for a zombie), or None if the pid is gone."""
    raw = _read_bytes(f"/proc/{pid}/cmdline")
    if raw is None:
        return None
    return raw.rstrip(b"\0").split(b"\0") if raw else []


def exists(pid: int) -> bool:
    """True while ``/proc/PID`` exists, that is until the process has been reaped."""
    return os.path.exists(f"/proc/{pid}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of *pid* (all its threads, not its children), in seconds."""
    raw = _read_bytes(f"/proc/{pid}/stat")
    if raw is None:
        raise ProcessLookupError(pid)
    fields = raw[raw.rfind(b")") + 2 :].split()
    # After the comm field: state is fields[0], so utime (field 14) is fields[11].
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """Resident set size of *pid* in bytes."""
    raw = _read_bytes(f"/proc/{pid}/statm")
    if raw is None:
        raise ProcessLookupError(pid)
    return int(raw.split()[1]) * PAGE_SIZE


def argv_matcher(program: str, args: Iterable[str]) -> Callable[[list[bytes]], bool]:
    """Build a predicate: argv[0] has basename *program* and the rest equals *args*.

    Matching the basename lets a supervisor pass either ``sleep`` or ``/usr/bin/sleep``.
    """
    name = program.encode()
    rest = [a.encode() for a in args]

    def match(argv: list[bytes]) -> bool:
        return bool(argv) and os.path.basename(argv[0]) == name and argv[1:] == rest

    return match


class ChildTracker:
    """Follows the children of one daemon that run the expected program.

    A pid is "confirmed" once its command line matches. Two ways to look:

    :meth:`poll` lists every child of the daemon (``/proc/PID/task/*/children``). The kernel
    builds that list in time that grows with the number of children (about 15 ms for 10,000),
    so it is the check, not the way to follow a fast change at large N.

    :meth:`poll_new` looks only at the processes created since its last call: the kernel
    hands out pids in increasing order (wrapping at ``kernel.pid_max``) and ``/proc/loadavg``
    shows the last one handed out, so each new pid is read once (its parent and command line)
    and kept aside while it has not reached ``exec`` yet, or while it is still the child of
    a helper process of the daemon's (it is counted once it is the daemon's). A call costs a
    few reads whatever the number of children. It sees births, not deaths: callers forget
    the children they kill. Every newly confirmed pid, found either way, is queued for
    :meth:`take_fresh`.
    """

    #: How long a new pid not yet visible in /proc is looked for again (it may be a process
    #: still being created, or one that has already come and gone).
    MISSING_GRACE = 0.5

    def __init__(
        self, daemon_pid: int, match: Callable[[list[bytes]], bool], cursor: int | None = None
    ) -> None:
        self.daemon_pid = daemon_pid
        self.match = match
        self.confirmed: set[int] = set()
        self.ever_seen: set[int] = set()
        self.fresh: list[int] = []
        self.pending: dict[int, float] = {}  # pid -> when first looked at, not confirmed yet
        self.cursor = cursor if cursor is not None else last_pid()
        self.pid_max = pid_max()

    def _confirm(self, pid: int) -> None:
        self.confirmed.add(pid)
        self.ever_seen.add(pid)
        self.fresh.append(pid)
        self.pending.pop(pid, None)

    def poll(self) -> set[int]:
        """List every child of the daemon; return the confirmed ones it lists."""
        listed = children_of(self.daemon_pid)
        current = set()
        for pid in listed:
            if pid in self.confirmed:
                current.add(pid)
                continue
            argv = cmdline(pid)
            if argv is not None and self.match(argv):
                self._confirm(pid)
                current.add(pid)
        self.confirmed = current
        return current

    def poll_new(self) -> list[int]:
        """Confirm the children created since the last look; return those newly confirmed."""
        newest = last_pid()
        if newest is None:  # no /proc/loadavg to follow: list everything
            self.poll()
            return self.take_fresh()
        now = time.monotonic()
        fresh_range = self._pids_after(self.cursor, newest)
        self.cursor = newest
        for pid in itertools.chain(fresh_range, list(self.pending)):
            if pid not in self.confirmed:
                self._examine(pid, now)
        return self.take_fresh()

    def _pids_after(self, old: int | None, new: int) -> Iterator[int]:
        if old is None or old == new:
            return iter(())
        if new > old:
            return iter(range(old + 1, new + 1))
        return itertools.chain(range(old + 1, self.pid_max), range(1, new + 1))  # wrapped

    def _examine(self, pid: int, now: float) -> None:
        raw = _read_bytes(f"/proc/{pid}/stat")
        if raw is None:
            first = self.pending.setdefault(pid, now)
            if now - first > self.MISSING_GRACE:
                del self.pending[pid]
            return
        parent = int(raw[raw.rfind(b")") + 2 :].split()[1])
        if parent != self.daemon_pid:
            if self._below_daemon(parent):  # made by a helper of the daemon's: it becomes
                self.pending.setdefault(pid, now)  # the daemon's child when the helper exits
            else:
                self.pending.pop(pid, None)
            return
        argv = cmdline(pid)
        if argv is not None and self.match(argv):
            self._confirm(pid)
        else:  # forked, not exec'd yet (or the daemon's own helper): look again next time
            self.pending.setdefault(pid, now)

    def _below_daemon(self, pid: int) -> bool:
        """Whether *pid* is a child or grandchild of the daemon (ours: its spawn server and
        the short-lived process that makes workers for it, whose workers the kernel hands
        to the daemon, a subreaper, when it exits)."""
        for _ in range(2):
            raw = _read_bytes(f"/proc/{pid}/stat")
            if raw is None:
                return False
            pid = int(raw[raw.rfind(b")") + 2 :].split()[1])
            if pid == self.daemon_pid:
                return True
        return False

    def take_fresh(self) -> list[int]:
        """The pids confirmed since the last call, in the order they were found."""
        fresh, self.fresh = self.fresh, []
        return fresh

    def forget(self, pid: int) -> None:
        """Stop counting *pid* as running (it is being killed)."""
        self.confirmed.discard(pid)
        self.pending.pop(pid, None)


def last_pid() -> int | None:
    """The pid the kernel handed out last (in this pid namespace), from ``/proc/loadavg``."""
    raw = _read_bytes("/proc/loadavg")
    try:
        return int(raw.split()[4]) if raw else None
    except (IndexError, ValueError):
        return None


def pid_max() -> int:
    """``kernel.pid_max``: pids are handed out below it."""
    raw = _read_bytes("/proc/sys/kernel/pid_max")
    return int(raw) if raw else 32768


def task_count() -> int:
    """The number of tasks (processes and threads) on the machine, from ``/proc/loadavg``."""
    raw = _read_bytes("/proc/loadavg")
    assert raw is not None
    return int(raw.split()[3].split(b"/")[1])


def fd_count(pid: int) -> int:
    """The number of open file descriptors of *pid*."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except FileNotFoundError:
        raise ProcessLookupError(pid) from None


LIMIT_NAMES = {"Max open files": "nofile", "Max processes": "nproc"}


def limits(pid: int) -> dict[str, tuple[str, str]]:
    """The soft and hard RLIMIT_NOFILE and RLIMIT_NPROC of *pid*, as ``/proc`` shows them."""
    raw = _read_bytes(f"/proc/{pid}/limits")
    found: dict[str, tuple[str, str]] = {}
    for line in (raw or b"").decode().splitlines():
        for title, key in LIMIT_NAMES.items():
            if line.startswith(title):
                soft, hard = line[len(title) :].split()[:2]
                found[key] = (soft, hard)
    return found


def start_time(pid: int) -> int | None:
    """When *pid* started, in clock ticks since boot (with the pid, it names one process)."""
    raw = _read_bytes(f"/proc/{pid}/stat")
    if raw is None:
        return None
    return int(raw[raw.rfind(b")") + 2 :].split()[19])


def old_enough(pids: Iterable[int], seconds: float) -> list[int]:
    """The pids of *pids* whose process has run at least *seconds*."""
    now = float(Path("/proc/uptime").read_text().split()[0]) * CLOCK_TICKS
    found = []
    for pid in pids:
        started = start_time(pid)
        if started is not None and now - started >= seconds * CLOCK_TICKS:
            found.append(pid)
    return found


def snapshot(pids: Iterable[int]) -> dict[int, int]:
    """Identify each live pid in *pids* by its start time, for :func:`kill_leftovers`."""
    found = {}
    for pid in pids:
        started = start_time(pid)
        if started is not None:
            found[pid] = started
    return found


def kill_leftovers(processes: dict[int, int]) -> list[int]:
    """SIGKILL each process of a :func:`snapshot` that still runs; return the pids killed.

    A pid counts only if its start time is unchanged, so a recycled pid is spared.
    """
    killed = []
    for pid, started in processes.items():
        if start_time(pid) == started:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
    return killed


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as ``/proc/loadavg`` gives them."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def machine_info() -> dict[str, str]:
    """Describe the machine: cores, CPU model, memory, kernel."""
    model = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
            break
    uname = os.uname()
    return {
        "load": load_average() + " (1, 5, 15 min, at the start)",
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "memory": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "kernel": f"{uname.sysname} {uname.release} {uname.machine}",
    }
