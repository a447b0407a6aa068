"""Watcher and process states, and the one table of allowed transitions for each.

The values of :class:`WatcherState` are the strings Circus puts on the wire (``status``).
:class:`ProcessState` is the life cycle of one child inside circusd; what the protocol
shows of a process is the numeric ``Process.status`` (RUNNING = 0 …), not this.

An illegal transition is a bug in circusd, not something a user or a child can cause.
:func:`check_transition` logs it at ERROR (with the stack) and lets the change happen
anyway: a state records something that has already happened (the kernel reported an
exit, every process was stopped), so refusing the change would leave the record
contradicting the processes, and a watcher stuck in a state it has left is worse for a
supervisor than a loud log line. Tests catch these lines.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from enum import StrEnum
from typing import TypeVar

log = logging.getLogger(__name__)


class WatcherState(StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    ACTIVE = "active"
    STOPPING = "stopping"


class ProcessState(StrEnum):
    CREATED = "created"  # built with spawn=False, not started yet
    RUNNING = "running"
    STOPPING = "stopping"  # circusd asked it to stop
    EXITED = "exited"  # ended on its own
    STOPPED = "stopped"  # ended after circusd asked it to stop


S = TypeVar("S", WatcherState, ProcessState)

WATCHER_TRANSITIONS: Mapping[WatcherState, frozenset[WatcherState]] = {
    # start, autostart, a reload or restart of a stopped watcher; stop is idempotent
    WatcherState.STOPPED: frozenset({WatcherState.STARTING, WatcherState.STOPPING}),
    # every process asked for is spawned; or spawns failed / a hook refused: stop
    WatcherState.STARTING: frozenset({WatcherState.ACTIVE, WatcherState.STOPPING}),
    # stop, restart, a refusing hook; or, with respawn off, the last process is gone
    WatcherState.ACTIVE: frozenset({WatcherState.STOPPING, WatcherState.STOPPED}),
    WatcherState.STOPPING: frozenset({WatcherState.STOPPED}),
}

PROCESS_TRANSITIONS: Mapping[ProcessState, frozenset[ProcessState]] = {
    ProcessState.CREATED: frozenset({ProcessState.RUNNING}),
    ProcessState.RUNNING: frozenset({ProcessState.STOPPING, ProcessState.EXITED}),
    ProcessState.STOPPING: frozenset({ProcessState.STOPPED}),
    ProcessState.EXITED: frozenset(),
    ProcessState.STOPPED: frozenset(),
}


def check_transition(table: Mapping[S, frozenset[S]], old: S, new: S, what: str) -> bool:
    """True if *old* -> *new* is in *table*; otherwise log the bug (see the module text)."""
    if new in table.get(old, frozenset()):
        return True
    log.error("%s: illegal state change %s -> %s", what, old.value, new.value, stack_info=True)
    return False


__all__ = [
    "PROCESS_TRANSITIONS",
    "WATCHER_TRANSITIONS",
    "ProcessState",
    "WatcherState",
    "check_transition",
]
