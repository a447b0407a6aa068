"""``on_demand``: a stopped watcher starts when a connection arrives on one of its sockets.

:class:`OnDemand` watches the listening sockets of stopped ``on_demand`` watchers with
``loop.add_reader``. The first connection starts the watcher; circusd never accepts it,
so it waits in the backlog until a new process does. A watcher that stops again (its
processes exited with ``respawn = false``, or a ``stop`` command) waits for the next
connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from circus.sockets import SocketWatcher, watcher_sockets
from circus.socketset import CircusSockets

log = logging.getLogger(__name__)

__all__ = ["OnDemand"]

# An on_demand watcher that could not be started (a hook refused, every spawn failed)
# is armed again after this pause, so a connection left in the backlog does not spin.
ON_DEMAND_RETRY = 1.0


class OnDemand:
    """Starts stopped ``on_demand`` watchers when one of their sockets becomes readable.

    Args:
        sockets: the arbiter's sockets.
        spawn: runs a coroutine as a task the arbiter owns.
    """

    def __init__(
        self,
        sockets: CircusSockets,
        spawn: Callable[..., asyncio.Task[Any]],
    ) -> None:
        self.sockets = sockets
        self._spawn = spawn
        self._armed: dict[int, set[SocketWatcher]] = {}  # fd -> watchers waiting on it
        self._fds: dict[SocketWatcher, set[int]] = {}  # watcher -> fds it waits on
        self._starting: set[SocketWatcher] = set()
        self._retry: dict[SocketWatcher, asyncio.TimerHandle] = {}
        self._closed = True
        self._watchers: Callable[[], Sequence[SocketWatcher]] = list
        # a socket about to close must not stay registered with the loop; refresh() arms
        # the watchers again on the new descriptors
        sockets.before_close.append(self._disarm_all)

    def open(self, watchers: Callable[[], Sequence[SocketWatcher]]) -> None:
        """Begin watching; *watchers* returns the arbiter's current watchers."""
        self._closed = False
        self._watchers = watchers
        self.refresh()

    def close(self) -> None:
        """Stop watching every socket (at shutdown, before the watchers are stopped)."""
        self._closed = True
        self._disarm_all()
        for timer in self._retry.values():
            timer.cancel()
        self._retry.clear()

    def _disarm_all(self) -> None:
        for watcher in list(self._fds):
            self._disarm(watcher)

    def fds_of(self, watcher: SocketWatcher) -> list[int]:
        """The listening fds whose first connection starts *watcher*.

        The sockets its command references (or its stdin_socket); if it names none, every
        socket, as in Circus. so_reuseport and datagram sockets are not watched: circusd
        does not listen on them.
        """
        names = [s.name for s in self.sockets]
        used = watcher_sockets(watcher, names) or set(names)
        fds = []
        for name in sorted(used):
            sock = self.sockets.get(name)
            if sock is not None and sock.listening and sock.fd is not None:
                fds.append(sock.fd)
        return fds

    def _eligible(self, watcher: SocketWatcher) -> bool:
        return (watcher.on_demand and watcher.autostart and watcher.status == "stopped"
                and watcher not in self._starting and watcher not in self._retry)

    def refresh(self) -> None:
        """Arm every stopped on_demand watcher; disarm those that started or went away."""
        if self._closed:
            return
        watchers = list(self._watchers())
        for watcher in list(self._fds):
            if watcher not in watchers or not self._eligible(watcher):
                self._disarm(watcher)
        for watcher in watchers:
            if watcher in self._fds or not self._eligible(watcher):
                continue
            fds = self.fds_of(watcher)
            if not fds:
                log.warning("%s: on_demand, but no listening socket to wait on; start it "
                            "with a start command", watcher.name)
                continue
            if not watcher.use_sockets and not watcher.stdin_socket:
                log.warning("%s: on_demand without use_sockets or stdin_socket: its processes "
                            "cannot accept the connection that starts them", watcher.name)
            self._arm(watcher, fds)

    def _arm(self, watcher: SocketWatcher, fds: list[int]) -> None:
        loop = asyncio.get_running_loop()
        self._fds[watcher] = set(fds)
        for fd in fds:
            waiting = self._armed.setdefault(fd, set())
            if not waiting:
                loop.add_reader(fd, self._readable, fd)
            waiting.add(watcher)
        log.info("%s: waiting for a connection to start (on_demand)", watcher.name)

    def _disarm(self, watcher: SocketWatcher) -> None:
        loop = asyncio.get_running_loop()
        for fd in self._fds.pop(watcher, set()):
            waiting = self._armed.get(fd)
            if waiting is None:
                continue
            waiting.discard(watcher)
            if not waiting:
                del self._armed[fd]
                loop.remove_reader(fd)

    def _readable(self, fd: int) -> None:
        """A connection is waiting on *fd*: start the watchers armed on it (once each)."""
        for watcher in list(self._armed.get(fd, ())):
            self._disarm(watcher)
            self._starting.add(watcher)
            log.info("%s: a connection arrived; starting (on_demand)", watcher.name)
            self._spawn(self._start(watcher), name=f"on-demand-{watcher.name}")

    async def _start(self, watcher: SocketWatcher) -> None:
        try:
            await watcher.start()
        finally:
            self._starting.discard(watcher)
        if watcher.status == "stopped" and not self._closed:
            # a before_start hook refused, or every spawn failed: the connection is still
            # in the backlog, so wait a moment before trying again instead of spinning
            loop = asyncio.get_running_loop()
            self._retry[watcher] = loop.call_later(ON_DEMAND_RETRY, self._retry_now, watcher)

    def _retry_now(self, watcher: SocketWatcher) -> None:
        self._retry.pop(watcher, None)
        self.refresh()

