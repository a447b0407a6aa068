"""Process: real children, checked against /proc."""

from __future__ import annotations

import asyncio
import os
import pwd
import signal
import time
from pathlib import Path

import pytest

from circus.children import CHILDREN
from circus.process import Process
from circus.spawn import SpawnSpec
from circus.states import ProcessState
from tests.conftest import PYTHON, pid_alive, proc_cmdline, proc_environ, wait_for

CHILD = str(Path(__file__).parent.parent / "fixtures" / "child.py")


def _status_field(pid: int, name: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    raise KeyError(name)


def _limits(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/limits").read_text().splitlines()


def _collected(pid: int) -> bool:
    """True if *pid* is no child of ours any more: not running, not a zombie to reap."""
    try:
        os.waitpid(pid, os.WNOHANG)  # reaps a zombie, which then counts as not collected
    except ChildProcessError:
        return True
    return False


@pytest.fixture
async def procs():  # type: ignore[no-untyped-def]
    started: list[Process] = []
    yield started
    for p in started:
        if p.returncode is None:
            p.kill_group(signal.SIGKILL)
            await asyncio.wait_for(p.wait(), 10)


async def test_spawn_runs_the_command_with_an_empty_environment(procs: list[Process]) -> None:
    p = Process(1, SpawnSpec("sleep 30"), name="t")
    procs.append(p)
    assert pid_alive(p.pid)
    assert await wait_for(lambda: proc_cmdline(p.pid), what="exec") == ["sleep", "30"]
    assert proc_environ(p.pid) == {}
    # its own session and process group
    assert os.getpgid(p.pid) == p.pid
    assert os.getsid(p.pid) == p.pid


@pytest.mark.parametrize("how", ["sigchld", "pidfd"])
async def test_death_is_seen_at_once(procs: list[Process], how: str) -> None:
    """On SIGCHLD with no descriptor per process; by a pidfd where the loop cannot have a
    signal handler (circus/children.py)."""
    if how == "sigchld":
        assert CHILDREN.listen()  # the test's loop runs in the main thread
    try:
        await _death_is_seen_at_once(procs, how)
    finally:
        if how == "sigchld":
            CHILDREN.unlisten()


async def _death_is_seen_at_once(procs: list[Process], how: str) -> None:
    exits: list[Process] = []
    p = Process(1, SpawnSpec("sleep 30"), on_exit=exits.append, spawn=False)
    await p.start()  # from the spawning thread
    procs.append(p)
    assert (p.pid in CHILDREN._pidfds) is (how == "pidfd")
    start = time.monotonic()
    os.kill(p.pid, signal.SIGKILL)
    code = await asyncio.wait_for(p.wait(), 5)
    assert code == -signal.SIGKILL
    assert exits == [p]
    # the exit is collected, not left as a zombie
    assert _collected(p.pid)
    assert time.monotonic() - start < 1.0
    assert p.pid not in CHILDREN.known and not CHILDREN._pidfds


async def test_a_child_that_dies_at_once_is_still_reported() -> None:
    """Its status may be collected before its Process registers: it is kept for it."""
    assert CHILDREN.listen()
    try:
        exits: list[Process] = []
        p = Process(1, SpawnSpec("sh -c 'exit 3'"), on_exit=exits.append,
                    spawn=False)
        await p.start()
        assert await asyncio.wait_for(p.wait(), 10) == 3
        assert exits == [p] and _collected(p.pid)
    finally:
        CHILDREN.unlisten()


async def test_exit_status_is_reported(procs: list[Process]) -> None:
    p = Process(1, SpawnSpec(f"{PYTHON} -c 'raise SystemExit(7)'"))
    procs.append(p)
    assert await asyncio.wait_for(p.wait(), 10) == 7


async def test_args_executable_and_working_dir(procs: list[Process], tmp_path: Path) -> None:
    p = Process(1, SpawnSpec("mysleeper", args=["30"], executable="/bin/sleep",
                                  working_dir=str(tmp_path)))
    procs.append(p)
    assert await wait_for(lambda: proc_cmdline(p.pid), what="exec") == ["mysleeper", "30"]
    assert os.readlink(f"/proc/{p.pid}/cwd") == str(tmp_path)


async def test_args_string_is_split_like_a_shell(procs: list[Process]) -> None:
    p = Process(1, SpawnSpec("sleep", args="'30'"))
    procs.append(p)
    assert await wait_for(lambda: proc_cmdline(p.pid), what="exec") == ["sleep", "30"]


async def test_shell_passes_the_command_line_as_written(procs: list[Process],
                                                         tmp_path: Path) -> None:
    """OPTIONS.md §10 bug 3: pipes, redirections and $VAR reach the shell intact."""
    out = tmp_path / "out"
    p = Process(1, SpawnSpec(f"echo $GREETING | tr a-z A-Z > {out}", shell=True,
                          env={"GREETING": "hello", "PATH": os.defpath}))
    procs.append(p)
    assert await asyncio.wait_for(p.wait(), 10) == 0
    assert out.read_text() == "HELLO\n"


async def test_shell_args_become_positional_parameters(procs: list[Process],
                                                        tmp_path: Path) -> None:
    out = tmp_path / "out"
    p = Process(1, SpawnSpec(f'echo "$0-$1" > {out}', shell=True, shell_args="zero one",
                          env={"PATH": os.defpath}))
    procs.append(p)
    assert await asyncio.wait_for(p.wait(), 10) == 0
    assert out.read_text() == "zero-one\n"


async def test_umask_and_rlimits_apply_in_the_child(procs: list[Process]) -> None:
    p = Process(1, SpawnSpec("sleep 30", umask=0o027, rlimits={"nofile": 100, "core": None}))
    procs.append(p)
    assert _status_field(p.pid, "Umask") == "0027"
    limits = _limits(p.pid)
    assert any(line.startswith("Max open files") and line.split()[3:5] == ["100", "100"]
               for line in limits)
    assert any(line.startswith("Max core file size") and "unlimited" in line
               for line in limits)


async def test_stdin_is_dev_null_unless_asked(procs: list[Process]) -> None:
    p = Process(1, SpawnSpec("sleep 30"))
    procs.append(p)
    assert os.readlink(f"/proc/{p.pid}/fd/0") == "/dev/null"


async def test_close_child_stdout_and_stderr(procs: list[Process]) -> None:
    p = Process(1, SpawnSpec("sleep 30", close_child_stdout=True, close_child_stderr=True))
    procs.append(p)
    assert os.readlink(f"/proc/{p.pid}/fd/1") == "/dev/null"
    assert os.readlink(f"/proc/{p.pid}/fd/2") == "/dev/null"


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
async def test_uid_and_gid(procs: list[Process]) -> None:
    nobody = pwd.getpwnam("nobody")
    p = Process(1, SpawnSpec("sleep 30", uid="nobody"))
    procs.append(p)
    assert _status_field(p.pid, "Uid").split()[0] == str(nobody.pw_uid)
    assert _status_field(p.pid, "Gid").split()[0] == str(nobody.pw_gid)


async def test_missing_program_raises_at_spawn() -> None:
    with pytest.raises(FileNotFoundError):
        Process(1, SpawnSpec("/nonexistent/program"))


async def test_output_written_just_before_exit_is_not_lost(procs: list[Process]) -> None:
    chunks: list[bytes] = []
    code = "import sys; sys.stdout.write(''.join(f'{i}\\n' for i in range(20000)))"
    p = Process(1, SpawnSpec(PYTHON, args=["-c", code], pipe_stdout=True),
                on_output=lambda proc, name, data: chunks.append(data))
    procs.append(p)
    assert await asyncio.wait_for(p.wait(), 10) == 0
    lines = b"".join(chunks).decode().splitlines()
    assert lines == [str(i) for i in range(20000)]


async def test_stop_sends_the_signal_and_returns_the_status(procs: list[Process]) -> None:
    sent: list[tuple[int, int]] = []
    p = Process(1, SpawnSpec("sleep 30"))
    procs.append(p)
    code = await asyncio.wait_for(p.stop(signal.SIGTERM, 5, notify=lambda *a: sent.append(a)),
                                  10)
    assert code == -signal.SIGTERM
    assert sent == [(p.pid, signal.SIGTERM)]


async def test_life_cycle_states(procs: list[Process]) -> None:
    """running, then exited (on its own) or stopping and stopped (asked to stop)."""
    later = Process(1, SpawnSpec("sleep 30"), spawn=False)
    assert later.state is ProcessState.CREATED and later.pid == 0
    later.spawn()
    procs.append(later)
    assert later.state is ProcessState.RUNNING and not later.stopping
    stopping = asyncio.ensure_future(later.stop(signal.SIGTERM, 5))
    await asyncio.sleep(0)
    assert later.state is ProcessState.STOPPING and later.stopping
    await asyncio.wait_for(stopping, 10)
    assert later.state is ProcessState.STOPPED and later.stopping

    crash = Process(1, SpawnSpec(f"{PYTHON} -c 'raise SystemExit(3)'"))
    procs.append(crash)
    assert await asyncio.wait_for(crash.wait(), 10) == 3
    assert crash.state is ProcessState.EXITED and not crash.stopping
    crash.mark_stopping()  # too late: nothing changes
    assert crash.state is ProcessState.EXITED


async def test_stop_sigkills_the_group_after_graceful_timeout(procs: list[Process],
                                                              tmp_path: Path) -> None:
    """A child that ignores SIGTERM, and the grandchild it started, are both killed."""
    pidfile = tmp_path / "pids"
    p = Process(1, SpawnSpec(PYTHON, args=[CHILD, "--ignore-term", "--spawn-child",
                                           "--pidfile", str(pidfile)]))
    procs.append(p)
    text = await wait_for(lambda: pidfile.exists() and pidfile.read_text(), what="the pidfile")
    grandchild = int(text.split()[1])
    start = time.monotonic()
    status = await asyncio.wait_for(p.stop(signal.SIGTERM, 0.5), 10)
    elapsed = time.monotonic() - start
    assert status == -signal.SIGKILL
    assert 0.4 < elapsed < 5
    await wait_for(lambda: not pid_alive(grandchild), what="the grandchild to die")


async def test_stop_cleans_up_what_the_process_left_in_its_group(procs: list[Process],
                                                                 tmp_path: Path) -> None:
    """The main process exits on SIGTERM but its child ignores it: the child goes too."""
    pidfile = tmp_path / "pids"
    p = Process(1, SpawnSpec(PYTHON, args=[CHILD, "--spawn-child", "--child-ignores-term",
                                           "--pidfile", str(pidfile)]))
    procs.append(p)
    text = await wait_for(lambda: pidfile.exists() and pidfile.read_text(), what="the pidfile")
    grandchild = int(text.split()[1])
    await asyncio.wait_for(p.stop(signal.SIGTERM, 1.0), 10)
    await wait_for(lambda: not pid_alive(grandchild), what="the grandchild to die", timeout=5)


async def test_signal_children(procs: list[Process], tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    record = tmp_path / "record"
    p = Process(1, SpawnSpec(PYTHON, args=[CHILD, "--spawn-child", "--child-record",
                                           str(record), "--child-pidfile", str(pidfile)]))
    procs.append(p)
    text = await wait_for(lambda: pidfile.exists() and pidfile.read_text(), what="the pidfile")
    grandchild = int(text.split()[0])
    p.send_signal_children(signal.SIGUSR1)
    await wait_for(record.exists, what="the child to get SIGUSR1")
    assert record.read_text().split()[:2] == [str(grandchild), "SIGUSR1"]


async def test_info_reports_the_process(procs: list[Process]) -> None:
    p = Process(3, SpawnSpec("sleep 30"))
    procs.append(p)
    info = p.info()
    assert isinstance(info, dict)
    assert info["pid"] == p.pid
    assert info["wid"] == 3
    assert info["cmdline"] == "sleep"
    assert set(info) >= {"cpu", "mem", "mem_info1", "mem_info2", "ctime", "username", "nice",
                         "age", "started", "children"}
    os.kill(p.pid, signal.SIGKILL)
    await p.wait()
    assert p.info() == "No such process (stopped?)"


def _zombie(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rfind(")") + 2] == "Z"


async def test_exits_while_hushed_are_collected_once_the_handler_is_back(
        procs: list[Process]) -> None:
    """``Children.hushed`` (a mass stop's signalling loop): no SIGCHLD for the exits inside
    it, so nothing collects them there; once it ends, one pass collects every one."""
    assert CHILDREN.listen()
    try:
        exits: list[Process] = []
        batch = [Process(i, SpawnSpec("sleep 30"), on_exit=exits.append, spawn=False)
                 for i in range(1, 4)]
        for p in batch:
            await p.start()
            procs.append(p)
        loop = asyncio.get_running_loop()
        with CHILDREN.hushed():
            assert signal.getsignal(signal.SIGCHLD) == signal.SIG_DFL
            for p in batch:
                os.kill(p.pid, signal.SIGKILL)
            await wait_for(lambda: all(_zombie(p.pid) for p in batch), what="three zombies")
            # a few loop iterations: a SIGCHLD, had one come, would have been handled
            for _ in range(5):
                await asyncio.sleep(0)
            still = [p for p in batch if _zombie(p.pid)]
            assert still == batch and exits == []
        assert signal.getsignal(signal.SIGCHLD) not in (signal.SIG_DFL, signal.SIG_IGN)
        assert loop is asyncio.get_running_loop()
        codes = [await asyncio.wait_for(p.wait(), 5) for p in batch]
        assert codes == [-signal.SIGKILL] * 3 and sorted(exits, key=id) == sorted(batch, key=id)
        assert all(_collected(p.pid) for p in batch)
        # the handler is back: a later death is seen on its own
        late = Process(9, SpawnSpec("sleep 30"), on_exit=exits.append, spawn=False)
        await late.start()
        procs.append(late)
        os.kill(late.pid, signal.SIGKILL)
        assert await asyncio.wait_for(late.wait(), 5) == -signal.SIGKILL
        assert exits[-1] is late
    finally:
        CHILDREN.unlisten()
