"""Watcher: real children, the events it publishes, and every process option."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from circus.states import WatcherState
from circus.watcher import Watcher
from tests.conftest import PYTHON, pid_alive, proc_cmdline, proc_environ, wait_for

CHILD = str(Path(__file__).parent.parent / "fixtures" / "child.py")


class Events:
    """Collects what a watcher publishes."""

    def __init__(self) -> None:
        self.items: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, topic: str, payload: dict[str, Any]) -> None:
        self.items.append((topic, payload))

    def names(self) -> list[str]:
        return [topic.rsplit(".", 1)[1] for topic, _ in self.items]

    def of(self, name: str) -> list[dict[str, Any]]:
        return [p for t, p in self.items if t.endswith("." + name)]


@pytest.fixture
async def make() -> AsyncIterator[Any]:
    made: list[Watcher] = []

    def factory(name: str = "w", cmd: str = "sleep 3600", **kw: Any) -> tuple[Watcher, Events]:
        events = Events()
        kw.setdefault("graceful_timeout", 5)
        watcher = Watcher(name, cmd, publish=events, **kw)
        made.append(watcher)
        return watcher, events

    yield factory
    for watcher in made:
        await asyncio.wait_for(watcher.close(), 30)


async def test_start_spawns_numprocesses_and_publishes(make: Any) -> None:
    w, ev = make(numprocesses=3)
    result = await w.start()
    assert w.state is WatcherState.ACTIVE
    assert len(result["started"]) == 3 and result["kept"] == []
    assert all(pid_alive(p) for p in w.pids)
    assert ev.names() == ["spawn", "spawn", "spawn", "start"]
    assert ev.items[0][0] == "watcher.w.spawn"
    assert {p["process_pid"] for p in ev.of("spawn")} == set(w.pids)


async def test_a_dead_process_is_replaced_at_once(make: Any) -> None:
    w, ev = make(numprocesses=2)
    await w.start()
    victim = w.pids[0]
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    await wait_for(lambda: victim not in w.pids and len(w.pids) == 2, what="a replacement")
    # seen at once: no check_delay polling involved, the replacement comes within milliseconds
    assert time.monotonic() - killed_at < 0.5
    reap = ev.of("reap")[-1]
    assert reap["process_pid"] == victim and reap["exit_code"] == -signal.SIGKILL
    assert ev.names()[-2:] == ["reap", "spawn"]


async def test_stop_sends_stop_signal_and_publishes(make: Any) -> None:
    w, ev = make(numprocesses=2)
    await w.start()
    pids = w.pids
    await w.stop()
    assert w.state is WatcherState.STOPPED
    assert not any(pid_alive(p) for p in pids)
    assert sorted(p["process_pid"] for p in ev.of("kill")) == sorted(pids)
    assert sorted(p["exit_code"] for p in ev.of("reap")) == [-signal.SIGTERM] * 2
    assert ev.names()[-1] == "stop"


async def test_stop_signal_is_the_one_sent(make: Any, tmp_path: Path) -> None:
    """With stop_signal = INT, a child that ignores SIGTERM still stops at once."""
    pidfile = tmp_path / "pid"
    w, ev = make(cmd=f"{PYTHON} {CHILD} --ignore-term --pidfile {pidfile}",
                 graceful_timeout=10, stop_signal="INT")
    await w.start()
    await wait_for(pidfile.exists, what="the child to be ready")
    start = time.monotonic()
    await w.stop()
    assert time.monotonic() - start < 5
    # Python ends an unhandled KeyboardInterrupt by dying of SIGINT
    assert ev.of("reap")[0]["exit_code"] == -signal.SIGINT


async def test_a_stop_signal_ignored_leads_to_sigkill(make: Any, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    w, ev = make(cmd=f"{PYTHON} {CHILD} --ignore-term --pidfile {pidfile}",
                 graceful_timeout=0.3)
    await w.start()
    await wait_for(pidfile.exists, what="the child to be ready")
    await w.stop()
    assert ev.of("reap")[0]["exit_code"] == -signal.SIGKILL
    # a kill event for SIGTERM, then one for the SIGKILL
    assert len(ev.of("kill")) == 2


async def test_stop_children(make: Any, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    record = tmp_path / "record"
    w, _ = make(cmd=f"{PYTHON} {CHILD} --spawn-child --child-record {record} "
                    f"--child-pidfile {pidfile}", stop_children=True)
    await w.start()
    grandchild = int((await wait_for(lambda: pidfile.exists() and pidfile.read_text(),
                                     what="the grandchild")).split()[0])
    await w.stop()
    assert f"{grandchild} SIGTERM" in record.read_text()


async def test_respawn_false_stops_the_watcher_when_all_are_gone(make: Any) -> None:
    w, ev = make(cmd=f"{PYTHON} -c pass", numprocesses=2, respawn=False)
    await w.start()
    await wait_for(lambda: w.state is WatcherState.STOPPED, what="the watcher to stop")
    assert w.pids == []
    assert ev.names().count("spawn") == 2
    assert ev.names()[-1] == "stop"


async def test_max_retry_stops_a_watcher_that_cannot_spawn(make: Any) -> None:
    w, ev = make(cmd="/nonexistent/program", max_retry=2)
    await w.start()
    await wait_for(lambda: w.state is WatcherState.STOPPED, what="the watcher to give up")
    assert w.pids == []
    assert "spawn" not in ev.names()


async def test_max_retry_zero_still_makes_one_attempt(make: Any, tmp_path: Path) -> None:
    """OPTIONS.md §10 bug 18: max_retry = 0 means no *retry*, not no attempt."""
    w, _ = make(max_retry=0)
    await w.start()
    assert w.state is WatcherState.ACTIVE and len(w.pids) == 1


async def test_crash_loop_backs_off(make: Any) -> None:
    """A command that exits at once is respawned with growing delays, not in a tight loop."""
    w, ev = make(cmd=f"{PYTHON} -c pass")
    await w.start()
    # count the spawns of the first 1.5 s by their timestamps, once one comes after them
    def times() -> list[float]:
        return [p["time"] for p in ev.of("spawn")]

    await wait_for(lambda: (t := times()) and t[-1] >= t[0] + 1.5, timeout=20,
                   what="a spawn more than 1.5 s after the first")
    first = times()[0]
    spawns = sum(t < first + 1.5 for t in times())
    assert 3 <= spawns <= 12


async def test_incr_decr_stop_the_oldest(make: Any) -> None:
    w, ev = make(numprocesses=2)
    await w.start()
    first = w.pids
    assert await w.incr(2) == 4
    assert len(w.pids) == 4
    assert await w.decr(3) == 1
    assert len(w.pids) == 1
    assert w.pids[0] not in first  # the two oldest went first
    assert not any(pid_alive(p) for p in first)


async def test_singleton_never_grows(make: Any) -> None:
    w, _ = make(singleton=True)
    await w.start()
    assert await w.incr(3) == 1
    assert len(w.pids) == 1
    with pytest.raises(ValueError):
        Watcher("s", "sleep 1", singleton=True, numprocesses=2)


async def test_graceful_reload_starts_new_processes_before_stopping_old(make: Any) -> None:
    w, ev = make(numprocesses=3)
    await w.start()
    old = set(w.pids)
    ev.items.clear()
    result = await w.reload()
    assert set(result["stopped"]) == old
    assert set(w.pids) == set(result["started"]) and not (set(w.pids) & old)
    names = ev.names()
    # every new process was spawned before the first old one was signalled
    assert names[:3] == ["spawn", "spawn", "spawn"]
    assert names.index("kill") == 3
    assert names[-1] == "reload"


async def test_sequential_reload_replaces_one_at_a_time(make: Any) -> None:
    w, ev = make(numprocesses=2)
    await w.start()
    ev.items.clear()
    await w.reload(sequential=True)
    names = [n for n in ev.names() if n in ("kill", "spawn")]
    assert names == ["kill", "spawn", "kill", "spawn"]


async def test_send_hup_reload_keeps_the_pids(make: Any, tmp_path: Path) -> None:
    record = tmp_path / "record"
    pidfile = tmp_path / "pid"
    w, _ = make(cmd=f"{PYTHON} {CHILD} --record {record} --pidfile {pidfile}", send_hup=True)
    await w.start()
    await wait_for(pidfile.exists, what="the child to be ready")
    pids = w.pids
    result = await w.reload()
    assert w.pids == pids and result["kept"] == pids
    await wait_for(lambda: record.exists() and "SIGHUP" in record.read_text(), what="SIGHUP")


async def test_warmup_delay_spaces_the_spawns(make: Any) -> None:
    w, ev = make(numprocesses=3, warmup_delay=0.2)
    await w.start()
    times = [p["time"] for p in ev.of("spawn")]
    assert times[1] - times[0] >= 0.18 and times[2] - times[1] >= 0.18


async def test_wid_substitution_in_cmd_and_args(make: Any) -> None:
    w, _ = make(cmd="sleep 36$(circus.wid)0", args="$WID", numprocesses=2)
    await w.start()
    cmdlines = sorted([proc_cmdline(p) for p in w.pids])
    await wait_for(lambda: all(proc_cmdline(p) for p in w.pids), what="exec")
    cmdlines = sorted(proc_cmdline(p) for p in w.pids)
    assert cmdlines == [["sleep", "3610", "1"], ["sleep", "3620", "2"]]


async def test_wids_are_reused(make: Any) -> None:
    w, _ = make(numprocesses=3)
    await w.start()
    victim = next(p for p in w.processes.values() if p.wid == 2)
    os.kill(victim.pid, signal.SIGKILL)
    await wait_for(lambda: victim.pid not in w.pids and len(w.pids) == 3, what="a replacement")
    assert sorted(p.wid for p in w.processes.values()) == [1, 2, 3]


async def test_env_copy_env_and_copy_path(make: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CIRCUS_TEST_MARK", "inherited")
    w, _ = make(name="bare", env={"A": "1"})
    w2, _ = make(name="copied", env={"A": "2"}, copy_env=True, copy_path=True)
    await w.start()
    await w2.start()
    await wait_for(lambda: proc_cmdline(w.pids[0]) and proc_cmdline(w2.pids[0]), what="exec")
    assert proc_environ(w.pids[0]) == {"A": "1"}
    env2 = proc_environ(w2.pids[0])
    assert env2["A"] == "2" and env2["CIRCUS_TEST_MARK"] == "inherited"
    assert env2["PYTHONPATH"].split(os.pathsep) == [p for p in sys.path if p]


async def test_copy_path_beats_an_inherited_pythonpath(make: Any,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """OPTIONS.md §10 bug 13: copy_path is not overridden by circusd's own PYTHONPATH."""
    monkeypatch.setenv("PYTHONPATH", "/somewhere/else")
    w, _ = make(copy_env=True, copy_path=True)
    await w.start()
    await wait_for(lambda: proc_cmdline(w.pids[0]), what="exec")
    assert proc_environ(w.pids[0])["PYTHONPATH"] != "/somewhere/else"


async def test_virtualenv(make: Any, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    site = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / \
        "site-packages"
    site.mkdir(parents=True)
    (venv / "bin").mkdir()
    w, _ = make(virtualenv=str(venv), copy_env=True)
    await w.start()
    await wait_for(lambda: proc_cmdline(w.pids[0]), what="exec")
    env = proc_environ(w.pids[0])
    assert env["PATH"].split(os.pathsep)[0] == str(venv / "bin")
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(site)
    assert env["VIRTUAL_ENV"] == str(venv)


async def test_detach_forgets_the_processes_and_leaves_them_running(make: Any) -> None:
    """rm --nostop: the processes keep running, unread, and are neither replaced nor
    recycled by max_age."""
    w, ev = make(numprocesses=2, max_age=1, max_age_variance=0)
    await w.start()
    pids = w.pids
    await w.detach()
    assert w.processes == {} and w._age_timers == {}
    try:
        assert all(pid_alive(pid) for pid in pids)
        assert ev.names().count("spawn") == 2
    finally:
        for pid in pids:
            os.killpg(pid, signal.SIGKILL)
    await wait_for(lambda: not any(pid_alive(pid) for pid in pids), what="the detached processes")


async def test_max_age_recycles_processes(make: Any) -> None:
    w, ev = make(max_age=1, max_age_variance=0)
    await w.start()
    first = w.pids[0]
    await wait_for(lambda: first not in w.pids and len(w.pids) == 1, what="a recycle", timeout=5)
    assert ev.of("reap")[0]["process_pid"] == first


async def test_streams_receive_output(make: Any) -> None:
    from circus.streams import QueueStream

    out = QueueStream()
    w, _ = make(cmd=f"{PYTHON} {CHILD} --print 100 --exit 0", respawn=False,
                stdout_stream={"stream": out})
    await w.start()
    await wait_for(lambda: w.state is WatcherState.STOPPED, what="the process to finish")
    data = b""
    while not out.queue.empty():
        data += out.queue.get()["data"]
    assert data.decode().splitlines() == [str(i) for i in range(100)]


async def test_kill_one_process_respawns_it(make: Any) -> None:
    w, ev = make(numprocesses=2)
    await w.start()
    victim = w.pids[0]
    await w.kill(victim)
    await wait_for(lambda: victim not in w.pids and len(w.pids) == 2, what="a replacement")
    assert w.state is WatcherState.ACTIVE


async def test_send_signal(make: Any, tmp_path: Path) -> None:
    record = tmp_path / "record"
    pidfile = tmp_path / "pid"
    w, _ = make(cmd=f"{PYTHON} {CHILD} --record {record} --pidfile {pidfile}")
    await w.start()
    await wait_for(pidfile.exists, what="the child to be ready")
    w.send_signal(signal.SIGUSR2)
    await wait_for(lambda: record.exists() and "SIGUSR2" in record.read_text(), what="SIGUSR2")


async def test_hooks_before_start_refusal_keeps_it_stopped(make: Any) -> None:
    calls: list[str] = []

    def refuse(**kw: Any) -> bool:
        calls.append(kw["hook_name"])
        return False

    w, ev = make(hooks={"before_start": refuse})
    await w.start()
    assert calls == ["before_start"]
    assert w.state is WatcherState.STOPPED and w.pids == []
    assert "hook_success" in ev.names()


async def test_after_spawn_and_reap_hooks_get_their_arguments(make: Any) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []

    async def hook(**kw: Any) -> bool:
        seen.append((kw["hook_name"], kw))
        return True

    w, _ = make(hooks={"after_spawn": hook, "after_reap": hook})
    await w.start()
    pid = w.pids[0]
    os.kill(pid, signal.SIGKILL)
    await wait_for(lambda: any(n == "after_reap" for n, _ in seen), what="after_reap")
    after_spawn = next(kw for n, kw in seen if n == "after_spawn")
    assert after_spawn["pid"] == pid and after_spawn["watcher"] is w
    after_reap = next(kw for n, kw in seen if n == "after_reap")
    assert after_reap["process_pid"] == pid and after_reap["exit_code"] == -signal.SIGKILL


async def test_set_options_live_and_with_reload(make: Any) -> None:
    w, ev = make(numprocesses=1)
    await w.start()
    old = w.pids
    assert await w.set_options({"graceful_timeout": 3.0}) is False
    assert w.pids == old and w.graceful_timeout == 3.0
    assert await w.set_options({"env": {"NEW": "1"}}) is True
    assert w.pids != old
    await wait_for(lambda: proc_cmdline(w.pids[0]), what="exec")
    assert proc_environ(w.pids[0]) == {"NEW": "1"}
    assert ev.names().count("updated") == 2


async def test_seed_method_names(make: Any) -> None:
    """The seed documents these Watcher methods; they act on real processes."""
    w, ev = make(numprocesses=2)
    await w.start()
    assert await w.reap_processes() == []
    victim = w.processes[w.pids[0]]
    assert await w.kill_process(victim, signal.SIGUSR1) == -signal.SIGUSR1
    await wait_for(lambda: len(w.pids) == 2 and victim.pid not in w.pids, what="a replacement")
    w.numprocesses = 3
    await w.manage_processes()
    assert len(w.pids) == 3
    w.send_msg("custom", {"x": 1})
    assert ev.items[-1] == ("watcher.w.custom", {"x": 1, "time": ev.items[-1][1]["time"]})
    await w.kill_processes(signal.SIGTERM)
    await wait_for(lambda: len(w.pids) == 3, what="respawns")


async def test_before_signal_refusal_skips_the_stop_signal_but_not_sigkill(make: Any,
                                                                         tmp_path: Path) -> None:
    record = tmp_path / "record"
    pidfile = tmp_path / "pid"
    w, ev = make(cmd=f"{PYTHON} {CHILD} --record {record} --pidfile {pidfile}",
                 graceful_timeout=0.3, hooks={"before_signal": lambda **kw: False})
    await w.start()
    await wait_for(pidfile.exists, what="the child to be ready")
    await w.stop()
    assert not record.exists()  # SIGTERM never reached it
    assert ev.of("reap")[0]["exit_code"] == -signal.SIGKILL


@pytest.mark.parametrize("operation", ["incr", "reload", "sequential"])
async def test_a_refusing_spawn_hook_stops_the_watcher_in_every_operation(
    make: Any, operation: str
) -> None:
    allow = {"spawn": True}
    w, _ = make(numprocesses=2, hooks={"before_spawn": lambda **kw: allow["spawn"]})
    await w.start()
    pids = w.pids
    allow["spawn"] = False
    if operation == "incr":
        await w.incr(1)
    else:
        await w.reload(sequential=operation == "sequential")
    assert w.state is WatcherState.STOPPED and w.pids == []
    assert not any(pid_alive(p) for p in pids)


async def test_shell_ignores_executable_on_both_spawn_paths(make: Any, tmp_path: Path) -> None:
    out = tmp_path / "out"
    w, _ = make(cmd=f"echo shell-ran > {out}", shell=True, executable="/bin/false",
                respawn=False)
    await w.start()
    await wait_for(lambda: out.exists() and out.read_text() == "shell-ran\n", what="the shell")


async def test_output_events_keep_characters_split_between_chunks(make: Any) -> None:
    w, ev = make(cmd="sleep 3600")
    await w.start()
    w.output_wanted = True
    process = w.processes[w.pids[0]]
    text = "héllo wörld\n".encode()
    for i in range(len(text)):  # one byte per chunk: every character is split
        w.router.feed(process, "stdout", text[i:i + 1])
    published = "".join(p["data"] for t, p in ev.items if t == "output.w.stdout")
    assert published == "héllo wörld\n"


async def test_signal_runs_the_signal_hooks(make: Any, tmp_path: Path) -> None:
    """OPTIONS.md §9: before_signal may keep a signal from a process; after_signal follows."""
    record = tmp_path / "record"
    pidfile = tmp_path / "pid"
    calls: list[tuple[str, int]] = []

    def hook(**kw: Any) -> bool:
        calls.append((kw["hook_name"], kw["signum"]))
        return kw["signum"] != signal.SIGUSR1  # refuse USR1 only

    w, _ = make(cmd=f"{PYTHON} {CHILD} --record {record} --pidfile {pidfile}",
                hooks={"before_signal": hook, "after_signal": hook})
    await w.start()
    await wait_for(pidfile.exists, what="the child to be ready")
    await w.signal_processes(signal.SIGUSR1)
    await w.signal_processes(signal.SIGUSR2)
    await wait_for(lambda: record.exists() and "SIGUSR2" in record.read_text(), what="SIGUSR2")
    assert "SIGUSR1" not in record.read_text()
    assert calls == [("before_signal", signal.SIGUSR1), ("before_signal", signal.SIGUSR2),
                     ("after_signal", signal.SIGUSR2)]
