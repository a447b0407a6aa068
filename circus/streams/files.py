"""Streams that append a watcher's output to a file, with size, time or logrotate handling.

Rotation never cuts a line in two: when a file is due to rotate, the line being written is
finished in the old file first, so the backups followed by the current file hold every line once,
whole and in order. Writes go straight from the chunk to the file object (no Python loop per line
unless ``time_format`` asks for a prefix on each line) and are flushed after each call, so
``tail -f`` sees output at once.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta, timezone
from typing import IO, Any

from circus.streams.base import LinePrefixer, StreamConfigError, chunk_of, option
from circus.util.convert import to_bool, to_float, to_int, to_size

__all__ = ["FileStream", "TimedRotatingFileStream", "WatchedFileStream"]

log = logging.getLogger(__name__)

Clock = Callable[[], float]


def _at_least(key: str, value: int | float, low: int | float) -> None:
    if value < low:
        raise StreamConfigError(key, f"must be at least {low}, got {value}")


def _time_format(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise StreamConfigError("time_format", f"expected a strftime format, got {value!r}")
    return value


class FileStream:
    """Append output to *filename*; with ``max_bytes`` and ``backup_count``, rotate by size.

    Args:
        filename: The file to append to; relative paths are taken from circusd's working
            directory at start. Without one, a fresh temporary file is created (``mkstemp``).
        max_bytes: Rotate when the file would grow past this size (``1000``, ``10M``). Only
            with ``backup_count > 0`` as well; otherwise the file just grows.
        backup_count: How many old files to keep: ``file.1`` (newest) to ``file.N``.
        time_format: A strftime format; when set, each line starts with
            ``<time> [<pid>] | ``.

    A line longer than ``max_bytes`` is written whole, in a file of its own if need be.
    """

    def __init__(
        self,
        filename: str | None = None,
        max_bytes: int | str = 0,
        backup_count: int | str = 0,
        time_format: str | None = None,
        *,
        _clock: Clock = time.time,
    ) -> None:
        self.max_bytes = option("max_bytes", max_bytes, to_size)
        self.backup_count = option("backup_count", backup_count, to_int)
        _at_least("max_bytes", self.max_bytes, 0)
        _at_least("backup_count", self.backup_count, 0)
        self._init_file(filename, time_format, _clock)

    # -- shared by every file stream ------------------------------------------------------------

    def _init_file(
        self,
        filename: str | None,
        time_format: str | None,
        clock: Clock,
        *,
        utc: bool = False,
    ) -> None:
        if filename is None or filename == "":
            fd, filename = tempfile.mkstemp(prefix="circus-", suffix=".log")
            os.close(fd)
        elif not isinstance(filename, str | os.PathLike):
            raise StreamConfigError("filename", f"expected a path, got {filename!r}")
        self.filename: str = os.path.abspath(os.fspath(filename))
        self.time_format = _time_format(time_format)
        self._clock = clock
        self._prefixer = (
            LinePrefixer(self.time_format, utc=utc, clock=clock) if self.time_format else None
        )
        self._lock = threading.Lock()
        self._closed = False
        self._rotation_failed = False
        self._file: IO[bytes] | None = None
        self._size = 0
        self._at_line_start = True
        self._dev_ino = (0, 0)
        try:
            self._open_file()
        except OSError as exc:
            raise StreamConfigError("filename", f"cannot open {self.filename!r}: {exc}") from None

    def _open_file(self) -> None:
        """Open (or create) the file for appending and learn its size and last byte."""
        file = open(self.filename, "ab")  # noqa: SIM115 - kept open for the stream's lifetime
        st = os.fstat(file.fileno())
        self._file = file
        self._size = st.st_size
        self._dev_ino = (st.st_dev, st.st_ino)
        self._at_line_start = st.st_size == 0 or self._ends_with_newline()

    def _ends_with_newline(self) -> bool:
        try:
            with open(self.filename, "rb") as f:
                f.seek(-1, os.SEEK_END)
                return f.read(1) == b"\n"
        except OSError:
            return True

    def _close_file(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError as exc:
                log.warning("could not close %s: %s", self.filename, exc)
            self._file = None

    def _put(self, piece: bytes | memoryview) -> None:
        """Write *piece* to the current file and keep count of its size and line state."""
        if not piece:
            return
        assert self._file is not None
        self._file.write(piece)
        self._size += len(piece)
        self._at_line_start = piece[-1] == 10

    def __call__(self, data: Mapping[str, Any]) -> None:
        """Write one chunk and flush it. A write error (disk full) is raised to the caller."""
        chunk, pid, name = chunk_of(data)
        with self._lock:  # streams are shared: keep the carry and the rotation consistent
            if self._prefixer is not None:
                chunk = self._prefixer.feed(chunk, pid, name)
            if chunk:
                self._write_and_flush(chunk)

    def _write_and_flush(self, chunk: bytes) -> None:
        if self._file is None:  # written after close(): open just for this call
            self._open_file()
        self._before_write()
        self._write(chunk)
        assert self._file is not None
        self._file.flush()
        if self._closed:
            self._close_file()

    def _before_write(self) -> None:
        """Hook run under the lock before each write."""

    def close(self) -> None:
        """Write out any line still held for a prefix, then close the file."""
        with self._lock:
            self._closed = True
            tail = self._prefixer.flush() if self._prefixer is not None else b""
            if tail:
                self._write_and_flush(tail)
            self._close_file()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.filename!r}>"

    # -- size rotation ----------------------------------------------------------------------

    def _write(self, chunk: bytes) -> None:
        if self.max_bytes <= 0 or self.backup_count <= 0 or self._rotation_failed:
            self._put(chunk)
            return
        view = memoryview(chunk)
        pos, end, limit = 0, len(chunk), self.max_bytes
        while pos < end:
            room = limit - self._size
            if self._rotation_failed:
                self._put(view[pos:])
                return
            if end - pos <= room:
                self._put(view[pos:])
                return
            # Too much for this file: cut after the last newline that still fits...
            cut = chunk.rfind(b"\n", pos, pos + room) if room > 0 else -1
            if cut >= 0:
                self._put(view[pos : cut + 1])
                pos = cut + 1
                self._rotate()
            elif self._at_line_start and self._size > 0:
                # ...or, if the next line alone does not fit, give it a fresh file...
                self._rotate()
            else:
                # ...or finish the line already started here (or too long for any file), whole.
                cut = chunk.find(b"\n", pos)
                if cut < 0:
                    self._put(view[pos:])
                    return
                self._put(view[pos : cut + 1])
                pos = cut + 1
                self._rotate()

    def _rotate(self) -> None:
        """``file.N-1`` → ``file.N`` … ``file`` → ``file.1``, then start an empty ``file``."""
        self._close_file()
        try:
            for index in range(self.backup_count - 1, 0, -1):
                older = f"{self.filename}.{index}"
                if os.path.exists(older):
                    os.replace(older, f"{self.filename}.{index + 1}")
            if os.path.exists(self.filename):
                os.replace(self.filename, f"{self.filename}.1")
        except OSError as exc:
            self._rotation_failed = True  # not once per chunk from now on
            log.warning("could not rotate %s, appending to it from now on: %s", self.filename, exc)
        self._open_file()


class WatchedFileStream(FileStream):
    """Append output to *filename*, and reopen it when something else moves or deletes it.

    For an external ``logrotate`` (without ``copytruncate``): the path is checked with
    ``os.stat`` at most every ``check_interval`` seconds, before a write; if the file is gone or
    is another file (device or inode changed), it is reopened, creating a new one.
    """

    def __init__(
        self,
        filename: str,
        time_format: str | None = None,
        check_interval: float | str = 1.0,
        *,
        _clock: Clock = time.time,
    ) -> None:
        if filename is None or filename == "":
            raise StreamConfigError("filename", "required for a WatchedFileStream")
        self.max_bytes = 0
        self.backup_count = 0
        self.check_interval = option("check_interval", check_interval, to_float)
        self._checked_at = float("-inf")
        self._init_file(filename, time_format, _clock)
        self._checked_at = _clock()

    def _before_write(self) -> None:
        now = self._clock()
        if 0 <= now - self._checked_at < self.check_interval:  # a clock jump back checks too
            return
        self._checked_at = now
        try:
            st = os.stat(self.filename)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.debug("cannot stat %s: %s", self.filename, exc)
            return
        else:
            if (st.st_dev, st.st_ino) == self._dev_ino:
                return
        log.info("%s was moved or deleted, reopening it", self.filename)
        self._close_file()
        self._open_file()


_UNITS: dict[str, tuple[int, str, int]] = {
    # rotate_when: (seconds per interval, suffix format, digits in the suffix)
    "S": (1, "%Y%m%d%H%M%S", 14),
    "M": (60, "%Y%m%d%H%M", 12),
    "H": (3600, "%Y%m%d%H", 10),
    "D": (86400, "%Y%m%d", 8),
    "MIDNIGHT": (86400, "%Y%m%d", 8),
    **{f"W{day}": (7 * 86400, "%Y%m%d", 8) for day in range(7)},
}


def _rotate_when(value: object) -> str:
    if not isinstance(value, str) or value.strip().upper() not in _UNITS:
        raise ValueError(f"expected one of S, M, H, D, MIDNIGHT, W0..W6 (any case), got {value!r}")
    return value.strip().upper()


class TimedRotatingFileStream(FileStream):
    """Append output to *filename* and rotate it every ``rotate_interval`` × ``rotate_when``.

    Args:
        rotate_when: ``S``, ``M``, ``H``, ``D`` (seconds, minutes, hours, days from the time the
            file was started), ``MIDNIGHT`` (at midnight) or ``W0``…``W6`` (at the midnight that
            starts Monday…Sunday); any case.
        rotate_interval: How many of those units per file (with ``MIDNIGHT``/``Wn``: days/weeks).
        utc: Use UTC rather than local time for midnight and for the backup names.
        backup_count: Keep this many backups and delete older ones; 0 keeps them all.

    A backup is named ``file.<start>``, with the time its period started formatted
    ``%Y%m%d%H%M%S`` (S), ``%Y%m%d%H%M`` (M), ``%Y%m%d%H`` (H) or ``%Y%m%d`` (others).
    Rotation happens on the first write after the period ends, at a line boundary.
    ``max_bytes`` is accepted and ignored, as in Circus.
    """

    def __init__(
        self,
        filename: str,
        backup_count: int | str = 0,
        time_format: str | None = None,
        rotate_when: str = "H",
        rotate_interval: int | str = 1,
        utc: bool | str = False,
        max_bytes: int | str | None = None,
        *,
        _clock: Clock = time.time,
    ) -> None:
        if filename is None or filename == "":
            raise StreamConfigError("filename", "required for a TimedRotatingFileStream")
        del max_bytes  # size rotation does not apply here
        self.max_bytes = 0
        self.backup_count = option("backup_count", backup_count, to_int)
        _at_least("backup_count", self.backup_count, 0)
        self.rotate_when = option("rotate_when", rotate_when, _rotate_when)
        self.rotate_interval = option("rotate_interval", rotate_interval, to_int)
        _at_least("rotate_interval", self.rotate_interval, 1)
        self.utc = option("utc", utc, to_bool)
        self._suffix = _UNITS[self.rotate_when][1]
        self._init_file(filename, time_format, _clock, utc=self.utc)
        now = _clock()
        # A file from an earlier run: its period started when it was last written, at the latest.
        self._period_start = min(os.stat(self.filename).st_mtime, now) if self._size else now
        self._rollover_at = self._next_rollover(self._period_start)
        self._delete_old_backups()

    # -- when ---------------------------------------------------------------------------------

    def _next_rollover(self, start: float) -> float:
        when = self.rotate_when
        if when in ("S", "M", "H", "D"):
            return start + self.rotate_interval * _UNITS[when][0]
        tz = UTC if self.utc else None
        day = datetime.fromtimestamp(start, tz).date() + timedelta(days=1)
        if when == "MIDNIGHT":
            day += timedelta(days=self.rotate_interval - 1)
        else:
            day += timedelta(days=(int(when[1]) - day.weekday()) % 7)
            day += timedelta(weeks=self.rotate_interval - 1)
        return self._midnight(day, tz)

    @staticmethod
    def _midnight(day: date, tz: timezone | None) -> float:
        return datetime(day.year, day.month, day.day, tzinfo=tz).timestamp()

    # -- how ----------------------------------------------------------------------------------

    def _write(self, chunk: bytes) -> None:
        now = self._clock()
        if now < self._rollover_at:
            self._put(chunk)
        elif self._at_line_start:
            self._rotate(now)
            self._put(chunk)
        else:  # finish the line this file holds the start of, then rotate
            cut = chunk.find(b"\n")
            if cut < 0:
                self._put(chunk)
                return
            view = memoryview(chunk)
            self._put(view[: cut + 1])
            self._rotate(now)
            self._put(view[cut + 1 :])

    def _rotate(self, now: float | None = None) -> None:
        now = self._clock() if now is None else now
        if self._size > 0:
            self._close_file()
            to_struct = time.gmtime if self.utc else time.localtime
            dest = f"{self.filename}.{time.strftime(self._suffix, to_struct(self._period_start))}"
            taken, n = dest, 0
            while os.path.exists(taken):  # e.g. an hour that happens twice when DST ends
                n += 1
                taken = f"{dest}.{n}"
            try:
                os.replace(self.filename, taken)
            except OSError as exc:
                log.warning("could not rotate %s, appending to it instead: %s", self.filename, exc)
            self._open_file()
            self._delete_old_backups()
        self._period_start = now
        self._rollover_at = self._next_rollover(now)

    def backups(self) -> list[str]:
        """Paths of this stream's backups, oldest first."""
        folder, base = os.path.split(self.filename)
        digits = _UNITS[self.rotate_when][2]
        pattern = re.compile(re.escape(base) + rf"\.(\d{{{digits}}})(?:\.(\d+))?")
        found: list[tuple[str, int, str]] = []
        try:
            names = os.listdir(folder)
        except OSError:
            return []
        for name in names:
            match = pattern.fullmatch(name)
            if match:
                found.append((match.group(1), int(match.group(2) or 0), name))
        return [os.path.join(folder, name) for *_, name in sorted(found)]

    def _delete_old_backups(self) -> None:
        if self.backup_count <= 0:
            return
        backups = self.backups()
        for path in backups[: max(0, len(backups) - self.backup_count)]:
            try:
                os.unlink(path)
            except OSError as exc:
                log.warning("could not delete old log %s: %s", path, exc)
