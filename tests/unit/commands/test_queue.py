"""The command queue: overlapping scopes run in arrival order, others side by side."""

from __future__ import annotations

import asyncio

from circus.commands.base import Scope
from circus.controller import CommandQueue
from tests.conftest import wait_for


def test_scopes_overlap() -> None:
    web, db = Scope.of(["Web"]), Scope.of(["db"])
    assert web.overlaps(Scope.of(["WEB", "x"]))
    assert not web.overlaps(db)
    assert Scope.all().overlaps(web) and db.overlaps(Scope.all())


async def test_overlapping_commands_run_in_arrival_order() -> None:
    queue = CommandQueue()
    log: list[str] = []

    async def run(name: str, scope: Scope, until: str | None = None) -> None:
        slot = queue.admit(scope)
        try:
            await queue.wait_turn(slot)
            log.append(f"{name}+")
            if until is not None:  # hold the slot until another command has started
                await wait_for(lambda: until in log, what=f"{until} while {name} runs")
            log.append(f"{name}-")
        finally:
            queue.release(slot)

    await asyncio.gather(
        run("web1", Scope.of(["web"]), until="db+"),
        run("db", Scope.of(["db"])),
        run("all", Scope.all()),
        run("web2", Scope.of(["web"])),
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
    # a command on another watcher, admitted and scheduled after it, runs to its end...
    other = queue.admit(Scope.of(["db"]))
    await asyncio.wait_for(asyncio.ensure_future(queue.wait_turn(other)), 1)
    queue.release(other)
    assert not waiter.done()  # ...while the second on the same one still waits
    queue.release(first)  # whatever happened to it
    await asyncio.wait_for(waiter, 1)
    queue.release(second)
    assert len(queue) == 0
