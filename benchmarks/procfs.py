"""Read-only views of ``/proc``: a daemon's children, their command lines, CPU time and memory.

Every figure in the benchmarks is checked against the kernel rather than trusted from the
supervisor under test: a child "runs" when ``/proc`` shows it as a child of the daemon with the
expected command line (so a forked child that has not reached ``exec`` yet does not count).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterable
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

    A pid is "confirmed" once its command line matches; confirmed pids are not re-read on
    each poll, so a poll costs one read of the children list plus one read per new pid.
    """

    def __init__(self, daemon_pid: int, match: Callable[[list[bytes]], bool]) -> None:
        self.daemon_pid = daemon_pid
        self.match = match
        self.confirmed: set[int] = set()
        self.ever_seen: set[int] = set()

    def poll(self) -> set[int]:
        """Return the confirmed children currently listed by the kernel."""
        listed = children_of(self.daemon_pid)
        current = set()
        for pid in listed:
            if pid in self.confirmed:
                current.add(pid)
                continue
            argv = cmdline(pid)
            if argv is not None and self.match(argv):
                self.confirmed.add(pid)
                self.ever_seen.add(pid)
                current.add(pid)
        self.confirmed &= set(listed)
        return current


def start_time(pid: int) -> int | None:
    """When *pid* started, in clock ticks since boot (with the pid, it names one process)."""
    raw = _read_bytes(f"/proc/{pid}/stat")
    if raw is None:
        return None
    return int(raw[raw.rfind(b")") + 2 :].split()[19])


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
    load = Path("/proc/loadavg").read_text().split()[:3]
    return {
        "load": " ".join(load) + " (1, 5, 15 min, at the start)",
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "memory": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "kernel": f"{uname.sysname} {uname.release} {uname.machine}",
    }
