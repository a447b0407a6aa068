"""What waits for a process's own sign of readiness: ``log:REGEX`` and ``fd:N``.

* :class:`LogMatcher` finds the first output line matching ``log:REGEX``;
* :class:`FdNotification` is the pipe of ``fd:N``: the process writes a newline on it
  once ready (the s6 protocol).

(``notify`` needs a datagram socket of circusd's, which the watcher owns.) Both are
re-exported by :mod:`circus.probes`.
"""

from __future__ import annotations

import asyncio
import os
import re

__all__ = ["MAX_LINE", "FdNotification", "LogMatcher"]

MAX_LINE = 64 * 1024  # a longer output line is matched on its first MAX_LINE bytes


# -- log:REGEX ----------------------------------------------------------------------------

class LogMatcher:
    """Finds the first complete output line that matches a regular expression.

    Feed it the chunks of one stream as they are read. Lines are decoded as UTF-8
    (undecodable bytes replaced) without their ``\\n`` (nor a ``\\r`` before it) and
    searched with ``re.search``. A line cut across chunks is joined first; a line longer
    than :data:`MAX_LINE` bytes is searched on its first :data:`MAX_LINE` bytes only. A
    partial line is kept as a list of chunks and joined once, when its end arrives.
    """

    def __init__(self, regex: str | re.Pattern[str]) -> None:
        self.pattern = regex if isinstance(regex, re.Pattern) else re.compile(regex)
        self.matched = False
        self._parts: list[bytes] = []  # the line so far, at most MAX_LINE bytes
        self._size = 0
        self._skipping = False  # the current line passed MAX_LINE and was searched

    def feed(self, data: bytes) -> bool:
        """Take one chunk; True once a line has matched (and from then on)."""
        if self.matched:
            return True
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                self._keep(data, start)
                return self.matched
            if self._skipping:
                self._skipping = False
            elif self._parts:
                self._add(data[start:end])
                line = b"".join(self._parts)
                self._parts.clear()
                self._size = 0
                if self._search(line):
                    return True
            elif self._search(data[start:min(end, start + MAX_LINE)]):
                return True
            start = end + 1

    def _keep(self, data: bytes, start: int) -> None:
        if self._skipping or start >= len(data):
            return
        self._add(data[start:])
        if self._size >= MAX_LINE:  # the first MAX_LINE bytes are known: search them now
            line = b"".join(self._parts)
            self._parts.clear()
            self._size = 0
            self._skipping = True
            self._search(line)

    def _add(self, piece: bytes) -> None:
        room = MAX_LINE - self._size
        if room <= 0:
            return
        if len(piece) > room:
            piece = piece[:room]
        self._parts.append(piece)
        self._size += len(piece)

    def _search(self, line: bytes) -> bool:
        text = line.decode("utf-8", "replace")
        if text.endswith("\r"):
            text = text[:-1]
        if self.pattern.search(text) is not None:
            self.matched = True
            self._parts.clear()
        return self.matched


# -- fd:N ---------------------------------------------------------------------------------

class FdNotification:
    """The pipe of ``fd:N`` readiness (s6): the process writes a newline on fd N.

    The spawner places :attr:`write_fd` at descriptor N in the child (a ``dup2``, which
    also clears close-on-exec there); the parent calls :meth:`close_write` once the child
    exists, so that the pipe ends when the child (and whatever inherited it) closes it
    or dies. :meth:`wait` says which came first. Both ends are close-on-exec, so no other
    child inherits them. As s6 does, the caller closes the pipe (:meth:`close`) once
    :meth:`wait` has answered: a program writes its newline once, then closes fd N.
    """

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        os.set_blocking(self.write_fd, True)  # the child's end: as a program expects it
        self._result: bool | None = None
        self._waiting = False

    def close_write(self) -> None:
        """Close the parent's copy of the write end (after the spawn)."""
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1

    async def wait(self) -> bool:
        """True once a newline has been read; False at the end of the pipe without one.

        Call :meth:`close_write` first, or the end never comes.
        """
        if self._result is not None:
            return self._result
        if self.read_fd < 0:
            raise ValueError("the notification pipe is closed")
        if self._waiting:
            raise RuntimeError("wait() is already running")
        self._waiting = True
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bool] = loop.create_future()
        fd = self.read_fd
        loop.add_reader(fd, self._readable, done)
        try:
            self._result = await done
        finally:
            loop.remove_reader(fd)
            self._waiting = False
        return self._result

    def _readable(self, done: asyncio.Future[bool]) -> None:
        try:
            data = os.read(self.read_fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if done.done():
            return
        if b"\n" in data:
            done.set_result(True)
        elif not data:
            done.set_result(False)

    def close(self) -> None:
        """Close both ends (idempotent)."""
        self.close_write()
        if self.read_fd >= 0:
            os.close(self.read_fd)
            self.read_fd = -1

