"""A slow command never holds up the others (issue 3: stop --waiting vs status)."""

from __future__ import annotations

import json
import statistics
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import zmq

from tests.conftest import PYTHON, pid_alive, wait_until
from tests.e2e.conftest import Daemon
from tests.e2e.ctl_support import catches

Start = Callable[..., Daemon]

# Takes 5 s to exit after SIGTERM.
SLOW_EXIT = """\
import signal, sys, time


def leave(*_):
    time.sleep(5)
    sys.exit(0)


signal.signal(signal.SIGTERM, leave)
time.sleep(600)
"""


def test_status_is_not_delayed_by_a_5s_stop(circusd: Start, short_tmp: Path) -> None:
    script = short_tmp / "slow_exit.py"
    script.write_text(SLOW_EXIT)
    d = circusd(f"[watcher:slow]\ncmd = {PYTHON} {script}\nnumprocesses = 2\n"
                "graceful_timeout = 30\n"
                "[watcher:other]\ncmd = sleep 600\n")
    pids = wait_until(lambda: (p := d.pids("slow")) and len(p) == 2 and p, what="2 processes")
    wait_until(lambda: all(catches(p, 15) for p in pids), what="the SIGTERM handlers")

    ctx = zmq.Context()
    stopper = ctx.socket(zmq.DEALER)
    asker = ctx.socket(zmq.DEALER)
    for sock in (stopper, asker):
        sock.linger = 0
        sock.connect(d.endpoint)
    try:
        started = time.monotonic()
        stopper.send(json.dumps({"id": "stop", "command": "stop",
                                 "properties": {"name": "slow", "waiting": True}}).encode())
        wait_until(lambda: d.call({"command": "status", "properties": {"name": "slow"}})
                   ["status"] == "stopping", what="the stop to begin")
        times: list[float] = []
        # a status every 20 ms until the stop's reply comes (its processes take 5 s)
        while not stopper.poll(20):
            assert time.monotonic() - started < 60, "the stop did not answer within 60 s"
            t0 = time.perf_counter()
            asker.send(json.dumps({"id": uuid.uuid4().hex, "command": "status"}).encode())
            assert asker.poll(5000), "status got no answer during the stop"
            reply = json.loads(asker.recv())
            times.append(time.perf_counter() - t0)
            # "stopped" can be read in the instant between the end of the stop and its
            # reply reaching the other socket
            assert reply["statuses"]["other"] == "active"
            assert reply["statuses"]["slow"] in ("stopping", "stopped")
        stop_reply = json.loads(stopper.recv())
        took = time.monotonic() - started
    finally:
        stopper.close()
        asker.close()
        ctx.term()
    assert stop_reply["status"] == "ok"
    assert took >= 5.0  # the processes really took their 5 s
    assert not any(map(pid_alive, pids))
    assert len(times) > 50
    median = statistics.median(times)
    print(f"status during a 5 s stop: {len(times)} calls, median {median * 1000:.2f} ms, "
          f"max {max(times) * 1000:.2f} ms")
    assert median < 0.005
    assert statistics.quantiles(times, n=20)[-1] < 0.02  # 95th percentile
