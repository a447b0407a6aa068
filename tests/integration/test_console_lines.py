"""Whole lines on circusd's console: the forwarding of a watcher without streams,
StdoutStream / StderrStream (``prefix``) and FancyStdoutStream, with real children whose
output reaches a real file (or a pseudo-terminal) standing in for circusd's stdout."""

from __future__ import annotations

import asyncio
import os
import re
import select
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from circus.streams import console
from circus.streams.base import CARRY_LIMIT
from circus.watcher import Watcher
from tests.conftest import python_cmd, wait_for

WID = " $(circus.wid)"

# Writes LINES lines, each in PIECES os.write() calls a few milliseconds apart, so that
# the lines of two processes running side by side arrive in pieces, interleaved.
LINES, PIECES = 25, 4
PIECEMEAL = python_cmd(
    "import os, sys, time\n"
    "wid = sys.argv[1]\n"
    f"for i in range({LINES}):\n"
    "    line = f'{wid}:{i}:' + 'ab' * 150 + '\\n'\n"
    f"    step = len(line) // {PIECES} + 1\n"
    "    for at in range(0, len(line), step):\n"
    "        os.write(1, line[at:at + step].encode())\n"
    "        time.sleep(0.003)\n"
) + WID

SLEEP_FOREVER = "time.sleep(600)\n"


def expected_line(wid: int, i: int) -> bytes:
    return f"{wid}:{i}:".encode() + b"ab" * 150


def wait_file(path: Path) -> str:
    """Python code that waits (up to 60 s) for *path* to exist."""
    return ("deadline = time.monotonic() + 60\n"
            f"while not os.path.exists({str(path)!r}) and time.monotonic() < deadline:\n"
            "    time.sleep(0.01)\n")


class Console:
    """circusd's stdout and stderr, replaced by real files; the watchers writing to them.

    pytest sets its own ``sys.stdout`` when a test's body starts, after the fixtures, so the
    files take their place when the test makes its first watcher.
    """

    def __init__(self, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.out_path = tmp / "stdout"
        self.err_path = tmp / "stderr"
        self.out = open(self.out_path, "w")  # noqa: SIM115  (closed by the fixture)
        self.err = open(self.err_path, "w")  # noqa: SIM115
        self.watchers: list[Watcher] = []
        self._monkeypatch = monkeypatch

    def watcher(self, name: str, cmd: str, **kw: Any) -> Watcher:
        if sys.stdout is not self.out:
            self._monkeypatch.setattr(sys, "stdout", self.out)
            self._monkeypatch.setattr(sys, "stderr", self.err)
        kw.setdefault("graceful_timeout", 5)
        kw.setdefault("respawn", False)
        watcher = Watcher(name, cmd, **kw)
        self.watchers.append(watcher)
        return watcher

    def stdout(self) -> bytes:
        return self.out_path.read_bytes()

    def stderr(self) -> bytes:
        return self.err_path.read_bytes()


@pytest.fixture
async def cons(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Console]:
    c = Console(tmp_path, monkeypatch)
    monkeypatch.delenv("NO_COLOR", raising=False)
    try:
        yield c
    finally:
        for watcher in c.watchers:  # stops the processes by their pids, writes what is held
            await asyncio.wait_for(watcher.close(), 30)
        c.out.close()
        c.err.close()


async def test_two_processes_writing_in_pieces_never_share_a_line(
        cons: Console, monkeypatch: pytest.MonkeyPatch) -> None:
    """The forwarding of a watcher without streams: every line whole, none lost, each
    process's lines in order, though both write each line in pieces at the same time.
    (The delay is made long: a child stalled half a second mid-line on a busy machine
    would rightly have its line let out in two.)"""
    monkeypatch.setattr(console, "FLUSH_DELAY", 30.0)
    w = cons.watcher("pieces", PIECEMEAL, numprocesses=2)
    await w.start()
    want = {expected_line(wid, i) for wid in (1, 2) for i in range(LINES)}
    await wait_for(lambda: len(cons.stdout().splitlines()) >= 2 * LINES,
                   what="every line on circusd's stdout", timeout=30,
                   detail=lambda: repr(cons.stdout()[-500:]))
    lines = cons.stdout().splitlines()
    assert set(lines) == want and len(lines) == len(want), [
        line[:60] for line in lines if line not in want]
    for wid in (1, 2):
        mine = [line for line in lines if line.startswith(f"{wid}:".encode())]
        assert mine == [expected_line(wid, i) for i in range(LINES)]
    assert cons.stdout().endswith(b"\n")


async def test_prefix_names_the_watcher_and_the_worker(
        cons: Console, monkeypatch: pytest.MonkeyPatch) -> None:
    """``prefix = true``: ``<watcher>.<wid> | `` at the start of every line, padded to one
    column; not a terminal, so no escape codes."""
    monkeypatch.setattr(console, "FLUSH_DELAY", 30.0)
    w = cons.watcher("web", PIECEMEAL, numprocesses=2,
                     stdout_stream={"class": "StdoutStream", "prefix": "true"})
    await w.start()
    await wait_for(lambda: len(cons.stdout().splitlines()) >= 2 * LINES,
                   what="every line on circusd's stdout", timeout=30)
    text = cons.stdout()
    assert b"\033" not in text
    for line in text.splitlines():
        match = re.fullmatch(rb"web\.(\d) *\| (\d):(\d+):(?:ab){150}", line)
        assert match is not None, line[:80]
        assert match.group(1) == match.group(2)  # the label names the process that wrote
    starts = {line.index(b"|") for line in text.splitlines()}
    assert len(starts) == 1  # every line's text starts in the same column


async def test_an_unfinished_line_is_written_after_the_delay(cons: Console) -> None:
    """A prompt without a newline shows after FLUSH_DELAY, not before, and the process's
    exit ends its line."""
    w = cons.watcher("prompt", python_cmd(
        "import os, time\nos.write(1, b'password: ')\n" + SLEEP_FOREVER))
    started = time.monotonic()
    await w.start()
    await wait_for(lambda: cons.stdout() == b"password: ", what="the prompt on stdout",
                   detail=lambda: repr(cons.stdout()))
    assert time.monotonic() - started >= console.FLUSH_DELAY
    await w.stop()
    await wait_for(lambda: cons.stdout() == b"password: \n",
                   what="the line ended at the exit", detail=lambda: repr(cons.stdout()))


async def test_an_unfinished_line_is_written_when_its_process_exits(
        cons: Console, monkeypatch: pytest.MonkeyPatch) -> None:
    """Output cut off by the exit is written at once, ended with a newline (the delay is
    made a minute here, so only the exit can have written it)."""
    monkeypatch.setattr(console, "FLUSH_DELAY", 60.0)
    w = cons.watcher("bye", python_cmd(
        "import os, sys\nos.write(1, b'done\\nbye')\nos.write(2, b'oops')\n"))
    await w.start()
    await wait_for(lambda: cons.stdout() == b"done\nbye\n" and cons.stderr() == b"oops\n",
                   what="both unfinished lines, ended",
                   detail=lambda: repr((cons.stdout(), cons.stderr())))


async def test_a_line_longer_than_the_limit_is_let_out(
        cons: Console, monkeypatch: pytest.MonkeyPatch) -> None:
    """A line that outgrows CARRY_LIMIT is written without waiting for its end."""
    monkeypatch.setattr(console, "FLUSH_DELAY", 60.0)
    size = CARRY_LIMIT + 40_000
    w = cons.watcher("long", python_cmd(
        f"import os, time\nos.write(1, b'z' * {size})\n" + SLEEP_FOREVER))
    await w.start()
    await wait_for(lambda: cons.out_path.stat().st_size == size,
                   what="the long line, unfinished", timeout=10,
                   detail=lambda: str(cons.out_path.stat().st_size))
    assert cons.stdout() == b"z" * size


async def test_a_line_written_early_is_ended_before_another_process_writes(
        tmp_path: Path, cons: Console) -> None:
    """An unfinished line let out after the delay stays one process's: another watcher's
    line first ends it, and its continuation starts a line of its own, prefixed again."""
    go_b, go_a = tmp_path / "go-b", tmp_path / "go-a"
    prefixed = {"class": "StdoutStream", "prefix": True}
    a = cons.watcher("aa", python_cmd(
        "import os, time\nos.write(1, b'a-begin')\n" + wait_file(go_a)
        + "os.write(1, b'-end\\n')\n" + SLEEP_FOREVER), stdout_stream=prefixed)
    b = cons.watcher("bb", python_cmd(
        "import os, time\n" + wait_file(go_b) + "os.write(1, b'b-line\\n')\n"
        + SLEEP_FOREVER), stdout_stream=prefixed)
    await a.start()
    await b.start()
    pre = rb"(aa|bb)\.1 *\| "

    def shows(*lines: bytes) -> bool:
        found = re.findall(pre + rb"([^\n]*)(\n|$)", cons.stdout())
        return [(who + b" " + text + end) for who, text, end in found] == list(lines)

    await wait_for(lambda: shows(b"aa a-begin"), what="a's unfinished line",
                   detail=lambda: repr(cons.stdout()))
    go_b.touch()
    await wait_for(lambda: shows(b"aa a-begin\n", b"bb b-line\n"),
                   what="b's line after a's, which it ended", detail=lambda: repr(cons.stdout()))
    go_a.touch()
    await wait_for(lambda: shows(b"aa a-begin\n", b"bb b-line\n", b"aa -end\n"),
                   what="the rest of a's line, on a line of its own",
                   detail=lambda: repr(cons.stdout()))


async def test_stderr_stream_and_forwarded_stderr(cons: Console) -> None:
    """StderrStream writes to circusd's stderr; a watcher without stderr_stream forwards
    its stderr there too, whole lines."""
    code = python_cmd("import os, time\nos.write(2, b'warn')\ntime.sleep(0.05)\n"
                      "os.write(2, b'ing\\n')\nos.write(1, b'fine\\n')\n")
    plain = cons.watcher("plain", code)
    labelled = cons.watcher("labelled", code,
                            stderr_stream={"class": "StderrStream", "prefix": True})
    await plain.start()
    await labelled.start()

    def done() -> bool:
        return len(cons.stderr().splitlines()) == 2 and len(cons.stdout().splitlines()) == 2

    await wait_for(done, what="both watchers' output", detail=lambda: repr(
        (cons.stdout(), cons.stderr())))
    assert cons.stdout() == b"fine\nfine\n"
    lines = cons.stderr().splitlines()
    assert b"warning" in lines
    assert any(re.fullmatch(rb"labelled\.1 *\| warning", line) for line in lines), lines


async def test_fancy_stdout_stream_writes_whole_lines_and_late_prompts(
        cons: Console, monkeypatch: pytest.MonkeyPatch) -> None:
    """FancyStdoutStream: a line written in pieces is one line with one prefix; a prompt
    shows after the delay; NO_COLOR: no escape codes."""
    monkeypatch.setenv("NO_COLOR", "1")
    w = cons.watcher("fancy", python_cmd(
        "import os, time\nos.write(1, b'hel')\ntime.sleep(0.05)\nos.write(1, b'lo\\nask? ')\n"
        + SLEEP_FOREVER), stdout_stream={"class": "FancyStdoutStream"})
    await w.start()
    pid = w.pids[0]
    await wait_for(lambda: cons.stdout().endswith(b"ask? "), what="the prompt",
                   detail=lambda: repr(cons.stdout()))
    text = cons.stdout().decode()
    assert re.fullmatch(rf"\S+ \S+ \[{pid}\] \| hello\n\S+ \S+ \[{pid}\] \| ask\? ", text), text
    assert "\033" not in text


# -- colour: on a terminal only, and never with NO_COLOR -------------------------------------


@pytest.fixture
def pty() -> Iterator[tuple[int, Any]]:
    """A pseudo-terminal: its master end, and a file on its other end for sys.stdout."""
    master, slave = os.openpty()
    out = open(slave, "w")  # noqa: SIM115  (closed below)
    try:
        yield master, out
    finally:
        out.close()
        os.close(master)


def read_pty(master: int, until: bytes, timeout: float = 10.0) -> bytes:
    got = b""
    deadline = time.monotonic() + timeout
    while until not in got:
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"no {until!r} on the terminal within {timeout}s: {got!r}")
        ready, _, _ = select.select([master], [], [], left)
        if ready:
            got += os.read(master, 65536)
    return got


@pytest.mark.parametrize("no_color", [False, True])
async def test_prefix_is_coloured_on_a_terminal_unless_no_color(
        pty: tuple[int, Any], monkeypatch: pytest.MonkeyPatch, no_color: bool) -> None:
    master, terminal = pty
    monkeypatch.setattr(sys, "stdout", terminal)  # here: pytest sets its own before the body
    if no_color:
        monkeypatch.setenv("NO_COLOR", "1")
    else:
        monkeypatch.delenv("NO_COLOR", raising=False)
    w = Watcher("tty", python_cmd("import os, time\nos.write(1, b'on a tty\\n')\n"),
                stdout_stream={"class": "StdoutStream", "prefix": True}, respawn=False,
                graceful_timeout=5)
    try:
        await w.start()
        got = await asyncio.to_thread(read_pty, master, b"on a tty")
    finally:
        await asyncio.wait_for(w.close(), 30)
    if no_color:
        assert b"\033" not in got
        assert re.search(rb"tty\.1 *\| on a tty", got), got
    else:
        assert re.search(rb"\033\[\d+mtty\.1 *\|\033\[0m on a tty", got), got
