"""Helpers shared by every test tier: deadlines, short temp dirs, Python children."""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn, TypeVar

import pytest

T = TypeVar("T")

PYTHON = sys.executable


def wait_until(check: Callable[[], T], *, what: str, timeout: float = 10.0,
               interval: float = 0.01, detail: Callable[[], str] | None = None) -> T:
    """Poll *check* until it returns something truthy; fail naming *what* after *timeout*.

    *detail*, when given, is called on failure and its text added to the message (a log
    tail, the state last seen).
    """
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            _timed_out(timeout, what, detail)
        time.sleep(interval)


def stays_true(check: Callable[[], object], *, for_: float, what: str,
               interval: float = 0.01) -> None:
    """Poll *check* for *for_* seconds and fail as soon as it is false, naming *what*.

    The bounded observation behind a negative check ("X does not happen"): it can fail,
    and fails at the first sight of X rather than after the whole window.
    """
    deadline = time.monotonic() + for_
    while True:
        if not check():
            pytest.fail(f"{what} stopped holding before {for_}s had passed")
        if time.monotonic() > deadline:
            return
        time.sleep(interval)


def _timed_out(timeout: float, what: str, detail: Callable[[], str] | None) -> NoReturn:
    message = f"timed out after {timeout}s waiting for {what}"
    if detail is not None:
        message += f"\n{detail()}"
    pytest.fail(message)


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
    """The environment of *pid*, without the ``CIRCUS_ORIGIN`` mark circusd adds to every
    spawn (tests/e2e/test_contain_reaper.py and test_contain_restart.py check it)."""
    with open(f"/proc/{pid}/environ", "rb") as fh:
        items = [p.decode() for p in fh.read().split(b"\0") if p]
    env = dict(item.split("=", 1) for item in items if "=" in item)
    env.pop("CIRCUS_ORIGIN", None)
    return env


def python_cmd(code: str) -> str:
    """A watcher ``cmd`` running *code* with this test run's Python."""
    import shlex

    return f"{shlex.quote(PYTHON)} -c {shlex.quote(code)}"


async def wait_for(check: Callable[[], T], *, what: str,
                   timeout: float = 10.0,  # noqa: ASYNC109  (the deadline of the poll)
                   interval: float = 0.005, detail: Callable[[], str] | None = None) -> T:
    """The asyncio form of :func:`wait_until`: the loop keeps running while we wait."""
    import asyncio

    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            _timed_out(timeout, what, detail)
        await asyncio.sleep(interval)


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


__all__ = ["wait_until", "wait_for", "stays_true", "pid_alive", "proc_cmdline", "proc_environ",
           "python_cmd", "PYTHON"]
