"""What the readiness and start-order tests share: the worker that becomes ready on
demand (tests/fixtures/ready_worker.py) and a free loopback port."""

from __future__ import annotations

import shlex
import socket
from pathlib import Path

from tests.conftest import PYTHON

WORKER = Path(__file__).resolve().parents[1] / "fixtures" / "ready_worker.py"


def worker(*args: str) -> str:
    """A watcher ``cmd`` running the ready worker with *args*."""
    return " ".join(shlex.quote(a) for a in (PYTHON, str(WORKER), *args))


def free_port() -> int:
    """A loopback TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
