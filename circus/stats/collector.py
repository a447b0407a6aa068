"""The figures of one process, read from ``/proc`` with as little work as the kernel allows.

One read of ``/proc/<pid>/stat`` per process and interval gives everything that changes:
CPU time (utime + stime), nice, start time, virtual size and resident pages. The descriptor
of that file is kept open and read again at offset 0 (``pread``), which spares the path
lookup, ``open`` and ``close`` of every interval (about half the cost); it also pins the
process: once it has ended, the read fails with ``ESRCH`` even if its pid was handed to
someone else. When descriptors run short, the file is opened for each read instead.

What does not change after ``exec`` (the command line, the user) is read while the process
is young (it may not have reached ``exec`` yet) and kept afterwards. Total memory, the clock
tick and the boot time are read once.

The formats are those of Circus 0.19's ``circusd-stats`` (and of the ``stats`` command):
``cpu`` in percent of one core since the previous read (0.0 on the first), ``mem`` in percent
of total memory rounded to 3 places, ``mem_info1``/``mem_info2`` RSS and VMS as ``"3.45M"``,
``ctime`` the CPU time as ``M:SS.hh``; a figure that cannot be read is ``"N/A"``.
"""

from __future__ import annotations

import errno
import os
import pwd
import time
from dataclasses import dataclass, field
from typing import Any

from circus.util.convert import cpu_time_text, human_bytes

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
#: While a process is younger than this, its command line and user are read again.
SETTLE_SECONDS = 2.0
NA = "N/A"

# Fields of /proc/<pid>/stat counted after the ") " that ends the command name (field 3 is 0).
_UTIME, _STIME, _NICE, _START, _VSIZE, _RSS = 11, 12, 16, 19, 20, 21


def total_memory() -> int:
    """Bytes of physical memory (what psutil's ``memory_percent`` divides by)."""
    return int(os.sysconf("SC_PHYS_PAGES")) * PAGE_SIZE


def boot_time() -> float:
    """The boot time as a Unix time, from ``/proc/stat`` (as psutil reads it)."""
    try:
        with open("/proc/stat", "rb") as fh:
            for line in fh:
                if line.startswith(b"btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)


class Gone(Exception):
    """The process has ended (or was never there)."""


@dataclass(slots=True)
class Tracked:
    """One process being followed, and what was kept from its previous read."""

    pid: int
    fd: int | None = None
    start: int | None = None  # clock ticks after boot: with the pid, names the process
    cpu_ticks: int = -1  # at the previous read; -1: none yet
    rss: int = 0  # bytes, at the previous read
    read_at: float = 0.0
    cmdline: str | None = None
    username: str | None = None
    settled: bool = False  # command line and user read after the process settled
    figures: dict[str, Any] = field(default_factory=dict)  # the last read


class Collector:
    """Reads and formats the figures of the processes it is told to follow."""

    def __init__(self) -> None:
        self.total_memory = total_memory()
        self.boot_time = boot_time()
        self._users: dict[int, str] = {}
        self._tracked: dict[int, Tracked] = {}
        self.keep_open = True  # False once descriptors ran out

    def __len__(self) -> int:
        return len(self._tracked)

    def follow(self, pid: int) -> None:
        if pid not in self._tracked:
            self._tracked[pid] = Tracked(pid)

    def forget(self, pid: int) -> None:
        tracked = self._tracked.pop(pid, None)
        if tracked is not None and tracked.fd is not None:
            os.close(tracked.fd)

    def forget_all(self) -> None:
        for pid in list(self._tracked):
            self.forget(pid)

    def _read_stat(self, tracked: Tracked) -> bytes:
        path = f"/proc/{tracked.pid}/stat"
        try:
            if tracked.fd is not None:
                return os.pread(tracked.fd, 1024, 0)
            if not self.keep_open:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    return os.read(fd, 1024)
                finally:
                    os.close(fd)
            try:
                tracked.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                if exc.errno not in (errno.EMFILE, errno.ENFILE):
                    raise
                self.keep_open = False
                return self._read_stat(tracked)
            return os.pread(tracked.fd, 1024, 0)
        except OSError as exc:  # ESRCH on a kept descriptor, ENOENT on a path
            raise Gone(tracked.pid) from exc

    def read(self, pid: int, now: float | None = None) -> dict[str, Any]:
        """The figures of *pid* in Circus 0.19's ``stat.<watcher>.<pid>`` form (without
        ``subtopic`` and ``name``); :class:`Gone` once it has ended."""
        tracked = self._tracked.get(pid)
        if tracked is None:
            tracked = self._tracked[pid] = Tracked(pid)
        data = self._read_stat(tracked)
        now = time.time() if now is None else now
        fields = data[data.rfind(b")") + 2:].split()
        try:
            ticks = int(fields[_UTIME]) + int(fields[_STIME])
            start = int(fields[_START])
            nice: Any = int(fields[_NICE])
            vsize, rss = int(fields[_VSIZE]), int(fields[_RSS]) * PAGE_SIZE
        except (IndexError, ValueError):  # a kernel with another layout: nothing to say
            raise Gone(pid) from None
        if tracked.start is not None and start != tracked.start:  # a new process, same pid
            raise Gone(pid)
        tracked.start = start
        if tracked.cpu_ticks < 0 or now <= tracked.read_at:
            cpu = 0.0
        else:
            cpu = round(100.0 * (ticks - tracked.cpu_ticks) / CLOCK_TICKS
                        / (now - tracked.read_at), 1)
        tracked.cpu_ticks, tracked.read_at, tracked.rss = ticks, now, rss
        create_time = self.boot_time + start / CLOCK_TICKS
        age = now - create_time
        if not tracked.settled:
            tracked.cmdline = self._cmdline(pid)
            tracked.username = self._username(pid)
            tracked.settled = age >= SETTLE_SECONDS
        figures = {
            "pid": pid,
            "cpu": cpu,
            "mem": round(100.0 * rss / self.total_memory, 3) if self.total_memory else NA,
            "mem_info1": human_bytes(rss),
            "mem_info2": human_bytes(vsize),
            "ctime": cpu_time_text(ticks / CLOCK_TICKS),
            "username": tracked.username,
            "nice": nice,
            "create_time": create_time,
            "age": age,
            "cmdline": tracked.cmdline,
            "children": [],
        }
        tracked.figures = figures
        return figures

    def raw(self, pid: int) -> tuple[float, int, float] | None:
        """CPU seconds, resident bytes and start time (Unix) of *pid* at its last read."""
        tracked = self._tracked.get(pid)
        if tracked is None or tracked.start is None or tracked.cpu_ticks < 0:
            return None
        return (tracked.cpu_ticks / CLOCK_TICKS, tracked.rss,
                self.boot_time + tracked.start / CLOCK_TICKS)

    def _cmdline(self, pid: int) -> str:
        """The base name of the first argument, as Circus 0.19 shows it."""
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                first = fh.read(4096).split(b"\0", 1)[0]
        except OSError:
            return NA
        if not first:  # a kernel thread or a zombie
            try:
                with open(f"/proc/{pid}/comm", "rb") as fh:
                    first = fh.read().strip()
            except OSError:
                return NA
        return os.path.basename(first.decode(errors="replace")) or NA

    def _username(self, pid: int) -> str:
        try:
            uid = os.stat(f"/proc/{pid}").st_uid
        except OSError:
            return NA
        name = self._users.get(uid)
        if name is None:
            try:
                name = pwd.getpwuid(uid).pw_name
            except KeyError:
                name = str(uid)
            self._users[uid] = name
        return name


def aggregate(figures: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """``stat.<watcher>``: the pids, the mean CPU, the sum of memory, the oldest age."""
    stats = list(figures.values())
    cpus = [s["cpu"] for s in stats]
    mems = [s["mem"] for s in stats]
    ages = [s["age"] for s in stats if s["age"] != NA]
    return {
        "pid": list(figures),
        "cpu": NA if NA in cpus else (sum(cpus) / len(cpus) if cpus else 0.0),
        "mem": NA if NA in mems else sum(mems),
        "age": max(ages) if ages else NA,
    }
