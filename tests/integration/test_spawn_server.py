"""The spawn server (circus/spawnd.py, circus/spawnserver.py) in a running arbiter.

Real children: workers made by the server are the arbiter's children once their batch
process has exited, their exit statuses reach their Process, and the server's descriptor
table stays short however many pipes the arbiter holds. When the server is gone, the
arbiter makes its workers itself.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import pytest

from circus import descriptors, spawnserver
from circus.arbiter import Arbiter
from circus.process import Process
from circus.watcher import Watcher
from tests.conftest import pid_alive, wait_for


def _ppid(pid: int) -> int:
    text = Path(f"/proc/{pid}/stat").read_text()
    return int(text.rsplit(")", 1)[1].split()[1])


def _environ(pid: int) -> bytes:
    return Path(f"/proc/{pid}/environ").read_bytes()


def _soft_nofile(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open files line")


async def test_workers_are_the_arbiters_children_and_their_exits_are_collected(
        endpoints: tuple[str, str]) -> None:
    arbiter = Arbiter([Watcher("w", "sleep 600", numprocesses=40)], *endpoints)
    async with arbiter:
        server = spawnserver.current()
        assert server is not None and pid_alive(server.pid)
        w = arbiter.get_watcher("w")
        pids = list(w.pids)
        assert len(pids) == 40
        await wait_for(lambda: all(_ppid(p) == os.getpid() for p in pids),
                       what="every worker handed to the arbiter", timeout=5)
        # a short table: the server holds none of the 40 processes' pipes
        assert len(os.listdir(f"/proc/{server.pid}/fd")) < 12
        victim = w.processes[pids[0]]
        os.kill(victim.pid, signal.SIGKILL)
        await wait_for(lambda: victim.returncode is not None, what="the killed worker's status")
        assert victim.returncode == -signal.SIGKILL
        await wait_for(lambda: len(w.pids) == 40 and victim.pid not in w.pids,
                       what="its replacement")
    assert spawnserver.current() is None
    await wait_for(lambda: not pid_alive(server.pid), what="the server to end")


async def test_a_worker_that_exits_at_once_keeps_its_status(
        endpoints: tuple[str, str]) -> None:
    """Its exit can come before its pid is known: it must not be taken for an orphan."""
    w = Watcher("w", "sh -c 'exit 3'", numprocesses=8, respawn=False, autostart=False)
    codes: list[int | None] = []
    on_exit = w._on_exit

    def record(process: Process) -> None:
        codes.append(process.returncode)
        on_exit(process)

    w._on_exit = record  # type: ignore[method-assign]
    async with Arbiter([w], *endpoints):
        assert spawnserver.current() is not None
        await w.start()
        await wait_for(lambda: len(codes) == 8, what="8 exit statuses", timeout=10)
    assert codes == [3] * 8


async def test_workers_get_the_soft_open_files_limit_circusd_was_started_with(
        endpoints: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(descriptors, "started_soft_nofile", 321)
    arbiter = Arbiter([Watcher("w", "sleep 600", numprocesses=2)], *endpoints)
    async with arbiter:
        pids = arbiter.get_watcher("w").pids
        assert [_soft_nofile(p) for p in pids] == [321, 321]
        server = spawnserver.current()
        assert server is not None and _soft_nofile(server.pid) != 321


async def test_without_the_server_the_arbiter_spawns_itself(
        endpoints: tuple[str, str], caplog: pytest.LogCaptureFixture) -> None:
    arbiter = Arbiter([Watcher("w", "sleep 600", numprocesses=2)], *endpoints)
    async with arbiter:
        server = spawnserver.current()
        assert server is not None
        with caplog.at_level(logging.WARNING, logger="circus.spawnserver"):
            os.kill(server.pid, signal.SIGKILL)
            await wait_for(lambda: spawnserver.current() is None, what="the server's end")
        assert "the spawn server (pid" in caplog.text and "itself from now on" in caplog.text
        w = arbiter.get_watcher("w")
        await w.incr(3)
        assert len(w.pids) == 5
        assert all(_ppid(p) == os.getpid() for p in w.pids)


async def test_turned_off_by_the_environment(endpoints: tuple[str, str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CIRCUS_SPAWN_SERVER", "0")
    arbiter = Arbiter([Watcher("w", "sleep 600", numprocesses=2)], *endpoints)
    async with arbiter:
        assert spawnserver.current() is None
        assert len(arbiter.get_watcher("w").pids) == 2


async def test_a_request_too_large_for_the_server_is_made_by_the_arbiter(
        endpoints: tuple[str, str]) -> None:
    big = "x" * 110_000  # ten of them: over the server's 1 MiB message, under exec's limits
    env = {f"BIG{i}": big for i in range(10)}
    arbiter = Arbiter([Watcher("w", "sleep 600", numprocesses=2, env=env)], *endpoints)
    async with arbiter:
        assert spawnserver.current() is not None
        pids = arbiter.get_watcher("w").pids
        assert len(pids) == 2
        assert b"BIG9=" + big.encode() in _environ(pids[0])
