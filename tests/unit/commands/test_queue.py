"""The command queue: overlapping scopes run in arrival order, others side by side."""

from __future__ import annotations

import asyncio

from circus.commands.base import Scope
from circus.controller import CommandQueue


def test_scopes_overlap() -> None:
    web, db = Scope.of(["Web"]), Scope.of(["db"])
    assert web.overlaps(Scope.of(["WEB", "x"]))
    assert not web.overlaps(db)
    assert Scope.all().overlaps(web) and db.overlaps(Scope.all())


async def test_overlapping_commands_run_in_arrival_order() -> None:
    queue = CommandQueue()
    log: list[str] = []

    async def run(name: str, scope: Scope, hold: float) -> None:
        slot = queue.admit(scope)
        try:
            await queue.wait_turn(slot)
            log.append(f"{name}+")
            await asyncio.sleep(hold)
            log.append(f"{name}-")
        finally:
            queue.release(slot)

    await asyncio.gather(
        run("web1", Scope.of(["web"]), 0.05),
        run("db", Scope.of(["db"]), 0.01),
        run("all", Scope.all(), 0.0),
        run("web2", Scope.of(["web"]), 0.0),
    )
    # db runs beside web1; "all" waits for both; web2 comes after "all"
    assert log.index("db+") < log.index("web1-")
    assert log.index("all+") > max(log.index("web1-"), log.index("db-"))
    assert log.index("web2+") > log.index("all-")
    assert len(queue) == 0


async def test_a_failed_command_lets_the_next_one_run() -> None:
    queue = CommandQueue()
    first = queue.admit(Scope.of(["web"]))
    second = queue.admit(Scope.of(["web"]))
    waiter = asyncio.ensure_future(queue.wait_turn(second))
    await asyncio.sleep(0)
    assert not waiter.done()
    queue.release(first)  # whatever happened to it
    await asyncio.wait_for(waiter, 1)
    queue.release(second)
    assert len(queue) == 0
