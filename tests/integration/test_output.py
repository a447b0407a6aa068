"""Issue 4 in-process: the ring behind ``tail``, output topics on demand, the ``sync`` wait,
and the line handling of ``tail -f`` (:class:`circus.commands.tail.Follow`)."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import zmq
import zmq.asyncio

from circus.arbiter import Arbiter
from circus.client import AsyncCircusClient
from circus.commands.tail import Follow
from circus.errors import Errno
from circus.watcher import Watcher
from tests.conftest import python_cmd, wait_for

# Two lines on each stream, then an unfinished line on stdout.
WRITER = python_cmd(
    "import sys, time\n"
    "print('one', flush=True); print('uno', file=sys.stderr, flush=True)\n"
    "print('two', flush=True); print('dos', file=sys.stderr, flush=True)\n"
    "sys.stdout.write('thr'); sys.stdout.flush()\n"
    "time.sleep(600)\n"
)
TICKER = python_cmd(
    "import time\n"
    "while True:\n"
    "    print('tick', flush=True)\n"
    "    time.sleep(0.01)\n"
)




@pytest.fixture
async def arbiter(endpoints: tuple[str, str]) -> AsyncIterator[Arbiter]:
    ctl, pub = endpoints
    arb = Arbiter([Watcher("writer", WRITER, graceful_timeout=1),
                   Watcher("Tick Tock", TICKER, graceful_timeout=1)], ctl, pub)
    await arb.open()
    try:
        yield arb
    finally:
        await arb.close()


@pytest.fixture
async def client(arbiter: Arbiter) -> AsyncIterator[AsyncCircusClient]:
    c = AsyncCircusClient(arbiter.endpoint, timeout=10)
    yield c
    c.close()


@pytest.fixture
async def ctx() -> AsyncIterator[zmq.asyncio.Context]:
    context = zmq.asyncio.Context()
    yield context
    context.destroy(linger=0)


def sub(ctx: zmq.asyncio.Context, arbiter: Arbiter, *topics: str) -> zmq.asyncio.Socket:
    sock = ctx.socket(zmq.SUB)
    sock.linger = 0
    sock.connect(arbiter.pubsub_endpoint)
    for topic in topics:
        sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
    return sock


async def test_tail_reply(arbiter: Arbiter, client: AsyncCircusClient) -> None:
    writer = arbiter.get_watcher("writer")
    await wait_for(lambda: len(writer.output.last(10)) == 5, what="the writer's output")
    pid = writer.pids[0]
    reply = await client.send_message("tail", name="WRITER")
    assert reply["status"] == "ok"
    assert reply["pid"] is None and reply["pids"] == [pid] and reply["numprocesses"] == 1
    by_stream = {
        name: [(line["line"], line["partial"]) for line in reply["lines"]
               if line["stream"] == name]
        for name in ("stdout", "stderr")
    }
    assert by_stream == {"stdout": [("one", False), ("two", False), ("thr", True)],
                         "stderr": [("uno", False), ("dos", False)]}
    assert all(line["pid"] == pid for line in reply["lines"])
    assert reply["lines"][-1]["time"] <= reply["snapshot"]

    reply = await client.send_message("tail", name="writer", stream="stderr", lines=1, pid=pid)
    assert [line["line"] for line in reply["lines"]] == ["dos"] and reply["pid"] == pid
    reply = await client.send_message("tail", name="writer", lines=0)
    assert reply["lines"] == []


@pytest.mark.parametrize(("props", "errno"), [
    ({}, Errno.MESSAGE_ERROR),
    ({"name": "nope"}, Errno.MESSAGE_ERROR),
    ({"name": "writer", "lines": -1}, Errno.MESSAGE_ERROR),
    ({"name": "writer", "lines": True}, Errno.MESSAGE_ERROR),
    ({"name": "writer", "stream": "stdin"}, Errno.MESSAGE_ERROR),
    ({"name": "writer", "pid": "x"}, Errno.MESSAGE_ERROR),
    ({"name": "writer", "pid": 1}, Errno.MESSAGE_ERROR),
    ({"name": "writer", "sync": 5}, Errno.MESSAGE_ERROR),
])
async def test_tail_refuses_bad_properties(client: AsyncCircusClient, props: dict[str, Any],
                                           errno: int) -> None:
    reply = await client.send_message("tail", **props)
    assert reply["status"] == "error" and reply["errno"] == errno, reply


async def test_output_topics_only_while_explicitly_subscribed(
        arbiter: Arbiter, ctx: zmq.asyncio.Context) -> None:
    tick = arbiter.get_watcher("Tick Tock")
    writer = arbiter.get_watcher("writer")
    catch_all = sub(ctx, arbiter, "", "watcher.", "sync.catch_all")
    # its subscriptions arrive in order: once the last is in, so are the others
    assert await arbiter.wait_subscribed("sync.catch_all", 5)
    assert not tick.output_wanted and not writer.output_wanted

    explicit = sub(ctx, arbiter, "output.tick_tock.")
    await wait_for(lambda: tick.output_wanted, what="output to be wanted")
    assert not writer.output_wanted
    topic, body = await asyncio.wait_for(explicit.recv_multipart(), 5)
    payload = json.loads(body)
    assert topic == b"output.tick_tock.stdout"
    assert payload["data"] == "tick\n" and payload["pid"] in tick.pids
    assert payload["stream"] == "stdout" and isinstance(payload["time"], float)

    explicit.close(linger=0)
    await wait_for(lambda: not tick.output_wanted, what="output to be unwanted again")
    catch_all.close(linger=0)


async def test_sync_waits_for_the_subscription(arbiter: Arbiter, client: AsyncCircusClient,
                                               ctx: zmq.asyncio.Context) -> None:
    assert not await arbiter.wait_subscribed("sync.never", 0.05)
    started = time.monotonic()
    request = asyncio.ensure_future(client.send_message("tail", name="Tick Tock",
                                                        sync="sync.later"))
    publisher: Any = arbiter._frontend._publisher
    await wait_for(lambda: b"sync.later" in publisher._waiters, what="the request to wait")
    assert not request.done()
    sock = sub(ctx, arbiter, "output.tick_tock.stdout", "sync.later")
    reply = await asyncio.wait_for(request, 5)
    assert reply["status"] == "ok" and time.monotonic() - started < 2
    assert arbiter.get_watcher("Tick Tock").output_wanted  # subscribed before sync.later
    # from the snapshot on, every chunk is published: the first one we get is not older
    _topic, body = await asyncio.wait_for(sock.recv_multipart(), 5)
    assert isinstance(json.loads(body)["time"], float)
    sock.close(linger=0)


# -- Follow: the client side of tail -f, without sockets ---------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def follow(props: dict[str, Any] | None = None, as_json: bool = False
           ) -> tuple[Follow, io.StringIO, Clock]:
    out = io.StringIO()
    clock = Clock()
    f = Follow({"name": "Web App", **(props or {})}, out, as_json=as_json, clock=clock)
    return f, out, clock


def snapshot(*lines: tuple[int, str, str, bool], numprocesses: int = 1,
             pid: int | None = None) -> dict[str, Any]:
    return {"status": "ok", "snapshot": 50.0, "numprocesses": numprocesses, "pid": pid,
            "pids": sorted({line[0] for line in lines}),
            "lines": [{"time": 40.0, "pid": p, "stream": s, "line": t, "partial": partial}
                      for p, s, t, partial in lines]}


def live(f: Follow, pid: int, data: str, when: float = 60.0, stream: str = "stdout",
         topic: str | None = None) -> None:
    body = json.dumps({"pid": pid, "stream": stream, "data": data, "time": when}).encode()
    f._handle(topic or f"output.web_app.{stream}", body, "output.web_app.", "watcher.web_app.reap")


def test_follow_completes_the_snapshots_unfinished_line() -> None:
    f, out, _ = follow()
    f._start(snapshot((1, "stdout", "a", False), (1, "stdout", "b", True)))
    assert out.getvalue() == "a\n"
    live(f, 1, "a\n", when=49.0)  # read before the snapshot: it is in the lines already
    live(f, 1, "c\nd")
    assert out.getvalue() == "a\nbc\n"
    live(f, 1, "e\n")
    assert out.getvalue() == "a\nbc\nde\n"


def test_follow_keeps_processes_and_streams_apart() -> None:
    f, out, _ = follow()
    f._start(snapshot((1, "stdout", "x", False), (2, "stdout", "y", False)))
    assert f.tagged
    live(f, 1, "one ")
    live(f, 2, "two ")
    live(f, 1, "two\n", stream="stderr")
    live(f, 2, "done\n")
    live(f, 1, "done\n")
    live(f, 3, "elsewhere\n", topic="output.web_app.other.stdout")  # watcher "web app.other"
    assert out.getvalue().splitlines() == [
        "[1] x", "[2] y", "[1] two", "[2] two done", "[1] one done"]


def test_follow_shows_a_stalled_line_and_ends_a_reaped_one() -> None:
    f, out, clock = follow(as_json=True)
    f._start(snapshot())
    live(f, 1, "prompt> ")
    live(f, 2, "last words")
    f._flush_idle()
    assert out.getvalue() == ""
    clock.now += 0.6
    live(f, 2, " spoken")
    f._flush_idle()  # pid 1's prompt waited long enough; pid 2 just wrote
    assert [json.loads(x)["line"] for x in out.getvalue().splitlines()] == ["prompt> "]
    f._handle("watcher.web_app.reap", json.dumps({"process_pid": 2}).encode(),
              "output.web_app.", "watcher.web_app.reap")
    assert [json.loads(x)["line"] for x in out.getvalue().splitlines()] == [
        "prompt> ", "last words spoken"]


def test_follow_filters_by_pid_and_stream() -> None:
    f, out, _ = follow({"pid": 7, "stream": "stderr"})
    f._start(snapshot((7, "stderr", "old", False), numprocesses=3, pid=7))
    assert not f.tagged  # one process asked for: no tags
    live(f, 8, "other\n", stream="stderr")
    live(f, 7, "mine\n", stream="stderr")
    live(f, 7, "not this stream\n", stream="stdout")
    assert out.getvalue() == "old\nmine\n"
