"""``circusd --daemon``: the launching command returns once the daemon is up, or with the
reason and status of its failure to start; a clean exit leaves no socket file or pidfile.

Every daemon is started with a pidfile in the test's temp dir; the ``launch`` fixture reads
the pid from it and stops that pid (SIGTERM, then SIGKILL) at teardown.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from circus.cli.circusd import wait_for_daemon
from tests.conftest import pid_alive, wait_until
from tests.e2e.conftest import CIRCUSCTL, CIRCUSD

LAUNCH_TIMEOUT = 30.0  # the launching command must return within this


def call(endpoint: str, command: str, timeout: float = 5.0) -> dict[str, Any]:
    """One request on a fresh DEALER; fails the test without an answer within *timeout*."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    try:
        sock.connect(endpoint)
        sock.send(json.dumps({"id": uuid.uuid4().hex, "command": command}).encode())
        if not sock.poll(timeout * 1000):
            pytest.fail(f"no answer to {command!r} on {endpoint} within {timeout}s")
        return json.loads(sock.recv())  # type: ignore[no-any-return]
    finally:
        sock.close()
        ctx.term()


def inode(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_dev, st.st_ino


class Launcher:
    """Writes configurations and runs ``circusd --daemon`` on them in one temp dir."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.started: list[int] = []  # daemon pids, read from their pidfiles

    def ini(self, name: str, body: str = "[watcher:w]\ncmd = sleep 3600\n", *,
            endpoint: str | None = None, pubsub: str | None = None, extra: str = "") -> Path:
        path = self.tmp / f"{name}.ini"
        path.write_text(f"[circus]\nendpoint = {endpoint or f'ipc://{self.tmp}/{name}.c'}\n"
                        f"pubsub_endpoint = {pubsub or f'ipc://{self.tmp}/{name}.p'}\n"
                        f"{extra}{body}")
        return path

    def run(self, ini: Path, pidfile: Path, *args: str) -> subprocess.CompletedProcess[str]:
        """``circusd --daemon``; returns once the launching command has exited. A daemon it
        reports up is recorded from *pidfile*, to be stopped at teardown."""
        env = {**os.environ, "XDG_RUNTIME_DIR": str(self.tmp)}  # the process record here
        result = subprocess.run(
            [*CIRCUSD, "--daemon", "--pidfile", str(pidfile),
             "--log-output", str(self.tmp / f"{ini.stem}.log"), *args, str(ini)],
            capture_output=True, text=True, cwd=self.tmp, env=env, timeout=LAUNCH_TIMEOUT)
        if result.returncode == 0:
            # up means the pidfile is written: no waiting here
            self.started.append(int(pidfile.read_text()))
        elif pidfile.exists():  # refused, or not up in time yet running: stop it too
            pid = int(pidfile.read_text() or 0)
            if pid > 0 and pid not in self.started and pid_alive(pid):
                self.started.append(pid)
        return result

    def stop(self) -> None:
        for pid in self.started:
            if not pid_alive(pid):
                continue
            os.kill(pid, signal.SIGTERM)
            try:
                wait_until(lambda pid=pid: not pid_alive(pid), what=f"daemon {pid} to exit",
                           timeout=30)
            finally:
                if pid_alive(pid):
                    os.kill(pid, signal.SIGKILL)


@pytest.fixture
def launch(short_tmp: Path) -> Iterator[Launcher]:
    launcher = Launcher(short_tmp)
    try:
        yield launcher
    finally:
        launcher.stop()


def one_line(text: str) -> str:
    assert text.count("\n") == 1 and text.endswith("\n"), text  # one line, no traceback
    return text


# -- up means up -------------------------------------------------------------------------------


def test_the_launching_command_returns_once_every_watcher_started(launch: Launcher) -> None:
    """warmup_delay holds the second watcher back 1 s: the command waits for it."""
    ini = launch.ini("a", "[watcher:w1]\ncmd = sleep 3600\n[watcher:w2]\ncmd = sleep 3600\n",
                     extra="warmup_delay = 1\n")
    pidfile = launch.tmp / "a.pid"
    started = time.monotonic()
    result = launch.run(ini, pidfile)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started >= 1.0
    assert result.stderr == "" and result.stdout == ""
    pid = int(pidfile.read_text())  # written before the command returned
    assert os.getsid(pid) != os.getsid(0)  # detached from our session
    assert (launch.tmp / "a.c").exists() and (launch.tmp / "a.p").exists()
    reply = call(f"ipc://{launch.tmp}/a.c", "status")
    assert reply["statuses"] == {"w1": "active", "w2": "active"}


# -- refusals reach the terminal -----------------------------------------------------------------


def test_a_held_pidfile_is_refused_on_the_terminal(launch: Launcher) -> None:
    pidfile = launch.tmp / "shared.pid"
    assert launch.run(launch.ini("first"), pidfile).returncode == 0
    first = int(pidfile.read_text())
    result = launch.run(launch.ini("second"), pidfile)
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert line.startswith("circusd: cannot start: pidfile") and str(first) in line
    assert str(pidfile) in line
    assert pidfile.read_text() == f"{first}\n"
    assert not (launch.tmp / "second.c").exists()  # refused before anything was bound
    assert call(f"ipc://{launch.tmp}/first.c", "status")["status"] == "ok"


@pytest.mark.parametrize("left_by", ["a dead process", "a zombie"])
def test_a_pidfile_of_a_dead_circusd_is_taken_over(launch: Launcher, left_by: str) -> None:
    """A circusd killed a moment ago may not be reaped yet: its zombie holds nothing."""
    child = subprocess.Popen(["true"])
    pidfile = launch.tmp / "stale.pid"
    pidfile.write_text(f"{child.pid}\n")
    try:
        if left_by == "a dead process":
            child.wait(timeout=10)
        else:
            wait_until(lambda: not pid_alive(child.pid), what="the child to be a zombie")
            assert Path(f"/proc/{child.pid}").exists()  # not reaped: a zombie
        result = launch.run(launch.ini("stale"), pidfile)
    finally:
        child.wait(timeout=10)
    assert result.returncode == 0, result.stderr
    assert int(pidfile.read_text()) == launch.started[-1] != child.pid


def test_a_bad_config_exits_78_naming_file_and_line(launch: Launcher) -> None:
    ini = launch.ini("bad", "[watcher:w]\ncmd = sleep 3600\nnumprocesses = lots\n")
    pidfile = launch.tmp / "bad.pid"
    result = launch.run(ini, pidfile)
    assert result.returncode == 78
    line = one_line(result.stderr)
    assert f"{ini}:6" in line and "numprocesses" in line
    assert not pidfile.exists()


@pytest.mark.parametrize("taken", ["endpoint", "pubsub_endpoint"])
def test_an_ipc_endpoint_of_a_live_daemon_is_refused_and_kept(
    launch: Launcher, taken: str
) -> None:
    """The refused daemon reports why, and the first one's socket files stay its own."""
    assert launch.run(launch.ini("first"), launch.tmp / "first.pid").returncode == 0
    control, events = launch.tmp / "first.c", launch.tmp / "first.p"
    before = inode(control), inode(events)
    if taken == "endpoint":
        ini = launch.ini("second", endpoint=f"ipc://{control}")
    else:
        ini = launch.ini("second", pubsub=f"ipc://{events}")
    pidfile = launch.tmp / "second.pid"
    result = launch.run(ini, pidfile)
    assert result.returncode == 1
    line = one_line(result.stderr)
    taken_path = control if taken == "endpoint" else events
    assert f"cannot bind ipc://{taken_path}: another process is listening there" in line
    assert (inode(control), inode(events)) == before
    assert not pidfile.exists()
    assert not (launch.tmp / "second.c").exists() and not (launch.tmp / "second.p").exists()
    assert call(f"ipc://{control}", "status")["statuses"] == {"w": "active"}


def test_a_tcp_port_in_use_is_refused(launch: Launcher) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        ini = launch.ini("tcp", endpoint=f"tcp://127.0.0.1:{port}")
        pidfile = launch.tmp / "tcp.pid"
        result = launch.run(ini, pidfile)
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert f"cannot bind tcp://127.0.0.1:{port}" in line
    assert not pidfile.exists()
    assert not (launch.tmp / "tcp.p").exists()  # bound before the refusal, then removed


def test_a_second_daemon_on_the_same_config_is_refused_naming_the_first(
    launch: Launcher,
) -> None:
    ini = launch.ini("same")
    assert launch.run(ini, launch.tmp / "one.pid").returncode == 0
    first = int((launch.tmp / "one.pid").read_text())
    result = launch.run(ini, launch.tmp / "two.pid")
    assert result.returncode == 1
    assert f"circusd pid {first} already runs this configuration" in one_line(result.stderr)
    assert call(f"ipc://{launch.tmp}/same.c", "status")["status"] == "ok"


# -- a clean exit leaves nothing behind ----------------------------------------------------------


def _quit(endpoint: str) -> None:
    result = subprocess.run([*CIRCUSCTL, "--endpoint", endpoint, "--timeout", "10", "quit"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("how", ["quit", "SIGTERM", "SIGINT"])
def test_a_clean_exit_removes_the_socket_files_and_the_pidfile(
    launch: Launcher, how: str
) -> None:
    ini = launch.ini("clean")
    pidfile = launch.tmp / "clean.pid"
    assert launch.run(ini, pidfile).returncode == 0
    pid = int(pidfile.read_text())
    control, events = launch.tmp / "clean.c", launch.tmp / "clean.p"
    assert control.exists() and events.exists()
    if how == "quit":
        _quit(f"ipc://{control}")
    else:
        os.kill(pid, signal.Signals[how])
    wait_until(lambda: not pid_alive(pid), what="the daemon to exit", timeout=30)
    assert not control.exists()
    assert not events.exists()
    assert not pidfile.exists()
    # and the same endpoints serve a new daemon at once
    assert launch.run(ini, pidfile).returncode == 0


def test_a_socket_file_that_is_no_longer_ours_is_left(launch: Launcher) -> None:
    """A file put at the path after the daemon's own was deleted belongs to someone else."""
    ini = launch.ini("moved")
    pidfile = launch.tmp / "moved.pid"
    assert launch.run(ini, pidfile).returncode == 0
    pid = int(pidfile.read_text())
    control = launch.tmp / "moved.c"
    control.unlink()
    with socket.socket(socket.AF_UNIX) as other:
        other.bind(str(control))
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not pid_alive(pid), what="the daemon to exit", timeout=30)
        assert control.exists()
    control.unlink()


# -- the launching command's wait ----------------------------------------------------------------


def _pipe_with(data: bytes) -> tuple[int, int]:
    read_fd, write_fd = os.pipe()
    os.write(write_fd, data)
    return read_fd, write_fd


def test_the_wait_has_a_deadline(capsys: pytest.CaptureFixture[str]) -> None:
    read_fd, write_fd = _pipe_with(b"pid 4242\n")
    try:
        started = time.monotonic()
        assert wait_for_daemon(read_fd, 0.3) == 1
        assert time.monotonic() - started < 5
    finally:
        os.close(write_fd)
    line = one_line(capsys.readouterr().err)
    assert "the daemon (pid 4242) is not up after 0.3s" in line


def test_a_daemon_gone_without_a_word_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    read_fd, write_fd = _pipe_with(b"pid 4242\n")
    os.close(write_fd)
    assert wait_for_daemon(read_fd, 5) == 1
    assert "the daemon (pid 4242) exited before it was up" in one_line(capsys.readouterr().err)


@pytest.mark.parametrize(("report", "status"), [(b"ready\n", 0), (b"failed 78 why\n", 78)])
def test_the_daemon_s_word_is_the_exit_status(
    capsys: pytest.CaptureFixture[str], report: bytes, status: int
) -> None:
    read_fd, write_fd = _pipe_with(b"pid 4242\n" + report)
    try:
        assert wait_for_daemon(read_fd, 5) == status
    finally:
        os.close(write_fd)
    assert capsys.readouterr().err == ("" if status == 0 else "circusd: cannot start: why\n")
