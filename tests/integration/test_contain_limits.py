"""Targets written at admission, in arrival order; stops that halt a burst; the ceilings.

An Arbiter runs in the test's event loop with real children; requests go through a real
DEALER socket, several sent back to back so that circusd reads them in one go.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.asyncio

from circus.arbiter import Arbiter
from circus.limits import LimitError
from circus.process import Process
from circus.states import WatcherState
from circus.watcher import Watcher
from tests.conftest import pid_alive, wait_for


@pytest.fixture
async def dealer(endpoints: tuple[str, str]) -> AsyncIterator[zmq.asyncio.Socket]:
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(endpoints[0])
    yield sock
    sock.close()
    ctx.destroy(linger=0)


async def _send_all(sock: zmq.asyncio.Socket, *messages: dict[str, Any]
                    ) -> list[dict[str, Any]]:
    """Send *messages* back to back, then collect every reply (by id, in sending order)."""
    ids = []
    for msg in messages:
        ids.append(uuid.uuid4().hex)
        await sock.send(json.dumps({"id": ids[-1], **msg}).encode())
    replies: dict[str, dict[str, Any]] = {}
    async with asyncio.timeout(30):
        while len(replies) < len(ids):
            reply = json.loads(await sock.recv())
            replies[reply["id"]] = reply
    return [replies[i] for i in ids]


def _cmd(command: str, **props: Any) -> dict[str, Any]:
    return {"command": command, "properties": props}


def _record_spawns(watcher: Watcher) -> list[tuple[int, float]]:
    """Every process *watcher* spawns from now on, with the moment (monotonic)."""
    seen: list[tuple[int, float]] = []
    spawn = watcher._spawn_process  # what the keeper awaits (spawn_process is its dual form)

    async def recording() -> Process:
        process = await spawn()
        seen.append((process.pid, time.monotonic()))
        return process

    watcher._spawn_process = recording  # type: ignore[method-assign]
    return seen


async def test_targets_are_written_in_arrival_order(endpoints: tuple[str, str],
                                                    dealer: zmq.asyncio.Socket) -> None:
    arbiter = Arbiter([Watcher("w", "sleep 600", numprocesses=1, graceful_timeout=5)],
                      *endpoints, max_processes=10)
    async with arbiter:
        w = arbiter.get_watcher("w")
        replies = await _send_all(
            dealer, _cmd("incr", name="w", nb=3), _cmd("set", name="w",
                                                      options={"numprocesses": 2}),
            _cmd("incr", name="w"), _cmd("decr", name="w", nb=1, waiting=True),
            _cmd("incr", name="w", nb=20))
        assert [r.get("numprocesses") for r in replies[:4]] == [4, None, 3, 2]
        assert all(r["status"] == "ok" for r in replies[:4]), replies
        assert replies[4]["status"] == "error" and "limit of 10" in replies[4]["reason"]
        assert w.numprocesses == 2
        await wait_for(lambda: len(w.pids) == 2, what="2 processes")


async def test_a_target_waits_behind_a_command_that_rewrites_targets(
        short_tmp: Path, dealer: zmq.asyncio.Socket) -> None:
    """reloadconfig writes numprocesses at its turn: an incr after it must not jump ahead
    (the file's 4, then +1 = 5; pre-empting would give 4)."""
    from circus.cli.circusd import build_arbiter
    from circus.config import load_config

    ini = short_tmp / "c.ini"
    head = f"[circus]\nendpoint = ipc://{short_tmp}/ctl\npubsub_endpoint = ipc://{short_tmp}/pub\n"
    ini.write_text(head + "[watcher:w]\ncmd = sleep 600\n")
    arbiter = build_arbiter(load_config(ini))
    async with arbiter:
        ini.write_text(head + "[watcher:w]\ncmd = sleep 600\nnumprocesses = 4\n")
        replies = await _send_all(dealer, _cmd("reloadconfig", waiting=True),
                                  _cmd("incr", name="w", waiting=True))
        assert all(r["status"] == "ok" for r in replies), replies
        assert replies[1]["numprocesses"] == 5
        w = arbiter.get_watcher("w")
        assert w.numprocesses == 5 and len(w.pids) == 5


@pytest.mark.parametrize("stop", ["stop", "rm"])
async def test_a_stop_queued_behind_a_burst_ends_it_at_once(
        endpoints: tuple[str, str], dealer: zmq.asyncio.Socket, stop: str) -> None:
    arbiter = Arbiter([Watcher("w", "sleep 600", numprocesses=1, graceful_timeout=5)],
                      *endpoints)
    async with arbiter:
        w = arbiter.get_watcher("w")
        spawned = _record_spawns(w)
        first = list(w.pids)
        await _send_all(dealer, _cmd("incr", name="w", nb=1999))
        await wait_for(lambda: len(spawned) >= 100, what="100 spawns of the burst")
        sent = time.monotonic()
        (reply,) = await _send_all(dealer, _cmd(stop, name="w", waiting=True))
        assert reply["status"] == "ok", reply
        late = [t - sent for _, t in spawned if t > sent]
        assert len(spawned) < 1999
        assert not late or max(late) < 0.1, f"spawns up to {max(late):.3f}s after {stop}"
        assert w.state is WatcherState.STOPPED and not w.pids
        assert not [pid for pid, _ in spawned if pid_alive(pid)]
        assert not [pid for pid in first if pid_alive(pid)]


async def test_the_library_path_is_bounded_too(endpoints: tuple[str, str]) -> None:
    arbiter = Arbiter([Watcher("w", "sleep 600", numprocesses=1, max_processes=3),
                       Watcher("v", "sleep 600", numprocesses=2)], *endpoints,
                      max_processes=5)
    async with arbiter:
        w = arbiter.get_watcher("w")
        with pytest.raises(LimitError, match="over the limit of 3 processes for watcher 'w'"):
            await w.set_numprocesses(4)
        with pytest.raises(LimitError, match=r"bring all watchers to 6 processes"):
            await arbiter.get_watcher("v").set_numprocesses(5)
        assert await w.set_numprocesses(3) == 3 and len(w.pids) == 3
        assert await w.set_numprocesses(0) == 0  # lowering is never refused
