"""Binding ZeroMQ endpoints safely: ``ipc://`` files mode 0600, loopback by default."""

from __future__ import annotations

import os
import pwd
from typing import Any

import zmq


def ipc_path(endpoint: str) -> str | None:
    return endpoint[len("ipc://"):] if endpoint.startswith("ipc://") else None


def bind(socket: zmq.Socket[Any], endpoint: str, *, owner: str | int | None = None) -> None:
    """Bind *socket*; an ``ipc://`` file is created mode 0600 and chowned to *owner*.

    Raises:
        OSError: the endpoint is in use or cannot be created, with the endpoint named.
    """
    path = ipc_path(endpoint)
    old_umask = os.umask(0o177) if path else None
    try:
        socket.bind(endpoint)
    except zmq.ZMQError as exc:
        raise OSError(exc.errno, f"cannot bind {endpoint}: {exc.strerror}") from exc
    finally:
        if old_umask is not None:
            os.umask(old_umask)
    if path and owner is not None:
        uid = owner if isinstance(owner, int) else (
            int(owner) if str(owner).isdigit() else pwd.getpwnam(str(owner)).pw_uid
        )
        os.chown(path, uid, -1)
