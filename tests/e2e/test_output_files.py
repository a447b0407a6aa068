"""Issue 4: a child's output reaches its file whole, once and in order, across rotations.

Each child prints 100,000 numbered lines and exits (``respawn = false``, so it runs once);
the test then reads the file, and its rotated backups oldest first, and expects exactly
``0`` to ``99999``.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from pathlib import Path

from tests.conftest import PYTHON, pid_alive, wait_until
from tests.e2e.conftest import Daemon

Start = Callable[..., Daemon]

LINES = 100_000
CHILD = Path(__file__).resolve().parents[1] / "fixtures" / "child.py"
PRINT_AND_EXIT = f"{shlex.quote(PYTHON)} {CHILD} --print {LINES} --exit 0"
EXPECTED = [str(i) for i in range(LINES)]


def watcher(cmd: str, stream: str, name: str = "numbers") -> str:
    return f"[watcher:{name}]\ncmd = {cmd}\nrespawn = false\n{stream}"


def lines_of(paths: list[Path]) -> list[str]:
    return b"".join(p.read_bytes() for p in paths).decode().splitlines()


def count_lines(paths: list[Path]) -> int:
    try:
        return sum(p.read_bytes().count(b"\n") for p in paths if p.exists())
    except FileNotFoundError:  # rotated away between exists() and the read
        return 0


def ends_with_last_line(path: Path) -> bool:
    """The last line the child prints is in *path*: the output has all been written."""
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, os.fstat(fh.fileno()).st_size - 16))
            return fh.read().endswith(f"\n{LINES - 1}\n".encode())
    except FileNotFoundError:
        return False


def paced_script(directory: Path, batches: int, pause: float) -> str:
    """A cmd printing the numbered lines in *batches*, *pause* seconds apart."""
    script = directory / "paced.py"
    script.write_text(
        "import sys, time\n"
        f"per = {LINES // batches}\n"
        f"for b in range({batches}):\n"
        "    sys.stdout.write(''.join(f'{i}\\n' for i in range(b * per, (b + 1) * per)))\n"
        "    sys.stdout.flush()\n"
        f"    time.sleep({pause})\n"
    )
    return f"{shlex.quote(PYTHON)} {script}"


def test_every_line_once_and_in_order(circusd: Start, short_tmp: Path) -> None:
    out = short_tmp / "out.log"
    circusd(watcher(PRINT_AND_EXIT, f"stdout_stream.class = FileStream\n"
                                    f"stdout_stream.filename = {out}\n"))
    wait_until(lambda: ends_with_last_line(out), what="the last line in the file")
    assert lines_of([out]) == EXPECTED


def test_size_rotation_neither_drops_nor_splits_a_line(circusd: Start, short_tmp: Path
                                                       ) -> None:
    out = short_tmp / "out.log"
    max_bytes = 32 * 1024  # about 19 files for the 589 KB the child prints
    circusd(watcher(PRINT_AND_EXIT, f"stdout_stream.class = FileStream\n"
                                    f"stdout_stream.filename = {out}\n"
                                    f"stdout_stream.max_bytes = {max_bytes}\n"
                                    "stdout_stream.backup_count = 100\n"))

    def files() -> list[Path]:
        backups = sorted(short_tmp.glob("out.log.*"), key=lambda p: -int(p.suffix[1:]))
        return [*backups, out]

    wait_until(lambda: ends_with_last_line(out), what="the last line in the file")
    found = files()
    assert len(found) > 10, found
    assert lines_of(found) == EXPECTED
    for path in found:
        data = path.read_bytes()
        assert data.endswith(b"\n"), f"{path.name} ends mid-line"
        assert len(data) <= max_bytes, f"{path.name} holds {len(data)} bytes"


def test_timed_rotation_every_second(circusd: Start, short_tmp: Path) -> None:
    out = short_tmp / "out.log"
    # 2.5 s of output: at least two rotations at a one-second interval
    cmd = paced_script(short_tmp, batches=50, pause=0.05)
    d = circusd(watcher(cmd, f"stdout_stream.class = TimedRotatingFileStream\n"
                             f"stdout_stream.filename = {out}\n"
                             "stdout_stream.rotate_when = S\n"
                             "stdout_stream.rotate_interval = 1\n"))

    def files() -> list[Path]:
        return [*sorted(short_tmp.glob("out.log.*")), out]

    wait_until(lambda: ends_with_last_line(out), what="the last line in the file")
    found = files()
    assert len(found) >= 3, found
    assert lines_of(found) == EXPECTED
    assert all(p.read_bytes().endswith(b"\n") for p in found)
    wait_until(lambda: d.call({"command": "status", "properties": {"name": "numbers"}}
                              )["status"] == "stopped", what="the child to be done")


def test_watched_file_moved_away_mid_output(circusd: Start, short_tmp: Path) -> None:
    """logrotate moves the file while the child writes: the rest goes to a new file."""
    out = short_tmp / "out.log"
    moved = short_tmp / "out.log.1"
    go = short_tmp / "go"
    script = short_tmp / "halves.py"
    script.write_text(
        "import os, sys, time\n"
        f"half = {LINES // 2}\n"
        "sys.stdout.write(''.join(f'{i}\\n' for i in range(half)))\n"
        "sys.stdout.flush()\n"
        f"while not os.path.exists({str(go)!r}):\n"
        "    time.sleep(0.005)\n"
        "for b in range(10):  # the second half over 1.5 s: the stream looks every second\n"
        "    per = half // 10\n"
        "    start = half + b * per\n"
        "    sys.stdout.write(''.join(f'{i}\\n' for i in range(start, start + per)))\n"
        "    sys.stdout.flush()\n"
        "    time.sleep(0.15)\n"
    )
    d = circusd(watcher(f"{shlex.quote(PYTHON)} {script}",
                        f"stdout_stream.class = WatchedFileStream\n"
                        f"stdout_stream.filename = {out}\n"))
    pid = wait_until(lambda: d.pids("numbers"), what="the child")[0]
    wait_until(lambda: count_lines([out]) > 0, what="the first lines")
    os.rename(out, moved)  # output may still be on its way: it must land in one of the two
    go.touch()
    wait_until(lambda: ends_with_last_line(out), what="the last line in the new file")
    assert lines_of([moved, out]) == EXPECTED
    assert LINES // 2 <= count_lines([moved]) < LINES
    wait_until(lambda: not pid_alive(pid), what="the child to exit")
