"""circusctl as a program: exit statuses, output modes, help, the interactive shell."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq

from circus.commands import get_commands
from tests.conftest import pid_alive, python_cmd, wait_until
from tests.e2e.conftest import CIRCUSCTL, Daemon

Start = Callable[..., Daemon]
SLEEP = python_cmd("import time; time.sleep(600)")
WATCHER = f"[watcher:web]\ncmd = {SLEEP}\nnumprocesses = 2\n"


def circusctl(*args: str, stdin: str | None = None, env: dict[str, str] | None = None,
              timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CIRCUSCTL, *args], capture_output=True, text=True, input=stdin,
                          env=env, timeout=timeout)


@pytest.fixture
def mute(short_tmp: Path) -> Iterator[str]:
    """An endpoint where a ROUTER accepts requests and never answers."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.linger = 0
    endpoint = f"ipc://{short_tmp}/mute"
    sock.bind(endpoint)
    yield endpoint
    sock.close()
    ctx.term()


def test_an_error_reply_exits_3_with_the_reason_on_stderr(circusd: Start) -> None:
    d = circusd(WATCHER)
    res = d.ctl("incr", "nope")
    assert res.returncode == 3
    assert res.stdout == ""
    assert res.stderr == "error: program nope not found\n"


def test_an_unreachable_daemon_exits_69_naming_the_endpoint(short_tmp: Path) -> None:
    endpoint = f"ipc://{short_tmp}/nothing-here"
    started = time.monotonic()
    res = circusctl("--endpoint", endpoint, "--timeout", "0.5", "status")
    assert res.returncode == 69
    assert endpoint in res.stderr and "cannot reach" in res.stderr
    assert time.monotonic() - started < 10


def test_a_daemon_that_does_not_answer_exits_75(mute: str) -> None:
    started = time.monotonic()
    res = circusctl("--endpoint", mute, "--timeout", "0.5", "status")
    assert res.returncode == 75
    assert mute in res.stderr and "did not answer within 0.5s" in res.stderr
    assert time.monotonic() - started < 10


def test_usage_errors_exit_2(circusd: Start) -> None:
    d = circusd(WATCHER)
    for args, text in [
        (("nosuchcommand",), "unknown command 'nosuchcommand'"),
        (("incr",), "usage: circusctl incr <name>"),
        (("incr", "web", "two"), "<nb> must be an integer"),
        (("stop", "web", "--match", "fuzzy"), "--match must be one of"),
        (("stop", "web", "--bogus"), "unknown option --bogus"),
        (("set", "web", "numprocesses"), "usage: circusctl set"),
        (("set", "web", "numprocesses", "x"), "invalid value for 'numprocesses'"),
        (("signal", "web", "x", "9"), "a pid is a number"),
    ]:
        res = d.ctl(*args)
        assert res.returncode == 2, (args, res)
        assert text in res.stderr, (args, res.stderr)
    res = circusctl("--timeout", "soon", "status")
    assert res.returncode == 2 and "--timeout" in res.stderr


def test_endpoint_from_the_environment(circusd: Start) -> None:
    d = circusd(WATCHER)
    env = {**os.environ, "CIRCUSCTL_ENDPOINT": d.endpoint}
    res = circusctl("numwatchers", env=env)
    assert (res.returncode, res.stdout) == (0, "1\n")
    # --endpoint wins over the environment
    env["CIRCUSCTL_ENDPOINT"] = "ipc:///nonexistent/x"
    res = circusctl("--endpoint", d.endpoint, "numwatchers", env=env)
    assert res.stdout == "1\n"


def test_json_and_prettify(circusd: Start) -> None:
    d = circusd(WATCHER)
    wait_until(lambda: len(d.pids("web")) == 2, what="2 processes")
    res = d.ctl("--json", "list", "web")
    reply = json.loads(res.stdout)
    assert res.stdout.count("\n") == 1
    assert reply["status"] == "ok" and len(reply["pids"]) == 2 and "id" in reply
    # global options also work after the command
    assert json.loads(d.ctl("numwatchers", "--json").stdout)["numwatchers"] == 1
    res = d.ctl("--prettify", "status")
    assert res.stdout.startswith("{\n  ")
    assert json.loads(res.stdout)["statuses"] == {"web": "active"}
    failed = d.ctl("--json", "status", "nope")
    assert failed.returncode == 0  # as Circus 0.19: the reply printed carries the error
    assert json.loads(failed.stdout)["errno"] == 3
    assert "program nope not found" in failed.stderr


def test_help_lists_every_command_and_shows_their_docs() -> None:
    res = circusctl("help")
    assert res.returncode == 0
    for name in get_commands():
        assert f"\n  {name} " in res.stdout
    for name, command in get_commands().items():
        res = circusctl("help", name)
        assert res.returncode == 0, name
        assert res.stdout.startswith(f"usage: circusctl {command.usage}\n")
        assert command.short in res.stdout  # plain text: tests/e2e/test_ctl_help.py
    assert circusctl("help", "nope").returncode == 2
    assert circusctl("--help").returncode == 0


def test_version() -> None:
    from circus import __version__

    assert circusctl("--version").stdout == f"{__version__}\n"


def test_the_shell_runs_commands_from_its_input(circusd: Start) -> None:
    d = circusd(WATCHER)
    pids = wait_until(lambda: (p := d.pids("web")) and len(p) == 2 and p, what="2 processes")
    script = "status\nnumprocesses web\n# a comment\n\nincr web 2 --waiting\nhelp numwatchers\n"
    res = circusctl("--endpoint", d.endpoint, stdin=script)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[:3] == ["web: active", "2", "4"]
    assert "Get the number of watchers" in res.stdout
    assert all(map(pid_alive, pids))
    assert len(d.pids("web")) == 4


def test_the_shell_reports_errors_and_keeps_going(circusd: Start) -> None:
    d = circusd(WATCHER)
    res = circusctl("--endpoint", d.endpoint, stdin="status nope\nbogus\nnumwatchers\n")
    assert res.returncode == 3  # the first failure
    assert "error: program nope not found" in res.stderr
    assert "unknown command 'bogus'" in res.stderr
    assert res.stdout == "1\n"


def test_shell_completion_of_commands_watchers_and_flags(circusd: Start) -> None:
    from circus.cli.circusctl import Controller, Shell

    d = circusd(WATCHER + "[watcher:worker]\ncmd = sleep 600\n")
    ctl = Controller(d.endpoint, 5.0)
    try:
        shell = Shell(ctl)
        assert shell.completenames("st") == ["start ", "stats ", "status ", "stop "]
        assert shell.completedefault("w", "stop w", 5, 6) == ["web", "worker"]
        assert shell.completedefault("wo", "incr wo", 5, 7) == ["worker"]
        assert shell.completedefault("--w", "stop web --w", 9, 12) == ["--waiting"]
        assert "numprocesses" in shell.completedefault("num", "set web num", 8, 11)
        assert shell.completedefault("in", "help in", 5, 7) == ["incr "]
    finally:
        ctl.close()


def test_the_interactive_shell_completes_and_keeps_history(circusd: Start,
                                                           short_tmp: Path) -> None:
    """In a terminal: Tab completes a command and a watcher name; history is saved."""
    import pty
    import select

    d = circusd(WATCHER)
    history = short_tmp / "history"
    master, slave = pty.openpty()
    env = {**os.environ, "CIRCUSCTL_HISTORY": str(history), "TERM": "dumb"}
    shell = subprocess.Popen([*CIRCUSCTL, "--endpoint", d.endpoint], stdin=slave,
                             stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    seen = bytearray()

    def read_until(text: bytes, limit: float = 10.0) -> None:
        deadline = time.monotonic() + limit
        while text not in seen:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"{text!r} never came; the terminal showed {bytes(seen)!r}")
            ready, _, _ = select.select([master], [], [], remaining)
            if ready:
                try:
                    seen.extend(os.read(master, 4096))
                except OSError:
                    break

    try:
        read_until(b"(circusctl) ")
        assert b"web: active" in seen
        os.write(master, b"numw\t\n")  # completes to "numwatchers "
        read_until(b"numwatchers \r\n1\r\n")
        os.write(master, b"numprocesses w\t\n")  # the watcher name, asked of circusd
        read_until(b"numprocesses web\r\n2\r\n")
        os.write(master, b"exit\n")
        assert shell.wait(timeout=10) == 0
    finally:
        if shell.poll() is None:
            shell.kill()
            shell.wait()
        os.close(master)
    assert history.read_text().splitlines()[-3:] == ["numwatchers ", "numprocesses web",
                                                     "exit"]


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a socket to another user")
def test_endpoint_owner_owns_the_ipc_files_and_added_watchers(circusd: Start) -> None:
    import pwd

    nobody = pwd.getpwnam("nobody")
    d = circusd(WATCHER, circus_extra="endpoint_owner = nobody")
    st = os.stat(d.endpoint[6:])
    assert (st.st_uid, st.st_mode & 0o777) == (nobody.pw_uid, 0o600)
    reply = d.call({"command": "add", "properties": {"name": "x", "cmd": "sleep 1"}})
    assert reply["errno"] == 3 and "options.uid" in reply["reason"]
    reply = d.call({"command": "add", "properties": {
        "name": "x", "cmd": "sleep 1", "options": {"uid": "nobody"}}})
    assert reply["status"] == "ok", reply
