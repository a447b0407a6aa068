"""The full collection runs once a burst of births and deaths has settled, never during it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from circus.children import CHILDREN
from circus.quietgc import QuietCollector


async def _until(condition: Callable[[], bool], deadline: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not condition():
        assert loop.time() < end, "condition not met in time"
        await asyncio.sleep(0.01)


def test_a_settled_burst_is_collected_once_and_a_trickle_never() -> None:
    async def scenario() -> None:
        collector = QuietCollector(burst=10, quiet=0.05)
        collector.start()
        try:
            CHILDREN.churn += 5  # a trickle: below the burst
            await asyncio.sleep(0.3)
            assert collector.collections == 0
            CHILDREN.churn += 10  # now a burst, then quiet
            await _until(lambda: collector.collections == 1)
            await asyncio.sleep(0.3)  # nothing new: no second run
            assert collector.collections == 1
        finally:
            collector.close()

    asyncio.run(scenario())


def test_no_collection_while_the_burst_goes_on() -> None:
    async def scenario() -> None:
        collector = QuietCollector(burst=10, quiet=0.1)
        collector.start()
        try:
            loop = asyncio.get_running_loop()
            end = loop.time() + 0.6
            while loop.time() < end:  # births and deaths every 20 ms: never quiet
                CHILDREN.churn += 5
                await asyncio.sleep(0.02)
            assert collector.collections == 0
            await _until(lambda: collector.collections == 1)
        finally:
            collector.close()

    asyncio.run(scenario())
