"""circusd-stats' collector on real processes: the JSON it makes from cached pieces is the
JSON of its figures, an idle process is read with schedstat only, and one that runs again
is read in full."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from circus.stats.collector import FULL_READ_EVERY, Collector, Gone
from tests.conftest import wait_until

# spins for half a second at each line it reads, sleeps otherwise
WORKER = ("import sys, time\n"
          "for line in sys.stdin:\n"
          "    end = time.monotonic() + 0.5\n"
          "    while time.monotonic() < end: pass\n"
          "    print('done', flush=True)\n")


@pytest.fixture
def worker() -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([sys.executable, "-c", WORKER], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        # one line answered: the interpreter has started, its memory no longer grows
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("warm up\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == "done\n"
        yield proc
    finally:
        proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()


def test_cached_json_is_the_json_of_the_figures(worker: subprocess.Popen[str]) -> None:
    collector = Collector()
    pid = worker.pid
    now = time.time()
    body, cpu, mem, age = collector.encode(pid, now, None)
    message = json.loads(body)
    assert message["subtopic"] == pid and message["name"] is None
    expected = collector.read(pid, now + 0.5)
    del message["subtopic"], message["name"]
    assert set(message) == set(expected)
    for key in ("pid", "mem", "mem_info1", "mem_info2", "username", "nice", "create_time",
                "cmdline", "children"):
        assert message[key] == expected[key], key
    assert (cpu, mem) == (message["cpu"], message["mem"])
    assert age == pytest.approx(time.time() - message["create_time"], abs=1)
    collector.forget_all()


def test_idle_reads_take_schedstat_and_a_run_is_seen(worker: subprocess.Popen[str]) -> None:
    collector = Collector()
    pid = worker.pid

    def settled() -> bool:
        collector.encode(pid, time.time())
        return collector._tracked[pid].settled

    wait_until(settled, what="the worker settled", timeout=10, interval=0.2)
    tracked = collector._tracked[pid]
    if not collector.use_schedstat:
        pytest.skip("this kernel keeps no /proc/<pid>/schedstat")
    first = collector.encode(pid, time.time())[0]
    time.sleep(0.3)
    second = collector.encode(pid, time.time())[0]
    assert tracked.same_reads >= 1  # the second read was schedstat's only
    one, two = json.loads(first), json.loads(second)
    assert two["age"] == pytest.approx(one["age"] + 0.3, abs=0.1)
    assert ({k: v for k, v in one.items() if k not in ("age", "cpu")}
            == {k: v for k, v in two.items() if k not in ("age", "cpu")})
    assert two["cpu"] == 0.0

    assert worker.stdin is not None and worker.stdout is not None
    worker.stdin.write("spin\n")
    worker.stdin.flush()
    assert worker.stdout.readline() == "done\n"
    busy = json.loads(collector.encode(pid, time.time())[0])
    assert busy["cpu"] > 0 and busy["ctime"] != one["ctime"]
    assert tracked.same_reads == 0

    later = time.time()
    counts = []
    for step in range(FULL_READ_EVERY + 3):  # however idle, a full read comes back
        collector.encode(pid, later + 1 + step)
        counts.append(tracked.same_reads)
    assert max(counts) == FULL_READ_EVERY and 0 in counts[1:], counts

    worker.kill()
    worker.wait()
    with pytest.raises(Gone):
        collector.encode(pid, time.time() + 100)
    collector.forget_all()
