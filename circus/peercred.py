"""The user at the other end of one connection, from its descriptor (circus/peers.py).

A unix socket tells its peer's uid and pid (``SO_PEERCRED``). A TCP connection on this host
does not, but the client's own socket is in the kernel's socket table with its owner's uid:
``sock_diag`` (netlink) finds it by its address in about 20 µs; ``/proc/net/tcp{,6}``,
read when netlink is not available, is a scan that takes milliseconds on a busy host. Both
see only this network namespace, and give uids as this user namespace maps them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import zmq

log = logging.getLogger(__name__)

Local = tuple[str, str | int]  # ("unix", path) or ("tcp", port)


def bound_address(sock: zmq.Socket[Any]) -> Local | None:
    """What the connections of *sock*'s (last) bound endpoint have as their local address:
    ``("unix", path)`` or ``("tcp", port)``; None for other transports."""
    endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
    if endpoint.startswith("ipc://"):
        path = endpoint[len("ipc://"):]
        return ("unix", "\0" + path[1:] if path.startswith("@") else path)
    if endpoint.startswith("tcp://"):
        port = urlparse(endpoint).port
        return None if port is None else ("tcp", port)
    return None


@contextlib.contextmanager
def connection(fd: int, local: Local | None) -> Iterator[socket.socket | None]:
    """A socket object on a duplicate of *fd*, if *fd* is a connection whose local address
    is *local* (a connection of the endpoint); None otherwise. Closed on exit.

    Acting on the duplicate (reading credentials, shutting down) affects the kernel socket
    it was made from, even if libzmq closes *fd* and the number is reused meanwhile.
    """
    try:
        dup = os.dup(fd)
    except OSError:
        yield None
        return
    try:
        sock = socket.socket(fileno=dup)  # the duplicate's own; flags left as they are
    except OSError:
        os.close(dup)
        yield None
        return
    with sock:
        yield sock if local is not None and _local_of(sock) == local else None


def _local_of(sock: socket.socket) -> Local | None:
    try:
        name = sock.getsockname()
    except OSError:
        return None
    if sock.family == socket.AF_UNIX:
        path = name.decode(errors="replace") if isinstance(name, bytes) else name
        return ("unix", path)
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        return ("tcp", int(name[1]))
    return None


def credentials(sock: socket.socket) -> tuple[int | None, int | None, int | None]:
    """(uid, pid, inode) of the client at the other end of *sock*.

    A unix socket: ``SO_PEERCRED`` (uid and pid). TCP: the owner and inode of the client's
    own socket in this network namespace's socket table (no pid). Nones when unknown.
    """
    try:
        if sock.family == socket.AF_UNIX:
            raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            pid, uid, _gid = struct.unpack("3i", raw)
            return uid, pid, None
        peer = sock.getpeername()
        local = sock.getsockname()
    except OSError:
        return None, None, None
    uid, inode = tcp_owner(sock.family, (peer[0], int(peer[1])), (local[0], int(local[1])))
    return uid, None, inode


NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLMSG_ERROR = 2
NLM_F_REQUEST = 1
_NLMSG = struct.Struct("=IHHII")  # struct nlmsghdr
_DIAG_REQ = struct.Struct("=BBBBI")  # inet_diag_req_v2, before its sockid
_NOCOOKIE = struct.pack("=III", 0, 0xFFFFFFFF, 0xFFFFFFFF)  # idiag_if, INET_DIAG_NOCOOKIE
_UID_AT = 4 + 48 + 12  # in inet_diag_msg: after family..retrans, sockid, expires/rqueue/wqueue


def tcp_owner(family: int, client: tuple[str, int], server: tuple[str, int]
              ) -> tuple[int | None, int | None]:
    """(uid, inode) of the TCP socket bound to *client* and connected to *server*, from the
    socket table of this network namespace; (None, None) if there is none."""
    family, client, server = _unmapped(family, client, server)
    try:
        return _diag_owner(family, client, server)
    except OSError as exc:  # no netlink here (a sandbox, a seccomp filter): the slow way
        log.debug("sock_diag unavailable (%s): reading /proc/net", exc)
        return _proc_owner(family, client, server)


def _unmapped(family: int, client: tuple[str, int], server: tuple[str, int]
              ) -> tuple[int, tuple[str, int], tuple[str, int]]:
    """An IPv4 client seen through an IPv6 socket (``::ffff:127.0.0.1``) has an IPv4 socket."""
    prefix = "::ffff:"
    if family == socket.AF_INET6 and client[0].startswith(prefix) and "." in client[0]:
        return (socket.AF_INET, (client[0][len(prefix):], client[1]),
                (server[0].removeprefix(prefix), server[1]))
    return family, client, server


def _packed(family: int, host: str) -> bytes:
    return socket.inet_pton(family, host.split("%", 1)[0]).ljust(16, b"\0")


def _diag_owner(family: int, client: tuple[str, int], server: tuple[str, int]
                ) -> tuple[int | None, int | None]:
    sockid = (struct.pack("!HH", client[1], server[1]) + _packed(family, client[0])
              + _packed(family, server[0]) + _NOCOOKIE)
    request = _DIAG_REQ.pack(family, socket.IPPROTO_TCP, 0, 0, 0xFFFFFFFF) + sockid
    header = _NLMSG.pack(_NLMSG.size + len(request), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, 1, 0)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC,
                       NETLINK_SOCK_DIAG) as nl:
        nl.settimeout(1.0)  # the kernel answers within the send; this is a safety net
        nl.send(header + request)
        reply = nl.recv(8192)
    _length, kind, _flags, _seq, _pid = _NLMSG.unpack_from(reply)
    if kind == NLMSG_ERROR:
        (err,) = struct.unpack_from("=i", reply, _NLMSG.size)
        if -err == 2:  # ENOENT: no such socket here (gone, or another network namespace)
            return None, None
        raise OSError(-err, os.strerror(-err))
    if kind != SOCK_DIAG_BY_FAMILY or len(reply) < _NLMSG.size + _UID_AT + 8:
        raise OSError(0, f"unexpected sock_diag reply (type {kind})")
    uid, inode = struct.unpack_from("=II", reply, _NLMSG.size + _UID_AT)
    return uid, inode


def _proc_address(family: int, host: str, port: int) -> str:
    """An address as /proc/net/tcp{,6} prints it: 32-bit words in host order, in hex."""
    raw = socket.inet_pton(family, host.split("%", 1)[0])
    words = struct.unpack(f"={len(raw) // 4}I", raw)
    return "".join(f"{w:08X}" for w in words) + f":{port:04X}"


def _proc_owner(family: int, client: tuple[str, int], server: tuple[str, int]
                ) -> tuple[int | None, int | None]:
    path = "/proc/net/tcp6" if family == socket.AF_INET6 else "/proc/net/tcp"
    local = _proc_address(family, *client)
    remote = _proc_address(family, *server)
    try:
        with open(path) as table:
            next(table, None)  # the header
            for line in table:
                fields = line.split()
                if len(fields) > 9 and fields[1] == local and fields[2] == remote:
                    return int(fields[7]), int(fields[9])
    except OSError:
        pass
    return None, None


def holds(pid: int, target: str) -> bool:
    """True if process *pid* has a descriptor on the socket *target* (``socket:[inode]``)."""
    base = f"/proc/{pid}/fd"
    try:
        names = os.listdir(base)
    except OSError:
        return False
    for name in names:
        with contextlib.suppress(OSError):
            if os.readlink(f"{base}/{name}") == target:
                return True
    return False
