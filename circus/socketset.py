"""Every socket of one arbiter, and what a reread configuration changes in them.

:class:`CircusSockets` holds the arbiter's :class:`~circus.sockets.CircusSocket` objects by
name and the :class:`~circus.sockets.SocketFds` its watchers share, binds them all when
circusd starts and closes them all when it stops.

``reloadconfig`` goes in three steps so a bad file changes nothing: :meth:`CircusSockets.plan`
compares the sockets of the new file with the running ones, :meth:`CircusSockets.bind_added`
binds the new ones (all or nothing) before anything else changes, and
:meth:`CircusSockets.apply` rebinds the changed ones and closes the removed ones, stopping
first the watchers whose processes hold a socket that changes.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from circus.sockets import (
    CircusSocket,
    SocketBindError,
    SocketFds,
    SocketWatcher,
    watcher_sockets,
)

log = logging.getLogger(__name__)

__all__ = ["CircusSockets", "SocketPlan"]

W = TypeVar("W", bound=SocketWatcher)


@dataclass
class SocketPlan:
    """What a reread configuration changes in the sockets (:meth:`CircusSockets.plan`)."""

    added: list[CircusSocket] = field(default_factory=list)
    changed: list[CircusSocket] = field(default_factory=list)  # the new objects
    removed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.removed)

    def names(self) -> set[str]:
        return {s.name for s in (*self.added, *self.changed)} | set(self.removed)


class CircusSockets:
    """Every socket of one arbiter, by name, and the :class:`SocketFds` its watchers share."""

    def __init__(self, specs: Iterable[Mapping[str, Any] | CircusSocket] = ()) -> None:
        self._sockets: dict[str, CircusSocket] = {}
        self.fds = SocketFds()
        # called before any socket is closed, so nothing is left registered on its fd
        self.before_close: list[Callable[[], None]] = []
        for spec in specs:
            sock = spec if isinstance(spec, CircusSocket) else CircusSocket.from_config(spec)
            if sock.name in self._sockets:
                raise ValueError(f"two sockets are named {sock.name!r}")
            self._sockets[sock.name] = sock

    def __iter__(self) -> Iterator[CircusSocket]:
        return iter(list(self._sockets.values()))

    def __len__(self) -> int:
        return len(self._sockets)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._sockets

    def get(self, name: str) -> CircusSocket | None:
        return self._sockets.get(name.lower())

    def describe(self) -> list[dict[str, Any]]:
        """``listsockets``: one entry per socket, sorted by fd."""
        entries = [s.describe() for s in self._sockets.values()]
        entries.sort(key=lambda e: (e["fd"], e["name"]))
        return entries

    def _refresh(self) -> None:
        self.fds.clear()
        self.fds.per_process.clear()
        for name, sock in self._sockets.items():
            if sock.fd is not None:
                self.fds[name] = sock.fd
            if sock.so_reuseport and sock.bound:
                self.fds.per_process[name] = sock

    def bind_all(self) -> None:
        """Bind every socket; on a failure close those bound and raise SocketBindError."""
        try:
            for sock in self._sockets.values():
                sock.bind()
        except BaseException:
            self.close_all()
            raise
        self._refresh()

    def _closing(self) -> None:
        for callback in self.before_close:
            callback()

    def close_all(self) -> None:
        self._closing()
        for sock in self._sockets.values():
            sock.close()
        self._refresh()

    # -- reloadconfig -------------------------------------------------------------------------

    def plan(self, specs: Iterable[Mapping[str, Any]]) -> SocketPlan:
        """Compare the sockets of a reread configuration with the running ones."""
        wanted = {}
        for spec in specs:
            sock = CircusSocket.from_config(spec)
            wanted[sock.name] = sock
        plan = SocketPlan()
        for name, sock in wanted.items():
            current = self._sockets.get(name)
            if current is None:
                plan.added.append(sock)
            elif current.spec() != sock.spec():
                plan.changed.append(sock)
        plan.removed = sorted(set(self._sockets) - set(wanted))
        return plan

    def bind_added(self, plan: SocketPlan) -> None:
        """Bind the new sockets of *plan* (before anything else changes). All or nothing."""
        bound: list[CircusSocket] = []
        try:
            for sock in plan.added:
                sock.bind()
                bound.append(sock)
        except BaseException:
            for sock in bound:
                sock.close()
            raise
        for sock in plan.added:
            self._sockets[sock.name] = sock
        self._refresh()

    async def apply(self, plan: SocketPlan, watchers: Sequence[W]) -> list[W]:
        """Rebind changed sockets and close removed ones.

        The running watchers whose processes use a changed socket are stopped first (their
        processes hold the old socket, and the address may be the same); they are returned
        so the caller starts them again once the rest of the configuration is applied.
        A changed socket that cannot be bound keeps its old configuration, and the error
        is raised after the old socket is back.
        """
        changed = {s.name for s in plan.changed}
        stopped: list[W] = []
        if changed:
            for watcher in watchers:
                if watcher.status != "stopped" and watcher_sockets(watcher, changed):
                    await watcher.stop()
                    stopped.append(watcher)
        error: SocketBindError | None = None
        if plan.changed or plan.removed:
            self._closing()
        for new in plan.changed:
            old = self._sockets[new.name]
            old.close()
            try:
                new.bind()
            except SocketBindError as exc:
                log.error("%s; keeping the previous configuration of this socket", exc)
                error = error or exc
                with contextlib.suppress(OSError):
                    old.bind()
                continue
            self._sockets[new.name] = new
        for name in plan.removed:
            self._sockets.pop(name).close()
        self._refresh()
        if error is not None:
            for watcher in stopped:
                await watcher.start()
            raise error
        return stopped

