"""The controller in-process: framing, bad input, ordering of commands, concurrency.

An Arbiter runs in the test's event loop with real children; requests go through real
ZeroMQ sockets (DEALER and REQ) on ipc endpoints.
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
from circus.client import AsyncCircusClient
from circus.consumer import AsyncCircusConsumer
from circus.controller import MAX_MESSAGE
from circus.errors import Errno
from circus.watcher import Watcher
from tests.conftest import pid_alive, python_cmd, wait_for

SLEEPER = python_cmd("import time; time.sleep(600)")
# Ignores SIGTERM: a stop waits graceful_timeout, then SIGKILLs it.
STUBBORN = python_cmd(
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
)



def ignores_sigterm(pid: int) -> bool:
    """True once the child has set SIGTERM to ignored (read in /proc)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigIgn:"):
                return bool(int(line.split()[1], 16) & (1 << (15 - 1)))
    except FileNotFoundError:
        pass
    return False




@pytest.fixture
async def arbiter(endpoints: tuple[str, str]) -> AsyncIterator[Arbiter]:
    ctl, pub = endpoints
    arb = Arbiter(
        [
            Watcher("sleeper", SLEEPER, numprocesses=2, graceful_timeout=5),
            Watcher("stubborn", STUBBORN, numprocesses=1, graceful_timeout=1.0),
        ],
        ctl,
        pub,
    )
    await arb.open()
    stubborn = arb.get_watcher("stubborn")
    await wait_for(lambda: stubborn.pids and all(ignores_sigterm(p) for p in stubborn.pids),
                   what="the stubborn child to ignore SIGTERM")
    try:
        yield arb
    finally:
        for watcher in arb.watchers:
            watcher.graceful_timeout = 0.0  # no need to wait for the stubborn child
        await arb.close()


@pytest.fixture
async def ctx() -> AsyncIterator[zmq.asyncio.Context]:
    context = zmq.asyncio.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture
async def dealer(ctx: zmq.asyncio.Context, arbiter: Arbiter) -> AsyncIterator[zmq.asyncio.Socket]:
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(arbiter.endpoint)
    yield sock
    sock.close()


async def recv_json(sock: zmq.asyncio.Socket, limit: float = 10.0) -> dict[str, Any]:
    frames = await asyncio.wait_for(sock.recv_multipart(), limit)
    assert len(frames) == 1, frames
    return json.loads(frames[0])  # type: ignore[no-any-return]


async def call(sock: zmq.asyncio.Socket, command: str, **props: Any) -> dict[str, Any]:
    msg_id = uuid.uuid4().hex
    await sock.send(json.dumps({"id": msg_id, "command": command, "properties": props}).encode())
    reply = await recv_json(sock)
    assert reply["id"] == msg_id
    return reply


# -- framing -------------------------------------------------------------------------------


async def test_a_dealer_gets_one_frame_with_its_id(dealer: zmq.asyncio.Socket) -> None:
    reply = await call(dealer, "list")
    assert reply["status"] == "ok"
    assert reply["watchers"] == ["sleeper", "stubborn"]
    assert isinstance(reply["time"], float)


async def test_a_req_socket_gets_an_answer(ctx: zmq.asyncio.Context, arbiter: Arbiter) -> None:
    req = ctx.socket(zmq.REQ)
    req.linger = 0
    req.connect(arbiter.endpoint)
    try:
        await req.send(json.dumps({"id": 7, "command": "numwatchers"}).encode())
        reply = json.loads(await asyncio.wait_for(req.recv(), 10))
        assert reply == {"status": "ok", "numwatchers": 2, "time": reply["time"], "id": 7}
    finally:
        req.close()


async def test_a_message_in_two_frames_gets_an_error(dealer: zmq.asyncio.Socket) -> None:
    await dealer.send_multipart([b'{"command": "list"}', b"garbage"])
    reply = await recv_json(dealer)
    assert reply["status"] == "error"
    assert reply["errno"] == Errno.MESSAGE_ERROR
    assert "one frame" in reply["reason"]
    assert (await call(dealer, "status"))["status"] == "ok"


# -- bad input -------------------------------------------------------------------------------


BAD = [
    (b"", Errno.MESSAGE_ERROR, "empty"),
    (b"   \n", Errno.MESSAGE_ERROR, "empty"),
    (b"{not json", Errno.INVALID_JSON, "json invalid"),
    (b"\xff\xfe\x00", Errno.INVALID_JSON, "json invalid"),
    (b"[1, 2]", Errno.MESSAGE_ERROR, "expected a JSON object"),
    (b'"status"', Errno.MESSAGE_ERROR, "expected a JSON object"),
    (b"null", Errno.MESSAGE_ERROR, "expected a JSON object"),
    (b"[" * 100000, Errno.INVALID_JSON, "json invalid"),
    (b'{"properties": {}}', Errno.MESSAGE_ERROR, "'command' is missing"),
    (b'{"command": 5}', Errno.MESSAGE_ERROR, "'command' should be a string"),
    (b'{"command": ["list"]}', Errno.MESSAGE_ERROR, "'command' should be a string"),
    (b'{"command": "bogus"}', Errno.UNKNOWN_COMMAND, "unknown command: 'bogus'"),
    (b'{"command": "list", "properties": [1]}', Errno.MESSAGE_ERROR,
     "'properties' should be an object"),
    (b'{"command": "incr"}', Errno.MESSAGE_ERROR, "message invalid 'name' is missing"),
    (b'{"command": "incr", "properties": {"name": "nope"}}', Errno.MESSAGE_ERROR,
     "program nope not found"),
    (b'{"command": "incr", "properties": {"name": 3}}', Errno.MESSAGE_ERROR,
     "'name' should be a string"),
    (b'{"command": "incr", "properties": {"name": "sleeper", "nb": "x"}}',
     Errno.MESSAGE_ERROR, "'nb' should be an integer"),
    (b'{"command": "incr", "properties": {"name": "sleeper", "nb": -2}}',
     Errno.MESSAGE_ERROR, "'nb' should be at least 0"),
    (b'{"command": "stop", "properties": {"name": "sleeper", "waiting": "maybe"}}',
     Errno.MESSAGE_ERROR, "'waiting' should be true or false"),
    (b'{"command": "stop", "properties": {"name": "sleeper", "match": "fuzzy"}}',
     Errno.MESSAGE_ERROR, "unknown match mode"),
    (b'{"command": "stop", "properties": {"name": "(", "match": "regex"}}',
     Errno.MESSAGE_ERROR, "invalid regex"),
    (b'{"command": "signal", "properties": {"name": "sleeper", "signum": "!!"}}',
     Errno.MESSAGE_ERROR, "signal invalid"),
    (b'{"command": "signal", "properties": {"name": "sleeper", "signum": "NOSUCH"}}',
     Errno.MESSAGE_ERROR, "signal invalid"),
    (b'{"command": "signal", "properties": {"name": "sleeper", "signum": 9, "childpid": 1}}',
     Errno.MESSAGE_ERROR, "childpid without pid"),
    (b'{"command": "set", "properties": {"name": "sleeper"}}', Errno.MESSAGE_ERROR,
     "'options' is missing"),
    (b'{"command": "set", "properties": {"name": "sleeper", "options": [1]}}',
     Errno.MESSAGE_ERROR, "'options' property should be an object"),
    (b'{"command": "set", "properties": {"name": "sleeper", "options": {"bogus": 1}}}',
     Errno.MESSAGE_ERROR, "unknown key 'bogus'"),
    (b'{"command": "set", "properties": {"name": "sleeper", "options": {"numprocesses": "3"}}}',
     Errno.MESSAGE_ERROR, "'numprocesses'"),
    (b'{"command": "get", "properties": {"name": "sleeper", "keys": ["nope"]}}',
     Errno.MESSAGE_ERROR, "'nope' option not found"),
    (b'{"command": "get", "properties": {"name": "sleeper", "keys": "cmd"}}',
     Errno.MESSAGE_ERROR, "'keys' should be a list"),
    (b'{"command": "globaloptions", "properties": {"option": "nope"}}',
     Errno.MESSAGE_ERROR, "'nope' not an existing option"),
    (b'{"command": "stats", "properties": {"name": "sleeper", "process": 1}}',
     Errno.MESSAGE_ERROR, "process 1 not found in 'sleeper'"),
    (b'{"command": "kill", "properties": {"name": "sleeper", "pid": 1}}',
     Errno.MESSAGE_ERROR, "process 1 not found in 'sleeper'"),
    (b'{"command": "add", "properties": {"name": "sleeper", "cmd": "x"}}',
     Errno.COMMAND_ERROR, "already exists"),
    (b'{"command": "add", "properties": {"name": "n", "cmd": "x", "options": 3}}',
     Errno.MESSAGE_ERROR, "'options' property should be an object"),
    (b'{"command": "add", "properties": {"name": "n", "cmd": "x", "args": {"a": 1}}}',
     Errno.MESSAGE_ERROR, "'args' should be a string or a list"),
    (b'{"command": "listen"}', Errno.MESSAGE_ERROR, "use a pub/sub socket"),
]


@pytest.mark.parametrize(("body", "errno", "reason"), BAD,
                         ids=[repr(b[0][:40]) for b in BAD])
async def test_bad_input_gets_an_error_reply_and_nothing_changes(
    dealer: zmq.asyncio.Socket, arbiter: Arbiter, body: bytes, errno: int, reason: str
) -> None:
    before = {w.name: sorted(w.pids) for w in arbiter.watchers}
    await dealer.send(body)
    reply = await recv_json(dealer)
    assert reply["status"] == "error", reply
    assert reply["errno"] == errno, reply
    assert reason in reply["reason"], reply
    assert reply["tb"] is None
    assert {w.name: sorted(w.pids) for w in arbiter.watchers} == before
    assert all(pid_alive(p) for pids in before.values() for p in pids)


async def test_the_id_of_a_bad_message_is_echoed(dealer: zmq.asyncio.Socket) -> None:
    await dealer.send(b'{"id": [1, "x"], "command": "nope"}')
    reply = await recv_json(dealer)
    assert reply["id"] == [1, "x"]
    assert reply["errno"] == Errno.UNKNOWN_COMMAND


async def test_an_oversized_message_is_refused(dealer: zmq.asyncio.Socket) -> None:
    body = json.dumps({"command": "status", "pad": "x" * (MAX_MESSAGE + 10)}).encode()
    await dealer.send(body)
    reply = await recv_json(dealer)
    assert reply["errno"] == Errno.MESSAGE_ERROR
    assert "too large" in reply["reason"]


async def test_null_properties_mean_none(dealer: zmq.asyncio.Socket) -> None:
    await dealer.send(b'{"id": 1, "command": "numwatchers", "properties": null}')
    assert (await recv_json(dealer))["numwatchers"] == 2


async def test_command_names_are_case_insensitive(dealer: zmq.asyncio.Socket) -> None:
    assert (await call(dealer, "NumWatchers"))["numwatchers"] == 2


async def test_a_cast_is_run_without_a_reply(dealer: zmq.asyncio.Socket,
                                              arbiter: Arbiter) -> None:
    await dealer.send(json.dumps({"command": "incr", "msg_type": "cast",
                                  "properties": {"name": "sleeper", "nb": 1}}).encode())
    await dealer.send(json.dumps({"command": "bogus", "msg_type": "cast"}).encode())
    watcher = arbiter.get_watcher("sleeper")
    await wait_for(lambda: len(watcher.processes) == 3, what="the cast incr to spawn")
    # the only reply on the socket is the one to this call
    assert (await call(dealer, "numprocesses", name="sleeper"))["numprocesses"] == 3


# -- ordering and concurrency ----------------------------------------------------------------


async def test_a_slow_stop_does_not_delay_status(dealer: zmq.asyncio.Socket,
                                                  arbiter: Arbiter) -> None:
    """stop --waiting takes graceful_timeout (1 s) here; status answers meanwhile."""
    stop_id = "stop"
    await dealer.send(json.dumps({"id": stop_id, "command": "stop",
                                  "properties": {"name": "stubborn", "waiting": True}}).encode())
    watcher = arbiter.get_watcher("stubborn")
    await wait_for(lambda: watcher.status == "stopping", what="the stop to begin")
    started = time.monotonic()
    reply = await call(dealer, "status", name="stubborn")
    assert time.monotonic() - started < 0.2
    assert reply["status"] == "stopping"
    stopped = await recv_json(dealer)
    assert stopped["id"] == stop_id and stopped["status"] == "ok"
    assert watcher.status == "stopped"


async def test_commands_on_one_watcher_run_in_arrival_order(dealer: zmq.asyncio.Socket,
                                                             arbiter: Arbiter) -> None:
    """stop (slow), then start, then incr: none is refused, all run in turn."""
    watcher = arbiter.get_watcher("stubborn")
    old = set(watcher.pids)
    msgs = [
        {"id": "a", "command": "stop", "properties": {"name": "stubborn", "waiting": True}},
        {"id": "b", "command": "start", "properties": {"name": "stubborn", "waiting": True}},
        {"id": "c", "command": "incr", "properties": {"name": "stubborn", "waiting": True}},
    ]
    for msg in msgs:
        await dealer.send(json.dumps(msg).encode())
    replies = [await recv_json(dealer) for _ in msgs]
    assert [r["id"] for r in replies] == ["a", "b", "c"]
    assert all(r["status"] == "ok" for r in replies), replies
    assert replies[2]["numprocesses"] == 2
    assert watcher.status == "active"
    assert len(watcher.pids) == 2 and not old & set(watcher.pids)


async def test_a_whole_arbiter_command_waits_for_earlier_ones(dealer: zmq.asyncio.Socket,
                                                               arbiter: Arbiter) -> None:
    """A stop of one watcher, then a start of all: the start comes second, so all run."""
    await dealer.send(json.dumps({"id": "a", "command": "stop",
                                  "properties": {"name": "stubborn"}}).encode())
    await dealer.send(json.dumps({"id": "b", "command": "start",
                                  "properties": {"waiting": True}}).encode())
    first = await recv_json(dealer)
    assert first["id"] == "a"
    second = await recv_json(dealer)
    assert second["id"] == "b" and second["status"] == "ok"
    assert arbiter.get_watcher("stubborn").status == "active"


async def test_other_watchers_are_not_held_up(dealer: zmq.asyncio.Socket,
                                               arbiter: Arbiter) -> None:
    await dealer.send(json.dumps({"id": "slow", "command": "stop",
                                  "properties": {"name": "stubborn", "waiting": True}}).encode())
    started = time.monotonic()
    reply = await call(dealer, "incr", name="sleeper", waiting=True)
    assert reply["numprocesses"] == 3
    assert time.monotonic() - started < 0.8  # not behind the 1 s stop
    assert (await recv_json(dealer))["id"] == "slow"


async def test_incr_without_waiting_reports_the_target_of_queued_commands(
    dealer: zmq.asyncio.Socket, arbiter: Arbiter
) -> None:
    for nb in (1, 2, 3):
        await dealer.send(json.dumps({"id": nb, "command": "incr",
                                      "properties": {"name": "sleeper", "nb": nb}}).encode())
    replies = sorted([await recv_json(dealer) for _ in range(3)], key=lambda r: r["id"])
    assert [r["numprocesses"] for r in replies] == [3, 5, 8]
    watcher = arbiter.get_watcher("sleeper")
    await wait_for(lambda: len(watcher.processes) == 8, what="8 processes")


# -- clients --------------------------------------------------------------------------------


async def test_async_client_runs_calls_concurrently(arbiter: Arbiter) -> None:
    async with AsyncCircusClient(endpoint=arbiter.endpoint, timeout=10) as client:
        slow = asyncio.ensure_future(
            client.send_message("stop", name="stubborn", waiting=True))
        await wait_for(lambda: arbiter.get_watcher("stubborn").status == "stopping", what="stop")
        fast = await asyncio.gather(*(client.send_message("status") for _ in range(20)))
        assert not slow.done()
        assert all(r["statuses"]["sleeper"] == "active" for r in fast)
        assert (await slow)["status"] == "ok"


async def test_async_client_times_out_naming_the_endpoint(short_tmp: Path) -> None:
    ctx = zmq.asyncio.Context()
    mute = ctx.socket(zmq.ROUTER)
    mute.bind(f"ipc://{short_tmp}/mute")
    try:
        client = AsyncCircusClient(endpoint=f"ipc://{short_tmp}/mute", timeout=0.2)
        from circus.client import TimedOut

        with pytest.raises(TimedOut, match="did not answer"):
            await client.call({"command": "status"})
        client.close()
    finally:
        mute.close(linger=0)
        ctx.term()


async def test_async_consumer_sees_events(arbiter: Arbiter, dealer: zmq.asyncio.Socket) -> None:
    async with AsyncCircusConsumer(["watcher.sleeper."], endpoint=arbiter.pubsub_endpoint) as c:
        # The subscription takes a moment to reach the publisher: repeat until seen.
        async def spawned() -> Any:
            while True:
                event = await c.recv()
                if event.action == "spawn":
                    return event

        waiter = asyncio.ensure_future(spawned())
        try:
            for _ in range(50):
                await call(dealer, "incr", name="sleeper", waiting=True)
                done, _ = await asyncio.wait({waiter}, timeout=0.1)
                if done:
                    break
            event = await asyncio.wait_for(waiter, 5)
        finally:
            waiter.cancel()
        assert event.watcher == "sleeper"
        assert event.payload["process_pid"] in arbiter.get_watcher("sleeper").pids
