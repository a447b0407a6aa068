"""Issue 4: ``circusctl tail`` answers from circusd's ring; ``tail -f`` follows live output.

The followers are real ``circusctl tail -f`` processes; their stdout is read through a pipe
with deadlines, and they are stopped by pid with SIGINT or SIGTERM.
"""

from __future__ import annotations

import json
import os
import select
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PYTHON, wait_until
from tests.e2e.conftest import CIRCUSCTL, Daemon, recv_event, wait_event

Start = Callable[..., Daemon]

CHILD = Path(__file__).resolve().parents[1] / "fixtures" / "child.py"
LINES = 100_000


class Follower:
    """A ``circusctl tail -f`` subprocess whose output is read line by line with deadlines."""

    def __init__(self, d: Daemon, *args: str) -> None:
        self.proc = subprocess.Popen(
            [*CIRCUSCTL, "--endpoint", d.endpoint, "tail", *args, "-f"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        self._fd = self.proc.stdout.fileno()
        self._buf = b""

    def line(self, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.proc.poll() is not None and not select.select(
                    [self._fd], [], [], 0)[0]:
                pytest.fail(f"no line from tail -f within {timeout}s "
                            f"(exit {self.proc.poll()}): {self._stderr()}")
            if select.select([self._fd], [], [], remaining)[0]:
                chunk = os.read(self._fd, 65536)
                if not chunk:
                    pytest.fail(f"tail -f closed its output: {self._stderr()}")
                self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode()

    def _stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read().decode(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def followers() -> Iterator[list[Follower]]:
    started: list[Follower] = []
    yield started
    for follower in started:
        follower.stop(signal.SIGKILL)
        for pipe in (follower.proc.stdout, follower.proc.stderr):
            if pipe is not None:
                pipe.close()


def script(directory: Path, name: str, body: str) -> str:
    path = directory / f"{name}.py"
    path.write_text(body)
    return f"{shlex.quote(PYTHON)} {path}"


def test_tail_shows_the_last_ten_lines(circusd: Start, short_tmp: Path) -> None:
    out = short_tmp / "out.log"
    d = circusd(f"[watcher:web]\ncmd = {PYTHON} {CHILD} --print {LINES}\n"
                f"stdout_stream.class = FileStream\nstdout_stream.filename = {out}\n")
    # the child stays alive after printing; its output went to a file, and to the ring
    wait_until(lambda: d.ctl("tail", "web", "-n", "1").stdout == f"{LINES - 1}\n",
               what="the last line in the ring")
    res = d.ctl("tail", "web", "-n", "10")
    assert res.returncode == 0, res.stderr
    assert res.stdout == "".join(f"{i}\n" for i in range(LINES - 10, LINES))
    assert d.ctl("tail", "web").stdout == res.stdout  # 10 is the default
    assert d.ctl("tail", "web", "--lines", "3").stdout.split() == ["99997", "99998", "99999"]
    assert d.ctl("tail", "web", "-n0").stdout == ""

    reply = d.call({"command": "tail", "properties": {"name": "web", "lines": 10}})
    pid = d.pids("web")[0]
    assert [line["line"] for line in reply["lines"]] == [str(i) for i in range(99990, LINES)]
    assert {line["pid"] for line in reply["lines"]} == {pid}
    assert {line["stream"] for line in reply["lines"]} == {"stdout"}
    assert not any(line["partial"] for line in reply["lines"])
    assert reply["pids"] == [pid] and reply["numprocesses"] == 1
    times = [line["time"] for line in reply["lines"]]
    assert times == sorted(times) and times[-1] <= reply["snapshot"] <= reply["time"]

    as_json = json.loads(d.ctl("--json", "tail", "web", "-n", "2").stdout)
    assert [line["line"] for line in as_json["lines"]] == ["99998", "99999"]


def test_tail_by_process_and_stream(circusd: Start, short_tmp: Path) -> None:
    cmd = script(short_tmp, "both", (
        "import os, sys, time\n"
        "pid = os.getpid()\n"
        "for i in range(3):\n"
        "    print(f'out {pid} {i}', flush=True)\n"
        "    print(f'err {pid} {i}', file=sys.stderr, flush=True)\n"
        "sys.stdout.write('no newline yet')\n"
        "sys.stdout.flush()\n"
        "time.sleep(600)\n"
    ))
    d = circusd(f"[watcher:Two Words]\ncmd = {cmd}\nnumprocesses = 2\n")

    def lines(*args: str) -> list[str]:
        return d.ctl("tail", "two words", *args).stdout.splitlines()

    wait_until(lambda: len(d.pids("two words")) == 2, what="2 processes")
    pids = d.pids("two words")
    wait_until(lambda: len(lines("-n", "100")) == 14, what="the output of both")
    everything = lines("-n", "100")
    for pid in pids:  # two processes: every line says whose it is
        mine = [line.split("] ", 1)[1] for line in everything if line.startswith(f"[{pid}] ")]
        # stdout and stderr are two pipes: each keeps its order, their mix may vary
        assert [line for line in mine if not line.startswith("err")] == [
            *(f"out {pid} {i}" for i in range(3)), "no newline yet"]
        assert [line for line in mine if line.startswith("err")] == [
            f"err {pid} {i}" for i in range(3)]

    first = pids[0]
    assert lines("--pid", str(first), "--stream", "stderr") == [
        f"err {first} {i}" for i in range(3)]  # one process: no tag
    assert lines("--stream", "stdout", "--pid", str(first), "-n", "2") == [
        f"out {first} 2", "no newline yet"]
    reply = d.call({"command": "tail", "properties": {"name": "Two Words", "pid": first,
                                                       "stream": "stdout", "lines": 1}})
    assert reply["lines"][0]["line"] == "no newline yet" and reply["lines"][0]["partial"]


def test_tail_errors(circusd: Start, short_tmp: Path) -> None:
    d = circusd("[watcher:web]\ncmd = sleep 600\n")
    res = d.ctl("tail", "nope")
    assert res.returncode == 3 and "program nope not found" in res.stderr
    res = d.ctl("tail", "web", "--pid", "1")
    assert res.returncode == 3 and "process 1 not found" in res.stderr
    assert d.ctl("tail", "web", "-n", "-1").returncode == 2
    assert d.ctl("tail", "web", "-n", "x").returncode == 2
    assert d.ctl("tail", "web", "--stream", "stdin").returncode == 2
    assert d.ctl("tail").returncode == 2
    for props, errno in (({"name": "web", "stream": "x"}, 3),
                         ({"name": "web", "lines": -1}, 3),
                         ({"name": "web", "lines": "ten"}, 3),
                         ({"lines": 3}, 3)):
        reply = d.call({"command": "tail", "properties": props})
        assert reply["status"] == "error" and reply["errno"] == errno, (props, reply)
    # a sync topic nobody subscribes to: refused after a while, not answered wrongly
    reply = d.call({"command": "tail", "properties": {"name": "web", "sync": "sync.none"}})
    assert reply["status"] == "error" and reply["errno"] == 5
    assert "sync.none" in reply["reason"]


PINGER = """\
import os, sys, time
go = sys.argv[1]
print("ready", flush=True)
while True:
    if os.path.exists(go):
        os.unlink(go)
        sys.stdout.write(f"ping {time.time()!r}\\n")
        sys.stdout.flush()
    time.sleep(0.002)
"""


def test_tail_f_shows_a_line_within_100_ms(circusd: Start, short_tmp: Path,
                                           followers: list[Follower]) -> None:
    go = short_tmp / "go"
    d = circusd(f"[watcher:web]\ncmd = {script(short_tmp, 'pinger', PINGER)} {go}\n")
    wait_until(lambda: d.ctl("tail", "web").stdout == "ready\n", what="the child")
    follower = Follower(d, "web", "-n", "1")
    followers.append(follower)
    assert follower.line() == "ready"
    delays = []
    for _ in range(5):
        tmp = short_tmp / "go.tmp"
        tmp.touch()
        tmp.rename(go)
        word, written = follower.line().split()
        delays.append(time.time() - float(written))
        assert word == "ping"
    assert max(delays) < 0.1, delays
    assert follower.stop(signal.SIGINT) == 0


COUNTER = """\
import itertools, sys, time
for i in itertools.count():
    sys.stdout.write(f"{i}\\n")
    sys.stdout.flush()
    time.sleep(0.0005)
"""


def test_tail_f_joins_the_live_feed_without_gap_or_repeat(
        circusd: Start, short_tmp: Path, followers: list[Follower]) -> None:
    """Lines printed between the last-lines snapshot and the subscription are not lost."""
    d = circusd(f"[watcher:counter]\ncmd = {script(short_tmp, 'counter', COUNTER)}\n")
    wait_until(lambda: d.ctl("tail", "counter").stdout.count("\n") == 10, what="output")
    for _ in range(3):  # each join lands at a different place in the output
        follower = Follower(d, "counter", "-n", "5")
        followers.append(follower)
        numbers = [int(follower.line()) for _ in range(400)]
        assert numbers == list(range(numbers[0], numbers[0] + 400))
        assert follower.stop() == 0  # SIGTERM ends it like Ctrl-C


def test_tail_f_json_and_unfinished_lines(circusd: Start, short_tmp: Path,
                                          followers: list[Follower]) -> None:
    go = short_tmp / "go"
    cmd = script(short_tmp, "prompt", (
        "import os, sys, time\n"
        "sys.stdout.write('first\\npartial ')\n"
        "sys.stdout.flush()\n"
        f"while not os.path.exists({str(go)!r}):\n"
        "    time.sleep(0.005)\n"
        "sys.stdout.write('line\\nprompt> ')\n"
        "sys.stdout.flush()\n"
        "time.sleep(600)\n"
    ))
    d = circusd(f"[watcher:web]\ncmd = {cmd}\n")
    pid = wait_until(lambda: d.pids("web"), what="the child")[0]
    wait_until(lambda: d.ctl("tail", "web").stdout == "first\npartial \n", what="output")
    follower = Follower(d, "web", "--json")
    followers.append(follower)
    first = json.loads(follower.line())
    assert first["line"] == "first" and first["pid"] == pid and first["stream"] == "stdout"
    go.touch()
    # the unfinished line of the snapshot is completed by the live feed, not cut in two
    assert json.loads(follower.line())["line"] == "partial line"
    # a prompt that stays unfinished is shown after a moment anyway
    assert json.loads(follower.line(timeout=5))["line"] == "prompt> "
    assert follower.stop() == 0


def test_output_is_published_only_while_explicitly_subscribed(circusd: Start, short_tmp: Path
                                                              ) -> None:
    cmd = script(short_tmp, "ticker", (
        "import sys, time\n"
        "while True:\n"
        "    print('tick', flush=True)\n"
        "    time.sleep(0.01)\n"
    ))
    d = circusd(f"[watcher:web]\ncmd = {cmd}\n")
    everything = d.subscribe()  # "": every event, which does not ask for output

    def topics_for(seconds: float) -> list[str]:
        got = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if everything.poll(int(left * 1000) + 1):
                got.append(everything.recv_multipart()[0].decode())
        return got

    pid = wait_until(lambda: d.pids("web"), what="the child")[0]
    wait_until(lambda: d.ctl("tail", "web").stdout.count("tick") > 3, what="ticks")
    os.kill(pid, signal.SIGKILL)  # some events: reap, spawn
    new = wait_until(lambda: [p for p in d.pids("web") if p != pid], what="the replacement")[0]
    wait_until(lambda: d.ctl("tail", "web", "--pid", str(new)).stdout.count("tick") > 3,
               what="ticks of the replacement")
    # those ticks were read, and published had anyone asked, before this set is handled
    d.call({"command": "set", "properties": {"name": "web", "options": {"marker.n": "1"}}})
    got: list[str] = []

    def until_marker(topic: str, _: dict[str, Any]) -> bool:
        got.append(topic)
        return topic == "watcher.web.updated"

    wait_event(everything, until_marker)
    assert "watcher.web.reap" in got and not [t for t in got if t.startswith("output.")], got

    explicit = d.subscribe("output.web.stdout")
    topic, payload = recv_event(explicit, timeout=10)
    assert topic == "output.web.stdout"
    assert payload["data"].startswith("tick") and payload["stream"] == "stdout"
    assert payload["pid"] == d.pids("web")[0] and isinstance(payload["time"], float)

    explicit.close(linger=0)  # the last explicit subscriber leaves: output stops
    wait_until(lambda: not [t for t in topics_for(0.3) if t.startswith("output.")],
               what="output events to stop")
