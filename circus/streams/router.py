"""OutputRouter: where the output of one watcher's processes goes.

Every chunk read from a process's stdout or stderr pipe is handed to :meth:`feed`, which
sends it three ways:

- into the :class:`~circus.streams.ring.OutputRing`, for ``tail``;
- while someone follows the output (``tail -f``: :attr:`OutputRouter.wanted`), to the
  event ``output.<watcher>.<stdout|stderr>``, decoded as UTF-8 with one incremental
  decoder per process and stream, so a character split between two reads stays whole;
- to the configured stream through the watcher's
  :class:`~circus.streams.writer.StreamWriter` thread. A pipe with no stream goes on to
  circusd's own stdout or stderr, whole lines at a time, through a
  :class:`~circus.streams.console.StdoutStream` or
  :class:`~circus.streams.console.StderrStream` of the router's own. When that thread falls
  behind, the router pauses the reading of every process it was given (``readers``) and
  resumes it once the thread has caught up.

Each chunk goes to the streams as ``{"data", "pid", "name", "wid"}`` (``wid`` None for the
shared pipes), and the writer hears of each exit after the process's last output, so
streams that hold unfinished lines write them then.

The router also owns the configured streams: it builds them from their ``stdout_stream.*``
/ ``stderr_stream.*`` keys (the watcher's name is the default syslog tag), switches the
writer to new ones and closes the ones they replace once what was queued for them is
written.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from circus.errors import OptionError
from circus.streams.base import Stream
from circus.streams.ring import OutputRing
from circus.streams.writer import StreamWriter

__all__ = ["STREAM_OPTIONS", "OutputRouter"]

log = logging.getLogger(__name__)

# The watcher options that configure a stream, and the pipe each one receives.
STREAM_OPTIONS = {"stdout_stream": "stdout", "stderr_stream": "stderr"}


class _Source(Protocol):
    """A process, as the router sees it."""

    pid: int


# The pipes, and the watcher option that configures each one's stream.
_PIPES = (("stdout", "stdout_stream"), ("stderr", "stderr_stream"))


class _Reader(Protocol):
    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class OutputRouter:
    """The output of one watcher: ring, ``tail -f`` events, streams and their writer.

    Args:
        name: the watcher's name (logs, the writer thread, the default syslog tag).
        topic: the watcher's name as it appears in event topics.
        publish: publishes an event (``topic``, ``payload``).
        readers: the processes whose reading is paused while the writer is behind.
    """

    def __init__(
        self,
        name: str,
        topic: str,
        publish: Callable[[str, dict[str, Any]], None],
        readers: Callable[[], Iterable[_Reader]],
    ) -> None:
        self.name = name
        self.ring = OutputRing()  # the latest output, for `tail`
        self.wanted = False  # someone follows the output: publish it
        self.streams: dict[str, Stream | None] = dict.fromkeys(STREAM_OPTIONS)
        self._topic = f"output.{topic}."
        self._publish = publish
        self._readers = readers
        self._writer: StreamWriter | None = None
        # circusd's stdout/stderr, for a pipe without a stream: made when first needed
        self._forward: dict[str, Stream] = {}
        self._decoders: dict[tuple[int, str], codecs.IncrementalDecoder] = {}

    # -- output -------------------------------------------------------------------------

    def feed(self, process: _Source, name: str, data: bytes) -> None:
        """A chunk read from *process*'s *name* pipe ("stdout" or "stderr")."""
        pid = process.pid
        self.ring.add(pid, name, data)
        if self.wanted:
            key = (pid, name)
            decoder = self._decoders.get(key)
            if decoder is None:
                decoder = self._decoders[key] = _utf8_decoder()
            self._publish(self._topic + name, {
                "pid": pid,
                "stream": name,
                "data": decoder.decode(data),
                "time": time.time(),
            })
        writer = self._writer or self._start_writer()
        writer.put({"data": data, "pid": pid, "name": name,
                    "wid": getattr(process, "wid", None)})

    def forget(self, pid: int) -> None:
        """The process exited: its pid may be reused, so its partial lines are closed."""
        self.ring.forget(pid)
        if self._writer is not None:
            self._writer.process_exited(pid)
        self._decoders.pop((pid, "stdout"), None)
        self._decoders.pop((pid, "stderr"), None)

    @property
    def paused(self) -> bool:
        """The writer is behind: a new process must start with its reading paused."""
        return self._writer is not None and self._writer.paused

    def _start_writer(self) -> StreamWriter:
        loop = asyncio.get_running_loop()
        self._writer = StreamWriter(
            self.name,
            self._targets(),
            pause=self._pause_reading,
            resume=self._resume_reading,
            call_soon=loop.call_soon_threadsafe,
        )
        return self._writer

    def _targets(self) -> dict[str, Stream]:
        targets: dict[str, Stream] = {}
        for pipe, which in _PIPES:
            stream = self.streams[which]
            if stream is None:
                stream = self._forward.get(pipe)
                if stream is None:
                    stream = self._forward[pipe] = self._forwarder(pipe)
            targets[pipe] = stream
        return targets

    def _forwarder(self, pipe: str) -> Stream:
        """Where *pipe*'s output goes with no stream: where an inherited descriptor would
        have written it, a whole line at a time."""
        from circus.streams.console import StderrStream, StdoutStream

        return StdoutStream(tag=self.name) if pipe == "stdout" else StderrStream(tag=self.name)

    def _unused_forwarders(self) -> list[Stream]:
        """The forwarders of pipes that have a stream now, no longer kept."""
        return [self._forward.pop(pipe) for pipe, which in _PIPES
                if self.streams[which] is not None and pipe in self._forward]

    def _pause_reading(self) -> None:
        log.debug("%s: output streams are behind; pausing reads", self.name)
        for reader in self._readers():
            reader.pause_reading()

    def _resume_reading(self) -> None:
        for reader in self._readers():
            reader.resume_reading()

    # -- the configured streams --------------------------------------------------------

    def build(self, conf: Mapping[str, Any] | None, which: str = "stdout_stream"
              ) -> Stream | None:
        """The stream *conf* describes (None for none); OptionError names the bad key."""
        if not conf:
            return None
        from circus.streams import StreamConfigError, build_stream

        try:
            # the watcher's name is the default syslog tag; the user's own tag wins
            return build_stream({"tag": self.name, **conf})
        except StreamConfigError as exc:
            raise OptionError(f"{which}.{exc.key}", exc.reason) from exc

    def set_streams(self, confs: Mapping[str, Mapping[str, Any] | None]) -> None:
        """Build the streams of *confs* (``{"stdout_stream": conf, …}``) and use them.

        Every stream is built before any is switched, so a bad one changes nothing. The
        streams they replace are closed once the output queued for them is written.
        """
        if not confs:
            return
        built = {which: self.build(conf, which) for which, conf in confs.items()}
        retired = []
        for which, stream in built.items():
            old = self.streams[which]
            self.streams[which] = stream
            if old is not None:
                retired.append(old)
        self.replace_streams(retired)

    def replace_streams(self, retired: Iterable[Stream]) -> None:
        """:attr:`streams` changed: switch the writer to them and retire the old ones."""
        retired = [*retired, *self._unused_forwarders()]
        if self._writer is not None:
            self._writer.set_streams(self._targets())
            for old in retired:
                self._writer.retire(old)
            return
        for old in retired:
            with contextlib.suppress(Exception):
                old.close()

    async def close(self) -> None:
        """Write what is queued, stop the writer thread and close the streams.

        All in a thread: closing a console stream writes the lines it holds, and circusd's
        stdout may be a stalled terminal; the event loop must not wait on it.
        """
        writer, self._writer = self._writer, None
        forwarders, self._forward = list(self._forward.values()), {}
        streams = [s for s in [*self.streams.values(), *forwarders] if s is not None]
        await asyncio.to_thread(_close_all, writer, streams)


def _close_all(writer: StreamWriter | None, streams: list[Stream]) -> None:
    if writer is not None:
        writer.close()
    for stream in streams:
        with contextlib.suppress(Exception):
            stream.close()


def _utf8_decoder() -> codecs.IncrementalDecoder:
    return codecs.getincrementaldecoder("utf-8")(errors="replace")
