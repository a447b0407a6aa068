"""A crash of circusd doubles nothing; runtime changes survive a restart (state_file).

Each scenario runs the real circusd on one INI file, kills it with SIGKILL (or quits it),
and starts circusd again on the same file. Processes are counted by a token in their
command line that only this test uses (``sleep 1000.<digits>`` or a Python worker given
the token as argument), so nothing else on the machine is counted, and every pid seen is
killed at teardown if it is still alive.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PYTHON, pid_alive, stays_true, wait_until
from tests.e2e.conftest import CIRCUSD, Daemon

FIGURES: list[str] = []


def _token() -> str:
    return f"{random.randint(1000, 1999)}.{random.randint(10**8, 10**9 - 1)}"


def with_token(token: str) -> list[int]:
    """Live pids whose command line carries *token* as one argument."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as fh:
                args = fh.read().split(b"\0")
        except OSError:
            continue
        if token.encode() in args and pid_alive(int(name)):
            found.append(int(name))
    return sorted(found)


def settled(token: str) -> list[int]:
    """The processes with *token* once two looks 20 ms apart agree (a child caught between
    its fork and its exec does not show the token yet)."""
    last: list[list[int]] = [[-1]]

    def same() -> list[int] | None:
        now = with_token(token)
        agreed = now if now == last[0] else None
        last[0] = now
        return agreed

    return wait_until(same, what=f"the processes with {token} to settle", interval=0.02)


class Runner:
    """Starts circusd on one INI file, as often as a test asks."""

    def __init__(self, dir: Path, ini: Path, endpoint: str, pubsub: str) -> None:
        self.dir, self.ini, self.endpoint, self.pubsub = dir, ini, endpoint, pubsub
        self.daemons: list[Daemon] = []
        self.seen: set[int] = set()

    def start(self) -> tuple[Daemon, float]:
        """A new circusd on the file; returns it and the seconds until it answered."""
        log = self.dir / f"circusd{len(self.daemons)}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "XDG_RUNTIME_DIR": str(self.dir)}
        began = time.monotonic()
        with open(log, "wb") as out:
            proc = subprocess.Popen([*CIRCUSD, str(self.ini)], stdout=out,
                                    stderr=subprocess.STDOUT, cwd=self.dir, env=env)
        daemon = Daemon(proc, self.dir, self.ini, self.endpoint, self.pubsub, log)
        self.daemons.append(daemon)
        daemon.wait_ready("circusd", timeout=60, interval=0.02)
        return daemon, time.monotonic() - began

    def note(self, pids: list[int]) -> list[int]:
        self.seen.update(pids)
        return pids

    def close(self) -> None:
        for daemon in self.daemons:
            daemon.close()
        for pid in self.seen:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def runner(short_tmp: Path) -> Iterator[Any]:
    made: list[Runner] = []

    def make(body: str, circus_extra: str = "") -> Runner:
        endpoint, pubsub = f"ipc://{short_tmp}/c", f"ipc://{short_tmp}/p"
        ini = short_tmp / "circus.ini"
        ini.write_text(f"[circus]\nendpoint = {endpoint}\npubsub_endpoint = {pubsub}\n"
                       f"{circus_extra}\n{body}")
        made.append(Runner(short_tmp, ini, endpoint, pubsub))
        return made[-1]

    yield make
    for one in made:
        one.close()


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    if FIGURES:
        print("\n" + "\n".join(FIGURES))


def stop_time(log: str) -> str:
    """How long the new circusd took to stop the previous generation, from its log."""
    match = re.search(r"previous generation stopped in ([0-9.]+)s", log)
    return match.group(1) if match else "?"


def kill9(daemon: Daemon) -> None:
    daemon.proc.send_signal(signal.SIGKILL)
    daemon.proc.wait(timeout=10)


def quit_(daemon: Daemon) -> None:
    assert daemon.call({"command": "quit", "properties": {"waiting": True}})["status"] == "ok"
    daemon.proc.wait(timeout=30)
    assert daemon.proc.returncode == 0


def exact(daemon: Daemon, tokens: dict[str, str], counts: dict[str, int]) -> bool:
    """Each watcher runs exactly its count, and the processes with its token are its own."""
    for name, count in counts.items():
        pids = sorted(daemon.pids(name))
        if len(pids) != count or with_token(tokens[name]) != pids:
            return False
    return True


TALKER = ("import sys, time\n"
          "while True:\n"
          "    try:\n"
          "        print('line', flush=True)\n"
          "    except BrokenPipeError:\n"
          "        pass\n"
          "    time.sleep(0.05)\n")


def test_kill9_of_circusd_then_restart_doubles_nothing(runner: Any, short_tmp: Path) -> None:
    (short_tmp / "talker.py").write_text(TALKER)
    tokens = {"quiet": _token(), "talk": _token()}
    counts = {"quiet": 4, "talk": 2}
    run = runner(
        f"[watcher:quiet]\ncmd = sleep {tokens['quiet']}\nnumprocesses = 4\n\n"
        f"[watcher:talk]\ncmd = {PYTHON} {short_tmp / 'talker.py'} {tokens['talk']}\n"
        "numprocesses = 2\n"
    )
    first, _ = run.start()
    wait_until(lambda: exact(first, tokens, counts), what="4 quiet and 2 talking workers")
    old = run.note(with_token(tokens["quiet"]) + with_token(tokens["talk"]))
    assert len(old) == 6

    kill9(first)
    # the crash leaves the old generation running (a talker survives its broken pipe)
    assert all(pid_alive(pid) for pid in old)

    second, recovery = run.start()
    wait_until(lambda: exact(second, tokens, counts), what="exact counts after the restart",
               detail=second.log_text)
    run.note(with_token(tokens["quiet"]) + with_token(tokens["talk"]))
    assert not [pid for pid in old if pid_alive(pid)], "the old generation is gone"
    stays_true(lambda: exact(second, tokens, counts), for_=0.5,
               what="no duplicate appears after the restart")
    log = second.log_text()
    assert "found 6 process(es) of a previous circusd" in log, log

    quit_(second)
    wait_until(lambda: not with_token(tokens["quiet"]) and not with_token(tokens["talk"]),
               what="no process left after quit", timeout=5)
    FIGURES.append(f"kill -9 + restart: 6 old processes found and stopped in {stop_time(log)}s; "
                   f"the new circusd answered {recovery:.2f}s after it was started")


def test_kill9_in_the_middle_of_a_burst(runner: Any) -> None:
    token = _token()
    run = runner(f"[watcher:burst]\ncmd = sleep {token}\nnumprocesses = 1\n")
    first, _ = run.start()
    wait_until(lambda: len(with_token(token)) == 1, what="the first worker")
    record = next((run.dir / "circus").glob("circus-*.json"))

    def recorded() -> set[int]:
        return {p["pid"] for p in json.loads(record.read_text())["processes"]}

    first.call({"command": "incr", "properties": {"name": "burst", "nb": 1000}})
    # kill it once the record was written during the burst, so that some processes are
    # in the record and the newest ones only carry the marker
    wait_until(lambda: len(recorded()) >= 60, what="a record written during the burst",
               timeout=30)
    kill9(first)
    old = run.note(settled(token))
    in_record = len(set(old) & recorded())
    assert 60 <= len(old) < 1001, "killed in the middle of the burst"

    second, recovery = run.start()
    wait_until(lambda: exact(second, {"burst": token}, {"burst": 1}),
               what="one worker after the restart", detail=second.log_text)
    run.note(with_token(token))
    assert not [pid for pid in old if pid_alive(pid)]
    stays_true(lambda: exact(second, {"burst": token}, {"burst": 1}), for_=0.5,
               what="no duplicate appears after the restart")
    log = second.log_text()
    found = re.search(r"found (\d+) process\(es\) of a previous circusd", log)
    assert found is not None and int(found.group(1)) == len(old), log
    quit_(second)
    assert not with_token(token)
    FIGURES.append(f"kill -9 during a burst: {len(old)} old processes ({in_record} in the "
                   f"last record, the rest by their marker) stopped in {stop_time(log)}s; the "
                   f"new circusd answered {recovery:.2f}s after it was started")


def test_a_second_circusd_on_the_same_config_is_refused_naming_the_first(runner: Any) -> None:
    token = _token()
    run = runner(f"[watcher:w]\ncmd = sleep {token}\n")
    first, _ = run.start()
    wait_until(lambda: len(with_token(token)) == 1, what="the worker")
    env = {**os.environ, "XDG_RUNTIME_DIR": str(run.dir)}
    second = subprocess.run([*CIRCUSD, str(run.ini)], capture_output=True, text=True,
                            env=env, cwd=run.dir, timeout=30)
    assert second.returncode == 1
    assert f"circusd pid {first.pid} already runs this configuration" in second.stderr + \
        second.stdout
    assert first.pids("w") == with_token(token)
    quit_(first)


@pytest.mark.parametrize("how", ["quit", "kill9"])
def test_runtime_changes_survive_a_restart(runner: Any, how: str) -> None:
    tokens = {"a": _token(), "b": _token(), "c": _token()}
    run = runner(f"[watcher:a]\ncmd = sleep {tokens['a']}\n\n"
                 f"[watcher:b]\ncmd = sleep {tokens['b']}\n",
                 circus_extra="state_file = state/changes.json")
    first, _ = run.start()
    assert first.call({"command": "add", "properties": {
        "name": "c", "cmd": f"sleep {tokens['c']}", "start": True,
        "options": {"graceful_timeout": 3}}})["status"] == "ok"
    assert first.call({"command": "set", "properties": {
        "name": "a", "options": {"graceful_timeout": 7, "stop_signal": 2},
        "waiting": True}})["status"] == "ok"
    assert first.call({"command": "incr", "properties": {"name": "a", "nb": 2,
                                                         "waiting": True}})["status"] == "ok"
    assert first.call({"command": "rm", "properties": {"name": "b", "waiting": True}}
                      )["status"] == "ok"
    wait_until(lambda: exact(first, tokens, {"a": 3, "c": 1}) and not with_token(tokens["b"]),
               what="the changes applied")
    run.note(with_token(tokens["a"]) + with_token(tokens["c"]))
    if how == "quit":
        quit_(first)
    else:
        kill9(first)

    second, _ = run.start()
    listed = second.call({"command": "list"})["watchers"]
    assert sorted(listed) == ["a", "c"]
    wait_until(lambda: exact(second, tokens, {"a": 3, "c": 1}), what="a: 3 and c: 1 again",
               detail=second.log_text)
    run.note(with_token(tokens["a"]) + with_token(tokens["c"]))
    got = second.call({"command": "get", "properties": {
        "name": "a", "keys": ["graceful_timeout", "stop_signal", "numprocesses"]}})
    assert got["options"] == {"graceful_timeout": 7.0, "stop_signal": 2, "numprocesses": 3}
    got = second.call({"command": "get", "properties": {"name": "c",
                                                        "keys": ["graceful_timeout"]}})
    assert got["options"] == {"graceful_timeout": 3.0}
    assert not with_token(tokens["b"])

    # reloadconfig makes the file the truth again, and the recorded changes are forgotten
    assert second.call({"command": "reloadconfig", "properties": {"waiting": True}},
                       timeout=30)["status"] == "ok"
    wait_until(lambda: exact(second, tokens, {"a": 1, "b": 1}) and not with_token(tokens["c"]),
               what="the file's watchers after reloadconfig", detail=second.log_text)
    run.note(with_token(tokens["a"]) + with_token(tokens["b"]))
    saved = json.loads((run.dir / "state" / "changes.json").read_text())
    assert saved == {"version": 1, "added": {}, "removed": {}, "options": {}}
    quit_(second)
    third, _ = run.start()
    assert sorted(third.call({"command": "list"})["watchers"]) == ["a", "b"]
    wait_until(lambda: exact(third, tokens, {"a": 1, "b": 1}), what="the file's counts")
    quit_(third)
    assert not any(with_token(t) for t in tokens.values())


def test_a_watcher_of_the_file_removed_then_added_again_comes_back_as_added(
        runner: Any) -> None:
    old, new = _token(), _token()
    run = runner(f"[watcher:w]\ncmd = sleep {old}\n", circus_extra="state_file = changes.json")
    first, _ = run.start()
    assert first.call({"command": "rm", "properties": {"name": "w", "waiting": True}}
                      )["status"] == "ok"
    assert first.call({"command": "add", "properties": {
        "name": "w", "cmd": f"sleep {new}", "start": True}})["status"] == "ok"
    wait_until(lambda: exact(first, {"w": new}, {"w": 1}), what="the new w")
    run.note(with_token(new))
    quit_(first)
    second, _ = run.start()
    wait_until(lambda: exact(second, {"w": new}, {"w": 1}), what="the added w, not the file's",
               detail=second.log_text)
    run.note(with_token(new))
    assert not with_token(old)
    quit_(second)


def test_a_state_file_that_is_not_json_stops_circusd_naming_it(runner: Any) -> None:
    run = runner(f"[watcher:w]\ncmd = sleep {_token()}\n",
                 circus_extra="state_file = changes.json")
    (run.dir / "changes.json").write_text("{not json")
    env = {**os.environ, "XDG_RUNTIME_DIR": str(run.dir)}
    done = subprocess.run([*CIRCUSD, str(run.ini)], capture_output=True, text=True, env=env,
                          cwd=run.dir, timeout=30)
    out = done.stdout + done.stderr
    assert done.returncode == 1
    assert f"state file {run.dir / 'changes.json'}:" in out and "fix or remove it" in out
    assert "Traceback" not in out
