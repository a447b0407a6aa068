"""listsockets across versions: Circus 0.19's circusctl reads ours, ours reads 0.19's."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.e2e.conftest import CIRCUSCTL, Daemon
from tests.interop.conftest import ctl019

Start = Callable[..., Daemon]


def sockets_body(tmp: Path, tag: str) -> str:
    return (
        "[socket:web]\nhost = 127.0.0.1\nport = 0\nbacklog = 64\n"
        f"[socket:local]\npath = {tmp}/{tag}.sock\n"
        "[watcher:w]\ncmd = sleep 3600\nuse_sockets = true\n"
    )


def test_circusctl019_lists_our_sockets(circusd: Start, circus019: Path,
                                        short_tmp: Path) -> None:
    d = circusd(sockets_body(short_tmp, "ours"))
    reply = d.call({"command": "listsockets"})
    by_name = {s["name"]: s for s in reply["sockets"]}
    result = ctl019(circus019, d.endpoint, "listsockets")
    assert result.returncode == 0, result.stderr
    web, local = by_name["web"], by_name["local"]
    assert sorted(result.stdout.split("\n")[:2]) == sorted([
        f"{web['fd']}:socket 'web' at 127.0.0.1:{web['port']}",
        f"{local['fd']}:socket 'local' at {short_tmp}/ours.sock",
    ])


def test_listsockets_replies_have_the_same_shape(circusd: Start, circusd019: Start,
                                                 short_tmp: Path) -> None:
    ours = circusd(sockets_body(short_tmp, "ours"))
    theirs = circusd019(sockets_body(short_tmp, "theirs"))

    def shape(d: Daemon) -> list[tuple[str, list[str], type[Any]]]:
        reply = d.call({"command": "listsockets"})
        assert reply["status"] == "ok", reply
        fds = [s["fd"] for s in reply["sockets"]]
        assert fds == sorted(fds)
        return sorted((s["name"], sorted(s), type(s.get("port"))) for s in reply["sockets"])

    assert shape(ours) == shape(theirs)
    # our circusctl prints 0.19's reply as 0.19's circusctl would
    result = subprocess.run([*CIRCUSCTL, "--endpoint", theirs.endpoint, "listsockets"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert f"socket 'local' at {short_tmp}/theirs.sock" in result.stdout
    assert "socket 'web' at 127.0.0.1:" in result.stdout
