"""Streams that copy a watcher's output to circusd's own stdout or stderr, a line at a time.

Pipes are read in chunks that follow no line boundaries, and every process of every watcher
shares circusd's stdout: written as read, two processes printing at once mix inside a line
(``worker 3 alive for 70sworker 2 alive for 70s``). These streams write whole lines only.
What follows the last newline of a chunk is held, per (pid, pipe), until

- its newline arrives;
- the process exits (:meth:`~_ConsoleStream.process_exited`, which the writer thread calls
  in order with the output): it is written with a newline added;
- it has waited :data:`FLUSH_DELAY` (a prompt without a newline still shows): the writer
  thread calls :meth:`~_ConsoleStream.flush_due` once :meth:`~_ConsoleStream.flush_deadline`
  has passed;
- it grows past :data:`~circus.streams.base.CARRY_LIMIT` (64 KiB).

A line written before its end is *open*. Each of circusd's two standard streams is a
:class:`_Console`, shared by every console stream that writes to it: it has the lock all
of them write under, and remembers which (stream, pid, pipe) the open line belongs to. The
rest of that line continues it; anything else written there first ends it with a newline.
So two processes never share a line, and no byte of a process's output is lost or moved:
the only bytes added are those newlines and the prefixes.

The work per chunk is an ``rfind`` of the last newline (and, with a prefix, a ``replace``
of every newline): no Python loop per line.
"""

from __future__ import annotations

import itertools
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from circus.streams.base import CARRY_LIMIT, StreamConfigError, chunk_of, option
from circus.util.convert import to_bool

__all__ = [
    "COLORS",
    "FLUSH_DELAY",
    "FancyStdoutStream",
    "StderrStream",
    "StdoutStream",
]

# An unfinished line is written anyway once it has waited this long (seconds).
FLUSH_DELAY = 0.5

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
# Colours of the `prefix` labels, one per watcher in the order they appear; red is left
# out, it reads as an error.
_LABEL_PALETTE = (36, 33, 32, 35, 34, 96, 93, 92, 95, 94)

Key = tuple[int, str]  # (pid, pipe name)


def no_color() -> bool:
    """The user asked for no colour (https://no-color.org: ``NO_COLOR`` set, not empty)."""
    return bool(os.environ.get("NO_COLOR"))


class _Console:
    """One of circusd's standard streams, as every console stream writing to it shares it."""

    def __init__(self, name: str) -> None:
        self.name = name  # "stdout" or "stderr": the attribute of sys
        self.lock = threading.Lock()  # held for every write, and every change of `open`
        # (stream token, pid, pipe) of the line written without its end, if any
        self.open: tuple[int, int, str] | None = None
        self.tty = False
        self._target: object = None

    def target(self) -> Any:
        """``sys.stdout`` or ``sys.stderr`` as it is now (tests and daemonizing replace it).

        A new object starts with no open line and is asked whether it is a terminal.
        """
        target = getattr(sys, self.name)
        if target is not self._target:
            self._target = target
            self.open = None
            try:
                self.tty = bool(target is not None and target.isatty())
            except (AttributeError, ValueError, OSError):
                self.tty = False
        return target

    @staticmethod
    def write(target: Any, data: bytes) -> None:
        if target is None:
            return
        buffer = getattr(target, "buffer", None)
        if buffer is not None:
            buffer.write(data)
            buffer.flush()
        else:  # a text stream without bytes underneath (pytest's capsys)
            target.write(data.decode("utf-8", "replace"))
            target.flush()


_CONSOLES = {"stdout": _Console("stdout"), "stderr": _Console("stderr")}
_TOKENS = itertools.count(1)

# The `prefix` labels: one colour per watcher name, and the width they are padded to
# (the longest seen so far), so that the lines of all watchers start in one column.
_label_colours: dict[str, int] = {}
_label_width = 0


def _label_colour(name: str) -> int:
    colour = _label_colours.get(name)
    if colour is None:
        colour = _LABEL_PALETTE[len(_label_colours) % len(_LABEL_PALETTE)]
        _label_colours[name] = colour
    return colour


def _note_width(width: int) -> int:
    global _label_width
    if width > _label_width:
        _label_width = width
    return _label_width


class _ConsoleStream:
    """Whole lines to one :class:`_Console`; subclasses say what each line starts with."""

    def __init__(self, console: str) -> None:
        self._console = _CONSOLES[console]
        self._token = next(_TOKENS)
        # the unfinished line of each (pid, pipe): (bytes, when first held, wid). Oldest
        # first: a key is inserted when its holding starts and deleted when it ends.
        self._held: dict[Key, tuple[bytes, float, int | None]] = {}

    # -- the Stream protocol, and what the writer thread calls -----------------------------

    def __call__(self, data: Mapping[str, Any]) -> None:
        chunk, pid, name = chunk_of(data)
        wid = data.get("wid")
        console = self._console
        with console.lock:
            out = self._take(chunk, pid, name, wid)
            if out:
                self._emit(console.target(), pid, name, wid, out)

    def flush_deadline(self) -> float | None:
        """When (``time.monotonic()``) the oldest unfinished line is due; None: none held."""
        if not self._held:  # the common case, asked before every chunk: no lock
            return None
        with self._console.lock:
            for _buf, since, _wid in self._held.values():
                return since + FLUSH_DELAY
            return None

    def flush_due(self, now: float | None = None) -> None:
        """Write the unfinished lines held :data:`FLUSH_DELAY` or longer, without a newline."""
        limit = (time.monotonic() if now is None else now) - FLUSH_DELAY
        console = self._console
        with console.lock:
            held = self._held
            while held:
                key = next(iter(held))
                buf, since, wid = held[key]
                if since > limit:
                    break
                del held[key]
                self._emit(console.target(), key[0], key[1], wid, buf)

    def process_exited(self, pid: int) -> None:
        """*pid* exited and all it wrote was given: end its lines (its pid may be reused)."""
        console = self._console
        with console.lock:
            target = console.target()
            for key in [k for k in self._held if k[0] == pid]:
                buf, _since, wid = self._held.pop(key)
                self._emit(target, pid, key[1], wid, buf + b"\n")
            if console.open is not None and console.open[:2] == (self._token, pid):
                console.write(target, b"\n")
                console.open = None

    def close(self) -> None:
        """Write out the unfinished lines, each ended with a newline."""
        console = self._console
        with console.lock:
            target = console.target()
            held, self._held = self._held, {}
            for (pid, name), (buf, _since, wid) in held.items():
                self._emit(target, pid, name, wid, buf + b"\n")
            if console.open is not None and console.open[0] == self._token:
                console.write(target, b"\n")
                console.open = None

    # -- lines ------------------------------------------------------------------------------

    def _take(self, chunk: bytes, pid: int, name: str, wid: int | None) -> bytes:
        """Add *chunk* to what is held for (pid, name); return what to write now."""
        key = (pid, name)
        held = self._held.get(key)
        buf = held[0] + chunk if held is not None else chunk
        last = buf.rfind(b"\n")
        if last + 1 == len(buf):  # ends with a newline (or is empty): all of it
            if held is not None:
                del self._held[key]
            return buf
        if last < 0 and len(buf) <= CARRY_LIMIT:  # still no end: hold it, keeping its age
            self._held[key] = (buf, held[1] if held is not None else time.monotonic(), wid)
            return b""
        if held is not None:
            del self._held[key]
        rest = buf[last + 1 :]
        if len(rest) > CARRY_LIMIT:  # too long to hold: let it out unfinished
            return buf
        self._held[key] = (rest, time.monotonic(), wid)
        return buf[: last + 1]

    def _emit(self, target: Any, pid: int, name: str, wid: int | None, data: bytes) -> None:
        """Write *data* (lines of (pid, name), the last one perhaps unfinished); lock held."""
        console = self._console
        mine = (self._token, pid, name)
        continuing = console.open == mine
        if console.open is not None and not continuing:
            console.write(target, b"\n")  # end the unfinished line of another process
        console.write(target, self._render(data, pid, wid, continuing, console.tty))
        console.open = None if data.endswith(b"\n") else mine

    def _render(self, data: bytes, pid: int, wid: int | None, continuing: bool,
                tty: bool) -> bytes:
        """The bytes to write for *data*; *continuing*: its first line is already begun."""
        return data


def _prefixed(data: bytes, pre: bytes, continuing: bool) -> bytes:
    """*pre* at the start of each line of *data* (not the first one if *continuing*)."""
    if data.endswith(b"\n"):
        out = data[:-1].replace(b"\n", b"\n" + pre) + b"\n"
    else:
        out = data.replace(b"\n", b"\n" + pre)
    return out if continuing else pre + out


class StdoutStream(_ConsoleStream):
    """Whole lines to circusd's stdout, unchanged (stderr output too).

    This is also where a watcher's stdout goes when it has no ``stdout_stream``.

    Args:
        prefix: Start each line with ``<watcher>.<wid> | `` (``web.2 | ``), padded so that
            the lines of all watchers line up, the label in one colour per watcher when
            circusd's stdout is a terminal and ``NO_COLOR`` is not set.
        tag: The watcher's name (circusd passes it).
    """

    _console_name = "stdout"

    def __init__(self, prefix: bool | str = False, tag: str | None = None) -> None:
        super().__init__(self._console_name)
        self.prefix = option("prefix", prefix, to_bool)
        if tag is not None and not isinstance(tag, str):
            raise StreamConfigError("tag", f"expected a watcher name, got {tag!r}")
        self.tag = tag or None
        self._colour = not no_color()
        if self.prefix and self.tag:
            _note_width(len(self.tag) + 2)
            _label_colour(self.tag)

    def label(self, pid: int, wid: int | None) -> str:
        """The name a line of *pid* is shown under: ``web.2``, ``web`` without a wid."""
        if self.tag is None:
            return str(pid) if wid is None else str(wid)
        return self.tag if wid is None else f"{self.tag}.{wid}"

    def _render(self, data: bytes, pid: int, wid: int | None, continuing: bool,
                tty: bool) -> bytes:
        if not self.prefix:
            return data
        text = self.label(pid, wid)
        text = text.ljust(_note_width(len(text)))
        if self._colour and tty:
            code = _label_colour(self.tag or "")
            pre = f"\033[{code}m{text} |\033[0m ".encode("utf-8", "surrogateescape")
        else:
            pre = f"{text} | ".encode("utf-8", "surrogateescape")
        return _prefixed(data, pre, continuing)


class StderrStream(StdoutStream):
    """Whole lines to circusd's stderr (stdout output too); the options of StdoutStream.

    This is also where a watcher's stderr goes when it has no ``stderr_stream``.
    """

    _console_name = "stderr"


class FancyStdoutStream(_ConsoleStream):
    """Write ``<time> [<pid>] | line`` to circusd's stdout, in one colour per process.

    No colour when ``NO_COLOR`` is set.

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
        super().__init__("stdout")
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
        self._clock = _clock
        self._colour = not no_color()

    def color_code(self, pid: int) -> int:
        """The ANSI colour code used for the lines of *pid*."""
        if self.color is not None:
            return COLORS[self.color]
        return _PALETTE[pid % len(_PALETTE)]

    def _render(self, data: bytes, pid: int, wid: int | None, continuing: bool,
                tty: bool) -> bytes:
        stamp = time.strftime(self.time_format, time.localtime(self._clock()))
        lines = _prefixed(data, f"{stamp} [{pid}] | ".encode("utf-8", "surrogateescape"),
                          continuing)
        if not self._colour:
            return lines
        return b"\033[0;%dm" % self.color_code(pid) + lines + _RESET
