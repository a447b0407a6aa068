"""Helpers shared by every test tier: deadlines, short temp dirs, Python children."""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

T = TypeVar("T")

PYTHON = sys.executable


def wait_until(check: Callable[[], T], *, what: str, timeout: float = 10.0,
               interval: float = 0.01) -> T:
    """Poll *check* until it returns something truthy; fail naming *what* after *timeout*."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    """True if *pid* exists and is not a zombie (checked in /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def proc_cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return [p.decode() for p in fh.read().split(b"\0") if p]
    except FileNotFoundError:
        return []


def proc_environ(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as fh:
        items = [p.decode() for p in fh.read().split(b"\0") if p]
    return dict(item.split("=", 1) for item in items if "=" in item)


def python_cmd(code: str) -> str:
    """A watcher ``cmd`` running *code* with this test run's Python."""
    import shlex

    return f"{shlex.quote(PYTHON)} -c {shlex.quote(code)}"


async def wait_for(check: Callable[[], T], what: str, timeout: float = 10.0) -> T:  # noqa: ASYNC109
    """The asyncio form of :func:`wait_until`: the loop keeps running while we wait."""
    import asyncio

    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A temp dir with a short path, so ipc:// endpoints fit the 107-byte limit."""
    path = Path(tempfile.mkdtemp(prefix="cz", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def endpoints(short_tmp: Path) -> tuple[str, str]:
    return f"ipc://{short_tmp}/ctl", f"ipc://{short_tmp}/pub"


def descendants_alive(pids: list[int]) -> list[int]:
    return [p for p in pids if pid_alive(p)]


__all__ = ["wait_until", "wait_for", "pid_alive", "proc_cmdline", "proc_environ", "python_cmd",
           "PYTHON"]
