"""The real circusd's console: the output of processes writing at once reaches circusd's
stdout/stderr as whole lines, with ``<watcher>.<wid> | `` when ``prefix = true``.

circusd's stdout and stderr are one file here (the ``circusd`` fixture), which also gets
circusd's own log: the checks look only at the lines the workers wrote.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from tests.conftest import PYTHON, wait_until
from tests.e2e.conftest import Daemon

Start = Callable[..., Daemon]

LINES = 30

# Each line in four os.write() calls a few milliseconds apart, on stdout and on stderr:
# the pieces of two processes arrive interleaved.
WORKER = f"""\
import os, sys, time
wid = sys.argv[1]
for i in range({LINES}):
    for fd, tag in ((1, "out"), (2, "err")):
        line = f"{{tag}}:{{wid}}:{{i}}:" + "xy" * 120 + "\\n"
        step = len(line) // 4 + 1
        for at in range(0, len(line), step):
            os.write(fd, line[at:at + step].encode())
            time.sleep(0.002)
os.write(1, b"ready> ")
time.sleep(600)
"""


def worker_lines(text: str) -> list[str]:
    """The lines that hold a worker's output (circusd's own log lines are left out)."""
    return [line for line in text.splitlines() if "xy" in line or "ready>" in line]


def expected(tag: str, wid: int, i: int) -> str:
    return f"{tag}:{wid}:{i}:" + "xy" * 120


def write_worker(d: Path) -> Path:
    path = d / "worker.py"
    path.write_text(WORKER)
    return path


def test_without_streams_circusd_forwards_whole_lines(circusd: Start, short_tmp: Path) -> None:
    """No stream configured: each process's stdout and stderr reach circusd's as whole
    lines, none lost, each process's in order; the prompt without a newline shows too."""
    worker = write_worker(short_tmp)
    d = circusd(f"[watcher:pieces]\ncmd = {PYTHON} {worker} $(circus.wid)\n"
                "numprocesses = 2\n")
    wait_until(lambda: d.log_text().count("ready> ") == 2, what="both prompts",
               timeout=30, detail=lambda: d.log_text()[-2000:])
    lines = worker_lines(d.log_text())
    for tag in ("out", "err"):
        for wid in (1, 2):
            mine = [line for line in lines if line.startswith(f"{tag}:{wid}:")]
            assert mine == [expected(tag, wid, i) for i in range(LINES)], (tag, wid)
    strays = [line for line in lines if not re.fullmatch(r"(out|err):[12]:\d+:(xy){120}", line)
              and not line.startswith("ready> ")]
    assert strays == []


def test_prefix_labels_each_line_with_watcher_and_wid(circusd: Start, short_tmp: Path) -> None:
    """``stdout_stream.prefix`` / ``stderr_stream.prefix`` with the console classes: every
    line starts ``web.<wid> | ``, padded to one column; no colour in a file."""
    worker = write_worker(short_tmp)
    d = circusd(
        f"[watcher:web]\ncmd = {PYTHON} {worker} $(circus.wid)\nnumprocesses = 2\n"
        "stdout_stream.class = StdoutStream\nstdout_stream.prefix = true\n"
        "stderr_stream.class = StderrStream\nstderr_stream.prefix = yes\n"
    )
    wait_until(lambda: len(re.findall(r"web\.\d *\| ready> ", d.log_text())) == 2,
               what="both prompts, prefixed", timeout=30,
               detail=lambda: d.log_text()[-2000:])
    text = d.log_text()
    assert "\033" not in text
    seen: dict[tuple[str, str], list[str]] = {}
    for line in worker_lines(text):
        match = re.match(r"web\.(\d) *\| (out|err):(\d):(\d+):((?:xy){120})$", line)
        if match is None:
            assert re.match(r"web\.\d *\| ready> ", line), line
            continue
        assert match.group(1) == match.group(3), line  # the label names the writer
        seen.setdefault((match.group(2), match.group(1)), []).append(match.group(4))
    assert {key: len(v) for key, v in seen.items()} == {
        (tag, wid): LINES for tag in ("out", "err") for wid in ("1", "2")}
    columns = {line.index("|") for line in worker_lines(text)}
    assert len(columns) == 1
    reply = d.call({"command": "get", "properties": {
        "name": "web", "keys": ["stdout_stream.prefix"]}})
    assert reply["options"]["stdout_stream.prefix"] is True
