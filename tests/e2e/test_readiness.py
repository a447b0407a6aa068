"""Readiness and liveness (circus/readiness.py): each kind of ``ready`` with real workers,
``ready_timeout``, reloads that wait for the new processes, ``health`` and the watchdog."""

from __future__ import annotations

import shlex
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import pid_alive, proc_environ, wait_until
from tests.e2e.conftest import CIRCUSD, Daemon, wait_event
from tests.e2e.ready_support import free_port, worker


def details(d: Daemon, name: str) -> dict[str, Any]:
    reply = d.call({"command": "status", "properties": {"name": name, "details": True}})
    assert reply["status"] != "error", reply
    return dict(reply["details"][name])


def ready_after(d: Daemon, name: str, at_least: float, timeout: float = 15) -> dict[str, Any]:
    """Wait for the first process of *name* to be ready; it must not be before *at_least*
    seconds (its load time), and the health word says starting until then."""
    first = details(d, name)
    assert first["health"] == "starting", first
    assert all(p["ready"] is False for p in first["processes"]), first
    wait_until(lambda: all(p["ready"] for p in details(d, name)["processes"])
               and details(d, name)["processes"], what=f"{name} ready", timeout=timeout)
    proc = details(d, name)["processes"][0]
    assert proc["ready_after"] >= at_least, proc
    return proc


def test_tcp_readiness(circusd: Callable[..., Daemon]) -> None:
    port = free_port()
    d = circusd(f"[watcher:db]\ncmd = {worker('--after', '1', '--listen', str(port))}\n"
                f"ready = tcp:127.0.0.1:{port}\nready_interval = 0.05\n", wait=False)
    events = d.subscribe("watcher.db.")
    d.wait_ready("circusd", timeout=20, interval=0.05)
    ready_after(d, "db", 1.0)
    _, event = wait_event(events, lambda t, p: t == "watcher.db.ready")
    assert event["after"] >= 1.0
    assert details(d, "db")["health"] in ("running", "starting")


def test_notify_readiness_and_status(circusd: Callable[..., Daemon]) -> None:
    d = circusd(f"[watcher:n]\ncmd = {worker('--after', '0.5', '--notify', '--status', 'loading')}"
                "\nready = notify\n")
    wait_until(lambda: details(d, "n")["processes"][0]["status"] == "loading",
               what="STATUS=loading", timeout=10)
    proc = ready_after(d, "n", 0.5)
    assert proc["status"] == "serving"


def test_fd_readiness(circusd: Callable[..., Daemon]) -> None:
    d = circusd(f"[watcher:f]\ncmd = {worker('--after', '0.5', '--fd', '3')}\nready = fd:3\n")
    ready_after(d, "f", 0.5)


def test_fd_readiness_through_popen(circusd: Callable[..., Daemon], short_tmp: Path
                                    ) -> None:
    """working_dir elsewhere takes the Popen path: descriptor 3 still reaches the child."""
    d = circusd(f"[watcher:f]\ncmd = {worker('--after', '0.3', '--fd', '3')}\nready = fd:3\n"
                f"working_dir = {short_tmp}\numask = 022\n")
    ready_after(d, "f", 0.3)


def test_log_readiness(circusd: Callable[..., Daemon]) -> None:
    d = circusd(f"[watcher:l]\ncmd = {worker('--after', '0.5', '--log', 'now listening on 8000')}"
                "\nready = log:listening on \\d+\n")
    ready_after(d, "l", 0.5)


def test_exec_readiness_with_the_wid(circusd: Callable[..., Daemon], short_tmp: Path) -> None:
    flag = short_tmp / "ready-$(circus.wid)"
    d = circusd(f"[watcher:e]\ncmd = {worker('--after', '0.5', '--touch', str(flag))}\n"
                f"numprocesses = 2\nready = exec:test -e {flag}\nready_interval = 0.05\n")
    ready_after(d, "e", 0.5)
    assert (short_tmp / "ready-1").exists() and (short_tmp / "ready-2").exists()


def test_http_readiness(circusd: Callable[..., Daemon]) -> None:
    port = free_port()
    d = circusd(f"[watcher:h]\ncmd = {worker('--after', '0.5', '--listen', str(port), '--http')}"
                f"\nready = http:http://127.0.0.1:{port}/health\nready_interval = 0.05\n")
    ready_after(d, "h", 0.5)


def test_a_process_never_ready_is_a_failed_start(circusd: Callable[..., Daemon]) -> None:
    d = circusd(f"[watcher:slow]\ncmd = {worker('--never', '--notify')}\nready = notify\n"
                "ready_timeout = 0.5\nmax_retry = 1\nbackoff_initial = 0.1\n", wait=False)
    events = d.subscribe("watcher.slow.")
    d.wait_ready("circusd", timeout=20, interval=0.05)
    _, unready = wait_event(events, lambda t, p: t == "watcher.slow.unready")
    assert "not ready within 0.5s" in unready["reason"]
    wait_event(events, lambda t, p: t == "watcher.slow.fatal", timeout=15)
    detail = details(d, "slow")
    assert detail["health"] == "fatal" and detail["last_exit"]["reason"].startswith(
        "not ready within 0.5s"), detail


class Hammer:
    """A client asking 127.0.0.1:PORT every 10 ms; counts the failed connections."""

    def __init__(self, port: int) -> None:
        self.port, self.ok, self.failed = port, 0, 0
        self.seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    data = s.recv(64)
                if not data:
                    raise ConnectionError("closed without an answer")
                self.seen.add(int(data.split()[0]))
                self.ok += 1
            except (OSError, ValueError):
                self.failed += 1
            time.sleep(0.01)

    def stop(self) -> tuple[int, int]:
        self._stop.set()
        self._thread.join(5)
        return self.ok, self.failed


def _reload_under_load(d: Daemon, port: int) -> tuple[int, int, dict[str, Any]]:
    old = set(d.pids("w"))
    hammer = Hammer(port)
    try:
        wait_until(lambda: hammer.ok > 5, what="answers before the reload", timeout=10)
        reply = d.call({"command": "reload", "properties": {"name": "w", "waiting": True}},
                       timeout=30)
        wait_until(lambda: hammer.seen - old, what="an answer from a new process", timeout=10)
        time.sleep(0.2)  # a few more requests against the new processes only  # noqa: ASYNC251
    finally:
        ok, failed = hammer.stop()
    return ok, failed, reply


def _socket_watcher(port: int, ready: str) -> str:
    """Two workers on a ``[socket:]`` that load for 1.5 s, then accept on it and say so on
    stdout (``log:``: each process's own readiness; a ``tcp:`` check would be answered by
    whichever process accepts). The socket, and its queue of connections, outlive them."""
    loading = worker("--after", "1.5", "--socket-fd", "$(circus.sockets.web)", "--log",
                     "listening")
    return (f"[socket:web]\nhost = 127.0.0.1\nport = {port}\n"
            f"[watcher:w]\ncmd = {loading}\nuse_sockets = true\nnumprocesses = 2\n"
            f"ready = {ready}\ngraceful_timeout = 2\n")


@pytest.mark.parametrize("ready", ["log:^listening$", "spawned"])
def test_a_reload_waits_for_the_new_processes(circusd: Callable[..., Daemon],
                                              ready: str) -> None:
    port = free_port()
    d = circusd(_socket_watcher(port, ready), ready_timeout=30)
    wait_until(lambda: len(d.pids("w")) == 2 and _answers(port), what="two serving workers",
               timeout=20)
    time.sleep(1.6)  # both loaded: a reload now starts from two serving workers  # noqa: ASYNC251
    ok, failed, reply = _reload_under_load(d, port)
    print(f"\nreload with ready = {ready}: {ok} answers, {failed} failed requests")
    assert reply["status"] == "ok", reply
    if ready == "spawned":  # what waiting for readiness saves: 1.5 s without an answer
        assert failed > 0, (ok, failed)
    else:
        assert failed == 0 and ok > 50, (ok, failed)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            return bool(s.recv(64))
    except OSError:
        return False


def test_a_reload_whose_new_process_is_never_ready_keeps_the_old(
        circusd: Callable[..., Daemon], short_tmp: Path) -> None:
    port = free_port()
    gate = short_tmp / "gate"
    gate.write_text("")
    # the first generation listens at once; the next one never will (gate removed)
    serving = worker("--listen", str(port), "--reuseport", "--log", "listening")
    script = f"if [ -e {gate} ]; then exec {serving}; else exec {worker('--never')}; fi"
    cmd = "sh -c " + shlex.quote(script)
    d = circusd(f"[watcher:w]\ncmd = {cmd}\nready = log:^listening$\nready_timeout = 1\n")
    wait_until(lambda: all(p["ready"] for p in details(d, "w")["processes"]),
               what="the first generation ready", timeout=15)
    (old,) = d.pids("w")
    gate.unlink()
    reply = d.call({"command": "reload", "properties": {"name": "w", "waiting": True}},
                   timeout=30)
    assert reply["status"] == "error", reply
    assert "not ready within 1s" in reply["reason"] and "old process" in reply["reason"]
    assert d.pids("w") == [old] and pid_alive(old)
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        assert int(s.recv(64).split()[0]) == old


def test_a_failing_health_check_restarts_the_process(circusd: Callable[..., Daemon],
                                                     short_tmp: Path) -> None:
    alive = short_tmp / "alive"
    alive.write_text("")
    d = circusd(f"[watcher:h]\ncmd = {worker()}\nhealth = exec:test -e {alive}\n"
                "health_interval = 0.1\nhealth_failures = 3\n", wait=False)
    events = d.subscribe("watcher.h.")
    d.wait_ready("circusd", timeout=20, interval=0.05)
    (pid,) = d.pids("h")
    time.sleep(0.5)  # healthy: checks pass for a while  # noqa: ASYNC251
    assert d.pids("h") == [pid]
    alive.unlink()
    started = time.monotonic()
    _, event = wait_event(events, lambda t, p: t == "watcher.h.unhealthy", timeout=10)
    assert "3 failed health checks in a row" in event["reason"], event
    assert time.monotonic() - started >= 0.15  # three checks 0.1 s apart
    wait_until(lambda: d.pids("h") and d.pids("h") != [pid], what="a replacement",
               timeout=10)
    assert not pid_alive(pid)
    wait_until(lambda: details(d, "h")["restarts"] == 1, what="one restart counted",
               timeout=5)


def test_the_watchdog_replaces_a_silent_process(circusd: Callable[..., Daemon]) -> None:
    d = circusd(f"[watcher:w]\ncmd = {worker('--notify', '--watchdog', '5')}\nready = notify\n"
                "watchdog_sec = 1\n")
    wait_until(lambda: details(d, "w")["processes"]
               and details(d, "w")["processes"][0]["ready"], what="ready", timeout=10)
    (pid,) = d.pids("w")
    assert proc_environ(pid)["WATCHDOG_USEC"] == "1000000"
    # five pings 0.1 s apart, then silence: replaced within watchdog_sec + 1 s of the last
    started = time.monotonic()
    wait_until(lambda: d.pids("w") and d.pids("w") != [pid], what="a replacement",
               timeout=10)
    assert time.monotonic() - started < 0.5 + 1 + 1
    wait_until(lambda: not pid_alive(pid), what="the silent process gone", timeout=5)


def test_dependency_cycles_and_unknown_names_are_refused(short_tmp: Path) -> None:
    ini = short_tmp / "deps.ini"
    ini.write_text("[watcher:a]\ncmd = sleep 60\ndepends_on = b\n"
                   "[watcher:b]\ncmd = sleep 60\ndepends_on = c:started\n"
                   "[watcher:c]\ncmd = sleep 60\ndepends_on = a\n"
                   "[watcher:d]\ncmd = sleep 60\ndepends_on = nobody\n")
    check = subprocess.run([*CIRCUSD, "--check", str(ini)], capture_output=True, text=True,
                           timeout=30)
    assert check.returncode == 78, check
    assert f"{ini}:3: [watcher:a] depends_on: a dependency cycle: a -> b -> c -> a" in (
        check.stdout + check.stderr), check
    assert f"{ini}:12: [watcher:d] depends_on: no watcher is named 'nobody'" in (
        check.stdout + check.stderr), check
    ini.write_text("[watcher:a]\ncmd = sleep 60\ndepends_on = a:finished\n")
    start = subprocess.run([*CIRCUSD, str(ini)], capture_output=True, text=True, timeout=30)
    assert start.returncode == 78, start
    assert "depends_on: 'a:finished': the condition is one of ready, started, completed" in (
        start.stderr), start
