"""The readiness benchmark's helper processes, run for real: the notify worker sends
``READY=1`` when signalled and stamps the time first; the listener counts what it accepts;
the connection floor connects at its rate."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks import readiness
from tests.conftest import wait_until


@contextlib.contextmanager
def started(argv: list[str], **kwargs: object) -> Iterator[subprocess.Popen[bytes]]:
    """*argv* in its own session; killed by its process group at the end."""
    proc = subprocess.Popen(argv, start_new_session=True, **kwargs)  # type: ignore[call-overload]
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_the_worker_stamps_then_sends_ready_once_signalled(tmp_path: Path) -> None:
    name = f"cbench-test/{uuid.uuid4().hex}"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind("\0" + name)
    receiver.settimeout(10.0)
    env = {"NOTIFY_SOCKET": f"@{name}"}
    with receiver, started(readiness.worker_argv(tmp_path), env=env) as proc:
        wait_until(lambda: readiness.armed_pids(tmp_path) == {proc.pid},
                   what="the worker to wait for its signal")
        with pytest.raises(TimeoutError):  # nothing before the signal
            receiver.settimeout(0.2)
            receiver.recv(4096)
        receiver.settimeout(10.0)
        before = time.clock_gettime(time.CLOCK_MONOTONIC)
        os.kill(proc.pid, signal.SIGUSR1)
        assert receiver.recv(4096) == b"READY=1"
        after = time.clock_gettime(time.CLOCK_MONOTONIC)
        stamp = readiness.read_stamp(tmp_path, proc.pid, timeout=10.0)
        assert before <= stamp <= after
        assert proc.poll() is None  # it lives on until killed


def test_the_listener_counts_the_connections_it_accepts() -> None:
    listener = readiness.Listener()
    try:
        assert listener.accepted() == 0
        for _ in range(5):
            with socket.create_connection(("127.0.0.1", listener.port), timeout=5):
                pass
        wait_until(lambda: listener.accepted() == 5, what="5 accepted connections")
    finally:
        listener.stop()
    assert listener.proc.returncode == 0  # it ended at the end of its stdin


def test_the_connection_floor_connects_at_its_rate() -> None:
    listener = readiness.Listener()
    try:
        argv = [sys.executable, str(readiness.CONNECT_FLOOR), str(listener.port),
                "--rate", "200"]
        with started(argv, stdin=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
            wait_until(lambda: listener.accepted() >= 40, what="the floor's connections")
            first = listener.accepted()
            began = time.monotonic()
            wait_until(lambda: listener.accepted() >= first + 100, timeout=10.0,
                       what="100 more connections")
            # 200 a second: 100 take about 0.5 s; far more would mean bursts made up
            assert time.monotonic() - began > 0.3
            assert proc.stdin is not None and proc.stderr is not None
            proc.stdin.close()
            assert proc.wait(timeout=10) == 0
            assert proc.stderr.read() == b"0 failed connections\n"
    finally:
        listener.stop()
