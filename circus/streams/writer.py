"""StreamWriter: a watcher's streams run on a thread of their own.

A stream writes to a file, a terminal or syslog, and any of those can be slow (a full
disk, a stalled terminal, a remote syslog). Calling streams on the event loop would let
one slow stream stall every watcher. Instead, each watcher that produces output hands its
chunks to a writer thread through a bounded queue. When the queue is full the watcher
stops reading its processes' pipes, so the kernel holds the rest and those processes
wait on their writes: nothing is dropped, and no other watcher notices.

The thread also keeps time for streams that hold unfinished lines (the console streams,
or any stream with the same methods): a stream with ``flush_deadline()`` has its
``flush_due()`` called once that time (``time.monotonic()``) passes, whether or not more
output came, and a stream with ``process_exited(pid)`` hears of each exit after the last
output of that process. Streams without them (the file streams) cost the loop nothing.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from circus.streams.base import Stream

log = logging.getLogger(__name__)

HIGH_WATER = 256  # chunks queued before the watcher stops reading (up to 16 MiB)
LOW_WATER = 64  # reading resumes once the writer is back under this

_STOP: Any = object()


class StreamWriter:
    """Delivers ``{"data", "pid", "name", "wid"}`` chunks to the streams on a background thread.

    Args:
        watcher: the watcher's name, for logs.
        streams: ``{"stdout": stream, "stderr": stream}``; a missing name is not written.
        pause, resume: called on the event loop's thread when the queue crosses the
            high and low water marks.
        call_soon: schedules a callable on the event loop from the writer thread.
    """

    def __init__(
        self,
        watcher: str,
        streams: Mapping[str, Stream | None],
        *,
        pause: Callable[[], None],
        resume: Callable[[], None],
        call_soon: Callable[[Callable[[], None]], Any],
    ) -> None:
        self.watcher = watcher
        self.streams = dict(streams)
        self._timed = _timed(self.streams)
        self._pause = pause
        self._resume = resume
        self._call_soon = call_soon
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._pending = 0
        self._lock = threading.Lock()
        self._paused = False
        self._failed: set[int] = set()  # id() of streams whose failure was logged
        self._thread = threading.Thread(target=self._run, name=f"streams-{watcher}",
                                        daemon=True)
        self._thread.start()

    @property
    def paused(self) -> bool:
        return self._paused

    def put(self, data: dict[str, Any]) -> None:
        """Queue a chunk (event loop thread). May pause the watcher's reading."""
        with self._lock:
            self._pending += 1
            if self._pending >= HIGH_WATER and not self._paused:
                self._paused = True
                pause = True
            else:
                pause = False
        self._queue.put(data)
        if pause:
            self._pause()

    def _run(self) -> None:
        while True:
            item = self._next() if self._timed else self._queue.get()
            if item is None:  # no output: unfinished lines were due
                continue
            if item is _STOP:
                return
            if isinstance(item, tuple):  # a change, in order with the output before it
                self._control(*item)
                continue
            stream = self.streams.get(item["name"])
            if stream is not None:
                try:
                    stream(item)
                except Exception:
                    self._report(stream)
            with self._lock:
                self._pending -= 1
                resume = self._paused and self._pending <= LOW_WATER
                if resume:
                    self._paused = False
            if resume:
                self._call_soon(self._resume)

    def _next(self) -> Any:
        """The next item, or None after writing the unfinished lines that were due."""
        deadline: float | None = None
        for stream in self._timed:
            try:
                due = stream.flush_deadline()
            except Exception:
                self._report(stream)
                continue
            if due is not None and (deadline is None or due < deadline):
                deadline = due
        if deadline is None:
            return self._queue.get()
        wait = deadline - time.monotonic()
        if wait > 0:
            try:
                return self._queue.get(timeout=wait)
            except queue.Empty:
                pass
        now = time.monotonic()
        for stream in self._timed:
            try:
                stream.flush_due(now)
            except Exception:
                self._report(stream)
        return None

    def _report(self, stream: Stream) -> None:
        if id(stream) in self._failed:
            return
        self._failed.add(id(stream))
        log.exception("%s: output stream %r failed; its later failures are not logged",
                      self.watcher, type(stream).__name__)

    def _control(self, action: str, arg: Any) -> None:
        if action == "streams":
            self.streams = dict(arg)
            self._timed = _timed(self.streams)
            self._failed.clear()
        elif action == "exited":
            for stream in _unique(self.streams):
                exited = getattr(stream, "process_exited", None)
                if exited is None:
                    continue
                try:
                    exited(arg)
                except Exception:
                    self._report(stream)
        elif action == "close":
            try:
                arg.close()
            except Exception:
                log.exception("%s: closing an output stream failed", self.watcher)

    def set_streams(self, streams: Mapping[str, Stream | None]) -> None:
        """Use *streams* for output read from now on (what is queued goes to the old ones)."""
        self._queue.put(("streams", dict(streams)))

    def process_exited(self, pid: int) -> None:
        """*pid* exited: streams that hold its unfinished lines write them (after what is
        queued)."""
        self._queue.put(("exited", pid))

    def retire(self, stream: Stream) -> None:
        """Close *stream* once the output queued for it is written."""
        self._queue.put(("close", stream))

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (at most *timeout* seconds), then stop the thread."""
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("%s: output streams still busy after %.0fs; not waiting",
                        self.watcher, timeout)


def _unique(streams: Mapping[str, Stream | None]) -> list[Stream]:
    """The streams of *streams*, each once (one stream often takes stdout and stderr)."""
    seen: dict[int, Stream] = {}
    for stream in streams.values():
        if stream is not None:
            seen.setdefault(id(stream), stream)
    return list(seen.values())


def _timed(streams: Mapping[str, Stream | None]) -> list[Any]:
    """The streams that hold unfinished lines for a while (they have ``flush_deadline``)."""
    return [s for s in _unique(streams)
            if callable(getattr(s, "flush_deadline", None))
            and callable(getattr(s, "flush_due", None))]
