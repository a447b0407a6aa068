"""The last lines of a watcher's output, kept in memory for a ``tail`` command."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from circus.streams.base import CARRY_LIMIT, chunk_of

__all__ = ["Line", "OutputRing"]

Line = tuple[float, int, str, bytes]
"""``(time it was read, pid, "stdout" or "stderr", the line without its newline)``."""


class OutputRing:
    """A bounded ring of the last *size* lines of output, from every process and stream.

    Feed it with :meth:`add` (or call it like a stream). Lines are split on ``\\n``; a partial
    line waits, per (pid, stream), for its end, unless it grows past 64 KiB. Memory stays bounded
    by *size* lines whatever the children print.
    """

    def __init__(self, size: int = 1000, *, _clock: Callable[[], float] = time.time) -> None:
        if size < 1:
            raise ValueError(f"size must be at least 1, got {size}")
        self.size = size
        self._lines: deque[Line] = deque(maxlen=size)
        self._carry: dict[tuple[int, str], bytes] = {}
        self._clock = _clock

    def add(self, pid: int, name: str, data: bytes) -> None:
        """Record the complete lines of *data*, read from *pid*'s *name* stream."""
        key = (pid, name)
        held = self._carry.pop(key, None)
        buf = held + data if held else data
        last = buf.rfind(b"\n")
        if last < 0:
            if len(buf) > CARRY_LIMIT:
                self._lines.append((self._clock(), pid, name, buf))
            elif buf:
                self._carry[key] = buf
            return
        tail = buf[last + 1 :]
        if len(tail) > CARRY_LIMIT:
            last = len(buf)
        elif tail:
            self._carry[key] = tail
        lines = buf[:last].split(b"\n")
        if len(lines) > self.size:  # only the newest can stay
            lines = lines[-self.size :]
        now = self._clock()
        self._lines.extend([(now, pid, name, line) for line in lines])

    def __call__(self, data: Mapping[str, Any]) -> None:
        chunk, pid, name = chunk_of(data)
        self.add(pid, name, chunk)

    def last(
        self, n: int, pid: int | None = None, names: Iterable[str] = ("stdout", "stderr")
    ) -> list[Line]:
        """The last *n* lines (oldest first), of *pid* only if given, from the *names* streams."""
        if n <= 0:
            return []
        wanted = frozenset(names)
        found: list[Line] = []
        for line in reversed(self._lines):
            if line[2] in wanted and (pid is None or line[1] == pid):
                found.append(line)
                if len(found) == n:
                    break
        found.reverse()
        return found

    def clear(self) -> None:
        self._lines.clear()
        self._carry.clear()

    def close(self) -> None:
        """Record the partial lines still waiting for their end."""
        now = self._clock()
        for (pid, name), held in self._carry.items():
            self._lines.append((now, pid, name, held))
        self._carry.clear()
