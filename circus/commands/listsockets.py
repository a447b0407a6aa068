"""``listsockets``: the sockets circusd binds for its watchers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from circus.commands.base import Command, Props, Reply
from circus.tiers import Tier

if TYPE_CHECKING:
    from circus.types import ArbiterAPI


def _field(sock: Any, key: str) -> Any:
    if isinstance(sock, Mapping):
        return sock.get(key)
    return getattr(sock, key, None)


def describe(sock: Any) -> dict[str, Any]:
    """The listsockets entry of one socket (an object or a configuration mapping)."""
    if hasattr(sock, "describe"):  # circus.sockets.CircusSocket
        return dict(sock.describe())
    entry: dict[str, Any] = {
        "fd": _field(sock, "fd"),
        "name": _field(sock, "name"),
        "backlog": _field(sock, "backlog"),
    }
    path = _field(sock, "path")
    if path:
        entry["path"] = path
    else:
        entry["host"] = _field(sock, "host")
        entry["port"] = _field(sock, "port")
    return entry


class ListSockets(Command):
    """\
    Get the list of sockets
    =======================

    The sockets of the ``[socket:NAME]`` sections, sorted by file descriptor: ``fd``,
    ``name``, ``backlog`` and ``host`` and ``port``, or ``path`` for a Unix socket.

    ZMQ Message
    -----------

    ::

        {"command": "listsockets"}

    Response: ``{"status": "ok", "sockets": [{"fd": 5, "name": "web", "backlog": 2048,
    "host": "127.0.0.1", "port": 8080}, ...]}``.

    Command line
    ------------

    ::

        $ circusctl listsockets
    """

    name = "listsockets"
    tier = Tier.READER
    usage = "listsockets"

    async def execute(self, arbiter: ArbiterAPI, props: Props) -> Reply:
        socks = [describe(s) for s in getattr(arbiter, "sockets", [])]
        socks.sort(key=lambda e: (e["fd"] is None, e["fd"] or 0, str(e["name"])))
        return {"sockets": socks}

    def console_msg(self, reply: Reply) -> str:
        if reply.get("status") == "error":
            return super().console_msg(reply)
        lines = []
        for sock in reply.get("sockets", []):
            where = sock.get("path") or f"{sock.get('host')}:{sock.get('port')}"
            lines.append(f"{sock.get('fd')}:socket '{sock.get('name')}' at {where}")
        return "\n".join(lines)
