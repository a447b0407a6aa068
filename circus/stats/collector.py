"""The figures of one process, read from ``/proc`` with as little work as the kernel allows.

One read of ``/proc/<pid>/stat`` per process and interval gives everything that changes:
CPU time (utime + stime), nice, start time, virtual size and resident pages. The descriptor
of that file is kept open and read again at offset 0 (``pread``), which spares the path
lookup, ``open`` and ``close`` of every interval (about half the cost); it also pins the
process: once it has ended, the read fails with ``ESRCH`` even if its pid was handed to
someone else. When descriptors run short, the file is opened for each read instead.

Before it, ``/proc/<pid>/schedstat`` (its first figure: nanoseconds run, a read a fifth as
dear) tells whether the process has run since the previous read; one that has not keeps
that read's figures (CPU 0.0), for up to 29 reads in a row. For an idle process the
message then differs from the previous one by its age alone, and is made from the bytes of
the previous one (:meth:`Collector.encode`).

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
import json
import os
import pwd
import time
from dataclasses import dataclass
from typing import Any

from circus.util.convert import cpu_time_text, human_bytes

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
#: While a process is younger than this, its command line and user are read again.
SETTLE_SECONDS = 2.0
#: A process that has not run keeps its figures for this many reads, then is read in full
#: (what changes without it running: its nice value, memory the kernel reclaimed). The
#: full reads of processes that settled together are spread over those reads.
FULL_READ_EVERY = 29
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
    fd: int | None = None  # of /proc/<pid>/stat
    sched_fd: int | None = None  # of /proc/<pid>/schedstat
    runtime: int = -1  # nanoseconds run, at the previous full read
    runtime_text: bytes = b""  # as schedstat wrote it, at the previous read
    same_reads: int = 0  # reads in a row that found it had not run
    start: int | None = None  # clock ticks after boot: with the pid, names the process
    cpu_ticks: int = -1  # at the previous read; -1: none yet
    rss: int = -1  # bytes, at the previous read
    vsize: int = -1
    read_at: float = 0.0
    create_time: float = 0.0
    nice: int = 0
    cmdline: str | None = None
    username: str | None = None
    settled: bool = False  # command line and user read after the process settled
    # the texts of the previous read, made again only when their figure changes
    mem: Any = NA
    rss_text: str = ""
    vsize_text: str = ""
    ctime_text: str = ""
    # the JSON of what does not change (Collector.encode), b"" until made
    head: bytes = b""
    tail: bytes = b""
    user_json: str = "null"
    key: tuple[float, int, int, int, int] | None = None  # the figures before_age shows
    before_age: bytes = b""


class Collector:
    """Reads and formats the figures of the processes it is told to follow."""

    def __init__(self) -> None:
        self.total_memory = total_memory()
        self.boot_time = boot_time()
        self._users: dict[int, str] = {}
        self._tracked: dict[int, Tracked] = {}
        self.keep_open = True  # False once descriptors ran out
        self.use_schedstat = os.path.exists("/proc/self/schedstat")

    def __len__(self) -> int:
        return len(self._tracked)

    def follow(self, pid: int) -> None:
        if pid not in self._tracked:
            self._tracked[pid] = Tracked(pid)

    def forget(self, pid: int) -> None:
        tracked = self._tracked.pop(pid, None)
        if tracked is not None:
            for fd in (tracked.fd, tracked.sched_fd):
                if fd is not None:
                    os.close(fd)

    def forget_all(self) -> None:
        for pid in list(self._tracked):
            self.forget(pid)

    def _read(self, tracked: Tracked, name: str) -> bytes:
        """``/proc/<pid>/<name>`` (``stat`` or ``schedstat``), through the descriptor kept
        for it when there is one."""
        attr = "fd" if name == "stat" else "sched_fd"
        fd: int | None = getattr(tracked, attr)
        try:
            if fd is not None:
                return os.pread(fd, 1024, 0)
            path = f"/proc/{tracked.pid}/{name}"
            if not self.keep_open:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    return os.read(fd, 1024)
                finally:
                    os.close(fd)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                if exc.errno not in (errno.EMFILE, errno.ENFILE):
                    raise
                self.keep_open = False
                return self._read(tracked, name)
            setattr(tracked, attr, fd)
            return os.pread(fd, 1024, 0)
        except OSError as exc:  # ESRCH on a kept descriptor, ENOENT on a path
            raise Gone(tracked.pid) from exc

    def _runtime(self, tracked: Tracked, data: bytes | None = None) -> int:
        """The nanoseconds *tracked* has run (the first figure of ``schedstat``, read now
        unless *data* is what was just read), or -1 when the kernel does not keep them."""
        if data is None:
            data = self._read(tracked, "schedstat")
        tracked.runtime_text = data[:data.find(b" ")]
        try:
            return int(tracked.runtime_text)
        except ValueError:
            self.use_schedstat = False
            return -1

    def _sample(self, pid: int, now: float | None, sched: bytes | None = None
                ) -> tuple[Tracked, float, float]:
        """Read *pid* once: its record updated, its CPU percent since the previous read
        and its age; :class:`Gone` once it has ended.

        A process that has not run since its previous read (its ``schedstat`` run time
        unchanged) keeps that read's figures, up to :data:`FULL_READ_EVERY` reads in a
        row: one small read instead of ``stat``'s fifty fields."""
        tracked = self._tracked.get(pid)
        if tracked is None:
            tracked = self._tracked[pid] = Tracked(pid)
        now = time.time() if now is None else now
        runtime = -1
        if self.use_schedstat and tracked.settled:
            runtime = self._runtime(tracked, sched)
            if (runtime == tracked.runtime and tracked.same_reads < FULL_READ_EVERY
                    and now > tracked.read_at):
                tracked.same_reads += 1
                tracked.read_at = now
                return tracked, 0.0, now - tracked.create_time
        tracked.runtime, tracked.same_reads = runtime, 0
        data = self._read(tracked, "stat")
        fields = data[data.rfind(b")") + 2:].split()
        try:
            ticks = int(fields[_UTIME]) + int(fields[_STIME])
            start = int(fields[_START])
            tracked.nice = int(fields[_NICE])
            vsize, rss = int(fields[_VSIZE]), int(fields[_RSS]) * PAGE_SIZE
        except (IndexError, ValueError):  # a kernel with another layout: nothing to say
            raise Gone(pid) from None
        if tracked.start is not None and start != tracked.start:  # a new process, same pid
            raise Gone(pid)
        if tracked.start is None:
            tracked.start = start
            tracked.create_time = self.boot_time + start / CLOCK_TICKS
        if tracked.cpu_ticks < 0 or now <= tracked.read_at:
            cpu = 0.0
        else:
            cpu = round(100.0 * (ticks - tracked.cpu_ticks) / CLOCK_TICKS
                        / (now - tracked.read_at), 1)
        # the texts are made again only when their figure changed (rarely, for most)
        if ticks != tracked.cpu_ticks:
            tracked.ctime_text = cpu_time_text(ticks / CLOCK_TICKS)
        if rss != tracked.rss or not tracked.rss_text:
            tracked.rss_text = human_bytes(rss)
            tracked.mem = (round(100.0 * rss / self.total_memory, 3) if self.total_memory
                           else NA)
        if vsize != tracked.vsize:
            tracked.vsize, tracked.vsize_text = vsize, human_bytes(vsize)
        tracked.cpu_ticks, tracked.read_at, tracked.rss = ticks, now, rss
        age = now - tracked.create_time
        if not tracked.settled:
            tracked.cmdline = self._cmdline(pid)
            tracked.username = self._username(pid)
            tracked.settled = age >= SETTLE_SECONDS
            if tracked.settled:  # processes started together: their full reads spread out
                tracked.same_reads = pid % FULL_READ_EVERY
            tracked.head = tracked.tail = b""  # made again with what was read now
        return tracked, cpu, age

    def read(self, pid: int, now: float | None = None) -> dict[str, Any]:
        """The figures of *pid* in Circus 0.19's ``stat.<watcher>.<pid>`` form (without
        ``subtopic`` and ``name``); :class:`Gone` once it has ended."""
        tracked, cpu, age = self._sample(pid, now)
        tracked.key = None  # the figures read here are not those of encode's last message
        return {
            "pid": pid,
            "cpu": cpu,
            "mem": tracked.mem,
            "mem_info1": tracked.rss_text,
            "mem_info2": tracked.vsize_text,
            "ctime": tracked.ctime_text,
            "username": tracked.username,
            "nice": tracked.nice,
            "create_time": tracked.create_time,
            "age": age,
            "cmdline": tracked.cmdline,
            "children": [],
        }

    def encode(self, pid: int, now: float, name: str | None = None
               ) -> tuple[bytes, float, Any, float]:
        """The JSON of :meth:`read` with ``subtopic`` and ``name``, as
        ``json.dumps`` writes it, and the CPU, memory and age for the aggregate.

        What does not change for a process (its pid, user, start time, command line and
        name) is encoded once, after it has settled, and so are the figures until one
        of them changes: for an idle process, each interval writes only its age."""
        tracked = self._tracked.get(pid)
        if (tracked is not None and tracked.sched_fd is not None and tracked.head
                and tracked.key is not None and tracked.key[0] == 0.0
                and tracked.same_reads < FULL_READ_EVERY and now > tracked.read_at):
            # the common case, inline: an idle process whose last message said CPU 0.0
            try:
                data = os.pread(tracked.sched_fd, 256, 0)
            except OSError as exc:
                raise Gone(pid) from exc
            if data[:data.find(b" ")] == tracked.runtime_text:
                tracked.same_reads += 1
                tracked.read_at = now
                age = now - tracked.create_time
                return (tracked.before_age + repr(age).encode() + tracked.tail, 0.0,
                        tracked.mem, age)
            sched = data  # it has run: read in full, without reading schedstat again
        else:
            sched = None
        tracked, cpu, age = self._sample(pid, now, sched)
        if not tracked.head:
            tracked.head = f'{{"pid": {pid}, "cpu": '.encode()
            tracked.tail = (
                f', "cmdline": {json.dumps(tracked.cmdline)}, "children": [], '
                f'"subtopic": {pid}, "name": {json.dumps(name)}}}').encode()
            tracked.user_json = json.dumps(tracked.username)
            tracked.key = None
        mem = tracked.mem
        key = (cpu, tracked.cpu_ticks, tracked.rss, tracked.vsize, tracked.nice)
        if key != tracked.key:  # else the message differs from the previous one by its age
            tracked.key = key
            tracked.before_age = tracked.head + (
                f'{cpu!r}, "mem": {json.dumps(mem) if mem == NA else repr(mem)}, '
                f'"mem_info1": "{tracked.rss_text}", "mem_info2": "{tracked.vsize_text}", '
                f'"ctime": "{tracked.ctime_text}", "username": {tracked.user_json}, '
                f'"nice": {tracked.nice}, "create_time": {tracked.create_time!r}, '
                '"age": ').encode()
        return tracked.before_age + repr(age).encode() + tracked.tail, cpu, mem, age

    def raw(self, pid: int) -> tuple[float, int, float] | None:
        """CPU seconds, resident bytes and start time (Unix) of *pid* at its last read."""
        tracked = self._tracked.get(pid)
        if tracked is None or tracked.start is None or tracked.cpu_ticks < 0:
            return None
        return tracked.cpu_ticks / CLOCK_TICKS, tracked.rss, tracked.create_time

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


def aggregate(pids: list[int], cpus: list[float], mems: list[Any], ages: list[float]
              ) -> dict[str, Any]:
    """``stat.<watcher>``: the pids, the mean CPU, the sum of memory, the oldest age."""
    return {
        "pid": pids,
        "cpu": sum(cpus) / len(cpus) if cpus else 0.0,
        "mem": NA if NA in mems else sum(mems),
        "age": max(ages) if ages else NA,
    }
