"""circus.sockets without binding anything: configuration, references, reload plans."""

from __future__ import annotations

import socket

import pytest

from circus.hooks import SKIP, Hook, Skip
from circus.sockets import (
    CircusSocket,
    SocketFds,
    referenced_sockets,
    sockets_for_spawn,
    watcher_sockets,
)
from circus.socketset import CircusSockets


def test_defaults_follow_circus() -> None:
    sock = CircusSocket.from_config({"name": "Web"})
    assert sock.name == "web" and sock.section == "socket:web"
    assert (sock.host, sock.port, sock.backlog, sock.umask) == ("localhost", 8080, 2048, 8)
    assert sock.family == socket.AF_INET and sock.type == socket.SOCK_STREAM
    assert sock.listening and sock.fd is None
    assert sock.describe() == {"fd": -1, "name": "web", "backlog": 2048,
                               "host": "localhost", "port": 8080}


def test_a_path_makes_a_unix_socket_and_so_reuseport_does_not_apply() -> None:
    sock = CircusSocket.from_config({"name": "u", "path": "/tmp/x.sock", "so_reuseport": True})
    assert sock.family == socket.AF_UNIX and not sock.so_reuseport
    assert sock.describe() == {"fd": -1, "name": "u", "backlog": 2048, "path": "/tmp/x.sock"}


def test_circusd_listens_only_on_stream_sockets_without_so_reuseport() -> None:
    assert not CircusSocket("a", so_reuseport=True).listening
    assert not CircusSocket("a", type="SOCK_DGRAM").listening
    assert CircusSocket("a", type=socket.SOCK_SEQPACKET, path="/x").listening


def test_names_read_from_families_and_types() -> None:
    sock = CircusSocket.from_config({"name": "x", "family": "af_inet6", "type": "sock_dgram"})
    assert sock.family == socket.AF_INET6 and sock.type == socket.SOCK_DGRAM


@pytest.mark.parametrize(("texts", "expected"), [
    (("run --fd $(circus.sockets.web)", None), {"web"}),
    (("run --fd ((circus.sockets.WEB))", None), {"web"}),
    (("run", ["--a", "$(CIRCUS.SOCKETS.One)", "$(circus.sockets.two)"]), {"one", "two"}),
    (("run $(circus.sockets.web", "--x $(circus.env.web)"), set()),
])
def test_referenced_sockets(texts: tuple[str, object], expected: set[str]) -> None:
    assert referenced_sockets(*texts) == expected  # type: ignore[arg-type]


class _W:
    name = "w"
    on_demand = autostart = use_sockets = True
    status = "stopped"

    def __init__(self, cmd: str, args: object = None, stdin_socket: str | None = None) -> None:
        self.cmd, self.args, self.stdin_socket = cmd, args, stdin_socket


def test_the_sockets_a_watcher_uses() -> None:
    known = ["web", "admin"]
    assert watcher_sockets(_W("x $(circus.sockets.web) $(circus.sockets.nope)"), known) == {
        "web"}
    assert watcher_sockets(_W("x", stdin_socket="ADMIN"), known) == {"admin"}
    assert watcher_sockets(_W("x"), known) == set()


def test_a_reload_plan_compares_the_configuration() -> None:
    running = CircusSockets([{"name": "same", "port": 1}, {"name": "changed", "port": 2},
                             {"name": "gone", "port": 3}])
    plan = running.plan([{"name": "same", "port": 1}, {"name": "CHANGED", "port": 2,
                                                       "backlog": 5}, {"name": "new"}])
    assert [s.name for s in plan.added] == ["new"]
    assert [s.name for s in plan.changed] == ["changed"]
    assert plan.removed == ["gone"] and plan.names() == {"new", "changed", "gone"}
    assert not running.plan([{"name": "same", "port": 1}, {"name": "changed", "port": 2},
                             {"name": "gone", "port": 3}])


def test_two_sockets_with_one_name_are_refused() -> None:
    with pytest.raises(ValueError, match="web"):
        CircusSockets([{"name": "web"}, {"name": "WEB"}])


def test_a_spawn_without_so_reuseport_sockets_gets_the_shared_mapping() -> None:
    fds = SocketFds()
    fds["web"] = 7
    with sockets_for_spawn(fds, "x $(circus.sockets.web)", None, None, True) as got:
        assert got is fds
    plain = {"web": 7}
    with sockets_for_spawn(plain, "x", None, "web", False) as got:
        assert got is plain


def test_skip_is_truthy_and_checked() -> None:
    assert SKIP and SKIP.delay == 1.0 and Skip(0.25).delay == 0.25
    with pytest.raises(ValueError, match="delay"):
        Skip(-1)


async def test_a_hook_returning_skip_passes_it_on() -> None:
    hook = Hook.build("before_spawn", lambda **kw: Skip(2.0))
    assert await hook.call(watcher=None, arbiter=None) == (Skip(2.0), None)
    hook = Hook.build("before_spawn", lambda **kw: None)
    assert await hook.call(watcher=None, arbiter=None) == (False, None)
