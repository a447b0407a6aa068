"""The full garbage collection at a quiet moment, not in the middle of a burst.

Python's cyclic collector runs a full collection (the oldest generation) once what
survived younger collections has grown by a quarter since the last one. Starting 10,000
processes makes about a million long-lived objects, so the next burst of allocations
(a ``stop`` of all of them, or a wave of deaths and respawns) pays a full collection of
that million in the middle of its work: 160 ms measured here, with the event loop blocked
for all of it (every death seen 160 ms late, every command answered 160 ms late).

circusd counts its children's births and deaths (:attr:`circus.children.Children.churn`).
Once a burst of :data:`BURST` or more has happened and none came for :data:`QUIET`
seconds, it runs that full collection itself. The long-lived objects are then counted as
settled, and the next burst starts from there instead of paying for the last one.
Small changes (a respawn now and then) never add up to a collection of their own: they
are left to Python's own schedule.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

from circus.children import CHILDREN

log = logging.getLogger(__name__)

BURST = 1000  # births and deaths since the last collection that make one worth running
QUIET = 1.0  # seconds without any, before it runs


class QuietCollector:
    """Looks every :data:`QUIET` seconds whether a burst has settled; one per circusd."""

    def __init__(self, burst: int = BURST, quiet: float = QUIET) -> None:
        self.burst = burst
        self.quiet = quiet
        self.collections = 0  # runs so far (for the tests and the debug log)
        self._base = CHILDREN.churn  # the count at the last collection
        self._seen = self._base  # the count at the last look
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._schedule()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._loop = None

    def _schedule(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._timer = self._loop.call_later(self.quiet, self._look)

    def _look(self) -> None:
        self._timer = None
        churn = CHILDREN.churn
        settled = churn == self._seen  # nothing was born or died since the last look
        self._seen = churn
        if settled and churn - self._base >= self.burst:
            self._base = churn
            self.collect()
        self._schedule()

    def collect(self) -> None:
        started = time.perf_counter()
        found = gc.collect()
        self.collections += 1
        log.debug("full garbage collection after a burst of births and deaths: %d objects "
                  "freed in %.0f ms", found, 1000 * (time.perf_counter() - started))


__all__ = ["BURST", "QUIET", "QuietCollector"]
