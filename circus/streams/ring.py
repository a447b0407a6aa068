"""The latest output of a watcher, kept in memory for the ``tail`` command.

Adding output must cost next to nothing: it runs for every chunk read from every child,
at hundreds of megabytes a second. So the ring stores the chunks as they were read,
bounded by bytes, and cuts them into lines only when someone asks for them.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from circus.streams.base import chunk_of

__all__ = ["Line", "OutputRing"]

Line = tuple[float, int, str, bytes]
"""``(time it was read, pid, "stdout" or "stderr", the line without its newline)``."""

DEFAULT_BYTES = 256 * 1024


class OutputRing:
    """The last *max_bytes* bytes of output of every process and stream of a watcher."""

    def __init__(self, max_bytes: int = DEFAULT_BYTES, *,
                 _clock: Callable[[], float] = time.time) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, got {max_bytes}")
        self.max_bytes = max_bytes
        # (time, pid, name, chunk, starts a line)
        self._chunks: deque[tuple[float, int, str, bytes, bool]] = deque()
        self._size = 0
        self._line_start: dict[tuple[int, str], bool] = {}
        self._clock = _clock

    def add(self, pid: int, name: str, data: bytes) -> None:
        """Record *data*, read from *pid*'s *name* stream. O(1) per chunk."""
        if not data:
            return
        key = (pid, name)
        starts = self._line_start.get(key, True)
        self._line_start[key] = data.endswith(b"\n")
        self._chunks.append((self._clock(), pid, name, data, starts))
        self._size += len(data)
        while self._size > self.max_bytes and len(self._chunks) > 1:
            self._size -= len(self._chunks.popleft()[3])

    def __call__(self, data: Mapping[str, Any]) -> None:
        chunk, pid, name = chunk_of(data)
        self.add(pid, name, chunk)

    def unfinished(self) -> set[tuple[int, str]]:
        """The ``(pid, name)`` whose latest output does not end with a newline yet."""
        return {key for key, ended in self._line_start.items() if not ended}

    def forget(self, pid: int) -> None:
        """The process is gone: its pid may be reused, so its partial line is closed."""
        for name in ("stdout", "stderr"):
            self._line_start.pop((pid, name), None)

    def last(
        self, n: int, pid: int | None = None, names: Iterable[str] = ("stdout", "stderr")
    ) -> list[Line]:
        """The last *n* complete lines (oldest first), of *pid* only if given, from *names*.

        A line still being written (no newline yet) is included too, at the end of its
        process's output, so a prompt or progress line is not hidden.
        """
        if n <= 0:
            return []
        wanted = frozenset(names)
        lines: list[Line] = []
        carry: dict[tuple[int, str], tuple[float, bytes]] = {}
        seen: set[tuple[int, str]] = set()
        for when, cpid, name, chunk, starts in self._chunks:
            if name not in wanted or (pid is not None and cpid != pid):
                continue
            key = (cpid, name)
            if key not in seen:
                seen.add(key)
                if not starts:  # its beginning fell out of the ring: drop the fragment
                    cut = chunk.find(b"\n")
                    if cut < 0:
                        continue
                    chunk = chunk[cut + 1:]
            held = carry.pop(key, None)
            if held is not None:
                chunk = held[1] + chunk
            parts = chunk.split(b"\n")
            for part in parts[:-1]:
                lines.append((when, cpid, name, part))
            if parts[-1]:
                carry[key] = (when, parts[-1])
        for (cpid, name), (when, rest) in carry.items():
            lines.append((when, cpid, name, rest))
        lines.sort(key=lambda line: line[0])  # stable: each process keeps its own order
        return lines[-n:]

    def clear(self) -> None:
        self._chunks.clear()
        self._size = 0
        self._line_start.clear()

    def close(self) -> None:
        """Nothing to flush: partial lines are already visible to :meth:`last`."""
