"""Descriptors: 1,000 processes under a limit of 1,024, and a full table that takes
nothing down (circus/descriptors.py)."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import pid_alive, wait_until
from tests.e2e.conftest import CIRCUSD, Daemon


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _status(d: Daemon, name: str) -> str:
    return str(d.call({"command": "status", "properties": {"name": name}})["status"])


def _health(d: Daemon, name: str) -> dict[str, Any]:
    reply = d.call({"command": "status", "properties": {"name": name, "details": True}})
    return dict(reply["details"][name])


def test_a_thousand_processes_under_a_limit_of_1024(circusd: Callable[..., Daemon],
                                                    short_tmp: Path) -> None:
    """`ulimit -n 1024` (soft and hard): all 1,000 run, their output reaches the stream,
    tail answers, and circusd says once that output lost its pids."""
    out = short_tmp / "out.log"

    def ulimit_1024() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))

    d = circusd("[watcher:w]\ncmd = sh -c 'echo ready-$$; exec sleep 600'\n"
                "numprocesses = 1000\ngraceful_timeout = 5\n"
                f"stdout_stream.class = FileStream\nstdout_stream.filename = {out}\n",
                preexec=ulimit_1024, ready_timeout=120)
    pids = d.pids("w")
    assert len(pids) == 1000 and all(pid_alive(p) for p in pids)
    assert _open_fds(d.pid) < 1024 - 32  # and room left for its own sockets
    wait_until(lambda: out.exists() and out.read_text().count("ready-") == 1000,
               what="1,000 lines in the stream", timeout=30)
    said = {line.split("ready-")[1].strip() for line in out.read_text().splitlines()}
    assert said == {str(p) for p in pids}  # each process's line, none lost or torn
    tail = d.ctl("tail", "w", "-n", "5", timeout=10)
    assert tail.returncode == 0 and tail.stdout.count("ready-") == 5, tail
    log = d.log_text()
    assert log.count("without their pids") == 1, log[-3000:]
    assert "RLIMIT_NOFILE 1024" in log
    # a thousand SIGCHLDs at once overflow the loop's wakeup pipe: harmless, and silent
    quit_reply = d.call({"command": "quit", "properties": {"waiting": True}}, timeout=60)
    assert quit_reply["status"] == "ok"
    assert d.proc.wait(timeout=60) == 0
    assert not any(pid_alive(p) for p in pids)
    assert "Exception ignored" not in d.log_text() and "Traceback" not in d.log_text()


def test_a_full_descriptor_table_backs_off_and_recovers(circusd: Callable[..., Daemon]
                                                        ) -> None:
    d = circusd("[watcher:w]\ncmd = sleep 600\nnumprocesses = 3\n")
    pids = d.pids("w")
    assert len(pids) == 3
    soft, hard = resource.prlimit(d.pid, resource.RLIMIT_NOFILE)
    # a few descriptors left: enough for the test's own connections, not for the reserve
    resource.prlimit(d.pid, resource.RLIMIT_NOFILE, (_open_fds(d.pid) + 12, hard))
    try:
        refused = d.call({"command": "incr", "properties": {"name": "w", "nb": 1}})
        assert refused["status"] == "error", refused
        assert "RLIMIT_NOFILE" in refused["reason"] and "ulimit -n" in refused["reason"]
        os.kill(pids[0], signal.SIGKILL)
        wait_until(lambda: _health(d, "w")["health"] == "backoff", what="health backoff",
                   timeout=10)
        assert "RLIMIT_NOFILE" in _health(d, "w")["reason"]
        assert _status(d, "w") == "active"  # plain status: Circus 0.19's words
        assert all(pid_alive(p) for p in pids[1:])  # what ran runs on
        assert "descriptor table is full" in d.log_text()
    finally:
        resource.prlimit(d.pid, resource.RLIMIT_NOFILE, (soft, hard))
    wait_until(lambda: len(d.pids("w")) == 3 and _health(d, "w")["health"] != "backoff",
               what="the watcher to recover", timeout=15)
    assert all(pid_alive(p) for p in pids[1:])
    assert d.call({"command": "incr", "properties": {"name": "w", "nb": 1}})["status"] == "ok"


def test_check_reports_what_the_file_needs_against_the_limits(short_tmp: Path) -> None:
    ini = short_tmp / "c.ini"
    ini.write_text(f"[circus]\nendpoint = ipc://{short_tmp}/c\npubsub_endpoint = "
                   f"ipc://{short_tmp}/p\n[watcher:w]\ncmd = sleep 600\n"
                   "numprocesses = 1000\n")

    def ulimit_1024() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))

    done = subprocess.run([*CIRCUSD, "--check", str(ini)], capture_output=True, text=True,
                          timeout=30, preexec_fn=ulimit_1024, cwd=short_tmp)
    # it would start, with a warning: not every process keeps its pid (exit 1, not 0)
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout
    assert "1 watcher(s), 1,000 process(es)" in out
    assert "RLIMIT_NOFILE 1,024 (hard 1,024)" in out and "without pids" in out, out
    assert "ulimit -n" in out and "processes: 1,000 of at most" in out and "fits" in out
    assert not (short_tmp / "c").exists()  # checked, nothing started
