"""What every stream shares: the ``Stream`` protocol, option errors and the line prefixer."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar, runtime_checkable

__all__ = [
    "CARRY_LIMIT",
    "LinePrefixer",
    "Stream",
    "StreamConfigError",
    "chunk_of",
    "option",
]

T = TypeVar("T")

# A line still open after this many bytes is written out without waiting for its end, so a
# child that prints megabytes without a newline cannot make circusd hold them in memory.
CARRY_LIMIT = 64 * 1024


@runtime_checkable
class Stream(Protocol):
    """Where a watcher's output goes.

    The stream is called with ``{"data": bytes, "pid": int, "name": "stdout" | "stderr",
    "wid": int | None}`` for each chunk read from a child's pipe (``wid``, the process's worker
    id, is None for the pipes processes share when descriptors are short, and absent in Circus
    0.19). Chunks follow no line boundaries. One stream instance is shared by every process of
    a watcher, and often by its stdout and stderr too.

    A stream that holds unfinished lines may also have ``flush_deadline() -> float | None``
    (when, in ``time.monotonic()`` seconds, it wants ``flush_due(now)`` called; None: no need)
    and ``process_exited(pid)``; circusd's writer thread calls them (``circus.streams.writer``).
    """

    def __call__(self, data: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class StreamConfigError(ValueError):
    """A stream option is missing or wrong; ``key`` names the option (``class``, ``max_bytes``)."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


def option(key: str, value: object, convert: Callable[[object], T]) -> T:
    """Convert the option *key*; a ``ValueError`` becomes a :class:`StreamConfigError`."""
    try:
        return convert(value)
    except StreamConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise StreamConfigError(key, str(exc)) from None


def chunk_of(data: Mapping[str, Any]) -> tuple[bytes, int, str]:
    """``(bytes, pid, stream name)`` out of one call's mapping; text is encoded as UTF-8."""
    raw = data["data"]
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogateescape")
    elif not isinstance(raw, bytes):
        raw = bytes(raw)
    return raw, int(data.get("pid") or 0), str(data.get("name") or "stdout")


class LinePrefixer:
    """Turns chunks into whole lines that each start with ``<time> [<pid>] | ``.

    Partial lines are held per (pid, stream name) until their newline arrives, so lines from
    processes sharing one stream never mix, and a prefix never lands mid-line. A line longer than
    :data:`CARRY_LIMIT` is let out early; its continuation then gets no prefix.

    The work per chunk is a split and a join in C: no Python loop per line.
    """

    def __init__(
        self,
        time_format: str,
        *,
        utc: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.time_format = time_format
        self._to_struct = time.gmtime if utc else time.localtime
        self._clock = clock
        self._carry: dict[tuple[int, str], bytes] = {}
        self._open: set[tuple[int, str]] = set()  # keys whose current line was let out early

    def prefix(self, pid: int) -> bytes:
        stamp = time.strftime(self.time_format, self._to_struct(self._clock()))
        return f"{stamp} [{pid}] | ".encode("utf-8", "surrogateescape")

    def feed(self, data: bytes, pid: int, name: str) -> bytes:
        """Return the bytes to write for *data*: prefixed whole lines, possibly empty."""
        key = (pid, name)
        held = self._carry.pop(key, None)
        buf = held + data if held else data
        last = buf.rfind(b"\n")
        if last < 0:
            if len(buf) <= CARRY_LIMIT:
                if buf:
                    self._carry[key] = buf
                return b""
            return self._let_out(key, buf, self.prefix(pid))
        pre = self.prefix(pid)
        body = (b"\n" + pre).join(buf[:last].split(b"\n"))
        if key in self._open:
            self._open.discard(key)
            out = body + b"\n"
        else:
            out = pre + body + b"\n"
        tail = buf[last + 1 :]
        if len(tail) > CARRY_LIMIT:
            out += self._let_out(key, tail, pre)
        elif tail:
            self._carry[key] = tail
        return out

    def _let_out(self, key: tuple[int, str], buf: bytes, pre: bytes) -> bytes:
        if key in self._open:
            return buf
        self._open.add(key)
        return pre + buf

    def flush(self) -> bytes:
        """End every open line (with a newline) and return what is left to write."""
        return b"".join(out for _pid, out in self.flush_each())

    def flush_each(self) -> list[tuple[int, bytes]]:
        """Like :meth:`flush`, one ``(pid, bytes)`` per held line, for callers that need the pid."""
        parts: list[tuple[int, bytes]] = []
        for key, held in self._carry.items():
            if key in self._open:
                parts.append((key[0], held + b"\n"))
            else:
                parts.append((key[0], self.prefix(key[0]) + held + b"\n"))
            self._open.discard(key)
        parts.extend((key[0], b"\n") for key in self._open)
        self._carry.clear()
        self._open.clear()
        return parts
