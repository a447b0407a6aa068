"""Issue 4: a stream that fails or stalls harms nothing but its own output.

The custom streams are a module the test writes into circusd's working directory, named by
dotted path in ``stdout_stream.class`` as a user would.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path

from tests.conftest import PYTHON, pid_alive, wait_until
from tests.e2e.conftest import Daemon

Start = Callable[..., Daemon]

LINES = 100_000
CHILD = Path(__file__).resolve().parents[1] / "fixtures" / "child.py"

STREAMS = """\
import os
import time


class Broken:
    \"\"\"Fails on every chunk.\"\"\"

    def __call__(self, data):
        raise RuntimeError("broken stream for the test")

    def close(self):
        pass


class Gated:
    \"\"\"Appends to *filename*, but sleeps on every chunk for as long as *gate* is missing.\"\"\"

    def __init__(self, filename, gate):
        self.file = open(filename, "ab")
        self.gate = gate

    def __call__(self, data):
        while not os.path.exists(self.gate):
            time.sleep(0.05)
        self.file.write(data["data"])
        self.file.flush()

    def close(self):
        self.file.close()
"""

# One write per line: many small chunks, so a stalled stream fills the writer's queue.
LINE_BY_LINE = (
    "import sys\n"
    f"for i in range({LINES}):\n"
    "    sys.stdout.write(f'{i}\\n')\n"
    "    sys.stdout.flush()\n"
)


def blocked_writing(pid: int) -> bool:
    """True while *pid* sleeps in a write to a full pipe (its wchan, from /proc)."""
    try:
        return "pipe_write" in Path(f"/proc/{pid}/wchan").read_text()
    except FileNotFoundError:
        return False


def count_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_a_failing_stream_is_logged_once_and_nothing_else_stops(circusd: Start,
                                                                short_tmp: Path) -> None:
    (short_tmp / "teststreams.py").write_text(STREAMS)
    ticker = short_tmp / "ticker.py"
    ticker.write_text(
        "import sys, time\n"
        "for i in range(100000):\n"
        "    print(i, flush=True)\n"
        "    print(i, file=sys.stderr, flush=True)\n"
        "    time.sleep(0.002)\n"
        "time.sleep(600)\n"
    )
    bad_err = short_tmp / "bad.err"
    good_out = short_tmp / "good.out"
    d = circusd(
        f"[watcher:bad]\ncmd = {shlex.quote(PYTHON)} {ticker}\n"
        "stdout_stream.class = teststreams.Broken\n"
        f"stderr_stream.class = FileStream\nstderr_stream.filename = {bad_err}\n"
        f"[watcher:good]\ncmd = {shlex.quote(PYTHON)} {ticker}\n"
        f"stdout_stream.class = FileStream\nstdout_stream.filename = {good_out}\n"
    )
    bad_pid = wait_until(lambda: d.pids("bad"), what="bad's process")[0]
    good_pid = wait_until(lambda: d.pids("good"), what="good's process")[0]
    # hundreds of chunks went to the broken stream by then
    wait_until(lambda: count_lines(bad_err) > 300 and count_lines(good_out) > 300,
               what="both watchers' files to fill")
    log = d.log_text()
    assert log.count("output stream 'Broken' failed") == 1, log
    assert log.count("RuntimeError: broken stream for the test") == 1, log
    # the processes were not touched, and bad's stdout still reaches tail
    assert d.pids("bad") == [bad_pid] and d.pids("good") == [good_pid]
    assert pid_alive(bad_pid) and pid_alive(good_pid)
    assert d.ctl("tail", "bad", "--stream", "stdout", "-n", "1").stdout.strip().isdigit()
    grown = count_lines(good_out)
    wait_until(lambda: count_lines(good_out) > grown + 50 and count_lines(bad_err) > grown,
               what="the files to keep growing")
    assert d.log_text().count("output stream 'Broken' failed") == 1


def test_a_stalled_stream_slows_only_its_own_watcher(circusd: Start, short_tmp: Path) -> None:
    (short_tmp / "teststreams.py").write_text(STREAMS)
    (short_tmp / "linebyline.py").write_text(LINE_BY_LINE)
    gate = short_tmp / "gate"
    slow_out = short_tmp / "slow.out"
    fast_out = short_tmp / "fast.out"
    d = circusd(
        f"[watcher:slow]\ncmd = {shlex.quote(PYTHON)} {short_tmp / 'linebyline.py'}\n"
        "respawn = false\n"
        "stdout_stream.class = teststreams.Gated\n"
        f"stdout_stream.filename = {slow_out}\nstdout_stream.gate = {gate}\n"
        f"[watcher:fast]\ncmd = {shlex.quote(PYTHON)} {CHILD} --print {LINES} --exit 0\n"
        "respawn = false\n"
        f"stdout_stream.class = FileStream\nstdout_stream.filename = {fast_out}\n"
    )
    slow_pid = wait_until(lambda: d.pids("slow"), what="the slow watcher's process")[0]
    # while the slow stream is stuck, the other watcher's output arrives whole and at once
    wait_until(lambda: count_lines(fast_out) == LINES, what="fast's 100,000 lines",
               timeout=10)
    assert fast_out.read_text().split() == [str(i) for i in range(LINES)]
    # the slow watcher's process is held back by its full pipe: nothing is dropped
    wait_until(lambda: blocked_writing(slow_pid), what="the slow child to block on its pipe")
    assert count_lines(slow_out) == 0
    # what was read is in the ring all the same
    assert d.ctl("tail", "slow", "-n", "1").stdout.strip().isdigit()
    assert d.call({"command": "status"})["statuses"]["slow"] == "active"

    gate.touch()  # the stream recovers: every line it was given arrives, in order
    wait_until(lambda: count_lines(slow_out) == LINES, what="slow's 100,000 lines",
               timeout=30)
    assert slow_out.read_text().split() == [str(i) for i in range(LINES)]
    wait_until(lambda: not pid_alive(slow_pid), what="the slow child to finish")
