"""The state tables, the spawn spec and how a watcher builds it (no child is started)."""

from __future__ import annotations

import dataclasses
import logging
import os

import pytest

from circus.reaper import ORIGIN_VAR
from circus.spawn import SpawnSpec
from circus.states import (
    PROCESS_TRANSITIONS,
    WATCHER_TRANSITIONS,
    ProcessState,
    WatcherState,
    check_transition,
)
from circus.watcher import Watcher


def test_every_state_has_one_row_of_allowed_next_states() -> None:
    assert set(WATCHER_TRANSITIONS) == set(WatcherState)
    assert set(PROCESS_TRANSITIONS) == set(ProcessState)
    for state, targets in WATCHER_TRANSITIONS.items():
        assert state not in targets and targets <= set(WatcherState)
    for pstate, ptargets in PROCESS_TRANSITIONS.items():
        assert pstate not in ptargets and ptargets <= set(ProcessState)
    # an exited process stays exited
    assert not PROCESS_TRANSITIONS[ProcessState.EXITED]
    assert not PROCESS_TRANSITIONS[ProcessState.STOPPED]


def test_an_illegal_transition_is_logged_as_an_error(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="circus.states"):
        assert check_transition(WATCHER_TRANSITIONS, WatcherState.STOPPED,
                                WatcherState.STARTING, "watcher w")
        assert not caplog.records
        assert not check_transition(PROCESS_TRANSITIONS, ProcessState.EXITED,
                                    ProcessState.RUNNING, "w pid 42")
    [record] = caplog.records
    assert record.levelno == logging.ERROR
    assert "w pid 42" in record.getMessage() and "exited -> running" in record.getMessage()


def test_a_spawn_spec_is_a_frozen_value() -> None:
    spec = SpawnSpec("sleep 1", args=["2"], env={"A": "1"})
    assert not hasattr(spec, "__dict__")  # slots
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.cmd = "other"  # type: ignore[misc]
    assert spec == SpawnSpec("sleep 1", args=["2"], env={"A": "1"})


def test_the_shared_spec_is_built_once_and_the_wid_per_process() -> None:
    w = Watcher("w", "run --id $(circus.wid)", args=["((circus.wid))", "x"],
                env={"A": "1"}, shell_args="$(circus.name)")
    base = w.spawner.base()
    assert w.spawner.base() is base and w.spawner.env() is base.env
    spec = w.spawner.spec(3, {})
    assert (spec.cmd, spec.args, spec.shell_args) == ("run --id 3", ["3", "x"], "w")
    # the shared environment plus the mark of this one spawn (circus/reaper.py)
    origin = spec.env[ORIGIN_VAR]
    assert {k: v for k, v in spec.env.items() if k != ORIGIN_VAR} == {"A": "1"}
    assert base.env == {"A": "1"}
    assert spec.pipe_stdout and spec.pipe_stderr and spec.pass_fds == ()
    other = w.spawner.spec(4, {})
    assert other.cmd == "run --id 4"
    assert origin.startswith(f"{os.getpid()}.") and origin.endswith(".w")
    assert other.env[ORIGIN_VAR] != origin


async def test_changing_an_option_rebuilds_the_spec() -> None:
    w = Watcher("w", "run", env={"A": "1"})
    before = w.spawner.base()
    await w.set_options({"env": {"A": "2"}, "umask": "022"})
    after = w.spawner.base()
    assert after is not before
    assert after.env == {"A": "2"} and after.umask == 0o22


def test_sockets_reach_the_spec_per_spawn() -> None:
    w = Watcher("w", "run --fd $(circus.sockets.web)", use_sockets=True, stdin_socket="Web")
    spec = w.spawner.spec(1, {"web": 7})
    assert spec.cmd == "run --fd 7" and spec.pass_fds == (7,) and spec.stdin_fd == 7
