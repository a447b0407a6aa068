"""circus/syncapi.py: one coroutine method, called from plain code and from asyncio code."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator

import pytest

from circus.syncapi import Call, NotRunningError, dual, offline_when
from tests.conftest import wait_for


def _always(obj: Thing, *args: object, **kwargs: object) -> bool:
    return True


class Thing:
    """Does its work on ``loop`` (None: no loop of its own)."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = loop
        self.ran_in: list[tuple[int, asyncio.Task[object] | None]] = []

    def loop_for_calls(self) -> asyncio.AbstractEventLoop | None:
        return self.loop

    @dual
    async def double(self, n: int) -> int:
        self.ran_in.append((threading.get_ident(), asyncio.current_task()))
        await asyncio.sleep(0)
        if n < 0:
            raise ValueError(f"negative: {n}")
        return 2 * n

    @dual
    @offline_when(_always)
    async def tidy(self) -> str:
        return "tidied"

    @dual
    async def forever(self) -> None:
        await asyncio.Event().wait()


class LoopThread:
    """An event loop running in a thread, as an arbiter started with background=True."""

    def __init__(self) -> None:
        self.thread = threading.Thread(target=asyncio.run, args=(self._main(),))
        self.started = threading.Event()
        self._stop_once = threading.Lock()

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.quit = asyncio.Event()
        self.started.set()
        await self.quit.wait()  # then asyncio.run cancels what is left and closes the loop

    def stop(self) -> None:
        if self._stop_once.acquire(blocking=False):
            self.loop.call_soon_threadsafe(self.quit.set)
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    runner = LoopThread()
    runner.thread.start()
    assert runner.started.wait(10)
    try:
        yield runner
    finally:
        runner.stop()


def test_a_plain_call_runs_on_the_objects_loop_and_returns_the_value(
        loop_thread: LoopThread) -> None:
    thing = Thing(loop_thread.loop)
    assert thing.double(21) == 42
    assert thing.ran_in[0][0] == loop_thread.thread.ident
    with pytest.raises(ValueError, match="negative: -1"):
        thing.double(-1)


def test_a_plain_call_ends_when_the_loop_stops_under_it(loop_thread: LoopThread) -> None:
    thing = Thing(loop_thread.loop)
    stopper = threading.Timer(0.2, loop_thread.stop)
    stopper.start()
    with pytest.raises(NotRunningError, match="forever.*arbiter stopped"):
        thing.forever()
    stopper.join(timeout=10)


def test_without_a_running_loop_a_call_is_refused_unless_safe_offline(
        loop_thread: LoopThread) -> None:
    with pytest.raises(NotRunningError, match=r"Thing\.double\(\) needs .* start the arbiter"):
        Thing().double(1)
    assert Thing().tidy() == "tidied"  # offline_when: run on a private loop
    stopped = Thing(loop_thread.loop)
    loop_thread.stop()
    with pytest.raises(NotRunningError):
        stopped.double(1)


async def test_awaited_it_runs_inline_in_the_callers_task() -> None:
    thing = Thing()
    call = thing.double(2)
    assert isinstance(call, Call) and asyncio.iscoroutine(call)
    assert await call == 4
    assert thing.ran_in == [(threading.get_ident(), asyncio.current_task())]
    with pytest.raises(RuntimeError, match="twice"):
        await call


async def test_a_task_drives_it_without_a_task_of_its_own() -> None:
    thing = Thing()
    task = asyncio.create_task(thing.double(3))
    assert await task == 6
    assert thing.ran_in[0][1] is task
    results = await asyncio.gather(thing.double(1), thing.double(2))
    assert results == [2, 4]


async def test_left_alone_it_runs_and_a_failure_is_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    thing = Thing()
    thing.double(5)  # not awaited
    await wait_for(lambda: thing.ran_in, what="the un-awaited call to run")
    late = thing.double(6)
    await wait_for(lambda: len(thing.ran_in) == 2, what="the second call to run by itself")
    assert await late == 12  # awaited after it started by itself
    with caplog.at_level(logging.ERROR, logger="circus.syncapi"):
        thing.double(-7)
        await wait_for(lambda: "Thing.double (not awaited) failed" in caplog.text,
                       what="the failure in the log")
    assert "negative: -7" in caplog.text


async def test_cancelled_before_it_ran_it_never_runs() -> None:
    thing = Thing()
    task = asyncio.create_task(thing.double(1))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(5):
        await asyncio.sleep(0)
    assert thing.ran_in == []


def test_asyncio_code_on_another_loop_awaits_the_objects_loop(
        loop_thread: LoopThread) -> None:
    thing = Thing(loop_thread.loop)

    async def main() -> int:
        return await thing.double(8)

    assert asyncio.run(main()) == 16
    assert thing.ran_in[0][0] == loop_thread.thread.ident
