"""The seed's library API called as the seed documents it: plain calls that do their work.

``watcher.stop()``, ``arbiter.add_watcher(...)``, ``process.stop()`` … are coroutine
methods underneath (circus/syncapi.py). From plain code they run on the arbiter's loop and
return once done; in asyncio code ``await`` works as before, and a call left un-awaited
still does its work. Real processes throughout; every pid seen is recorded and, should a
test fail half-way, killed by that pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
import signal
import stat
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import circus
from circus import get_arbiter
from circus.arbiter import Arbiter
from circus.process import DEAD_OR_ZOMBIE, RUNNING, UNEXISTING
from circus.syncapi import NotRunningError
from tests.conftest import pid_alive, wait_for, wait_until

# -- the examples of the seed's documentation (circus 0.4, "Circus Library"), as printed ---

SEED_INTRO_EXAMPLE = """\
from circus import get_arbiter

arbiter = get_arbiter("myprogram", 4)
try:
    arbiter.start()
finally:
    arbiter.stop()
"""

SEED_GET_ARBITER_EXAMPLE = """\
from circus import get_arbiter

arbiter = get_arbiter("myprogram", numprocesses=3)
try:
    arbiter.start()
finally:
    arbiter.stop()
"""

# The Process example is a doctest; each ">>>" line with the output the seed printed
# (None: nothing printed). Ages, pids and user names differ from run to run.
SEED_PROCESS_EXAMPLE = [
    (">>> from circus.process import Process", None),
    (">>> process = Process('Top', 'top', shell=True)", None),
    (">>> process.age()", "3.0107998847961426"),
    (">>> process.info()", "'Top: 6812  N/A tarek Zombie N/A N/A N/A N/A N/A'"),
    (">>> process.status", "1"),
    (">>> process.stop()", None),
    (">>> process.status", "2"),
    (">>> process.info()", "'No such process (stopped?)'"),
]


class Pids:
    """Every pid a test saw; whatever still runs at the end is killed by its pid."""

    def __init__(self) -> None:
        self.seen: set[int] = set()

    def add(self, *pids: int) -> list[int]:
        self.seen.update(pids)
        return list(pids)

    def of(self, arbiter: Arbiter) -> list[int]:
        """The pids of every watcher of *arbiter* now, recorded."""
        return self.add(*(pid for w in arbiter.watchers for pid in w.pids))

    def alive(self) -> list[int]:
        return [pid for pid in self.seen if pid_alive(pid)]

    def kill_leftovers(self) -> None:
        for pid in self.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def pids() -> Iterator[Pids]:
    record = Pids()
    try:
        yield record
    finally:
        record.kill_leftovers()


@contextlib.contextmanager
def no_unawaited_coroutine() -> Iterator[None]:
    """Fail if a coroutine is dropped un-awaited inside the block (checked after a GC)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
        gc.collect()
    dropped = [str(w.message) for w in caught if "never awaited" in str(w.message)]
    assert not dropped, dropped


def gone(pids: list[int]) -> bool:
    return not any(pid_alive(pid) for pid in pids)


def running(pids: list[int]) -> bool:
    return bool(pids) and all(pid_alive(pid) for pid in pids)


# -- (1) the seed's examples, run as printed -----------------------------------------------


@pytest.fixture
def myprogram(tmp_path: Path) -> str:
    """A PATH with ``myprogram`` on it: a worker that sleeps until it is stopped."""
    program = tmp_path / "bin" / "myprogram"
    program.parent.mkdir()
    program.write_text("#!/bin/sh\nexec sleep 600\n")
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    return f"{program.parent}:{os.environ['PATH']}"


@pytest.mark.parametrize(("example", "count"), [(SEED_INTRO_EXAMPLE, 4),
                                                (SEED_GET_ARBITER_EXAMPLE, 3)])
def test_the_seeds_get_arbiter_examples(example: str, count: int, myprogram: str,
                                        endpoints: tuple[str, str],
                                        monkeypatch: pytest.MonkeyPatch, pids: Pids) -> None:
    """``arbiter.start()`` blocks running *count* workers; ``arbiter.stop()`` from another
    thread (the example's own call, made while it blocks) makes it return with every
    worker stopped. Only the defaults change: the endpoints go to a private directory and
    the workers' PATH has ``myprogram``."""
    monkeypatch.setattr(circus, "get_arbiter", functools.partial(
        get_arbiter, controller=endpoints[0], pubsub_endpoint=endpoints[1],
        env={"PATH": myprogram}))
    namespace: dict[str, Any] = {}
    problems: list[str] = []

    def stop_once_running() -> None:
        deadline = time.monotonic() + 20
        arbiter: Arbiter | None = None
        try:
            while time.monotonic() < deadline:
                arbiter = namespace.get("arbiter")
                # numprocesses() is the target: wait for that many to run, not the first
                current = pids.of(arbiter) if arbiter is not None else []
                if arbiter is not None and len(current) == count and running(current) and \
                        arbiter.numprocesses() == count:
                    return
                time.sleep(0.01)
            problems.append(f"{count} workers never ran: {pids.seen}")
        finally:
            if arbiter is not None:
                arbiter.stop()  # the seed's stop(), from another thread

    stopper = threading.Thread(target=stop_once_running)
    stopper.start()
    try:
        with no_unawaited_coroutine():
            exec(compile(example, "<seed example>", "exec"), namespace)
    finally:
        stopper.join(timeout=30)
    assert not problems, problems
    assert len(pids.seen) == count
    assert gone(list(pids.seen)), "start() returned with workers still running"


def test_the_seeds_process_example(pids: Pids) -> None:
    """The doctest of ``circus.process.Process``, from plain code: ``top`` without a
    terminal exits at once and stays a zombie until ``process.stop()`` collects it."""
    namespace: dict[str, Any] = {}
    outputs: list[Any] = []
    with no_unawaited_coroutine():
        try:
            for line, _printed in SEED_PROCESS_EXAMPLE:
                source = line.removeprefix(">>> ")
                try:
                    code = compile(source, "<seed doctest>", "eval")
                except SyntaxError:
                    exec(compile(source, "<seed doctest>", "exec"), namespace)
                    outputs.append(None)
                    continue
                outputs.append(eval(code, namespace))
                if "process" in namespace and namespace["process"].pid:
                    pids.add(namespace["process"].pid)
        finally:
            process = namespace.get("process")
            if process is not None and process.returncode is None and process.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(process.pid, 0)
    _, _, age, info, status_before, stop_result, status_after, info_after = outputs
    assert isinstance(age, float) and age >= 0
    assert isinstance(info, dict | str)
    assert status_before in (RUNNING, DEAD_OR_ZOMBIE)
    assert isinstance(stop_result, int)  # the exit status (the seed returned nothing)
    assert status_after == UNEXISTING == 2
    assert info_after == "No such process (stopped?)"
    assert gone(list(pids.seen))


# -- (2) plain calls on an arbiter running in a background thread -------------------------


def test_plain_calls_on_a_background_arbiter(endpoints: tuple[str, str], pids: Pids) -> None:
    arbiter = get_arbiter(
        [{"name": "w", "cmd": "sleep 600", "numprocesses": 2},
         {"name": "family", "cmd": "sh -c 'sleep 600 & wait'"}],
        controller=endpoints[0], pubsub_endpoint=endpoints[1], background=True)
    try:
        with no_unawaited_coroutine():
            _drive_from_plain_code(arbiter, pids)
    finally:
        arbiter.stop()
    assert gone(list(pids.seen)), f"left running: {pids.alive()}"


def _drive_from_plain_code(arbiter: Arbiter, pids: Pids) -> None:
    # before start: a watcher may be added (nothing needs a loop), not started
    late = arbiter.add_watcher("late", "sleep 600")
    assert late.status == "stopped" and arbiter.numwatchers() == 3
    with pytest.raises(NotRunningError, match=r"add_watcher\(\).*start the arbiter first"):
        arbiter.add_watcher("early", "sleep 600", start=True)
    arbiter.start()  # background: returns once the watchers (autostart) run
    watcher = arbiter.get_watcher("w")
    assert running(pids.add(*late.pids)) and len(late.pids) == 1
    first = pids.add(*watcher.pids)
    assert running(first) and len(first) == 2
    assert arbiter.numwatchers() == 3 and arbiter.numprocesses() == 4

    # Watcher.stop / start / restart / reload
    assert watcher.stop() is None
    assert gone(first) and watcher.status == "stopped" and watcher.pids == []
    started = watcher.start()
    assert sorted(started["started"]) == sorted(pids.add(*watcher.pids))
    assert running(started["started"]) and watcher.status == "active"
    restarted = watcher.restart()
    assert sorted(restarted["stopped"]) == sorted(started["started"])
    assert gone(started["started"]) and running(pids.add(*restarted["started"]))
    before = watcher.pids
    reloaded = watcher.reload()
    assert sorted(reloaded["stopped"]) == sorted(before) and gone(before)
    assert sorted(reloaded["started"]) == sorted(pids.add(*watcher.pids))
    assert running(watcher.pids)

    # Arbiter.add_watcher / reload
    extra = arbiter.add_watcher("extra", "sleep 600", start=True, numprocesses=2)
    assert extra is arbiter.get_watcher("extra")
    assert running(pids.add(*extra.pids)) and len(extra.pids) == 2
    assert arbiter.numwatchers() == 4 and arbiter.numprocesses() == 6
    everything = pids.of(arbiter)
    assert arbiter.reload() is None
    assert gone(everything)
    now = pids.of(arbiter)
    assert running(now) and not set(now) & set(everything) and len(now) == 6

    # Watcher.spawn_processes / kill_process / send_signal / info
    assert watcher.spawn_processes() == []  # nothing missing
    victim = watcher.processes[watcher.pids[0]]
    assert watcher.kill_process(victim) == -signal.SIGTERM and not pid_alive(victim.pid)
    wait_until(lambda: len(pids.add(*watcher.pids)) == 2, what="the killed one replaced")
    info = watcher.info()
    assert sorted(info) == sorted(watcher.pids) and all(i["pid"] in info for i in info.values())
    signalled = watcher.pids
    watcher.send_signal(signal.SIGTERM)
    wait_until(lambda: gone(signalled) and len(pids.add(*watcher.pids)) == 2,
               what="the signalled processes to die and be replaced")

    # Process.children / info / send_signal / stop
    family = arbiter.get_watcher("family").processes
    parent = next(iter(family.values()))
    children = wait_until(parent.children, what="the shell's child")
    pids.add(parent.pid, *children)
    assert running(children) and parent.info()["pid"] == parent.pid
    parent.send_signal(0)  # nothing happens: still there
    assert pid_alive(parent.pid)
    assert parent.stop() == -signal.SIGTERM
    assert gone([parent.pid, *children])
    wait_until(lambda: parent.pid not in family, what="the stopped process to be forgotten")

    # a failure reaches the plain caller as the exception
    with pytest.raises(KeyError):
        watcher.kill(pid=1)

    arbiter.stop()
    assert gone(list(pids.seen))
    # stopped: nothing to stop is fine, anything else says the arbiter must run
    assert watcher.stop() is None
    with pytest.raises(NotRunningError, match=r"Watcher\.start\(\) needs .* running arbiter"):
        watcher.start()


# -- (3) the same methods in asyncio code --------------------------------------------------


async def test_awaited_and_unawaited_calls(endpoints: tuple[str, str], pids: Pids,
                                           caplog: pytest.LogCaptureFixture) -> None:
    arbiter = get_arbiter([{"name": "w", "cmd": "sleep 600", "numprocesses": 2}],
                          controller=endpoints[0], pubsub_endpoint=endpoints[1])
    with no_unawaited_coroutine():
        async with arbiter:
            watcher = arbiter.get_watcher("w")
            first = pids.of(arbiter)
            assert await watcher.stop() is None
            assert gone(first) and watcher.status == "stopped"

            started = await watcher.start()
            assert running(pids.add(*started["started"]))
            watcher.stop()  # not awaited: it still stops everything
            await wait_for(lambda: gone(started["started"]) and watcher.status == "stopped",
                           what="the un-awaited stop to stop the processes")

            call = watcher.start()  # awaited later, after it started by itself
            await wait_for(lambda: watcher.status == "active", what="the un-awaited start")
            result = await call
            assert running(pids.add(*result["started"])) and len(result["started"]) == 2

            extra = await arbiter.add_watcher("extra", "sleep 600", start=True)
            assert running(pids.add(*extra.pids))
            before = pids.of(arbiter)
            await asyncio.gather(watcher.reload(), asyncio.create_task(extra.reload()))
            assert gone(before) and running(pids.of(arbiter))

            process = watcher.processes[watcher.pids[0]]
            assert await process.stop() == -signal.SIGTERM and not pid_alive(process.pid)

            with caplog.at_level(logging.ERROR, logger="circus.syncapi"):
                watcher.kill(pid=1)  # not one of its processes: KeyError, nobody awaits
                await wait_for(lambda: "Watcher.kill (not awaited) failed" in caplog.text,
                               what="the failure of the un-awaited call in the log")
        everything = list(pids.seen)
    assert gone(everything)


def test_asyncio_code_in_another_thread_than_the_arbiter(endpoints: tuple[str, str],
                                                         pids: Pids) -> None:
    """asyncio code with a loop of its own awaits calls that run on the arbiter's loop."""
    arbiter = get_arbiter([{"name": "w", "cmd": "sleep 600", "numprocesses": 2}],
                          controller=endpoints[0], pubsub_endpoint=endpoints[1],
                          background=True)

    async def main() -> None:
        watcher = arbiter.get_watcher("w")
        first = pids.of(arbiter)
        assert await watcher.stop() is None and gone(first)
        started = await watcher.start()
        assert running(pids.add(*started["started"]))
        watcher.stop()  # not awaited: submitted to the arbiter's loop at once
        await wait_for(lambda: gone(started["started"]), what="the un-awaited stop")

    try:
        arbiter.start()
        with no_unawaited_coroutine():
            asyncio.run(main())
    finally:
        arbiter.stop()
    assert gone(list(pids.seen))
