"""Circus 0.19's ``circus-top`` (curses) reads our circusd-stats: run in a pseudo-terminal,
it paints our watcher's pids."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import python_cmd, wait_until
from tests.e2e.conftest import Daemon

SLEEPER = python_cmd("import time; time.sleep(3600)")
ESCAPES = re.compile(rb"\x1b(\[[0-9;?]*[A-Za-z]|[()][0-9A-Za-z]|[=>78DEHMc])")


def test_circus_top_019_shows_our_pids(circus019: Path, circusd: Callable[..., Daemon],
                                       short_tmp: Path) -> None:
    stats = f"ipc://{short_tmp}/stats"
    d = circusd(f"[watcher:web]\ncmd = {SLEEPER}\nnumprocesses = 2\n",
                circus_extra=f"statsd = true\nstats_endpoint = {stats}\n")
    pids = wait_until(lambda: len(d.pids("web")) == 2 and d.pids("web"), what="2 workers")
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    env = dict(os.environ, TERM="vt100", LINES="50", COLUMNS="160")
    proc = subprocess.Popen([str(circus019 / "circus-top"), "--endpoint", stats],
                            stdin=secondary, stdout=secondary, stderr=secondary,
                            env=env, close_fds=True, start_new_session=True)
    os.close(secondary)
    screen = b""
    try:
        deadline = time.monotonic() + 30
        wanted = [str(p).encode() for p in pids]
        while time.monotonic() < deadline:
            text = ESCAPES.sub(b" ", screen)
            if b"WEB" in text.upper() and all(p in text for p in wanted):
                break
            assert proc.poll() is None, screen.decode(errors="replace")
            if select.select([primary], [], [], 0.5)[0]:
                try:
                    screen += os.read(primary, 65536)
                except OSError:
                    break
        text = ESCAPES.sub(b" ", screen)
        missing = [p for p in wanted if p not in text]
        assert not missing, f"pids {missing} not painted:\n{text.decode(errors='replace')}"
        assert b"Circus Top" in text
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        os.close(primary)
