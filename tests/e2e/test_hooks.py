"""Hooks end to end: the real circusd calls the functions of ``fixtures/hookprobe.py``.

Each hook writes a JSON line (its name, its arguments, the watcher's pids and which of
them were alive) to a file, so the tests check what a hook saw against the real
processes, and the ``hook_success``/``hook_failure`` events on the PUB socket.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from tests.conftest import PYTHON, pid_alive, wait_until
from tests.e2e.conftest import CIRCUSD, Daemon, recv_event, wait_event

FIXTURES = Path(__file__).parent.parent / "fixtures"
CHILD = f"{PYTHON} {FIXTURES / 'child.py'}"
Start = Callable[..., Daemon]
ALL_HOOKS = ("before_start", "after_start", "before_spawn", "after_spawn", "before_signal",
             "after_signal", "before_stop", "after_stop", "before_reap", "after_reap",
             "extended_stats")


@pytest.fixture
def probe(short_tmp: Path) -> Iterator[Path]:
    """hookprobe.py next to the config (circusd's cwd, so it imports it); the marks file."""
    shutil.copy(FIXTURES / "hookprobe.py", short_tmp / "hookprobe.py")
    yield short_tmp / "marks"


def marks(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def names(path: Path) -> list[str]:
    return [m["hook"] for m in marks(path)]


def watcher(marks_file: Path, hooks: dict[str, str], extra: str = "",
            cmd: str = "sleep 3600", name: str = "w") -> str:
    lines = "".join(f"hooks.{hook} = {target}\n" for hook, target in hooks.items())
    return f"[watcher:{name}]\ncmd = {cmd}\nmarks = {marks_file}\n{lines}{extra}\n"


def call(d: Daemon, command: str, **props: Any) -> dict[str, Any]:
    return d.call({"command": command, "properties": props}, timeout=30)


def status(d: Daemon, name: str) -> str:
    return str(call(d, "status", name=name)["status"])


def subscribed(d: Daemon, name: str) -> zmq.Socket[Any]:
    """A SUB socket on ``watcher.<name>.`` whose subscription circusd has."""
    return d.subscribe(f"watcher.{name}.")


def hook_events(sub: zmq.Socket[Any], until: Callable[[list[tuple[str, dict[str, Any]]]], bool],
                timeout: float = 15.0) -> list[tuple[str, dict[str, Any]]]:
    """hook_success/hook_failure events, read until *until* holds."""
    seen: list[tuple[str, dict[str, Any]]] = []
    deadline = time.monotonic() + timeout
    while not until(seen):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"hook events so far: {seen}")
        topic, payload = recv_event(sub, remaining)
        if ".hook_" in topic:
            seen.append((topic.rsplit(".", 1)[1], payload))
    return seen


# -- every hook name, with its arguments and its real effect ------------------------------------


def test_every_hook_runs_at_its_point_with_its_arguments(
    circusd: Start, probe: Path, workers: list[int]
) -> None:
    hooks = {h: "hookprobe.mark" for h in ALL_HOOKS}
    hooks["extended_stats"] = "hookprobe.add_stats"
    d = circusd(watcher(probe, hooks, "numprocesses = 2\nautostart = false\n"))
    sub = subscribed(d, "w")

    # start: before_start, then before_spawn/after_spawn per process, then after_start
    assert call(d, "start", name="w", waiting=True)["status"] == "ok"
    pids = d.pids("w")
    workers.extend(pids)
    assert names(probe) == ["before_start", "before_spawn", "after_spawn", "before_spawn",
                            "after_spawn", "after_start"]
    m = marks(probe)
    assert m[0]["pids"] == [] and m[0]["state"] == "stopped"  # nothing spawned yet
    assert [x["extra"]["pid"] for x in m if x["hook"] == "after_spawn"] == pids
    assert all(x["extra"]["pid"] in x["alive"] for x in m if x["hook"] == "after_spawn")
    assert m[-1]["alive"] == sorted(pids) and m[-1]["state"] == "active"

    # a process dies: before_reap and after_reap get its pid and exit code, then the
    # replacement goes through before_spawn/after_spawn
    probe.write_text("")
    victim = pids[0]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: names(probe).count("after_spawn") == 1 and "after_reap" in names(probe),
               what="the reap hooks and the respawn")
    reaped = {x["hook"]: x["extra"] for x in marks(probe) if "reap" in x["hook"]}
    assert reaped["before_reap"]["process_pid"] == victim
    assert reaped["after_reap"] == {"process_pid": victim, "time": reaped["after_reap"]["time"],
                                    "exit_code": -9, "process_status": -9}
    workers.extend(d.pids("w"))

    # stats --extended: extended_stats adds to each process's stats
    reply = call(d, "stats", name="w", extended=True)
    for pid, info in reply["info"].items():
        assert info["probe"] == {"pid": int(pid), "arbiter_watchers": 1}

    # stop: before_stop, before_signal/after_signal per process (pid, SIGTERM), after_stop
    probe.write_text("")
    live = d.pids("w")
    assert call(d, "stop", name="w", waiting=True)["status"] == "ok"
    # the reap hooks run in the background, so they may come after after_stop
    wait_until(lambda: names(probe).count("after_reap") == 2, what="the reap hooks")
    got = names(probe)
    assert got[0] == "before_stop"
    assert {h: got.count(h) for h in set(got)} == {
        "before_stop": 1, "before_signal": 2, "after_signal": 2, "after_stop": 1,
        "before_reap": 2, "after_reap": 2}
    assert max(i for i, h in enumerate(got) if h.endswith("_signal")) < got.index("after_stop")
    m = [x for x in marks(probe) if "reap" not in x["hook"]]
    signals = [x for x in m if x["hook"] == "before_signal"]
    assert sorted(x["extra"]["pid"] for x in signals) == sorted(live)
    assert {x["extra"]["signum"] for x in signals} == {signal.SIGTERM}
    assert all(x["extra"]["pid"] in x["alive"] for x in signals)  # before: still running
    assert m[-1]["hook"] == "after_stop" and m[-1]["alive"] == []
    assert not any(pid_alive(p) for p in live)

    # each run was published as hook_success with the hook's name
    events = hook_events(sub, lambda seen: any(p["name"] == "after_stop" for _, p in seen))
    assert {kind for kind, _ in events} == {"hook_success"}
    assert set(ALL_HOOKS) <= {p["name"] for _, p in events}


def test_a_refusing_before_start_keeps_the_watcher_stopped(circusd: Start, probe: Path) -> None:
    d = circusd(watcher(probe, {"before_start": "hookprobe.refuse",
                                "before_spawn": "hookprobe.mark"}))
    wait_until(lambda: names(probe) == ["before_start"], what="before_start at boot")
    assert status(d, "w") == "stopped" and d.pids("w") == []
    call(d, "start", name="w", waiting=True)
    assert names(probe) == ["before_start"] * 2  # asked again; still no spawn
    assert status(d, "w") == "stopped" and d.pids("w") == []


def test_a_refusing_after_start_stops_the_watcher(circusd: Start, probe: Path) -> None:
    d = circusd(watcher(probe, {"after_start": "hookprobe.refuse",
                                "after_stop": "hookprobe.mark"}, "numprocesses = 2\n"))
    wait_until(lambda: "after_stop" in names(probe), what="the watcher to be stopped")
    started = marks(probe)[0]
    assert started["hook"] == "after_start" and len(started["alive"]) == 2
    assert status(d, "w") == "stopped"
    assert not any(pid_alive(p) for p in started["pids"])


def test_a_refusing_after_spawn_stops_that_process_and_the_watcher(circusd: Start,
                                                                   probe: Path) -> None:
    d = circusd(watcher(probe, {"after_spawn": "hookprobe.refuse"}))
    wait_until(lambda: "after_spawn" in names(probe), what="after_spawn")
    pid = marks(probe)[0]["extra"]["pid"]
    wait_until(lambda: not pid_alive(pid), what="the refused process to be stopped")
    wait_until(lambda: status(d, "w") == "stopped", what="the watcher to stop")


def test_a_refusing_before_signal_skips_sigterm_but_not_sigkill(
    circusd: Start, probe: Path, short_tmp: Path
) -> None:
    record = short_tmp / "signals"
    pidfile = short_tmp / "pid"
    d = circusd(watcher(probe, {"before_signal": "hookprobe.refuse"}, "graceful_timeout = 1\n",
                        cmd=f"{CHILD} --record {record} --pidfile {pidfile}"))
    wait_until(pidfile.exists, what="the child to be ready")
    sub = subscribed(d, "w")
    pid = d.pids("w")[0]
    call(d, "stop", name="w", waiting=True)
    _, reap = wait_event(sub, lambda t, p: t.endswith(".reap"))
    assert reap["process_pid"] == pid and reap["exit_code"] == -signal.SIGKILL
    assert not record.exists()  # SIGTERM never reached it
    assert marks(probe)[0]["extra"] == {"pid": pid, "signum": signal.SIGTERM}


# -- failures ----------------------------------------------------------------------------------


def test_a_failing_hook_publishes_hook_failure_and_refuses(circusd: Start, probe: Path) -> None:
    d = circusd(watcher(probe, {"before_start": "hookprobe.fail"}, "autostart = false\n"))
    sub = subscribed(d, "w")
    call(d, "start", name="w", waiting=True)
    [(kind, payload)] = hook_events(sub, lambda seen: bool(seen))
    assert kind == "hook_failure" and payload["name"] == "before_start"
    assert "boom from before_start" in payload["error"]
    assert status(d, "w") == "stopped" and d.pids("w") == []
    assert "boom from before_start" in d.log_text()  # logged with its traceback
    assert "Traceback" in d.log_text()
    assert d.proc.poll() is None  # circusd goes on


def test_ignore_failure_lets_a_failing_hook_pass(circusd: Start, probe: Path,
                                                 workers: list[int]) -> None:
    d = circusd(watcher(probe, {"before_start": "hookprobe.fail, true",
                                "after_spawn": "hookprobe:fail, yes"},
                        "autostart = false\nnumprocesses = 2\n"))
    sub = subscribed(d, "w")
    call(d, "start", name="w", waiting=True)
    pids = d.pids("w")
    workers.extend(pids)
    assert status(d, "w") == "active" and len(pids) == 2 and all(pid_alive(p) for p in pids)
    events = hook_events(sub, lambda seen: len(seen) == 3)
    assert [(k, p["name"]) for k, p in events] == [("hook_failure", "before_start"),
                                                   ("hook_failure", "after_spawn"),
                                                   ("hook_failure", "after_spawn")]


def test_a_failing_extended_stats_hook_does_not_fail_the_command(circusd: Start,
                                                                 probe: Path) -> None:
    d = circusd(watcher(probe, {"extended_stats": "hookprobe.fail"}))
    sub = subscribed(d, "w")
    reply = call(d, "stats", name="w", extended=True)
    assert reply["status"] == "ok" and len(reply["info"]) == 1
    [(kind, payload)] = hook_events(sub, lambda seen: bool(seen))
    assert kind == "hook_failure" and payload["name"] == "extended_stats"


# -- a slow hook does not hold circusd up ------------------------------------------------------


def test_a_slow_async_hook_blocks_neither_commands_nor_other_watchers(
    circusd: Start, probe: Path, workers: list[int]
) -> None:
    d = circusd(watcher(probe, {"before_start": "hookprobe.slow"}, "autostart = false\nslow = 2\n")
                + "[watcher:other]\ncmd = sleep 3600\n")
    started = time.monotonic()
    assert call(d, "start", name="w")["status"] == "ok"  # not waiting: runs in the background
    wait_until(lambda: "before_start:begin" in names(probe), what="the hook to begin")
    # while the hook sleeps: status answers at once, and another watcher can be changed
    t0 = time.monotonic()
    assert status(d, "w") == "stopped"
    assert time.monotonic() - t0 < 0.5
    t0 = time.monotonic()
    assert call(d, "incr", name="other", waiting=True)["numprocesses"] == 2
    assert time.monotonic() - t0 < 1.0
    others = d.pids("other")
    workers.extend(others)
    assert len(others) == 2 and all(pid_alive(p) for p in others)
    assert "before_start:end" not in names(probe)  # all that happened during the sleep
    # then the hook finishes and the watcher starts
    wait_until(lambda: status(d, "w") == "active", what="the watcher to start", timeout=10)
    workers.extend(d.pids("w"))
    assert time.monotonic() - started >= 2.0


# -- skipping one spawn --------------------------------------------------------------------------


def test_before_spawn_can_skip_a_spawn_without_stopping_the_watcher(
    circusd: Start, probe: Path, short_tmp: Path, workers: list[int]
) -> None:
    skipfile = short_tmp / "skip"
    d = circusd(watcher(probe, {"before_spawn": "hookprobe.skip_while_file"},
                        f"numprocesses = 2\nskipfile = {skipfile}\n"))
    pids = wait_until(lambda: len(d.pids("w")) == 2 and d.pids("w"), what="2 processes")
    workers.extend(pids)
    # from now on the hook skips: a dead process is not replaced, but the watcher stays
    # active and asks the hook again every 0.2 s
    skipfile.touch()
    os.kill(pids[0], signal.SIGKILL)
    wait_until(lambda: names(probe).count("before_spawn:skip") >= 3,
               what="the hook to be asked again and again")
    assert status(d, "w") == "active" and d.pids("w") == [pids[1]]
    # an incr is skipped the same way, without failing or stopping anything
    assert call(d, "incr", name="w", waiting=True)["numprocesses"] == 3
    assert status(d, "w") == "active" and d.pids("w") == [pids[1]]
    # the hook agrees again: the missing processes are spawned
    skipfile.unlink()
    new = wait_until(lambda: len(d.pids("w")) == 3 and d.pids("w"), what="3 processes")
    workers.extend(new)
    assert pids[1] in new and all(pid_alive(p) for p in new)


def test_a_start_whose_spawns_are_all_skipped_is_active_and_fills_up_later(
    circusd: Start, probe: Path, short_tmp: Path, workers: list[int]
) -> None:
    skipfile = short_tmp / "skip"
    skipfile.touch()
    d = circusd(watcher(probe, {"before_spawn": "hookprobe.skip_while_file"},
                        f"numprocesses = 2\nskipfile = {skipfile}\n"))
    wait_until(lambda: "before_spawn:skip" in names(probe), what="a skipped spawn")
    assert status(d, "w") == "active" and d.pids("w") == []
    skipfile.unlink()
    pids = wait_until(lambda: len(d.pids("w")) == 2 and d.pids("w"), what="2 processes")
    workers.extend(pids)


# -- hooks that cannot be used ---------------------------------------------------------------


@pytest.mark.parametrize(("line", "needle"), [
    ("hooks.before_start = hookprobe.no_such_function", "no_such_function"),
    ("hooks.before_start = no_such_module.fn", "no_such_module"),
    ("hooks.before_bedtime = hookprobe.mark", "before_bedtime"),
    ("hooks.after_reap = hookprobe.mark, perhaps", "perhaps"),
])
def test_a_hook_that_cannot_be_used_is_a_config_error_with_file_and_line(
    short_tmp: Path, probe: Path, line: str, needle: str
) -> None:
    ini = short_tmp / "bad.ini"
    ini.write_text(f"[circus]\nendpoint = ipc://{short_tmp}/c\n"
                   f"[watcher:w]\ncmd = sleep 1\n{line}\n")
    result = subprocess.run([*CIRCUSD, str(ini)], capture_output=True, text=True, timeout=30,
                            cwd=short_tmp)
    assert result.returncode == 78, result.stderr
    assert f"{ini}:5" in result.stderr and needle in result.stderr
    assert "Traceback" not in result.stderr


def test_set_with_a_hook_that_cannot_be_imported_keeps_the_old_one(circusd: Start,
                                                                    probe: Path) -> None:
    d = circusd(watcher(probe, {"after_stop": "hookprobe.mark"}))
    reply = call(d, "set", name="w", options={"hooks.after_stop": "hookprobe.nope"})
    assert reply["status"] == "error" and "hooks.after_stop" in reply["reason"]
    call(d, "stop", name="w", waiting=True)
    assert names(probe) == ["after_stop"]
