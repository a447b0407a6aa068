"""Circus 0.19's own circusctl drives our circusd: every command, checked by its effect."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import pid_alive, python_cmd, wait_until
from tests.e2e.conftest import Daemon
from tests.e2e.ctl_support import catches, received, recorder
from tests.interop.conftest import ctl019

Start = Callable[..., Daemon]
SLEEP = python_cmd("import time; time.sleep(600)")


def web(n: int = 2, extra: str = "") -> str:
    return f"[watcher:web]\ncmd = {SLEEP}\nnumprocesses = {n}\ngraceful_timeout = 5\n{extra}\n"


def live(d: Daemon, name: str, n: int) -> list[int]:
    def check() -> list[int] | None:
        pids = d.pids(name)
        return pids if len(pids) == n and all(map(pid_alive, pids)) else None

    return wait_until(check, what=f"{n} live processes in {name}")


@pytest.fixture
def c19(circus019: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(d: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
        return ctl019(circus019, d.endpoint, *args)

    return run


def out(res: subprocess.CompletedProcess[str]) -> str:
    assert res.returncode == 0, (res.args, res.returncode, res.stdout, res.stderr)
    return res.stdout.strip()


def test_read_only_commands(circusd: Start, c19: Callable[..., subprocess.CompletedProcess[str]]
                            ) -> None:
    d = circusd(web(2) + "[watcher:db]\ncmd = sleep 600\n")
    pids = live(d, "web", 2)
    live(d, "db", 1)
    assert out(c19(d, "list")) == "db,web"
    assert sorted(map(int, out(c19(d, "list", "web")).split(","))) == sorted(pids)
    assert out(c19(d, "status")).splitlines() == ["db: active", "web: active"]
    assert out(c19(d, "status", "web")) == "active"
    assert out(c19(d, "numprocesses")) == "3"
    assert out(c19(d, "numprocesses", "web")) == "2"
    assert out(c19(d, "numwatchers")) == "2"
    assert out(c19(d, "get", "web", "numprocesses", "graceful_timeout")).splitlines() == [
        "numprocesses: 2", "graceful_timeout: 5.0"]
    options = out(c19(d, "options", "web")).splitlines()
    assert f"cmd: {SLEEP}" in options and "numprocesses: 2" in options
    glob = out(c19(d, "globaloptions")).splitlines()
    assert f"endpoint: {d.endpoint}" in glob and f"pubsub_endpoint: {d.pubsub}" in glob
    stats = out(c19(d, "stats", "web")).splitlines()
    assert stats[0] == "web:" and len(stats) == 3
    assert {int(line.split(":")[0]) for line in stats[1:]} == set(pids)
    assert str(pids[0]) in out(c19(d, "stats", "web", str(pids[0])))
    everything = out(c19(d, "stats"))
    assert "web:" in everything and "db:" in everything
    assert str(d.pid) in out(c19(d, "dstats"))
    assert c19(d, "listsockets").returncode == 0
    reply = json.loads(out(c19(d, "--json", "list", "web")))
    assert reply["status"] == "ok" and sorted(reply["pids"]) == sorted(pids)


def test_incr_decr_and_lifecycle(circusd: Start,
                                 c19: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    d = circusd(web(1))
    (first,) = live(d, "web", 1)
    assert out(c19(d, "incr", "web", "2", "--waiting")) == "3"
    live(d, "web", 3)
    assert out(c19(d, "decr", "web", "--waiting")) == "2"
    assert not pid_alive(first)  # the oldest went
    pids = live(d, "web", 2)
    assert out(c19(d, "stop", "web", "--waiting")) == "ok"
    assert not any(map(pid_alive, pids))
    assert out(c19(d, "status", "web")) == "stopped"
    assert out(c19(d, "start", "web", "--waiting")) == "ok"
    started = live(d, "web", 2)
    assert out(c19(d, "restart", "web", "--waiting")) == "ok"
    restarted = live(d, "web", 2)
    assert not set(restarted) & set(started)
    assert out(c19(d, "reload", "web", "--waiting")) == "ok"
    reloaded = live(d, "web", 2)
    assert not set(reloaded) & set(restarted)
    assert out(c19(d, "stop", "w*", "--match", "glob", "--waiting")) == "ok"
    assert out(c19(d, "status", "web")) == "stopped"
    assert out(c19(d, "start", "--waiting")) == "ok"
    live(d, "web", 2)
    assert out(c19(d, "restart", "--waiting")) == "ok"
    (pid,) = live(d, "web", 1)  # the file says 1: restart reads it again
    assert out(c19(d, "reload", "--waiting")) == "ok"
    assert live(d, "web", 1) != [pid]


def test_add_rm_set(circusd: Start, c19: Callable[..., subprocess.CompletedProcess[str]]
                    ) -> None:
    d = circusd(web(1))
    live(d, "web", 1)
    assert out(c19(d, "add", "--start", "extra", "sleep", "600")) == "ok"
    (pid,) = live(d, "extra", 1)
    assert out(c19(d, "list")) == "extra,web"
    assert out(c19(d, "rm", "extra")) == "ok"
    wait_until(lambda: not pid_alive(pid), what="the removed watcher's process to stop")
    assert out(c19(d, "list")) == "web"
    assert out(c19(d, "set", "web", "numprocesses", "3")) == "ok"
    live(d, "web", 3)
    assert out(c19(d, "set", "web", "graceful_timeout", "2.5", "stop_signal", "INT")) == "ok"
    assert out(c19(d, "get", "web", "graceful_timeout", "stop_signal")).splitlines() == [
        "graceful_timeout: 2.5", "stop_signal: 2"]


def test_signal_and_kill(circusd: Start, short_tmp: Path,
                         c19: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    rec = short_tmp / "rec"
    rec.mkdir()
    d = circusd(f"[watcher:rec]\ncmd = {recorder(rec)}\nnumprocesses = 2\n" + web(1))
    pids = live(d, "rec", 2)
    wait_until(lambda: all(catches(p, signal.SIGUSR1) for p in pids), what="handlers")
    assert out(c19(d, "signal", "rec", "USR1")) == "ok"
    wait_until(lambda: all(received(rec, p) == [signal.SIGUSR1] for p in pids),
               what="USR1 everywhere")
    assert out(c19(d, "signal", "rec", str(pids[0]), "12")) == "ok"
    wait_until(lambda: received(rec, pids[0]) == [signal.SIGUSR1, signal.SIGUSR2],
               what="USR2 in one process")
    (victim,) = live(d, "web", 1)
    assert out(c19(d, "kill", "web", str(victim), "--signum", "KILL")) == "ok"
    wait_until(lambda: not pid_alive(victim), what="the killed process to go")
    assert live(d, "web", 1) != [victim]


def test_reloadconfig(circusd: Start, c19: Callable[..., subprocess.CompletedProcess[str]]
                      ) -> None:
    d = circusd(web(1))
    (old,) = live(d, "web", 1)
    d.ini.write_text(d.ini.read_text().replace("numprocesses = 1", "numprocesses = 2")
                     + "[watcher:new]\ncmd = sleep 600\n")
    assert out(c19(d, "reloadconfig", "--waiting")) == "ok"
    assert old in live(d, "web", 2)
    live(d, "new", 1)


def test_errors(circusd: Start, c19: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    d = circusd(web(1))
    res = c19(d, "incr", "nope")
    assert res.returncode == 3 and "program nope not found" in res.stderr + res.stdout
    res = c19(d, "--json", "get", "web", "nope")
    assert json.loads(res.stdout)["errno"] == 3


def test_listen(circusd: Start, circus019: Path) -> None:
    d = circusd(web(1))
    live(d, "web", 1)
    listener = subprocess.Popen(
        [str(circus019 / "circusctl"), "--endpoint", d.pubsub, "listen", "watcher.web."],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        # 0.19 prints each event with print(): unbuffered, or it stays in its pipe buffer
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert listener.stdout is not None
        fd = listener.stdout.fileno()
        os.set_blocking(fd, False)
        buffer = bytearray()

        def spawn_seen() -> bool:
            d.call({"command": "incr", "properties": {"name": "web", "waiting": True}})
            with contextlib.suppress(BlockingIOError):
                buffer.extend(os.read(fd, 65536))
            return b"watcher.web.spawn" in buffer

        wait_until(spawn_seen, what="0.19's circusctl to print a spawn event", interval=0.3)
    finally:
        listener.send_signal(signal.SIGINT)
        try:
            listener.wait(timeout=10)
        except subprocess.TimeoutExpired:
            listener.kill()
            listener.wait()
        if listener.stdout is not None:
            listener.stdout.close()


def test_quit(circusd: Start, c19: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    d = circusd(web(2))
    pids = live(d, "web", 2)
    assert out(c19(d, "quit", "--waiting")) == "ok"
    assert d.proc.wait(timeout=20) == 0
    assert not any(map(pid_alive, pids))
