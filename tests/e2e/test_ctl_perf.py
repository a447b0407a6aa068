"""Round trips with 1,000 processes running: status and list NAME, median under 2 ms.

Run alone to see the figures::

    .venv/bin/python -m pytest -s tests/e2e/test_ctl_perf.py
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import pytest

from circus.client import CircusClient
from tests.conftest import wait_until
from tests.e2e.conftest import Daemon

Start = Callable[..., Daemon]

PROCESSES = 1000
ROUNDS = 300


def median_ms(client: CircusClient, message: dict[str, object]) -> float:
    for _ in range(20):  # warm up
        client.call(dict(message))
    times = []
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        reply = client.call(dict(message))
        times.append(time.perf_counter() - t0)
        assert reply["status"] != "error", reply
    return statistics.median(times) * 1000


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_round_trips_with_1000_processes(circusd: Start) -> None:
    d = circusd(f"[watcher:many]\ncmd = sleep 3600\nnumprocesses = {PROCESSES}\n"
                "graceful_timeout = 5\n")
    client = CircusClient(endpoint=d.endpoint, timeout=30)
    try:
        wait_until(lambda: client.call({"command": "numprocesses", "properties": {
            "name": "many"}})["numprocesses"] >= PROCESSES, what=f"{PROCESSES} processes",
            timeout=120, interval=0.1)
        assert len(client.call({"command": "list", "properties": {"name": "many"}})["pids"]
                   ) == PROCESSES
        status = median_ms(client, {"command": "status"})
        status_one = median_ms(client, {"command": "status", "properties": {"name": "many"}})
        listing = median_ms(client, {"command": "list", "properties": {"name": "many"}})
    finally:
        client.stop()
    print(f"\n{PROCESSES} processes, {ROUNDS} calls each, median round trip: "
          f"status {status:.3f} ms, status many {status_one:.3f} ms, "
          f"list many {listing:.3f} ms")
    assert status < 2.0
    assert status_one < 2.0
    assert listing < 2.0
