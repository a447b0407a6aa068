"""Circus 0.19's circusctl against our circusd on the default kind of endpoint (loopback
TCP): run by root it behaves as it always did; run by another user it gets the refusal
(docs/deployment.md, "Securing circusd")."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.conftest import wait_until
from tests.e2e.conftest import Daemon
from tests.e2e.test_local_users import NOBODY, Nobody, as_root
from tests.e2e.test_local_users import nobody as nobody  # noqa: F401  (a fixture)
from tests.e2e.test_local_users import tcp_circusd as tcp_circusd  # noqa: F401  (a fixture)
from tests.interop.conftest import ctl019

pytestmark = as_root


def test_circusctl019_run_by_root_works_as_before(tcp_circusd: Callable[..., Daemon],
                                                  circus019: Path) -> None:
    d = tcp_circusd("[watcher:web]\ncmd = sleep 600\nnumprocesses = 2\n")

    def c19(*args: str) -> str:
        res = ctl019(circus019, d.endpoint, *args)
        assert res.returncode == 0, (args, res.stdout, res.stderr)
        return res.stdout.strip()

    assert c19("status") == "web: active"
    assert c19("numprocesses") == "2"
    assert c19("add", "extra", "sleep 600", "--start") == "ok"
    wait_until(lambda: c19("status", "extra") == "active", what="the added watcher")
    assert c19("list") == "extra,web"
    assert c19("incr", "web") == "3"
    assert c19("rm", "extra") == "ok"
    assert c19("list") == "web"
    assert c19("quit") == "ok"
    assert d.proc.wait(timeout=30) == 0


def test_circusctl019_run_by_another_user_is_refused(tcp_circusd: Callable[..., Daemon],
                                                    circus019: Path, nobody: Nobody) -> None:
    assert NOBODY is not None
    d = tcp_circusd("[watcher:web]\ncmd = sleep 600\n")
    ctl = str(circus019 / "circusctl")
    res = subprocess.run(
        [*nobody.setpriv(), ctl, "--endpoint", d.endpoint, "--timeout", "10", "add", "x",
         "sleep 600", "--start"],
        capture_output=True, text=True, timeout=60, cwd="/")
    assert res.returncode != 0
    assert f"refused: uid {NOBODY.pw_uid} (nobody) may not use {d.endpoint}" in (
        res.stdout + res.stderr)
    assert d.call({"command": "list"})["watchers"] == ["web"]
