"""A stream that keeps output in memory, for Python code that embeds circus (and for tests)."""

from __future__ import annotations

import contextlib
import queue
from collections.abc import Iterator, Mapping
from typing import Any

from circus.streams.base import option
from circus.util.convert import to_int

__all__ = ["QueueStream"]


class QueueStream:
    """Put each call's mapping (a copy) on :attr:`queue`, a :class:`queue.Queue`.

    Args:
        maxsize: 0 (the default) keeps everything; otherwise the oldest items are dropped to
            make room, so a queue nobody reads cannot eat circusd's memory.
    """

    def __init__(self, maxsize: int | str = 0) -> None:
        self.maxsize = option("maxsize", maxsize, to_int)
        self.queue: queue.Queue[dict[str, Any]] = queue.Queue(max(self.maxsize, 0))

    def __call__(self, data: Mapping[str, Any]) -> None:
        item = dict(data)
        while True:
            try:
                self.queue.put_nowait(item)
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):  # a reader just made room
                    self.queue.get_nowait()

    def get(self, block: bool = True, timeout: float | None = None) -> dict[str, Any]:
        """The oldest item; raises :class:`queue.Empty` as :meth:`queue.Queue.get` does."""
        return self.queue.get(block, timeout)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Take the items queued so far, oldest first, without waiting for more."""
        while True:
            try:
                yield self.queue.get_nowait()
            except queue.Empty:
                return

    def close(self) -> None:
        """Nothing to release; items already queued stay readable."""
