"""The graph of ``depends_on`` (circus/depends.py) and the change notification the start
order waits on (circus/startorder.py)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from circus import depends
from circus.startorder import Changes

GRAPH = {"db": "", "cache": "", "app": "db, cache:started", "web": "app:started",
         "migrate": "db", "Worker": "migrate:completed"}


@dataclass
class W:
    name: str
    depends_on: str = ""
    priority: int = 0


def test_dependencies_are_transitive_and_come_before_what_needs_them() -> None:
    assert depends.dependencies(GRAPH, "web") == ["db", "cache", "app"]
    assert depends.dependencies(GRAPH, "worker") == ["db", "migrate"]
    assert depends.dependencies(GRAPH, "db") == []


def test_dependents_direct_and_not() -> None:
    assert depends.dependents(GRAPH, "db") == ["app", "migrate", "web", "worker"]
    assert depends.direct_dependents(GRAPH, "DB") == ["app", "migrate"]
    assert depends.direct_dependents(GRAPH, "web") == []


@pytest.mark.parametrize(("name", "text", "problem"), [
    ("db", "web", "a dependency cycle: db -> web -> app -> db"),
    ("new", "ghost", "no watcher is named 'ghost'"),
    ("new", "new:started", "new cannot depend on itself"),
    ("app", "db:completed", None),
    ("new", "web, worker", None),
])
def test_a_change_is_checked_against_the_whole_graph(name: str, text: str,
                                                      problem: str | None) -> None:
    assert depends.problem_with(GRAPH, name, text) == problem


def test_stop_groups_put_dependents_first_then_priority() -> None:
    watchers = [W("db", priority=5), W("app", "db", priority=1), W("web", "app"),
                W("other", priority=-1), W("cron", priority=-1)]
    groups = [[w.name for w in g] for g in depends.stop_groups(watchers)]
    assert groups == [["web"], ["app"], ["other", "cron"], ["db"]]
    together = [[w.name for w in g] for g in depends.stop_groups(watchers, by_priority=False)]
    assert together == [["web"], ["app"], ["db", "other", "cron"]]


def test_changes_wake_a_waiter_without_polling() -> None:
    async def main() -> None:
        changes = Changes()
        box = {"value": 0}
        checks = []

        def check() -> int | None:
            checks.append(box["value"])
            return box["value"] if box["value"] >= 2 else None

        waiter = asyncio.create_task(changes.until(check, 5.0))
        await asyncio.sleep(0.05)
        assert checks == [0]  # looked once, then sleeps until told
        box["value"] = 1
        changes.notify()
        await asyncio.sleep(0.05)
        box["value"] = 2
        changes.notify()
        assert await asyncio.wait_for(waiter, 5.0) == 2
        assert checks == [0, 1, 2]
        with pytest.raises(TimeoutError):
            await changes.until(lambda: None, 0.05)

    asyncio.run(main())


def test_a_waiter_is_woken_by_changes_about_its_watchers_only() -> None:
    async def main() -> None:
        changes = Changes()
        looks: list[str] = []
        done = asyncio.Event()

        def check() -> bool | None:
            looks.append("look")
            return True if done.is_set() else None

        waiter = asyncio.create_task(changes.until(check, 5.0, about=["db", "app"]))
        await asyncio.sleep(0.05)
        changes.notify("web")  # about another watcher: not woken
        await asyncio.sleep(0.05)
        assert looks == ["look"]
        changes.notify("db")
        await asyncio.sleep(0.05)
        assert looks == ["look", "look"]
        done.set()
        changes.notify()  # about everything: woken
        assert await asyncio.wait_for(waiter, 5.0) is True
        assert looks == ["look"] * 3

    asyncio.run(main())
