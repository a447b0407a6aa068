"""Streams: where the output of a watcher's processes goes.

::

    child pipe ──(process.py reads)──▶ stream({"data": b"...", "pid": 42, "name": "stdout"})
                                          │
    build_stream(conf) picks the class ───┤ FileStream                  append, rotate by size
    from the stdout_stream.* keys         │ WatchedFileStream           reopen after logrotate
                                          │ TimedRotatingFileStream     rotate by time
                                          │ StdoutStream                circusd's stdout, by line
                                          │ StderrStream                circusd's stderr, by line
                                          │ FancyStdoutStream           stdout, lines in colour
                                          │ SyslogStream                a syslog message a line
                                          │ QueueStream                 in memory
                                          ▼
                                       close() when the watcher drops the stream

A stream is shared by all processes of its watcher, so the classes that work on lines hold
partial lines per (pid, stream name); the console streams also write them out after 0.5 s
and at the process's exit (:mod:`circus.streams.console`).
:class:`~circus.streams.ring.OutputRing` keeps the last lines in memory for a ``tail``
command.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from circus.streams.base import Stream, StreamConfigError

if TYPE_CHECKING:
    from circus.streams.build import BUILTIN_STREAMS, build_stream
    from circus.streams.console import FancyStdoutStream, StderrStream, StdoutStream
    from circus.streams.files import FileStream, TimedRotatingFileStream, WatchedFileStream
    from circus.streams.memory import QueueStream
    from circus.streams.ring import OutputRing
    from circus.streams.syslog import SyslogStream

# Each name is imported from its module on first use: a watcher that only keeps its
# output in the ring never loads the file, syslog or console classes.
_HOMES = {
    "BUILTIN_STREAMS": "build",
    "build_stream": "build",
    "FancyStdoutStream": "console",
    "StdoutStream": "console",
    "StderrStream": "console",
    "FileStream": "files",
    "TimedRotatingFileStream": "files",
    "WatchedFileStream": "files",
    "QueueStream": "memory",
    "OutputRing": "ring",
    "SyslogStream": "syslog",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'circus.streams' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"circus.streams.{home}"), name)
    globals()[name] = value
    return value

__all__ = [
    "BUILTIN_STREAMS",
    "FancyStdoutStream",
    "FileStream",
    "OutputRing",
    "QueueStream",
    "Stream",
    "StreamConfigError",
    "StderrStream",
    "StdoutStream",
    "SyslogStream",
    "TimedRotatingFileStream",
    "WatchedFileStream",
    "build_stream",
]
