"""Arbiter in-process: priorities, events on a real PUB socket, the library API."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.asyncio

from circus import get_arbiter
from circus.arbiter import Arbiter
from circus.client import AsyncCircusClient, CircusClient
from circus.states import WatcherState
from circus.watcher import Watcher
from tests.conftest import pid_alive, wait_for, wait_until


class Subscriber:
    """Every event of the arbiter's PUB socket, in order."""

    def __init__(self, endpoint: str) -> None:
        self.ctx = zmq.asyncio.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.linger = 0
        self.sock.connect(endpoint)  # first: subscriptions then travel in the order made
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.token = f"sync.{os.urandom(8).hex()}"
        self.sock.setsockopt(zmq.SUBSCRIBE, self.token.encode())
        self.events: list[tuple[str, dict[str, Any]]] = []

    async def synced(self, arbiter: Arbiter) -> None:
        """Return once the arbiter has the subscription: the sync topic, made last, has
        arrived, so "" has too."""
        assert await arbiter.wait_subscribed(self.token, 10), "the subscription never arrived"
        self.sock.setsockopt(zmq.UNSUBSCRIBE, self.token.encode())

    async def collect(self, until_topic: str) -> None:
        """Read events (queued by the socket meanwhile) until one on *until_topic*."""
        async with asyncio.timeout(10):
            while True:
                topic, body = await self.sock.recv_multipart()
                self.events.append((topic.decode(), json.loads(body)))
                if topic.decode() == until_topic:
                    return

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()


async def test_watchers_start_by_priority_and_stop_in_reverse(endpoints: tuple[str, str]
                                                              ) -> None:
    low = Watcher("low", "sleep 3600", priority=0)
    high = Watcher("high", "sleep 3600", priority=10)
    mid = Watcher("mid", "sleep 3600", priority=5)
    arbiter = Arbiter([low, high, mid], *endpoints)
    sub = Subscriber(endpoints[1])
    try:
        async with arbiter:
            # starts happened before the subscriber could connect: check process ages
            started = sorted(arbiter.watchers, key=lambda w: next(iter(w.processes.values()))
                             .started)
            assert [w.name for w in started] == ["high", "mid", "low"]
            await sub.synced(arbiter)
            await arbiter.stop_watchers()
            await sub.collect("watcher.high.stop")
    finally:
        sub.close()
    stops = [t.split(".")[1] for t, _ in sub.events if t.endswith(".stop")]
    assert stops == ["low", "mid", "high"]


async def test_warmup_delay_between_watchers(endpoints: tuple[str, str]) -> None:
    a = Watcher("a", "sleep 3600", priority=2)
    b = Watcher("b", "sleep 3600", priority=1)
    async with Arbiter([a, b], *endpoints, warmup_delay=0.3):
        ta = next(iter(a.processes.values())).started
        tb = next(iter(b.processes.values())).started
        assert tb - ta >= 0.28


async def test_events_on_the_pub_socket(endpoints: tuple[str, str]) -> None:
    w = Watcher("Web Site", "sleep 3600", numprocesses=1)
    sub = Subscriber(endpoints[1])
    try:
        async with Arbiter([w], *endpoints) as arbiter:
            await sub.synced(arbiter)
            await w.reload()
            await sub.collect("watcher.web_site.reload")
            topics = [t for t, _ in sub.events]
            assert topics[0] == "watcher.web_site.spawn"
            assert "watcher.web_site.kill" in topics and "watcher.web_site.reap" in topics
            reap = next(p for t, p in sub.events if t.endswith(".reap"))
            assert reap["exit_code"] == -15 and isinstance(reap["time"], float)
            await arbiter.add_watcher("extra", "sleep 3600", start=True)
            await arbiter.rm_watcher("extra")
            await sub.collect("watcher.extra.remove")
            names = [t for t, _ in sub.events]
            assert names[-4:] == ["watcher.extra.add", "watcher.extra.spawn",
                                  "watcher.extra.start", "watcher.extra.remove"]
    finally:
        sub.close()


async def test_async_api_with_a_client(endpoints: tuple[str, str]) -> None:
    w = Watcher("w", "sleep 3600", numprocesses=2)
    async with Arbiter([w], *endpoints):
        client = AsyncCircusClient(endpoints[0])
        try:
            reply = await client.send_message("list", name="w")
            assert sorted(reply["pids"]) == sorted(w.pids)
            reply = await client.send_message("status")
            assert reply["statuses"] == {"w": "active"}
        finally:
            client.close()
    assert w.state is WatcherState.STOPPED


async def test_rm_nostop_leaves_processes_running(endpoints: tuple[str, str]) -> None:
    w = Watcher("w", "sleep 3600")
    async with Arbiter([w], *endpoints) as arbiter:
        pid = w.pids[0]
        await arbiter.rm_watcher("w", nostop=True)
        assert arbiter.watchers == [] and pid_alive(pid)
    assert pid_alive(pid)
    os.kill(pid, signal.SIGKILL)

    def reaped() -> bool:
        # a child of this test process: reaped by its Process object if the loop gets to
        # it first, else here
        try:
            return os.waitpid(pid, os.WNOHANG)[0] == pid
        except ChildProcessError:
            return True

    await wait_for(reaped, what="the process to exit and be reaped")


def test_get_arbiter_seed_shorthands(endpoints: tuple[str, str]) -> None:
    a = get_arbiter("sleep 3600", 4, controller=endpoints[0], pubsub_endpoint=endpoints[1])
    assert [(w.name, w.cmd, w.numprocesses) for w in a.watchers] == [("sleep", "sleep 3600", 4)]
    b = get_arbiter("sleep 3600", numprocesses=3, controller=endpoints[0],
                    pubsub_endpoint=endpoints[1])
    assert b.watchers[0].numprocesses == 3
    c = get_arbiter([{"name": "x", "cmd": "sleep 1", "numprocesses": 2, "warmup_delay": 0.5,
                      "stdout_stream": {"class": "QueueStream"}}],
                    controller=endpoints[0], pubsub_endpoint=endpoints[1])
    assert c.watchers[0].warmup_delay == 0.5 and c.watchers[0].stdout_stream is not None


def test_get_arbiter_background_start_and_stop(endpoints: tuple[str, str]) -> None:
    arbiter = get_arbiter([{"name": "bg", "cmd": "sleep 3600", "numprocesses": 2}],
                          controller=endpoints[0], pubsub_endpoint=endpoints[1],
                          background=True)
    try:
        arbiter.start()  # returns at once: the arbiter runs in a thread
        client = CircusClient(endpoint=endpoints[0])
        try:
            pids = wait_until(lambda: client.send_message("list", name="bg")["pids"],
                              what="two pids")
            assert len(pids) == 2 and all(pid_alive(p) for p in pids)
        finally:
            client.stop()
    finally:
        arbiter.stop()
    assert not any(pid_alive(p) for p in pids)


def test_blocking_start_returns_after_quit(endpoints: tuple[str, str]) -> None:
    """The seed's example: start() blocks until the arbiter is told to quit."""
    arbiter = get_arbiter("sleep 3600", 2, controller=endpoints[0],
                          pubsub_endpoint=endpoints[1])

    def quit_later() -> None:
        client = CircusClient(endpoint=endpoints[0], timeout=1)
        try:
            wait_until(lambda: _try(client), what="the arbiter to answer")
            client.send_message("quit")
        finally:
            client.stop()

    t = threading.Thread(target=quit_later)
    t.start()
    try:
        arbiter.start()
    finally:
        arbiter.stop()
        t.join()
    assert all(w.state is WatcherState.STOPPED for w in arbiter.watchers)


def _try(client: CircusClient) -> bool:
    from circus.errors import CallError

    try:
        return client.send_message("status")["status"] == "ok"
    except CallError:
        return False


async def test_reload_config_applies_the_difference(short_tmp: Path) -> None:
    from circus.cli.circusd import build_arbiter
    from circus.config import load_config

    ini = short_tmp / "c.ini"
    head = f"[circus]\nendpoint = ipc://{short_tmp}/c\npubsub_endpoint = ipc://{short_tmp}/p\n"
    ini.write_text(head + "[watcher:same]\ncmd = sleep 3600\n"
                   "[watcher:resized]\ncmd = sleep 3601\n"
                   "[watcher:changed]\ncmd = sleep 3602\n"
                   "[watcher:gone]\ncmd = sleep 3603\n")
    arbiter = build_arbiter(load_config(ini))
    async with arbiter:
        pids = {w.name: w.pids for w in arbiter.watchers}
        ini.write_text(head + "[watcher:same]\ncmd = sleep 3600\n"
                       "[watcher:resized]\ncmd = sleep 3601\nnumprocesses = 3\n"
                       "[watcher:changed]\ncmd = sleep 3612\n"
                       "[watcher:new]\ncmd = sleep 3604\n")
        summary = await arbiter.reload_config()
        assert summary == {"added": ["new"], "removed": ["gone"], "changed": ["changed"],
                           "resized": ["resized"]}
        by = {w.name: w for w in arbiter.watchers}
        assert by["same"].pids == pids["same"]
        assert pids["resized"][0] in by["resized"].pids and len(by["resized"].pids) == 3
        assert by["changed"].pids != pids["changed"] and by["changed"].cmd == "sleep 3612"
        assert by["new"].state is WatcherState.ACTIVE
        assert not pid_alive(pids["gone"][0])
        # a broken file is refused whole: nothing changes
        ini.write_text(head + "[watcher:same]\ncmd = sleep 3600\nnumprocesses = many\n")
        from circus.errors import ConfigError

        with pytest.raises(ConfigError):
            await arbiter.reload_config()
        assert sorted(w.name for w in arbiter.watchers) == ["changed", "new", "resized", "same"]


async def test_events_are_built_only_while_someone_subscribes(endpoints: tuple[str, str]
                                                               ) -> None:
    """Watchers skip building events nobody would receive (a mass stop makes 2 per
    process); once a subscriber is there, a stop of many still sends every one of them."""
    w = Watcher("w", "sleep 3600", numprocesses=20)
    arbiter = Arbiter([w], *endpoints)
    sub: Subscriber | None = None
    try:
        async with arbiter:
            assert not arbiter.events_wanted() and not w.events_wanted()
            sub = Subscriber(endpoints[1])
            await sub.synced(arbiter)
            assert w.events_wanted()
            pids = set(w.pids)
            await w.stop()
            await sub.collect("watcher.w.stop")
    finally:
        if sub is not None:
            sub.close()
    assert sub is not None
    killed = {p["process_pid"] for t, p in sub.events if t == "watcher.w.kill"}
    reaped = {p["process_pid"] for t, p in sub.events if t == "watcher.w.reap"}
    assert len(pids) == 20 and killed == pids and reaped == pids


async def test_the_process_record_follows_spawns_exits_and_rm_nostop(
        endpoints: tuple[str, str], tmp_path: Path) -> None:
    """circus/state.py: each spawn and exit changes one entry of the record, and the file
    written soon after lists exactly the processes running, with their start times."""
    record = tmp_path / "record.json"

    def listed() -> dict[int, tuple[int, str]]:
        try:
            data = json.loads(record.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        return {e["pid"]: (e["start"], e["watcher"]) for e in data["processes"]}

    def start_of(pid: int) -> int:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat[stat.rfind(")") + 2:].split()[19])

    a = Watcher("a", "sleep 3600", numprocesses=3)
    b = Watcher("b", "sleep 3600", numprocesses=2)
    async with Arbiter([a, b], *endpoints, process_record=str(record)) as arbiter:
        def expected() -> dict[int, tuple[int, str]]:
            return {pid: (start_of(pid), w.name) for w in (a, b) for pid in w.pids}

        await wait_for(lambda: listed() == expected(), what="the record of 5 processes",
                       detail=lambda: f"{listed()} != {expected()}")
        victim = a.pids[0]
        os.kill(victim, signal.SIGKILL)
        await wait_for(lambda: victim not in a.pids and len(a.pids) == 3, what="a respawn")
        await wait_for(lambda: listed() == expected(), what="the record after a respawn",
                       detail=lambda: f"{listed()} != {expected()}")
        kept = b.pids
        await arbiter.rm_watcher("b", nostop=True)
        await wait_for(lambda: listed() == expected() and len(listed()) == 3,
                       what="the record without b", detail=lambda: str(listed()))
        data = json.loads(record.read_text())
        assert sorted(r["pid"] for r in data["released"]) == sorted(kept)
    for pid in kept:
        os.kill(pid, signal.SIGKILL)
