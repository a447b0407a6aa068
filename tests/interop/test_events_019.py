"""Circus 0.19's circusd and ours publish the same events for the same commands.

Both daemons run the same watcher and get the same raw commands; a subscriber on each
(subscribed through :meth:`Daemon.subscribe`, which waits until the daemon has the
subscription) reads the events up to an ``updated`` event set off last, as a marker.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.e2e.conftest import Daemon, wait_event
from tests.interop.test_ours_drives_circusd019 import BODY, live, shape_mismatches

Start = Callable[..., Daemon]
Event = tuple[str, dict[str, Any]]


def events_of_a_lifecycle(d: Daemon) -> list[Event]:
    """incr, decr, stop and start of ``web``, then the marker; the events in between."""
    live(d, "web", 2)
    sub = d.subscribe("watcher.web.")
    for command in ("incr", "decr", "stop", "start"):
        reply = d.call({"command": command, "properties": {"name": "web", "waiting": True}},
                       timeout=30)
        assert reply["status"] == "ok", (command, reply)
    d.call({"command": "set", "properties": {"name": "web", "options": {"warmup_delay": 0}}})
    seen: list[Event] = []

    def until_marker(topic: str, payload: dict[str, Any]) -> bool:
        seen.append((topic, payload))
        return topic == "watcher.web.updated"

    wait_event(sub, until_marker, timeout=30)
    return seen


def kinds(events: list[Event], *leave_out: str) -> list[str]:
    return [t.rsplit(".", 1)[1] for t, _ in events if t.rsplit(".", 1)[1] not in leave_out]


def test_the_same_commands_publish_the_same_events(circusd: Start, circusd019: Start) -> None:
    ours = events_of_a_lifecycle(circusd(BODY))
    theirs = events_of_a_lifecycle(circusd019(BODY))
    # the same events in the same order; 0.19 may leave out the reap of a process that
    # decr stopped, ours reaps every process it kills
    assert kinds(ours, "reap") == kinds(theirs, "reap") == [
        "spawn", "kill", "kill", "kill", "stop", "spawn", "spawn", "start", "updated"]
    assert kinds(ours).count("reap") == kinds(ours).count("kill")
    assert set(kinds(theirs)) <= set(kinds(ours))
    # each kind of event carries the fields 0.19's does, of the same types
    for kind in set(kinds(theirs)):
        mine = next(p for t, p in ours if t.endswith("." + kind))
        other = next(p for t, p in theirs if t.endswith("." + kind))
        assert shape_mismatches(mine, other) == [], (kind, mine, other)
        assert isinstance(mine["time"], float) and isinstance(other["time"], float)
