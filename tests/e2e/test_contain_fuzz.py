"""2,000 random messages, pipelined, at a live circusd: every one is answered, none lost.

Unlike ``test_ctl_fuzz.py`` (one message at a time, nothing allowed to change), this test
does not wait for a reply before sending the next message, and it mixes in real changes
(``incr``, ``decr``, ``set``, ``stop``, ``start``, ``restart``, ``reload``, ``kill``,
``signal``) to sacrificial watchers, some with ``waiting`` so that their replies come late.
Every request that is not a cast must get exactly one reply (matched by its id, or counted
when the request had no readable id); circusd must never go deaf, and the watcher nobody
touches keeps its processes.
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

import zmq

from tests.conftest import pid_alive, wait_until
from tests.e2e.conftest import Daemon

Start = Callable[..., Daemon]
SEED = int(os.environ.get("CIRCUS_FUZZ_SEED", "20261204"))
# `make soak` multiplies the bounded scenarios of the test suite by CIRCUS_SOAK
COUNT = 2000 * int(os.environ.get("CIRCUS_SOAK", "1"))
VICTIMS = ["v1", "v2", "v3"]
READ_ONLY = ["list", "listpids", "status", "numprocesses", "numwatchers", "get", "options",
             "globaloptions", "stats", "listsockets"]


def _scalar(rng: random.Random) -> Any:
    return rng.choice([None, True, False, rng.randint(-5, 10**6), rng.random() * 100,
                       "".join(rng.choice("abc*?.[]=,") for _ in range(rng.randint(0, 6)))])


def _props(rng: random.Random) -> dict[str, Any]:
    keys = ["name", "nb", "waiting", "keys", "options", "signum", "pid", "match", "x"]
    return {rng.choice(keys): _scalar(rng) for _ in range(rng.randint(0, 4))}


def _change(rng: random.Random) -> dict[str, Any]:
    """A valid change to a sacrificial watcher."""
    name = rng.choice(VICTIMS)
    waiting = rng.random() < 0.5
    kind = rng.choice(["incr", "decr", "set", "stop", "start", "restart", "reload", "kill",
                       "signal"])
    props: dict[str, Any] = {"name": name}
    if kind in ("incr", "decr"):
        props["nb"] = rng.randint(1, 2)
    elif kind == "set":
        props["options"] = rng.choice([{"numprocesses": rng.randint(0, 3)},
                                       {"graceful_timeout": 1},
                                       {"flapping.attempts": str(rng.randint(1, 9))}])
    elif kind == "signal":
        props["signum"] = 0
    if kind not in ("kill", "signal"):
        props["waiting"] = waiting
    return {"command": kind, "properties": props}


def _message(rng: random.Random) -> tuple[list[bytes], str | None, bool]:
    """Frames to send, the id a reply must carry (None: unreadable), and whether one is due."""
    roll = rng.random()
    if roll < 0.1:  # bytes that are no JSON object at all
        body = rng.choice([b"", b"{", b"[1,2]", b"null", bytes(rng.randrange(256)
                                                                   for _ in range(20))])
        return [body], None, True
    if roll < 0.4:
        msg: dict[str, Any] = {"command": rng.choice(READ_ONLY), "properties": _props(rng)}
    elif roll < 0.6:
        msg = {"command": rng.choice(["start", "stop", "incr", "set", "rm", "add", "kill"]),
               "properties": {**_props(rng), "waiting": "not a boolean"}}
    elif roll < 0.65:
        msg = {"command": "".join(rng.choice("xyz") for _ in range(5))}
    else:
        msg = _change(rng)
    msg["id"] = uuid.uuid4().hex
    cast = rng.random() < 0.1
    if cast:
        msg["msg_type"] = "cast"
    return [json.dumps(msg).encode()], msg["id"], not cast


def test_two_thousand_pipelined_messages_are_all_answered(circusd: Start) -> None:
    body = "[watcher:web]\ncmd = sleep 600\nnumprocesses = 2\n"
    for name in VICTIMS:
        body += f"[watcher:{name}]\ncmd = sleep 600\nnumprocesses = 1\ngraceful_timeout = 1\n"
    d = circusd(body)
    web = wait_until(lambda: (p := d.pids("web")) and len(p) == 2 and p, what="web's two")
    rng = random.Random(SEED)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(d.endpoint)
    due_ids: set[str] = set()
    anonymous_due = 0
    seen_ids: set[str] = set()
    anonymous_seen = 0

    def take_replies(block_ms: int) -> None:
        nonlocal anonymous_seen
        while sock.poll(block_ms):
            reply = json.loads(sock.recv_multipart()[-1])
            assert isinstance(reply, dict) and "status" in reply, reply
            mid = reply.get("id")
            if mid is None:
                anonymous_seen += 1
            else:
                assert mid in due_ids and mid not in seen_ids, f"unexpected reply {reply}"
                seen_ids.add(mid)
            block_ms = 0

    started = time.monotonic()
    try:
        for i in range(COUNT):
            frames, mid, due = _message(rng)
            sock.send_multipart(frames)
            if due and mid is not None:
                due_ids.add(mid)
            elif due:
                anonymous_due += 1
            if i % 50 == 49:
                take_replies(0)
        deadline = time.monotonic() + 60 * int(os.environ.get("CIRCUS_SOAK", "1"))
        while (len(seen_ids) < len(due_ids) or anonymous_seen < anonymous_due) \
                and time.monotonic() < deadline:
            take_replies(200)
        elapsed = time.monotonic() - started
        missing = due_ids - seen_ids
        assert not missing and anonymous_seen == anonymous_due, (
            f"seed {SEED}: {len(missing)} replies missing, "
            f"{anonymous_seen}/{anonymous_due} anonymous replies, after {elapsed:.1f}s")
        # never deaf, and the watcher nobody touched kept its processes
        assert d.call({"command": "status", "properties": {"name": "web"}})["status"] == "active"
        assert sorted(d.pids("web")) == sorted(web) and all(map(pid_alive, web))
        assert d.proc.poll() is None
        print(f"{COUNT} messages, {len(due_ids) + anonymous_due} replies, {elapsed:.1f}s")
    finally:
        sock.close()
        ctx.term()
