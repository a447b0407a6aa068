"""The restart policy and the bookkeeping of circus/health.py."""

from __future__ import annotations

import time
from typing import Any

from circus.commands.status import describe_last_exit, duration, render_table
from circus.health import Health, LastExit, RestartPolicy


def test_the_backoff_doubles_from_the_second_failure_and_is_capped() -> None:
    policy = RestartPolicy(initial=0.1, factor=2.0, maximum=1.0, jitter=0.0)
    assert [policy.delay(n) for n in range(0, 7)] == [0.0, 0.0, 0.1, 0.2, 0.4, 0.8, 1.0]
    assert policy.delay(10_000) == 1.0  # no overflow however long the run


def test_jitter_adds_at_most_its_fraction() -> None:
    policy = RestartPolicy(initial=1.0, factor=2.0, maximum=8.0, jitter=0.25)
    delays = [policy.delay(3) for _ in range(200)]
    assert all(2.0 <= d <= 2.5 for d in delays)
    assert len(set(delays)) > 1  # random, so watchers failing together spread out


class _Proc:
    def __init__(self, wid: int, age: float, returncode: int) -> None:
        self.wid, self._age, self.returncode, self.restarts = wid, age, returncode, 0
        self.ready = True

    def age(self) -> float:
        return self._age


def test_failures_count_quick_deaths_in_a_row_and_max_retry_bounds_them() -> None:
    health = Health()
    for _ in range(3):
        assert health.exited(_Proc(1, 0.1, 3), min_uptime=1.0)  # type: ignore[arg-type]
    assert health.failures == 3 and not health.exhausted(3) and health.exhausted(2)
    assert not health.exhausted(-1)
    assert not health.exited(_Proc(1, 5.0, 0), min_uptime=1.0)  # type: ignore[arg-type]
    assert health.failures == 0
    assert health.last_exit is not None and health.last_exit.code == 0


def test_a_replacement_inherits_the_restart_count_of_its_slot() -> None:
    health = Health()
    dead = _Proc(2, 10.0, -9)
    health.exited(dead, min_uptime=1.0)  # type: ignore[arg-type]
    new = _Proc(2, 0.0, 0)
    health.adopted(new)  # type: ignore[arg-type]
    assert new.restarts == 1 and health.restarts == 1
    first = _Proc(1, 0.0, 0)
    health.adopted(first)  # type: ignore[arg-type]
    assert first.restarts == 0 and health.restarts == 1  # not a restart
    assert health.last_exit == LastExit(None, 9, health.last_exit.time)  # type: ignore[union-attr]


def test_the_table_and_its_cells() -> None:
    assert duration(5) == "5s" and duration(192) == "3m12s" and duration(7500) == "2h05m"
    assert duration(90000) == "1d01h" and duration(None) == "-"
    assert describe_last_exit({"code": None, "signal": 9, "time": time.time()}).startswith(
        "SIGKILL (0s ago")
    details: dict[str, Any] = {
        "w": {"health": "backoff", "next_spawn_in": 1.25, "numprocesses": 2, "restarts": 4,
              "last_exit": {"code": 3, "signal": None, "time": time.time() - 75},
              "reason": None,
              "processes": [{"pid": 42, "wid": 1, "uptime": 3.0, "restarts": 4,
                             "health": "starting", "cpu": 1.5, "mem_info1": "3M"}]},
    }
    plain = render_table(details).splitlines()
    assert plain[0].split()[:2] == ["NAME", "HEALTH"]
    assert plain[1].split() == ["w", "backoff", "1.2s", "1/2", "4", "exit", "3", "(1m15s",
                                "ago)"]
    assert plain[2].split() == ["w.1", "starting", "42", "3s", "4", "1.5%", "3M"]
    coloured = render_table(details, colour=True)
    assert "\x1b[33mbackoff" in coloured and "\x1b[1mNAME" in coloured
