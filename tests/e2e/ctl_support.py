"""Helpers of the control tests: one call through circusctl or raw ZeroMQ, and children
that report the signals they get."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PYTHON
from tests.e2e.conftest import Daemon

VIA = ("ctl", "zmq")


def send(d: Daemon, via: str, argv: list[str], msg: dict[str, Any],
         timeout: float = 10) -> dict[str, Any]:
    """Run one command through circusctl (``argv``, with --json) or as the raw ``msg``."""
    if via == "zmq":
        return d.call(msg, timeout=timeout)
    res = d.ctl("--json", *argv, timeout=timeout)
    if not res.stdout.strip():
        pytest.fail(f"circusctl {argv} printed nothing (rc {res.returncode}): {res.stderr}")
    reply: dict[str, Any] = json.loads(res.stdout)
    assert res.returncode == 0, (res, reply)  # with --json an error reply exits 0, as in 0.19
    return reply


def ok(reply: dict[str, Any]) -> dict[str, Any]:
    assert reply.get("status") != "error", reply
    return reply


RECORDER = """\
import os, signal, sys, time

directory, fork_child = sys.argv[1], sys.argv[2] == "fork"


def record(sig, frame):
    with open(os.path.join(directory, str(os.getpid())), "a") as out:
        out.write(str(sig) + "\\n")


for s in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP):
    signal.signal(s, record)
if fork_child:
    os.fork()
while True:
    time.sleep(600)
"""


def recorder(directory: Path, fork_child: bool = False) -> str:
    """A ``cmd`` whose processes append each USR1/USR2/HUP they get to ``directory/<pid>``.

    With *fork_child* each process also forks a child that records the same way.
    """
    script = directory / "recorder.py"
    script.write_text(RECORDER)
    return f"{PYTHON} {script} {directory} {'fork' if fork_child else 'nofork'}"


def catches(pid: int, signum: int) -> bool:
    """True once *pid* has a handler for *signum* (SigCgt in /proc)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) & (1 << (signum - 1)))
    except (FileNotFoundError, ProcessLookupError):
        pass
    return False


def received(directory: Path, pid: int) -> list[int]:
    path = directory / str(pid)
    if not path.exists():
        return []
    return [int(x) for x in path.read_text().split()]


def children_of(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return []
    return [int(x) for x in text.split()]
