"""Owned background tasks.

Every long-lived task in circusd has an owner that outlives it: an object that keeps a
reference (so the task is never garbage-collected mid-flight), logs the exception if the
task fails, and cancels and awaits it on shutdown. Nothing is fire-and-forget.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


class TaskOwner:
    """A set of tasks that is cancelled and awaited as a whole."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """Run *coro* as a task owned here; an exception it raises is logged, not lost."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("%s: task %s failed", self.name, task.get_name(), exc_info=exc)

    def __len__(self) -> int:
        return len(self._tasks)

    async def close(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Cancel every task and wait for them to finish (at most *timeout* seconds)."""
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    async def join(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Wait for the tasks to finish by themselves (at most *timeout* seconds)."""
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
