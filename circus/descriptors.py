"""circusd's descriptor table: what processes cost in it, and what is kept free.

A process costs circusd no descriptor to be supervised (deaths are seen through SIGCHLD,
see :mod:`circus.children`) and one per captured stream (the read end of its pipe), so that
each line of output is known to come from that process. When the table runs short, the
processes a watcher starts from then on share one pipe per stream instead
(:class:`SharedOutput`): a line still reaches the watcher's streams and ``tail``, but
with no pid (0), as a whole line as long as it is at most ``PIPE_BUF`` (4096) bytes.

:data:`RESERVE` descriptors are always kept free for circusd's own use: ZeroMQ sockets and
the connections they accept (libzmq aborts the whole process on ``EMFILE``), log and
stream files, ``/proc`` reads. A spawn that would eat into them takes the shared pipe,
and a spawn that cannot even do that is refused, with the watcher in ``backoff``.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

RESERVE = 64
RECOUNT = 0.25  # seconds a count of the table is trusted for, adjusted by what we open
RECOUNT_ROOMY = 5.0  # ... while at least ROOMY descriptors are free
ROOMY = 4096
# errors of a spawn that say the machine or circusd is out of something, not that the
# command is wrong: they never stop a watcher (see Watcher._spawn_missing)
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.EAGAIN, errno.ENOMEM})

# the soft RLIMIT_NOFILE circusd was started with (circus/cli/circusd.py raises it to the
# hard limit; children get this one back, see circus/spawn.py)
started_soft_nofile: int | None = None


def limit() -> int:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def open_count() -> int:
    """Descriptors circusd has open now (read from /proc; one listing)."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # minus the listing's own
    except OSError:
        return 0


class _Table:
    def __init__(self) -> None:
        self._count = 0
        self._at = -RECOUNT

    def used(self) -> int:
        now = time.monotonic()
        # A count lists the whole table (about 10 ms at 20,000 descriptors): far from the
        # limit, what we opened and closed since keeps it close enough for longer.
        trusted = RECOUNT if limit() - self._count < ROOMY else RECOUNT_ROOMY
        if now - self._at >= trusted:
            self._count, self._at = open_count(), now
        return self._count

    def took(self, n: int) -> None:
        """*n* descriptors were opened (negative: closed) since the last count."""
        self._count += n

    def forget(self) -> None:
        self._at = -RECOUNT


TABLE = _Table()


def room() -> int:
    """Descriptors that can still be opened without touching the reserve."""
    return limit() - TABLE.used() - RESERVE


def how_to_raise() -> str:
    return ("raise RLIMIT_NOFILE with `ulimit -n` before starting circusd, LimitNOFILE= in "
            "its systemd unit, --ulimit nofile= for a container, or [circus] minfds")


def describe_shortage(full: bool = True) -> str:
    state = "full" if full else "running short"
    return (f"circusd's descriptor table is {state} (RLIMIT_NOFILE {limit()}, "
            f"{TABLE.used()} open, {RESERVE} kept for its own sockets); " + how_to_raise())


def is_resource_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in RESOURCE_ERRNOS


def describe_resource_error(exc: OSError) -> str:
    if exc.errno == errno.EMFILE:
        return describe_shortage()
    if exc.errno == errno.ENFILE:
        return ("the system's file table is full (fs.file-max); raise it with "
                "`sysctl fs.file-max` or close files elsewhere")
    if exc.errno == errno.EAGAIN:
        nproc = resource.getrlimit(resource.RLIMIT_NPROC)[0]
        shown = "unlimited" if nproc == resource.RLIM_INFINITY else str(nproc)
        return (f"no process can be created (RLIMIT_NPROC {shown}, or kernel.pid_max): "
                "raise it with `ulimit -u`, LimitNPROC= in the systemd unit or [circus] "
                "minprocs, or run fewer processes")
    return "out of memory: no process can be created"


class SharedOutput:
    """One pipe per stream, shared by the processes a watcher starts while descriptors
    are short. Reads are fed to *on_output* with a source whose pid is 0."""

    pid = 0  # what the output router keys lines by

    def __init__(self, names: tuple[str, ...],
                 on_output: Callable[[SharedOutput, str, bytes], None]) -> None:
        import asyncio

        self._loop = asyncio.get_running_loop()
        self._on_output = on_output
        self._read: dict[int, str] = {}
        self.write_ends: dict[str, int] = {}
        self._paused = False
        for name in names:
            read_end, write_end = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
            os.set_blocking(write_end, True)  # the children's end: they block when it is full
            self._read[read_end] = name
            self.write_ends[name] = write_end
            self._loop.add_reader(read_end, self._on_readable, read_end)
        TABLE.took(2 * len(names))

    def _on_readable(self, fd: int) -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        if data:
            self._on_output(self, self._read[fd], data)

    def pause_reading(self) -> None:
        if not self._paused:
            self._paused = True
            for fd in self._read:
                self._loop.remove_reader(fd)

    def resume_reading(self) -> None:
        if self._paused:
            self._paused = False
            for fd in self._read:
                self._loop.add_reader(fd, self._on_readable, fd)

    def close(self) -> None:
        """Stop reading (processes that still hold the write end get EPIPE)."""
        for fd in self._read:
            if not self._paused and not self._loop.is_closed():
                self._loop.remove_reader(fd)
            os.close(fd)
        for fd in self.write_ends.values():
            os.close(fd)
        TABLE.took(-2 * len(self._read))
        self._read.clear()
        self.write_ends.clear()
