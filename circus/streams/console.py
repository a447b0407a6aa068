"""Streams that copy a watcher's output to circusd's own standard output."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from circus.streams.base import LinePrefixer, StreamConfigError, chunk_of

__all__ = ["COLORS", "FancyStdoutStream", "StdoutStream"]

# ANSI foreground colour codes.
COLORS: dict[str, int] = {
    "red": 31,
    "green": 32,
    "yellow": 33,
    "blue": 34,
    "magenta": 35,
    "cyan": 36,
    "white": 37,
}
_PALETTE = tuple(COLORS.values())
_RESET = b"\033[0m"


def _write_stdout(data: bytes) -> None:
    """Write to whatever ``sys.stdout`` is now (tests and daemonizing replace it)."""
    out = sys.stdout
    if out is None:
        return
    buffer = getattr(out, "buffer", None)
    if buffer is not None:
        buffer.write(data)
        buffer.flush()
    else:
        out.write(data.decode("utf-8", "replace"))
        out.flush()


class StdoutStream:
    """Write each chunk as it comes, unchanged, to circusd's stdout (for stderr output too)."""

    def __call__(self, data: Mapping[str, Any]) -> None:
        chunk, _pid, _name = chunk_of(data)
        if chunk:
            _write_stdout(chunk)

    def close(self) -> None:
        """Nothing to release; circusd's stdout stays open."""


class FancyStdoutStream:
    """Write ``<time> [<pid>] | line`` to circusd's stdout, in one colour per process.

    Args:
        color: ``red``, ``green``, ``yellow``, ``blue``, ``magenta``, ``cyan`` or ``white``;
            ``None`` (or ``random``) picks a colour from the pid, so each process keeps its own.
        time_format: A strftime format for the time at the start of each line.
    """

    def __init__(
        self,
        color: str | None = None,
        time_format: str = "%Y-%m-%d %H:%M:%S",
        *,
        _clock: Callable[[], float] = time.time,
    ) -> None:
        if color is None or (isinstance(color, str) and color.strip().lower() in ("", "random")):
            self.color: str | None = None
        elif isinstance(color, str) and color.strip().lower() in COLORS:
            self.color = color.strip().lower()
        else:
            known = ", ".join(COLORS)
            raise StreamConfigError("color", f"expected one of {known} or random, got {color!r}")
        if not isinstance(time_format, str):
            reason = f"expected a strftime format, got {time_format!r}"
            raise StreamConfigError("time_format", reason)
        self.time_format = time_format
        self._prefixer = LinePrefixer(time_format, clock=_clock)

    def color_code(self, pid: int) -> int:
        """The ANSI colour code used for the lines of *pid*."""
        if self.color is not None:
            return COLORS[self.color]
        return _PALETTE[pid % len(_PALETTE)]

    def __call__(self, data: Mapping[str, Any]) -> None:
        chunk, pid, name = chunk_of(data)
        lines = self._prefixer.feed(chunk, pid, name)
        if lines:
            _write_stdout(self._paint(lines, pid))

    def _paint(self, lines: bytes, pid: int) -> bytes:
        return b"\033[0;%dm" % self.color_code(pid) + lines + _RESET

    def close(self) -> None:
        """Write out lines still waiting for their end, each ended with a newline."""
        for pid, lines in self._prefixer.flush_each():
            _write_stdout(self._paint(lines, pid))
