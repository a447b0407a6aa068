"""Random messages thrown at a live circusd: every one is answered (unless a cast), no
process is touched, and circusd still answers ``status`` afterwards.

Commands that change things are only ever sent in a form their validation refuses (no
``name``, or a ``waiting`` that is not a boolean), so that any effect on the processes
would be a bug; read-only commands get any properties at all.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from circus.errors import Errno
from tests.conftest import pid_alive, python_cmd, wait_until
from tests.e2e.conftest import Daemon

Start = Callable[..., Daemon]

READ_ONLY = ["list", "listpids", "status", "numprocesses", "numwatchers", "get", "options",
             "globaloptions", "stats", "dstats", "listsockets", "listen", "ipython"]
MUTATING = ["start", "stop", "restart", "reload", "reloadconfig", "incr", "decr", "set", "rm",
            "add", "kill", "signal", "quit"]

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | \
    st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)
prop_keys = st.sampled_from(["name", "nb", "waiting", "match", "keys", "options", "signum",
                             "pid", "childpid", "children", "recursive", "process",
                             "extended", "option", "graceful", "sequential", "cmd", "args",
                             "start", "nostop"]) | st.text(max_size=10)
# Not a boolean for any reading of it (bool_prop also takes 0, 1, "true", "false").
bad_waiting = (st.text(min_size=1, max_size=8).filter(
    lambda s: s.lower() not in ("true", "false", "1", "0"))
    | st.lists(json_scalars, min_size=1, max_size=3) | st.integers(min_value=2))


@st.composite
def read_only(draw: st.DrawFn) -> dict[str, Any]:
    command = draw(st.sampled_from(READ_ONLY))
    props = draw(st.dictionaries(prop_keys, json_values, max_size=5))
    if draw(st.booleans()):
        props["name"] = draw(st.sampled_from(["web", "WEB", "db", "nope", "*"]))
    return {"command": draw(st.sampled_from([command, command.upper()])),
            "properties": props}


@st.composite
def refused_mutation(draw: st.DrawFn) -> dict[str, Any]:
    props = draw(st.dictionaries(prop_keys.filter(lambda k: k != "name"), json_values,
                                 max_size=5))
    props["waiting"] = draw(bad_waiting)
    return {"command": draw(st.sampled_from(MUTATING)), "properties": props}


@st.composite
def malformed(draw: st.DrawFn) -> dict[str, Any] | Any:
    """Envelopes that are wrong in themselves."""
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(json_values)  # any JSON value, objects included
    if kind == 1:
        return {"command": draw(json_values.filter(lambda v: not isinstance(v, str)))}
    if kind == 2:
        return {"command": draw(st.text(max_size=20).filter(
            lambda s: s.lower() not in READ_ONLY + MUTATING + ["listpids"]))}
    return {"command": draw(st.sampled_from(READ_ONLY)),
            "properties": draw(json_values.filter(lambda v: not isinstance(v, dict | None)))}


messages = st.one_of(read_only(), refused_mutation(), malformed())
raw_bodies = st.binary(max_size=200)


def test_random_messages_touch_nothing(circusd: Start) -> None:
    d = circusd(f"[watcher:web]\ncmd = {python_cmd('import time; time.sleep(600)')}\n"
                "numprocesses = 2\n[watcher:db]\ncmd = sleep 600\n")
    pids = wait_until(lambda: (p := d.pids("web")) and len(p) == 2 and p, what="web") \
        + wait_until(lambda: d.pids("db"), what="db")
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(d.endpoint)

    def roundtrip(frames: list[bytes], expect_reply: bool = True) -> dict[str, Any] | None:
        sock.send_multipart(frames)
        if not expect_reply:
            return None
        assert sock.poll(10_000), f"no reply to {frames!r}"
        # a request that starts with an empty frame looks like a REQ's: so does its reply
        reply = json.loads(sock.recv_multipart()[-1])
        assert isinstance(reply, dict) and reply["status"] in ("ok", "error", "active",
                                                                "stopped"), reply
        if reply["status"] == "error":
            assert reply["errno"] in set(Errno) and isinstance(reply["reason"], str)
            assert reply["reason"] and reply["tb"] is None
        return reply  # type: ignore[no-any-return]

    @settings(max_examples=500, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(msg=messages, cast=st.booleans())
    def structured(msg: Any, cast: bool) -> None:
        is_object = isinstance(msg, dict)
        if is_object:
            msg = dict(msg)
            msg["id"] = uuid.uuid4().hex
            if cast:
                msg["msg_type"] = "cast"
        is_cast = is_object and cast
        reply = roundtrip([json.dumps(msg).encode()], expect_reply=not is_cast)
        if reply is not None and is_object:
            assert reply["id"] == msg["id"]
        if is_object and msg.get("command") in MUTATING:
            assert reply is None or reply["status"] == "error", (msg, reply)

    @settings(max_examples=300, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(frames=st.lists(raw_bodies, min_size=1, max_size=4))
    def raw(frames: list[bytes]) -> None:
        reply = roundtrip(frames)
        assert reply is not None
        if len(frames) > 1 and frames[0] != b"":
            assert reply["status"] == "error"

    try:
        structured()
        raw()
        status = d.call({"command": "status"})
        assert status["statuses"] == {"web": "active", "db": "active"}
        assert sorted(d.pids("web") + d.pids("db")) == sorted(pids)
        assert all(map(pid_alive, pids))
        assert d.proc.poll() is None
    finally:
        sock.close()
        ctx.term()
