"""The Python clients against the real circusd: CircusClient, AsyncCircusClient and the
event consumers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import zmq

from circus.client import AsyncCircusClient, CircusClient, TimedOut, Unreachable
from circus.consumer import AsyncCircusConsumer, CircusConsumer
from circus.errors import CallError
from tests.conftest import pid_alive, wait_until
from tests.e2e.conftest import Daemon

Start = Callable[..., Daemon]
WATCHER = "[watcher:web]\ncmd = sleep 600\nnumprocesses = 2\n"


def test_blocking_client(circusd: Start) -> None:
    d = circusd(WATCHER)
    with CircusClient(endpoint=d.endpoint, timeout=5) as client:
        assert client.call({"command": "numwatchers"})["numwatchers"] == 1
        assert client.call('{"command": "list"}')["watchers"] == ["web"]
        reply = client.send_message("incr", name="web", nb=2, waiting=True)
        assert reply["status"] == "ok" and reply["numprocesses"] == 4
        pids = client.send_message("list", name="web")["pids"]
        assert len(pids) == 4 and all(map(pid_alive, pids))
        # an error reply is returned, not raised
        assert client.send_message("status", name="nope")["errno"] == 3
        # a cast is only sent
        assert client.call({"command": "decr", "msg_type": "cast",
                            "properties": {"name": "web"}}) == {"status": "ok"}
        wait_until(lambda: len(client.send_message("list", name="web")["pids"]) == 3,
                   what="the cast decr")


def test_blocking_client_errors(short_tmp: Path) -> None:
    with CircusClient(endpoint=f"ipc://{short_tmp}/none", timeout=0.2) as client, \
            pytest.raises(Unreachable, match="cannot reach circusd"):
        client.call({"command": "status"})
    ctx = zmq.Context()
    mute = ctx.socket(zmq.ROUTER)
    mute.bind(f"ipc://{short_tmp}/mute")
    try:
        with CircusClient(endpoint=f"ipc://{short_tmp}/mute", timeout=0.2) as client, \
                pytest.raises(TimedOut):
            client.call({"command": "status"})
    finally:
        mute.close(linger=0)
        ctx.term()
    with pytest.raises(CallError, match="SSH"):
        CircusClient(endpoint="tcp://127.0.0.1:1", ssh_server="me@host")


async def test_async_client_and_consumer(circusd: Start) -> None:
    d = circusd(WATCHER)
    async with AsyncCircusClient(endpoint=d.endpoint, timeout=5) as client, \
            AsyncCircusConsumer(["watcher.web.spawn"], endpoint=d.pubsub) as consumer:
        replies = await asyncio.gather(*(client.send_message("status") for _ in range(10)),
                                       client.send_message("list", name="web"))
        assert all(r["statuses"] == {"web": "active"} for r in replies[:-1])
        assert len(replies[-1]["pids"]) == 2

        async def first_spawn() -> int:
            event = await consumer.recv()
            assert event.topic == "watcher.web.spawn" and event.watcher == "web"
            return int(event.payload["process_pid"])

        waiter = asyncio.ensure_future(first_spawn())
        try:
            for _ in range(100):  # the subscription takes a moment to reach circusd
                await client.send_message("incr", name="web", waiting=True)
                done, _ = await asyncio.wait({waiter}, timeout=0.05)
                if done:
                    break
            pid = await asyncio.wait_for(waiter, 5)
        finally:
            waiter.cancel()
        assert pid in (await client.send_message("list", name="web"))["pids"]
        await client.cast("decr", name="web")


def test_blocking_consumer(circusd: Start) -> None:
    d = circusd(WATCHER)
    consumer = CircusConsumer([b"watcher.web."], endpoint=d.pubsub, timeout=0.1)
    got: list[tuple[bytes, bytes]] = []

    def consume() -> None:
        for topic, body in consumer:
            got.append((topic, body))
            if topic == b"watcher.web.spawn":
                break

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    try:
        def spawned() -> bool:
            d.call({"command": "incr", "properties": {"name": "web", "waiting": True}})
            reader.join(0.05)
            return not reader.is_alive()

        wait_until(spawned, what="the consumer to see a spawn", interval=0.01)
    finally:
        consumer.stop()
        reader.join(5)
    topic, body = got[-1]
    assert topic == b"watcher.web.spawn" and b"process_pid" in body
