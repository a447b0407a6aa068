"""Binding ZeroMQ endpoints safely: ``ipc://`` files mode 0600, loopback by default."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlparse

import zmq

from circus.client import endpoint_reachable
from circus.util.accounts import user_id


def ipc_path(endpoint: str) -> str | None:
    return endpoint[len("ipc://"):] if endpoint.startswith("ipc://") else None


def is_loopback(endpoint: str) -> bool:
    """True for ipc:// and inproc:// endpoints and TCP endpoints on a loopback address."""
    if not endpoint.startswith("tcp://"):
        return True
    host = (urlparse(endpoint).hostname or "").strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # '*', an interface name or a host name: reachable from outside


def check_local(endpoint: str, option: str, allow_remote: bool) -> None:
    """Refuse a TCP endpoint reachable from other hosts unless *allow_remote*.

    Raises:
        ValueError: naming the endpoint and the option that allows it.
    """
    if not allow_remote and not is_loopback(endpoint):
        raise ValueError(
            f"{endpoint} accepts connections from other hosts and anyone who reaches it "
            f"can run any command; use a loopback or ipc:// endpoint, or set "
            f"allow_unauthenticated_remote = true in [circus] to accept the risk"
        )


def bind(sock: zmq.Socket[Any], endpoint: str, *, owner: str | int | None = None) -> None:
    """Bind *socket*; an ``ipc://`` file is created mode 0600 and chowned to *owner*.

    Raises:
        OSError: the endpoint is in use or cannot be created, with the endpoint named.
    """
    path = ipc_path(endpoint)
    if path and endpoint_reachable(endpoint):
        # ZeroMQ would silently take the file over and strand the other daemon
        raise OSError(98, f"cannot bind {endpoint}: another process is listening there")
    old_umask = os.umask(0o177) if path else None
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        raise OSError(exc.errno, f"cannot bind {endpoint}: {exc.strerror}") from exc
    finally:
        if old_umask is not None:
            os.umask(old_umask)
    if path and owner is not None:
        os.chown(path, user_id(owner), -1)


@dataclass(frozen=True)
class SocketFile:
    """The ``ipc://`` socket file one bind created, known by its inode."""

    path: str
    device: int
    inode: int

    def remove(self) -> None:
        """Unlink the file if it is still this one: a file another daemon bound at the same
        path since (after this one was deleted) is not ours to remove."""
        try:
            st = os.lstat(self.path)
            if (st.st_dev, st.st_ino) == (self.device, self.inode):
                os.unlink(self.path)
        except OSError:
            pass  # already gone, or the directory went with it (RuntimeDirectory=)


def socket_file(endpoint: str) -> SocketFile | None:
    """The socket file of an ``ipc://`` *endpoint* this process has just bound, to remove
    when it closes (ZeroMQ leaves it behind); None for other transports."""
    path = ipc_path(endpoint)
    if not path:
        return None
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return SocketFile(path, st.st_dev, st.st_ino)


def readable(sock: zmq.Socket[Any]) -> bool:
    """Does *sock* hold a message to read now? (Its FD is edge-triggered: ask after each read.)"""
    return bool(cast(int, sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN)


def socket_fd(sock: zmq.Socket[Any]) -> int:
    """The descriptor the event loop watches for *sock*."""
    return cast(int, sock.getsockopt(zmq.FD))
