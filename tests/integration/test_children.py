"""circus/children.py in an arbiter: a mass stop's SIGCHLDs are collected silently."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from circus.arbiter import Arbiter
from circus.kernel import children_of
from circus.watcher import Watcher


async def test_a_mass_stop_overflows_the_wakeup_pipe_silently(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """1,500 SIGCHLDs at once fill the loop's wakeup socket; a byte that does not fit must
    not print "Exception ignored ..." on circusd's stderr, and every child is collected."""
    watcher = Watcher("w", "sleep 600", numprocesses=1500, graceful_timeout=5)
    arbiter = Arbiter([watcher], endpoint=f"ipc://{tmp_path}/c",
                      pubsub_endpoint=f"ipc://{tmp_path}/p")
    async with arbiter:
        pids = list(watcher.processes)
        assert len(pids) == 1500
    mine = set(children_of(os.getpid()))
    assert not mine & set(pids)  # collected, no zombie left
    err = capfd.readouterr().err
    assert "Exception ignored" not in err and "BlockingIOError" not in err, err[:2000]
