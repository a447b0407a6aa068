"""circus/peers.py and circus/peercred.py with real sockets: who is at the other end of a
connection, how a descriptor's generations decide a message's sender, and the processes
circusd runs for plugins, which are let in whatever their user.

Clients of another user are children started through ``setpriv`` as ``nobody`` (the tests
that need one are skipped unless the run is root's).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from circus.arbiter import Arbiter
from circus.peercred import _proc_owner, credentials, tcp_owner
from circus.peers import AMBIGUOUS, UNKNOWN, Access, Connections, Peer, Tier, parse_accounts
from circus.watcher import Watcher
from tests.conftest import wait_for


def _nobody() -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        return None


NOBODY = _nobody()
SETPRIV = shutil.which("setpriv")
as_root = pytest.mark.skipif(os.geteuid() != 0 or NOBODY is None or SETPRIV is None,
                             reason="needs root, a 'nobody' account and setpriv")


def setpriv() -> list[str]:
    assert NOBODY is not None and SETPRIV is not None
    return [SETPRIV, f"--reuid={NOBODY.pw_uid}", f"--regid={NOBODY.pw_gid}", "--clear-groups"]


def test_parse_accounts_reads_names_numbers_and_groups() -> None:
    root = pwd.getpwuid(0).pw_name
    uids, gids = parse_accounts(f"{root}, 4242 @0", "0, @0")
    assert uids == {0, 4242} and gids == {0}
    with pytest.raises(ValueError, match="no user named 'no-such-user-here'"):
        parse_accounts("no-such-user-here", None)
    with pytest.raises(ValueError, match="no group named 'no-such-group-here'"):
        parse_accounts(None, "@no-such-group-here")


def test_access_names_the_rule_that_lets_a_peer_in() -> None:
    access = Access(1234, owner="4321", users="777", internal=lambda: {99: "plugin:x"})
    assert access.classify(0).why == "root"
    assert access.classify(1234).why == "circusd's own user"
    assert access.classify(4321).why == "endpoint_owner"
    assert access.classify(777).why == "allow_users"
    assert access.classify(555, pid=99) == Peer(555, 99, Tier.ADMIN, "plugin:x")
    refused = access.classify(555, pid=98)
    assert not refused.allowed
    assert "circusd serves root, its own user (uid 1234" in access.refusal(refused, "ep")
    assert access.classify(None) is UNKNOWN


@pytest.fixture
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A loopback TCP connection: (the accepted socket, the client's)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
    with client, accepted:
        yield accepted, client


def test_the_owner_of_a_tcp_client_socket_is_found(
        tcp_pair: tuple[socket.socket, socket.socket]) -> None:
    accepted, client = tcp_pair
    inode = os.stat(f"/proc/self/fd/{client.fileno()}").st_ino
    assert credentials(accepted) == (os.geteuid(), None, inode)
    # the slow way (no netlink) finds the same socket
    assert _proc_owner(socket.AF_INET, client.getsockname(), accepted.getsockname()) == (
        os.geteuid(), inode)
    # a socket that is not there
    gone = ("127.0.0.1", 1)
    assert tcp_owner(socket.AF_INET, gone, accepted.getsockname()) == (None, None)


def test_a_unix_peer_has_its_uid_and_pid() -> None:
    left, right = socket.socketpair()
    with left, right:
        assert credentials(left) == (os.geteuid(), os.getpid(), None)


class FakeMonitor:
    """Stands in for the monitor PAIR of a :class:`Connections`: events are queued here."""

    def __init__(self, ctx: zmq.Context[Any], name: str) -> None:
        self.writer = ctx.socket(zmq.PAIR)
        self.writer.bind(f"inproc://{name}")
        self.reader = ctx.socket(zmq.PAIR)
        self.reader.connect(f"inproc://{name}")

    def emit(self, event: int, fd: int) -> None:
        self.writer.send_multipart([event.to_bytes(2, "little") + fd.to_bytes(4, "little"),
                                    b"tcp://127.0.0.1:1"])


def test_generations_decide_who_sent_a_message() -> None:
    """A descriptor reused by a connection of another user: a message queued before the
    new connection was let through is its first owner's; after it, the two can no longer
    be told apart until the socket has been found empty."""
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        router = ctx.socket(zmq.ROUTER)
        conns = Connections(router, ctx, Access(0))
        fake = FakeMonitor(ctx, "fake-monitor")
        conns._pair.close()
        conns._pair = fake.reader
        users = iter([Peer(0, None, Tier.ADMIN, "root"), Peer(65534, None, None, "no")])
        conns._resolve = lambda fd: next(users)  # type: ignore[method-assign]

        fake.emit(zmq.EVENT_ACCEPTED, 7)
        conns.poll()
        assert conns.peer_of(7) is UNKNOWN  # not let through yet: it cannot have sent
        conns.letting_through()
        assert conns.peer_of(7).why == "root"

        fake.emit(zmq.EVENT_DISCONNECTED, 7)
        fake.emit(zmq.EVENT_ACCEPTED, 7)  # nobody's connection gets the same number
        conns.poll()
        assert conns.peer_of(7).why == "root"  # only root's connection can have sent
        conns.letting_through()
        assert conns.peer_of(7) is AMBIGUOUS  # root's old request, or nobody's new one
        assert conns.idle(router)  # nothing queued: root's connection has no more
        assert conns.peer_of(7).uid == 65534

        fake.emit(zmq.EVENT_ACCEPTED, 9)
        fake.emit(zmq.EVENT_DISCONNECTED, 9)  # gone before it could be looked up
        conns.poll()
        conns.letting_through()
        assert conns.peer_of(9) is UNKNOWN
        assert conns.peer_of(11) is UNKNOWN  # never accepted
        for sock in (fake.writer, fake.reader, router):
            sock.close(linger=0)
    finally:
        ctx.destroy(linger=0)


# Runs as nobody under a watcher: asks circusd one thing over TCP and writes the reply,
# then writes the topic of the first event it receives.
PROBE = r"""
import json, sys, zmq
control, events, path = sys.argv[1:4]
ctx = zmq.Context()
sub = ctx.socket(zmq.SUB)
sub.connect(events)
sub.setsockopt(zmq.SUBSCRIBE, b"")
dealer = ctx.socket(zmq.DEALER)
dealer.connect(control)
dealer.send(json.dumps({"id": "1", "command": "numwatchers"}).encode())
reply = json.loads(dealer.recv()) if dealer.poll(10000) else {"status": "none"}
with open(path, "a") as out:
    out.write(json.dumps(reply) + "\n")
    out.flush()
    if sub.poll(30000):
        out.write("event " + sub.recv_multipart()[0].decode() + "\n")
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def spool(short_tmp: Path) -> Path:
    """A directory nobody may write in."""
    short_tmp.chmod(0o755)
    path = short_tmp / "spool"
    path.mkdir()
    path.chmod(0o777)
    return path


@as_root
async def test_a_plugin_process_is_let_in_whatever_its_user(spool: Path) -> None:
    """A process of a plugin watcher running as nobody may command circusd and read its
    events over loopback TCP (found by the socket it holds); the same program under an
    ordinary watcher may not."""
    ctl, pub = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"

    def probe(name: str) -> Watcher:
        cmd = [*setpriv(), sys.executable, "-c", PROBE, ctl, pub, str(spool / name)]
        return Watcher(name, subprocess.list2cmdline(cmd), working_dir="/")

    arbiter = Arbiter([probe("plugin:probe"), probe("intruder")], ctl, pub)
    await arbiter.open()
    try:
        def replied(name: str) -> dict[str, Any] | None:
            found = lines(spool / name)
            return json.loads(found[0]) if found else None

        plugin = await wait_for(lambda: replied("plugin:probe"), what="the plugin's reply")
        assert plugin is not None and plugin["status"] == "ok" and plugin["numwatchers"] == 2
        intruder = await wait_for(lambda: replied("intruder"), what="the intruder's reply")
        assert intruder is not None and intruder["status"] == "error"
        assert "uid 65534 (nobody) may not use" in intruder["reason"]

        def got_event() -> bool:  # an event at each check, until the plugin has one
            arbiter.publish("arbiter.poke", {})
            return any(line.startswith("event ") for line in lines(spool / "plugin:probe"))

        await wait_for(got_event, what="the plugin to receive an event", timeout=20,
                       interval=0.05)
        assert not any(line.startswith("event ") for line in lines(spool / "intruder"))
    finally:
        await arbiter.close()
