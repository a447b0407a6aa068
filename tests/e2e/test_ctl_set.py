"""``set`` of every watcher option takes effect (OPTIONS.md §2): live, or through a graceful
reload that gives new processes; nothing is answered "ok" and ignored.

Each change goes through ``circusctl set`` (values typed by key, as a user types them) and
is checked on the real processes: /proc (command line, cwd, umask, limits, environment,
descriptors), signals they record, files a hook or a stream writes.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from circus.client import CircusClient
from circus.options import WATCHER_OPTIONS
from tests.conftest import (
    PYTHON,
    pid_alive,
    proc_cmdline,
    proc_environ,
    python_cmd,
    stays_true,
    wait_until,
)
from tests.e2e.conftest import Daemon, recv_event
from tests.e2e.ctl_support import catches, children_of, received, recorder

Start = Callable[..., Daemon]
SLEEP = python_cmd("import time; time.sleep(600)")
STUBBORN = python_cmd(
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)")


def live(d: Daemon, name: str, n: int, timeout: float = 10) -> list[int]:
    def check() -> list[int] | None:
        pids = d.pids(name)
        return pids if len(pids) == n and all(map(pid_alive, pids)) else None

    return wait_until(check, what=f"{n} live processes in {name}", timeout=timeout)


def set_(d: Daemon, name: str, *pairs: str) -> None:
    res = d.ctl("set", name, *pairs, "--waiting")
    assert res.returncode == 0, (pairs, res.stderr)


def get(d: Daemon, name: str, *keys: str) -> dict[str, object]:
    reply = d.call({"command": "get", "properties": {"name": name, "keys": list(keys)}})
    assert reply["status"] == "ok", reply
    return reply["options"]  # type: ignore[no-any-return]


def status_field(pid: int, field: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return line.split(":", 1)[1].strip()
    raise KeyError(field)


def replaced(d: Daemon, name: str, old: list[int]) -> list[int]:
    """The new pids after a reload (none of *old* left, as many as before)."""
    new = live(d, name, len(old))
    assert not set(new) & set(old)
    assert not any(map(pid_alive, old))
    return new


# Every key of the option table is exercised by one of the tests below.
COVERED = {
    "cmd", "args", "executable", "shell", "shell_args", "working_dir", "uid", "gid", "umask",
    "copy_env", "copy_path", "virtualenv", "virtualenv_py_ver", "numprocesses",
    "max_processes", "warmup_delay", "priority", "singleton", "respawn", "autostart",
    "max_retry", "min_uptime", "backoff_initial", "backoff_factor", "backoff_max",
    "backoff_jitter",
    "graceful_timeout", "stop_signal", "stop_children", "send_hup", "max_age",
    "max_age_variance", "use_sockets", "on_demand", "stdin_socket", "close_child_stdin",
    "close_child_stdout", "close_child_stderr", "check_flapping", "pdeathsig", "essential",
    "cgroup",  # tests/e2e/test_contain_cgroup.py
    # tests/e2e/test_readiness.py
    "ready", "ready_timeout", "ready_interval", "health", "health_interval", "health_timeout",
    "health_failures", "watchdog_sec", "depends_on",
}


def test_every_option_of_the_table_is_covered() -> None:
    assert set(WATCHER_OPTIONS) == COVERED


def test_process_shaping_options_reload_with_new_values(circusd: Start, short_tmp: Path
                                                        ) -> None:
    d = circusd(f"[watcher:w]\ncmd = {SLEEP}\nnumprocesses = 2\n")
    pids = live(d, "w", 2)
    set_(d, "w", "cmd", "sleep 500")
    pids = replaced(d, "w", pids)
    assert proc_cmdline(pids[0]) == ["sleep", "500"]
    set_(d, "w", "cmd", "sleep", "args", "450")
    pids = replaced(d, "w", pids)
    assert proc_cmdline(pids[0]) == ["sleep", "450"]
    set_(d, "w", "cmd", "sleep 400", "args", "")
    pids = replaced(d, "w", pids)
    assert proc_cmdline(pids[0]) == ["sleep", "400"]
    # executable: argv[0] stays the first word of cmd
    set_(d, "w", "cmd", "renamed 300", "executable", "/bin/sleep")
    pids = replaced(d, "w", pids)
    assert proc_cmdline(pids[0]) == ["renamed", "300"]
    assert os.path.realpath(f"/proc/{pids[0]}/exe") == os.path.realpath("/bin/sleep")
    set_(d, "w", "executable", "", "cmd", "sleep 300")
    pids = replaced(d, "w", pids)
    # working_dir, umask
    set_(d, "w", "working_dir", str(short_tmp), "umask", "027")
    pids = replaced(d, "w", pids)
    assert os.readlink(f"/proc/{pids[0]}/cwd") == str(short_tmp)
    assert status_field(pids[0], "Umask") == "0027"
    # uid / gid: the current user and group (anyone may ask for those)
    set_(d, "w", "uid", str(os.getuid()), "gid", str(os.getgid()))
    pids = replaced(d, "w", pids)
    assert status_field(pids[0], "Uid").split()[0] == str(os.getuid())
    assert status_field(pids[0], "Gid").split()[0] == str(os.getgid())
    # shell, shell_args: the line goes to /bin/sh -c as written
    set_(d, "w", "shell", "true", "cmd", "exec sleep $0", "shell_args", "250")
    pids = replaced(d, "w", pids)
    assert proc_cmdline(pids[0]) == ["sleep", "250"]
    set_(d, "w", "shell", "false", "shell_args", "", "cmd", "sleep 300")
    pids = replaced(d, "w", pids)
    assert proc_cmdline(pids[0]) == ["sleep", "300"]


def test_environment_options(circusd: Start, short_tmp: Path) -> None:
    d = circusd(f"[watcher:w]\ncmd = {SLEEP}\n")
    pids = live(d, "w", 1)
    assert proc_environ(pids[0]) == {}
    set_(d, "w", "env", "A=1,B=two")
    pids = replaced(d, "w", pids)
    assert proc_environ(pids[0]) == {"A": "1", "B": "two"}
    set_(d, "w", "copy_env", "true")
    pids = replaced(d, "w", pids)
    env = proc_environ(pids[0])
    assert env["A"] == "1" and "PATH" in env
    set_(d, "w", "copy_path", "true")
    pids = replaced(d, "w", pids)
    assert proc_environ(pids[0])["PYTHONPATH"]  # circusd's sys.path
    venv = short_tmp / "venv"
    (venv / "lib" / "python3.9" / "site-packages").mkdir(parents=True)
    set_(d, "w", "virtualenv", str(venv), "virtualenv_py_ver", "3.9")
    pids = replaced(d, "w", pids)
    env = proc_environ(pids[0])
    assert env["PATH"].split(os.pathsep)[0] == str(venv / "bin")
    assert str(venv / "lib" / "python3.9" / "site-packages") in env["PYTHONPATH"]


def test_a_bad_env_value_is_refused_from_circusctl_and_from_a_client(circusd: Start) -> None:
    """A malformed ``env`` is refused naming it: by circusctl before sending (exit 2, the
    error and a usage line, no traceback) and by circusd when a Python client sends it
    anyway (errno 3). The watcher keeps its processes and their environment."""
    d = circusd(f"[watcher:w]\ncmd = {SLEEP}\nenv = A=1\n")
    pids = live(d, "w", 1)
    res = d.ctl("set", "w", "env", "B=2, oops")
    assert res.returncode == 2, res
    error, usage = res.stderr.splitlines()  # the error, then the usage line of set
    assert "invalid value for 'env'" in error and "'oops'" in error
    assert usage.startswith("usage: circusctl set ") and "Traceback" not in res.stderr
    client = CircusClient(endpoint=d.endpoint, timeout=10)
    try:
        for env in ("B=2, oops", ["B=2"]):
            reply = client.call({"command": "set", "properties": {
                "name": "w", "options": {"env": env}, "waiting": True}})
            assert reply["status"] == "error" and reply["errno"] == 3, (env, reply)
            assert "'env'" in reply["reason"], reply
    finally:
        client.stop()
    assert get(d, "w", "env") == {"env": {"A": "1"}}
    assert d.pids("w") == pids and proc_environ(pids[0]) == {"A": "1"}


def test_descriptor_and_limit_options(circusd: Start) -> None:
    d = circusd(f"[watcher:w]\ncmd = {SLEEP}\n")
    pids = live(d, "w", 1)
    assert os.readlink(f"/proc/{pids[0]}/fd/0") == "/dev/null"
    set_(d, "w", "close_child_stdin", "false", "close_child_stdout", "true",
         "close_child_stderr", "true")
    pids = replaced(d, "w", pids)
    # stdin is now circusd's own
    assert os.readlink(f"/proc/{pids[0]}/fd/0") == os.readlink(f"/proc/{d.pid}/fd/0")
    assert os.readlink(f"/proc/{pids[0]}/fd/1") == "/dev/null"
    assert os.readlink(f"/proc/{pids[0]}/fd/2") == "/dev/null"
    set_(d, "w", "rlimit_nofile", "77")
    pids = replaced(d, "w", pids)
    limits = Path(f"/proc/{pids[0]}/limits").read_text().splitlines()
    assert any(line.startswith("Max open files") and line.split()[3:5] == ["77", "77"]
               for line in limits)
    # use_sockets: processes inherit circusd's sockets (none here): a reload, new pids
    set_(d, "w", "use_sockets", "true")
    pids = replaced(d, "w", pids)
    assert get(d, "w", "use_sockets", "rlimit_nofile") == {"use_sockets": True,
                                                           "rlimit_nofile": 77}


def test_count_and_pacing_options_apply_live(circusd: Start) -> None:
    d = circusd(f"[watcher:w]\ncmd = {SLEEP}\n[watcher:v]\ncmd = {SLEEP}\n")
    (first,) = live(d, "w", 1)
    set_(d, "w", "numprocesses", "3")
    assert first in live(d, "w", 3)
    set_(d, "w", "warmup_delay", "0.3")
    started = time.monotonic()
    assert d.ctl("incr", "w", "2", "--waiting").stdout == "5\n"
    assert time.monotonic() - started >= 0.3  # one pause between the two spawns
    assert first in live(d, "w", 5)
    set_(d, "w", "warmup_delay", "0", "numprocesses", "1")
    assert live(d, "w", 1)
    # singleton: incr no longer adds a process
    set_(d, "w", "singleton", "true")
    assert "Singleton" in d.ctl("incr", "w").stdout
    res = d.ctl("set", "w", "numprocesses", "2")
    assert res.returncode == 3 and "singleton" in res.stderr
    set_(d, "w", "singleton", "false")
    # max_processes: the watcher's own ceiling; a larger target is refused
    set_(d, "w", "max_processes", "2")
    res = d.ctl("incr", "w", "2")
    assert res.returncode != 0 and "its max_processes" in res.stdout + res.stderr, res
    assert d.ctl("incr", "w").stdout == "2\n"
    # priority: start order of the whole arbiter (higher first)
    set_(d, "w", "priority", "10")
    set_(d, "v", "priority", "20")
    sub = d.subscribe("watcher.")
    try:
        assert d.ctl("stop", "--waiting").returncode == 0
        assert d.ctl("start", "--waiting").returncode == 0
        starts: list[str] = []
        while sub.poll(1000) and len(starts) < 2:
            topic = sub.recv_multipart()[0].decode()
            if topic.endswith(".start"):
                starts.append(topic)
        assert starts == ["watcher.v.start", "watcher.w.start"]
    finally:
        sub.close()
    # autostart and on_demand decide how circusd starts the watcher: stored, shown
    set_(d, "w", "autostart", "false", "on_demand", "true", "check_flapping", "false")
    assert get(d, "w", "autostart", "on_demand", "check_flapping", "priority") == {
        "autostart": False, "on_demand": True, "check_flapping": False, "priority": 10}


def test_respawn_and_max_retry(circusd: Start) -> None:
    d = circusd(f"[watcher:w]\ncmd = {SLEEP}\nnumprocesses = 2\n")
    pids = live(d, "w", 2)
    set_(d, "w", "respawn", "false")
    os.kill(pids[0], signal.SIGKILL)
    wait_until(lambda: d.pids("w") == [pids[1]], what="the dead process to be reaped")
    # a respawn would come at once: watch for one over a while, failing at the first sight
    stays_true(lambda: d.pids("w") == [pids[1]], for_=0.5, interval=0.05,
               what="no respawn with respawn = false")
    set_(d, "w", "respawn", "true")  # the missing process comes back at once
    assert pids[1] in live(d, "w", 2)
    # max_retry: 0 failed spawns allowed, so a broken command stops the watcher
    set_(d, "w", "max_retry", "0")
    d.ctl("set", "w", "cmd", "/nonexistent/program", "--waiting")
    wait_until(lambda: d.call({"command": "status", "properties": {"name": "w"}})["status"]
               == "stopped", what="the watcher to give up")


def test_restart_policy_options(circusd: Start) -> None:
    """The backoff and min_uptime set live change how a crash loop is retried."""
    d = circusd("[watcher:c]\ncmd = sh -c 'exit 3'\nmax_retry = -1\n")

    def detail() -> dict[str, Any]:
        reply = d.call({"command": "status", "properties": {"name": "c", "details": True}})
        return dict(reply["details"]["c"])

    set_(d, "c", "backoff_initial", "0.02", "backoff_max", "0.04", "backoff_jitter", "0",
         "backoff_factor", "1.5", "min_uptime", "5")
    failures = detail()["failures"]
    # waits of at most 40 ms: a dozen more failed starts come quickly
    wait_until(lambda: detail()["failures"] >= failures + 12, what="quick retries",
               timeout=10)
    waits = [w for w in (detail()["next_spawn_in"] for _ in range(50)) if w is not None]
    assert waits and max(waits) <= 0.04, waits
    assert get(d, "c", "min_uptime", "backoff_factor") == {"min_uptime": 5.0,
                                                           "backoff_factor": 1.5}


def test_stop_options(circusd: Start, short_tmp: Path) -> None:
    rec = short_tmp / "rec"
    rec.mkdir()
    d = circusd(f"[watcher:s]\ncmd = {STUBBORN}\n"
                f"[watcher:r]\ncmd = {recorder(rec, fork_child=True)}\n")
    (stubborn,) = live(d, "s", 1)
    wait_until(lambda: catches(stubborn, signal.SIGTERM) or status_field(
        stubborn, "SigIgn") != "0000000000000000", what="SIGTERM ignored")
    set_(d, "s", "graceful_timeout", "0.5")
    started = time.monotonic()
    assert d.ctl("stop", "s", "--waiting").returncode == 0
    assert 0.4 <= time.monotonic() - started < 5
    assert not pid_alive(stubborn)
    (pid,) = live(d, "r", 1)
    (child,) = wait_until(lambda: children_of(pid), what="the forked child")
    wait_until(lambda: catches(child, signal.SIGUSR1), what="the child's handlers")
    set_(d, "r", "stop_signal", "USR1", "stop_children", "true", "graceful_timeout", "0.3")
    assert get(d, "r", "stop_signal", "stop_children") == {"stop_signal": 10,
                                                          "stop_children": True}
    assert d.ctl("stop", "r", "--waiting").returncode == 0
    assert received(rec, pid) == [signal.SIGUSR1]
    assert received(rec, child) == [signal.SIGUSR1]
    assert not pid_alive(pid) and not pid_alive(child)


def test_send_hup_and_max_age(circusd: Start, short_tmp: Path) -> None:
    rec = short_tmp / "rec"
    rec.mkdir()
    d = circusd(f"[watcher:r]\ncmd = {recorder(rec)}\n[watcher:old]\ncmd = {SLEEP}\n")
    pids = live(d, "r", 1)
    wait_until(lambda: catches(pids[0], signal.SIGHUP), what="handlers")
    set_(d, "r", "send_hup", "true")
    assert d.ctl("reload", "r", "--waiting").returncode == 0
    assert d.pids("r") == pids
    wait_until(lambda: received(rec, pids[0]) == [signal.SIGHUP], what="SIGHUP")
    old = live(d, "old", 1)
    set_(d, "old", "max_age", "1", "max_age_variance", "0")
    new = replaced(d, "old", old)
    assert get(d, "old", "max_age", "max_age_variance") == {"max_age": 1,
                                                           "max_age_variance": 0}
    # the new process is recycled too, about a second after it started
    wait_until(lambda: not pid_alive(new[0]), what="max_age to recycle", timeout=10)
    live(d, "old", 1)


def test_streams_keep_their_class(circusd: Start, short_tmp: Path) -> None:
    """Bug 6 of Circus 0.19: a set of a stream key rebuilt a plain FileStream."""
    first, second = short_tmp / "one.log", short_tmp / "two.log"
    script = short_tmp / "talker.py"
    script.write_text("import sys, time\nwhile True:\n    print('tick', flush=True)\n"
                      "    print('tock', file=sys.stderr, flush=True)\n    time.sleep(0.05)\n")
    talker = f"{PYTHON} {script}"
    d = circusd(f"[watcher:t]\ncmd = {talker}\n"
                f"stdout_stream.class = WatchedFileStream\nstdout_stream.filename = {first}\n")
    wait_until(lambda: first.exists() and b"tick" in first.read_bytes(), what="first.log")
    pids = d.pids("t")
    set_(d, "t", "stdout_stream.filename", str(second))
    wait_until(lambda: second.exists() and b"tick" in second.read_bytes(), what="two.log")
    assert d.pids("t") == pids  # swapped live: the stream existed
    conf = get(d, "t", "stdout_stream_conf")["stdout_stream_conf"]
    assert conf["class"] == "WatchedFileStream" and conf["filename"] == str(second)  # type: ignore[index]
    # a stream on stderr, which had none: output is always read, so it is swapped in live
    third = short_tmp / "err.log"
    set_(d, "t", "stderr_stream.filename", str(third))
    wait_until(lambda: third.exists() and b"tock" in third.read_bytes(), what="err.log")
    assert d.pids("t") == pids


HOOK = """\
from pathlib import Path


def mark(watcher, arbiter, hook_name, **kwargs):
    Path(MARKS, hook_name).write_text(watcher.name)
    return True
"""


def test_hooks_and_free_form_keys(circusd: Start, short_tmp: Path) -> None:
    marks = short_tmp / "marks"
    marks.mkdir()
    (short_tmp / "ctlhooks.py").write_text(f"MARKS = {str(marks)!r}\n" + HOOK)
    d = circusd(f"[watcher:w]\ncmd = {SLEEP}\nflapping.attempts = 2\n")
    live(d, "w", 1)
    set_(d, "w", "hooks.after_start", "ctlhooks.mark", "hooks", "before_stop:ctlhooks.mark")
    assert d.ctl("restart", "w", "--waiting").returncode == 0
    assert (marks / "before_stop").read_text() == "w"
    assert (marks / "after_start").read_text() == "w"
    assert get(d, "w", "hooks.after_start")["hooks.after_start"] == "ctlhooks.mark"
    # free-form keys are kept for plugins, and announced
    sub = d.subscribe("watcher.w.updated")
    try:
        set_(d, "w", "flapping.attempts", "5")
        assert recv_event(sub)[0] == "watcher.w.updated"
    finally:
        sub.close()
    assert get(d, "w", "flapping.attempts") == {"flapping.attempts": "5"}


@pytest.mark.parametrize(("key", "value", "reason"), [
    ("numprocesses", "-1", "must not be negative"),
    ("working_dir", "/nonexistent/dir", "no directory"),
    ("uid", "no-such-user-x", "no user"),
    ("gid", "no-such-group-x", "no group"),
    ("hooks.after_start", "nosuchmodule.fn", "hooks.after_start"),
    ("stdout_stream.class", "NoSuchStream", "stdout_stream"),
])
def test_values_that_cannot_work_are_refused(circusd: Start, key: str, value: str,
                                             reason: str) -> None:
    d = circusd(f"[watcher:w]\ncmd = {SLEEP}\n")
    pids = live(d, "w", 1)
    res = d.ctl("set", "w", key, value)
    assert res.returncode in (2, 3), res
    assert reason in res.stderr
    assert d.pids("w") == pids


def test_stdin_socket_is_stored(circusd: Start) -> None:
    """stdin_socket names a [socket:NAME]; without sockets the processes keep /dev/null."""
    d = circusd(f"[watcher:w]\ncmd = {PYTHON} -c 'import time; time.sleep(600)'\n")
    pids = live(d, "w", 1)
    set_(d, "w", "stdin_socket", "web")
    new = replaced(d, "w", pids)
    assert get(d, "w", "stdin_socket") == {"stdin_socket": "web"}
    assert os.readlink(f"/proc/{new[0]}/fd/0") == "/dev/null"


def test_pdeathsig_set_reaches_new_processes(circusd: Start, short_tmp: Path) -> None:
    d = circusd(f"[watcher:w]\ncmd = {recorder(short_tmp)}\n")
    pids = live(d, "w", 1)
    set_(d, "w", "pdeathsig", "USR1")
    (pid,) = replaced(d, "w", pids)
    assert get(d, "w", "pdeathsig")["pdeathsig"] == signal.SIGUSR1
    wait_until(lambda: catches(pid, signal.SIGUSR1), what="the handler", timeout=10)
    try:
        d.proc.kill()  # circusd dies: the process gets the signal it asked for
        d.proc.wait(timeout=10)
        # once per thread of circusd the kernel hands the orphan through as they exit
        wait_until(lambda: set(received(short_tmp, pid)) == {signal.SIGUSR1},
                   what="SIGUSR1 at circusd's death", timeout=5,
                   detail=lambda: f"received {received(short_tmp, pid)}")
    finally:
        os.kill(pid, signal.SIGKILL)


def test_essential_set_live_makes_circusd_exit_with_the_status(circusd: Start) -> None:
    d = circusd(f"[watcher:w]\ncmd = {SLEEP}\n[watcher:other]\ncmd = {SLEEP}\n")
    pids = live(d, "w", 1)
    set_(d, "w", "essential", "true", "respawn", "false")
    assert d.pids("w") == pids  # live: no reload
    os.kill(pids[0], signal.SIGTERM)
    assert d.proc.wait(timeout=20) == 128 + signal.SIGTERM
    assert "essential watcher w ended" in d.log_text()
