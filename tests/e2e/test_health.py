"""Health as data: restarts, the last exit, backoff and fatal (circus/health.py), in the
``details`` of ``status`` and in ``circusctl status --details``."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import pid_alive, wait_until
from tests.e2e.conftest import Daemon, wait_event

CRASH = "[watcher:crash]\ncmd = sh -c 'echo boom >&2; exit 3'\n"


def _details(d: Daemon, name: str | None = None) -> dict[str, Any]:
    props: dict[str, Any] = {"details": True}
    if name is not None:
        props["name"] = name
    reply = d.call({"command": "status", "properties": props})
    assert reply["status"] != "error", reply
    return dict(reply["details"])


def test_a_crash_loop_shows_backoff_then_fatal(circusd: Callable[..., Daemon]) -> None:
    d = circusd(CRASH + "backoff_initial = 0.3\n", wait=False)
    events = d.subscribe("watcher.crash.")
    d.wait_ready("circusd", timeout=20, interval=0.05)
    topic, backoff = wait_event(events, lambda t, p: t == "watcher.crash.backoff")
    assert backoff["failures"] >= 2 and backoff["delay"] >= 0.3
    assert backoff["last_exit"]["code"] == 3
    # while a spawn waits, the details say so, with the restarts and the exit code
    seen: dict[str, Any] = {}

    def in_backoff() -> bool:
        seen.update(_details(d, "crash")["crash"])
        return seen["health"] == "backoff"

    wait_until(in_backoff, what="health backoff", timeout=10, interval=0.02)
    assert seen["restarts"] >= 1 and seen["last_exit"]["code"] == 3
    assert seen["last_exit"]["signal"] is None and seen["next_spawn_in"] is not None
    topic, fatal = wait_event(events, lambda t, p: t == "watcher.crash.fatal", timeout=30)
    # max_retry = 5: the sixth failed start in a row ends it (a slow machine may see a
    # process outlive min_uptime once, which starts the count again, so at least six)
    failed = re.match(r"(\d+) failed starts in a row \(last: exit 3\)$", fatal["reason"])
    assert failed is not None and int(failed.group(1)) >= 6, fatal
    detail = _details(d)["crash"]
    assert detail["health"] == "fatal" and detail["restarts"] >= 5
    assert detail["next_spawn_in"] is None and detail["processes"] == []
    # Circus 0.19's words without details
    assert d.call({"command": "status", "properties": {"name": "crash"}})["status"] == \
        "stopped"
    table = d.ctl("status", "--details")
    assert table.returncode == 0, table
    assert "fatal" in table.stdout and "exit 3" in table.stdout, table.stdout
    assert f"crash: {fatal['reason']}" in table.stdout
    assert "\x1b[" not in table.stdout  # piped: no colour
    assert f"gave up after {fatal['reason']}" in d.log_text()
    # a user's start is a fresh count
    assert d.call({"command": "start", "properties": {"name": "crash"}})["status"] == "ok"
    assert _details(d)["crash"]["health"] != "fatal"


def test_max_retry_minus_one_never_gives_up(circusd: Callable[..., Daemon]) -> None:
    d = circusd(CRASH + "max_retry = -1\nbackoff_initial = 0.01\nbackoff_max = 0.05\n")
    wait_until(lambda: _details(d, "crash")["crash"]["failures"] >= 12,
               what="a dozen failed starts", timeout=20)
    assert _details(d, "crash")["crash"]["health"] != "fatal"


def test_healthy_processes_and_a_restart(circusd: Callable[..., Daemon],
                                         workers: list[int]) -> None:
    d = circusd("[watcher:web]\ncmd = sleep 600\nnumprocesses = 2\nmin_uptime = 0.2\n")
    wait_until(lambda: _details(d)["web"]["health"] == "running", what="running",
               timeout=10)
    detail = _details(d)["web"]
    assert detail["restarts"] == 0 and detail["last_exit"] is None
    assert sorted(p["wid"] for p in detail["processes"]) == [1, 2]
    assert all(p["health"] == "running" and p["uptime"] >= 0.2 and p["restarts"] == 0
               for p in detail["processes"])
    victim = next(p for p in detail["processes"] if p["wid"] == 2)
    workers.append(victim["pid"])
    os.kill(victim["pid"], signal.SIGKILL)

    def replaced() -> bool:
        pids = {p["pid"] for p in _details(d)["web"]["processes"]}
        return len(pids) == 2 and victim["pid"] not in pids

    wait_until(replaced, what="the replacement", timeout=10)
    detail = _details(d)["web"]
    assert detail["restarts"] == 1
    assert detail["last_exit"]["signal"] == signal.SIGKILL
    assert detail["last_exit"]["code"] is None
    new = next(p for p in detail["processes"] if p["wid"] == 2)
    assert new["restarts"] == 1 and new["pid"] != victim["pid"] and pid_alive(new["pid"])
    other = next(p for p in detail["processes"] if p["wid"] == 1)
    assert other["restarts"] == 0
    # one row per process in the operator's table, under its watcher
    wait_until(lambda: _details(d)["web"]["health"] == "running", what="running again",
               timeout=10)
    table = d.ctl("status", "-l", "web")
    assert table.returncode == 0, table
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["NAME", "HEALTH", "PROCS"], table.stdout
    assert lines[1].split()[:3] == ["web", "running", "2/2"], table.stdout
    assert lines[2].split()[0] == "web.1" and lines[3].split()[0] == "web.2"
    assert str(new["pid"]) in lines[3] and "%" in lines[3]  # its CPU, read by psutil
    # plain status is exactly Circus 0.19's reply
    plain = d.call({"command": "status", "properties": {}})
    assert set(plain) == {"status", "statuses", "time", "id"}, plain


def test_a_stable_process_resets_the_failures(circusd: Callable[..., Daemon],
                                              short_tmp: Path) -> None:
    """Two quick deaths, then a process that stays up min_uptime: running, no failures."""
    count = short_tmp / "count"
    script = (f"n=$(cat {count} 2>/dev/null || echo 0); echo $((n+1)) > {count}; "
              "[ $n -ge 2 ] && exec sleep 600; exit 4")
    d = circusd(f"[watcher:flaky]\ncmd = sh -c \"{script}\"\nmin_uptime = 0.5\n"
                "backoff_initial = 0.05\n")

    def settled() -> bool:
        detail = _details(d)["flaky"]
        return detail["health"] == "running" and detail["failures"] == 0

    wait_until(settled, what="running with no failures", timeout=15)
    detail = _details(d)["flaky"]
    assert detail["restarts"] == 2 and detail["last_exit"]["code"] == 4
    assert count.read_text().strip() == "3"
