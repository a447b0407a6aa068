"""``endpoint_owner`` may drive circusd but not make it run anything as another user: the
owner check covers ``set`` of what runs or as whom, and ``reloadconfig``, not only ``add``
(Circus 0.19 checked ``add`` alone, so ``set <watcher> cmd`` ran a program as root)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.conftest import python_cmd
from tests.e2e.conftest import Daemon
from tests.e2e.test_local_users import (  # noqa: F401  (fixtures)
    NOBODY,
    Nobody,
    as_root,
    nobody,
    shared_dir,
)

TICKER = python_cmd("import time; time.sleep(600)")


@as_root
def test_the_owner_cannot_change_what_runs_as_another_user(
        circusd: Callable[..., Daemon], nobody: Nobody,  # noqa: F811
        shared_dir: Path) -> None:  # noqa: F811
    assert NOBODY is not None
    d = circusd(f"[watcher:out]\ncmd = {TICKER}\n\n[watcher:mine]\ncmd = sleep 600\n"
                f"uid = nobody\ngid = {NOBODY.pw_gid}\n", circus_extra="endpoint_owner = nobody")
    replies = nobody.requests(d.endpoint, [
        {"command": "set", "properties": {"name": "out", "options": {"cmd": "/usr/bin/id"}}},
        {"command": "set", "properties": {"name": "mine", "options": {"uid": 0}}},
        {"command": "set", "properties": {"name": "out", "options": {"env": {"A": "1"}}}},
        {"command": "reloadconfig"},
        {"command": "add", "properties": {"name": "x", "cmd": "/usr/bin/id"}},
        {"command": "status"},
        {"command": "set", "properties": {"name": "out", "options": {"graceful_timeout": 3}}},
        {"command": "set", "properties": {"name": "mine", "options": {"cmd": "sleep 601"}}},
    ])
    for reply in replies[:5]:
        assert reply is not None and reply["status"] == "error", reply
        assert "endpoint_owner" in reply["reason"], reply
    assert [r["status"] for r in replies[5:]] == ["ok", "ok", "ok"], replies[5:]
    out = d.call({"command": "get", "properties": {"name": "out", "keys": ["cmd", "env"]}})
    assert out["options"]["cmd"] == TICKER and "A" not in (out["options"]["env"] or {})
    mine = d.call({"command": "get", "properties": {"name": "mine", "keys": ["uid", "cmd"]}})
    assert mine["options"]["cmd"] == "sleep 601"
    assert mine["options"]["uid"] in ("nobody", NOBODY.pw_uid)
    assert d.call({"command": "list"})["watchers"] == ["mine", "out"]
    # circusd's own user is not bound by the owner rule
    assert d.call({"command": "set", "properties": {
        "name": "out", "options": {"env": {"A": "1"}}, "waiting": True}})["status"] == "ok"

