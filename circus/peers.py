"""Who is on the other end: the local user of every connection to circusd's endpoints.

On an ``ipc://`` or loopback ``tcp://`` endpoint, circusd serves root and its own user (and
those ``[circus] allow_users`` / ``allow_groups`` and ``endpoint_owner`` name); any other
local account is refused (docs/deployment.md, "Securing circusd").

How a connection's user is known
--------------------------------
ZeroMQ hides connections, but three of its features reach them. A *socket monitor* reports
each accepted connection with its descriptor (``ACCEPTED``) and each lost one
(``DISCONNECTED``); a received message carries the descriptor it came from (``SRCFD``); and
a ZAP handler (:class:`ZapGate`, the one of circusd's context) holds each new connection's
handshake, before any message of it can be received, until it answers. From a descriptor
the kernel tells the peer's uid (circus/peercred.py: ``SO_PEERCRED`` for a unix socket, the
owner of the client's socket for TCP). A descriptor is always read through a duplicate,
checked to be a connection of this endpoint, so that what is learnt and what is done (a
shutdown) concern the same kernel socket.

Descriptor numbers are reused, which is what makes this delicate. libzmq orders things so
that: a connection's ``ACCEPTED`` event is queued before its handshake reaches the ZAP
handler; every message of a connection is queued before its descriptor is closed, and its
``DISCONNECTED`` event comes before that close; a receive that finds the socket empty has
taken every message queued before it. So :class:`Connections` keeps, for each descriptor,
the connections it has held whose messages may still be unread (a *generation* each, with
its peer, read when its ``ACCEPTED`` is handled; if its ``DISCONNECTED`` follows before
that reading is confirmed, it stays unknown). Before the ZAP handler lets a handshake
through, the controller reads the monitor and every queued request, and once the socket is
empty each descriptor keeps only its newest generation. A generation first seen after the
last handshake let through cannot have sent anything yet. A message is given the peer of
the generations of its descriptor that may have sent it; if those disagree, it is refused
as ambiguous (it would take an older connection's request that stayed queued across a
handshake on the same descriptor).

The events socket (XPUB) receives no command to attribute: :class:`Subscribers` looks up
each accepted connection and shuts a refused one down before any event is published and
before the ZAP handler lets its handshake through, so it never subscribes.

This relies on libzmq running the context with one I/O thread (circusd's, and pyzmq's
default): the frontend refuses a context with more.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import pwd
import socket
import struct
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import zmq

from circus.endpoints import readable, socket_fd
from circus.peercred import Local, connection, credentials, holds
from circus.tiers import Tier
from circus.util.accounts import user_id

if TYPE_CHECKING:
    from circus.curve import KeyAuthenticator

log = logging.getLogger(__name__)


__all__ = ["Tier", "Peer", "Access", "Connections", "Subscribers", "ZapGate"]


@dataclass(frozen=True, slots=True)
class Peer:
    """The sender of a request, as the controller sees it.

    ``tier`` None means refused, and ``why`` says why; for an admitted peer ``why`` names
    the rule that let it in (``root``, ``allow_users``, ``plugin:NAME``, …). A local user
    is ``admin``; a CURVE client has the tier of its key, and ``key`` is the key's name.
    """

    uid: int | None
    pid: int | None
    tier: Tier | None
    why: str
    key: str | None = None

    @property
    def allowed(self) -> bool:
        return self.tier is not None

    def describe(self) -> str:
        """``key ops``, ``uid 65534 (nobody)``, or ``an unknown user``."""
        if self.key is not None:
            return f"key {self.key}"
        return "an unknown user" if self.uid is None else describe_uid(self.uid)


UNKNOWN = Peer(None, None, None, "circusd could not find which local user owns the connection")
AMBIGUOUS = Peer(None, None, None,
                 "circusd could not tell which connection sent the request (its descriptor "
                 "was reused meanwhile); send it again")


def describe_uid(uid: int) -> str:
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


# -- the rule ------------------------------------------------------------------------------

def _words(text: str | None) -> list[str]:
    return (text or "").replace(",", " ").split()


def parse_accounts(users: str | None, groups: str | None) -> tuple[set[int], set[int]]:
    """The uids of *users* and the gids of *groups* (``allow_users``, ``allow_groups``).

    Each is a list of names or numbers, separated by commas or spaces; a word ``@name``
    names a group in either list.

    Raises:
        ValueError: naming the user or group that does not exist.
    """
    uids: set[int] = set()
    gids: set[int] = set()
    for word in _words(users):
        if word.startswith("@"):
            gids.add(_gid(word[1:]))
        elif word.isdigit():
            uids.add(int(word))
        else:
            try:
                uids.add(pwd.getpwnam(word).pw_uid)
            except KeyError:
                raise ValueError(f"no user named {word!r}") from None
    for word in _words(groups):
        gids.add(_gid(word.removeprefix("@")))
    return uids, gids


def _gid(name: str) -> int:
    if name.isdigit():
        return int(name)
    if not name:
        raise ValueError("'@' must be followed by a group name or number")
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise ValueError(f"no group named {name!r}") from None


class Access:
    """Which local users an endpoint serves, and as what (module docstring).

    Args:
        own_uid: circusd's effective uid.
        owner: ``endpoint_owner``, whose user may connect to the ``ipc://`` files.
        users: ``allow_users``.
        groups: ``allow_groups``.
        internal: the processes circusd started for itself (plugins): pid -> watcher name.
    """

    def __init__(self, own_uid: int, owner: str | int | None = None, users: str | None = None,
                 groups: str | None = None,
                 internal: Callable[[], Mapping[int, str]] | None = None) -> None:
        self.own_uid = own_uid
        self.owner_uid = None if owner is None or owner == "" else user_id(owner)
        self.uids, self.gids = parse_accounts(users, groups)
        self._internal = internal
        self._groups: dict[int, set[int]] = {}  # uid -> its groups, looked up once

    def classify(self, uid: int | None, pid: int | None = None, inode: int | None = None
                 ) -> Peer:
        """The :class:`Peer` of a connection whose client runs as *uid*.

        *pid* (a unix socket's peer) or *inode* (a TCP client socket) identify the client
        process, which may be one circusd started for a plugin.
        """
        if uid is None:
            return UNKNOWN
        why = self._rule(uid)
        if why is None:
            why = self._started_here(pid, inode)
        return Peer(uid, pid, None if why is None else Tier.ADMIN, why or "not an allowed user")

    def _rule(self, uid: int) -> str | None:
        if uid == 0:
            return "root"
        if uid == self.own_uid:
            return "circusd's own user"
        if uid == self.owner_uid:
            return "endpoint_owner"
        if uid in self.uids:
            return "allow_users"
        if self.gids:
            common = self._groups_of(uid) & self.gids
            if common:
                return f"allow_groups ({', '.join(_group_name(g) for g in sorted(common))})"
        return None

    def _groups_of(self, uid: int) -> set[int]:
        groups = self._groups.get(uid)
        if groups is None:
            try:
                entry = pwd.getpwuid(uid)
                groups = set(os.getgrouplist(entry.pw_name, entry.pw_gid))
            except (KeyError, OSError):
                groups = set()
            self._groups[uid] = groups
        return groups

    def _started_here(self, pid: int | None, inode: int | None) -> str | None:
        """The watcher name if the client is a process circusd runs for a plugin."""
        internal = self._internal() if self._internal is not None else {}
        if not internal:
            return None
        if pid is not None:
            return internal.get(pid)
        if inode is not None:
            target = f"socket:[{inode}]"
            for candidate, name in internal.items():
                if holds(candidate, target):
                    return name
        return None

    def refusal(self, peer: Peer, endpoint: str) -> str:
        """The reason a refused request is answered with: it names the rule."""
        if peer.uid is None:
            return f"refused: {peer.why}"
        served = "root"
        if self.own_uid != 0:
            served += f", its own user ({describe_uid(self.own_uid)})"
        return (f"refused: {peer.describe()} may not use {endpoint}: circusd serves {served} "
                f"and the users named by [circus] allow_users or allow_groups (see "
                f"'Securing circusd' in docs/deployment.md)")


def _group_name(gid: int) -> str:
    try:
        return "@" + grp.getgrgid(gid).gr_name
    except KeyError:
        return f"@{gid}"


# -- following a ZeroMQ socket's connections ----------------------------------------------

ACCEPTED = zmq.EVENT_ACCEPTED
GONE = zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED
_EVENT = struct.Struct("=HI")
_monitors = 0


def monitor(sock: zmq.Socket[Any], context: zmq.Context[Any]) -> zmq.Socket[Any]:
    """A PAIR socket receiving *sock*'s ``ACCEPTED`` and ``DISCONNECTED`` events. Call it
    before *sock* binds. Its queue has no limit: libzmq would otherwise stall its I/O
    thread on a full monitor, and an event must never be lost."""
    global _monitors
    _monitors += 1
    address = f"inproc://circus-peers-{os.getpid()}-{_monitors}"
    sock.monitor(address, ACCEPTED | GONE)
    pair: zmq.Socket[Any] = zmq.Context.shadow(context.underlying).socket(zmq.PAIR)
    pair.linger = 0
    pair.rcvhwm = 0
    pair.connect(address)
    return pair


def read_events(pair: zmq.Socket[Any]) -> list[tuple[int, int]]:
    """Every (event, descriptor) queued on a monitor *pair* now."""
    events: list[tuple[int, int]] = []
    # ZMQ_EVENTS processes libzmq's pending commands: whatever was queued is seen
    while readable(pair):
        try:
            frames = pair.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            break
        if frames and len(frames[0]) >= _EVENT.size:
            events.append(_EVENT.unpack_from(frames[0]))
    return events


class _Gen:
    """One connection a descriptor held: its peer, once known."""

    __slots__ = ("peer", "seen")

    def __init__(self, seen: int) -> None:
        self.peer = UNKNOWN
        self.seen = seen  # handshakes let through before its ACCEPTED was handled


class Connections:
    """The peer of each message of a ROUTER socket (module docstring: generations).

    Args:
        sock: the ROUTER, not yet bound; its ZAP domain must lead to a :class:`ZapGate`
            that calls the controller, then :meth:`letting_through`, for each handshake.
        context: its context (the monitor's PAIR is made in it).
        access: the rule.
    """

    def __init__(self, sock: zmq.Socket[Any], context: zmq.Context[Any], access: Access) -> None:
        self._pair = monitor(sock, context)
        self.access = access
        self.local: Local | None = None  # set once bound: peercred.bound_address()
        self._gens: dict[int, list[_Gen]] = {}
        self._fresh: set[int] = set()  # descriptors that may hold several generations
        self._handshakes = 0

    def poll(self) -> None:
        """Apply the monitor's events; read the user of each new connection."""
        checking: dict[int, _Gen] = {}
        while True:
            pending: dict[int, _Gen] = {}
            for event, fd in read_events(self._pair):
                if event & ACCEPTED:
                    gen = _Gen(self._handshakes)
                    self._gens.setdefault(fd, []).append(gen)
                    self._fresh.add(fd)
                    pending[fd] = gen
                else:
                    pending.pop(fd, None)  # closed before its user was read: unknown
                    read = checking.pop(fd, None)
                    if read is not None:  # closed before the reading was confirmed
                        read.peer = UNKNOWN
            checking.clear()  # no DISCONNECTED followed their reading: confirmed
            if not pending:
                return
            for fd, gen in pending.items():
                gen.peer = self._resolve(fd)
                checking[fd] = gen

    def _resolve(self, fd: int) -> Peer:
        with connection(fd, self.local) as sock:
            if sock is None:
                return UNKNOWN
            uid, pid, inode = credentials(sock)
        return self.access.classify(uid, pid, inode)

    def peer_of(self, fd: int) -> Peer:
        """The peer of a message just received from descriptor *fd*."""
        gens = self._gens.get(fd)
        if not gens:
            return UNKNOWN
        senders = [g for g in gens if g.seen < self._handshakes]
        if not senders:
            return UNKNOWN
        peer = senders[-1].peer
        for gen in senders[:-1]:  # older connections whose messages may still be queued
            if (gen.peer.uid, gen.peer.tier) != (peer.uid, peer.tier):
                return AMBIGUOUS
        return peer

    def idle(self, sock: zmq.Socket[Any]) -> bool:
        """True if *sock* holds nothing to read. Then no message of an older generation
        can still be queued: each descriptor keeps only its newest."""
        self.poll()
        if readable(sock):
            return False
        for fd in self._fresh:
            gens = self._gens.get(fd)
            if gens:
                del gens[:-1]
        self._fresh.clear()
        return True

    def letting_through(self) -> None:
        """A handshake is about to be let through (after :meth:`idle` returned True)."""
        self._handshakes += 1

    def close(self) -> None:
        self._pair.close(linger=0)


class Subscribers:
    """Keeps refused peers off an XPUB: each new connection is looked up, and a refused
    one is shut down (module docstring). :meth:`enforce` runs before every publish and
    as the ZAP handler of the events domain, before a handshake is let through."""

    def __init__(self, sock: zmq.Socket[Any], context: zmq.Context[Any], access: Access,
                 endpoint: str) -> None:
        self._pair = monitor(sock, context)
        self.access = access
        self.endpoint = endpoint
        self.local: Local | None = None
        self.refused = 0  # connections shut down

    def enforce(self) -> None:
        for event, fd in read_events(self._pair):
            if event & ACCEPTED:
                self._check(fd)

    def _check(self, fd: int) -> None:
        with connection(fd, self.local) as sock:
            if sock is None:
                return  # gone, and its number reused by something else: nothing to do
            uid, pid, inode = credentials(sock)
            peer = self.access.classify(uid, pid, inode)
            if peer.allowed:
                return
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.refused += 1
        if THROTTLE.allow(("events", peer.uid)):
            log.warning("events: refused a subscriber, %s, on %s: %s", peer.describe(),
                        self.endpoint, peer.why)

    def close(self) -> None:
        self._pair.close(linger=0)


# -- the ZAP gate --------------------------------------------------------------------------

ZAP_ADDRESS = "inproc://zeromq.zap.01"
CONTROL_DOMAIN = b"circus-control"
EVENTS_DOMAIN = b"circus-events"


class ZapGate:
    """The ZAP handler of circusd's context (ZeroMQ allows one per context): a handshake on
    a socket whose ZAP domain is in :attr:`handlers` is let through once that handler has
    run. A handshake on the CURVE domain (circus/curve.py) is answered by :attr:`curve`,
    ``zmq.auth``'s authenticator over the clients' keys.

    Raises:
        OSError: another ZAP handler is bound in this context.
    """

    def __init__(self, context: zmq.Context[Any]) -> None:
        self._sock: zmq.Socket[Any] = zmq.Context.shadow(context.underlying).socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self.handlers: dict[bytes, Callable[[], None]] = {}
        self.curve: KeyAuthenticator | None = None
        try:
            self._sock.bind(ZAP_ADDRESS)
        except zmq.ZMQError as exc:
            self._sock.close(linger=0)
            raise OSError(exc.errno, f"another ZAP handler is bound at {ZAP_ADDRESS} in "
                          "circusd's ZeroMQ context; circusd needs its own to learn who "
                          "connects to its endpoints") from exc

    @property
    def fd(self) -> int:
        return socket_fd(self._sock)

    def serve(self) -> None:
        """Answer every queued request (a loop reader callback; the FD is edge-triggered)."""
        while not self._sock.closed and readable(self._sock):
            try:
                frames = self._sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            # [routing id, "", version, request id, domain, address, identity, mechanism, …]
            if len(frames) < 8 or frames[1] != b"":
                continue
            if self.curve is not None and frames[4] == self.curve.domain:
                self.curve.handle(frames, self._sock)
                continue
            handler = self.handlers.get(frames[4])
            if handler is not None:
                handler()
                status, text = b"200", b"OK"
            else:
                status, text = b"400", b"unknown domain"
            with contextlib.suppress(zmq.ZMQError):
                self._sock.send_multipart(
                    [frames[0], b"", b"1.0", frames[3], status, text, b"", b""], zmq.NOBLOCK)

    def close(self) -> None:
        self._sock.close(linger=0)


class Throttle:
    """At most one log line per key every *interval* seconds (a refused user retrying in a
    loop must not flood circusd's log)."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._last: dict[Any, float] = {}

    def allow(self, key: Any) -> bool:
        now = time.monotonic()
        if now - self._last.get(key, -self.interval) < self.interval:
            return False
        if len(self._last) > 1024:
            self._last.clear()
        self._last[key] = now
        return True


THROTTLE = Throttle()
