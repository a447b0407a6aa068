"""Events: the socket that tells subscribers what happens to watchers and processes.

Every event is two frames, ``[topic, json]``; topics are ``watcher.<name>.<event>`` and
``arbiter.<event>`` (PROTOCOL.md §6). Publishing never blocks: with no subscriber, or a
slow one past its high-water mark, ZeroMQ drops the message.

The socket is an XPUB, so circusd learns which topics are subscribed. Output topics
(``output.<name>.<stdout|stderr>``, used by ``circusctl tail -f``) are expensive to
produce, so they are produced only while someone subscribes to them explicitly.

On an ``ipc://`` or loopback endpoint, a subscriber whose user is refused (circus/peers.py)
is disconnected before any event is published, so it receives nothing; its handshake waits
for that check (:class:`circus.peers.ZapGate`), so it never subscribes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import zmq

from circus.endpoints import bind, readable, socket_fd
from circus.peercred import bound_address
from circus.peers import EVENTS_DOMAIN, Access, Subscribers, ZapGate

if TYPE_CHECKING:
    from circus.curve import ServerKeys

log = logging.getLogger(__name__)


class EventPublisher:
    """Owns the XPUB socket bound on ``pubsub_endpoint``.

    With *access*, only the subscribers it admits stay connected (see the module
    docstring); *gate*, the ZAP handler of *context*, holds their handshakes meanwhile.
    """

    def __init__(
        self,
        context: zmq.Context[Any],
        endpoint: str,
        owner: str | None = None,
        on_subscriptions: Callable[[], None] | None = None,
        access: Access | None = None,
        gate: ZapGate | None = None,
        curve: ServerKeys | None = None,
    ) -> None:
        self.endpoint = endpoint
        # The context may be an asyncio one; publishing happens from plain callbacks, so
        # a synchronous view of the same socket is used (the owner keeps it alive).
        self._owner: zmq.Socket[Any] = context.socket(zmq.XPUB)
        self._owner.linger = 0
        self._socket: zmq.Socket[Any] = zmq.Socket.shadow(self._owner.underlying)
        self.guard: Subscribers | None = None
        if curve is not None:  # only clients with a known key complete the handshake
            curve.serve(self._socket)
        if access is not None:  # before binding: no connection may come unseen
            if gate is None:
                raise ValueError("a publisher that checks its peers needs the ZAP gate")
            self.guard = Subscribers(self._socket, context, access, endpoint)
            self._socket.setsockopt(zmq.ZAP_DOMAIN, EVENTS_DOMAIN)
            gate.handlers[EVENTS_DOMAIN] = self.guard.enforce
        try:
            bind(self._socket, endpoint, owner=owner)
        except BaseException:
            self.close()
            raise
        if self.guard is not None:
            self.guard.local = bound_address(self._socket)
        self.subscriptions: set[bytes] = set()
        self.generation = 0  # bumped whenever the subscriptions change
        self._on_subscriptions = on_subscriptions
        self._waiters: dict[bytes, list[asyncio.Future[None]]] = {}
        self._looked = False  # subscriptions looked at in this loop iteration

    @property
    def fd(self) -> int:
        """A file descriptor the loop can watch for subscription messages."""
        return socket_fd(self._socket)

    def read_subscriptions(self) -> None:
        """Take in (un)subscriptions; ZeroMQ passes only the first and last of each topic."""
        changed = False
        arrived: list[bytes] = []
        if self.guard is not None and not self._owner.closed:
            self.guard.enforce()
        while not self._owner.closed and readable(self._socket):
            try:
                msg = self._socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            if not msg:
                continue
            if msg[0] == 1:
                self.subscriptions.add(msg[1:])
                arrived.append(msg[1:])
            elif msg[0] == 0:
                self.subscriptions.discard(msg[1:])
            changed = True
        if changed:
            self.generation += 1
            if self._on_subscriptions is not None:
                self._on_subscriptions()
        for topic in arrived:  # after the callback: what it enables is in place
            for waiter in self._waiters.pop(topic, ()):
                if not waiter.done():
                    waiter.set_result(None)

    async def wait_subscribed(self, topic: str, limit: float) -> bool:
        """Wait until a subscription to exactly *topic* reaches the socket (event loop only).

        ZeroMQ hands one subscriber's subscriptions over in the order it made them, so once
        a topic it subscribed last has arrived, its earlier subscriptions are in effect too.
        False if none came within *limit* seconds.
        """
        wanted = topic.encode()
        self.read_subscriptions()  # the FD is edge-triggered: look before waiting
        if wanted in self.subscriptions:
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(wanted, []).append(waiter)
        try:
            async with asyncio.timeout(limit):
                await waiter
            return True
        except TimeoutError:
            return False
        finally:
            waiting = self._waiters.get(wanted)
            if waiting is not None and waiter in waiting:
                waiting.remove(waiter)
                if not waiting:
                    del self._waiters[wanted]

    def subscribed(self, *topics: str) -> bool:
        """True if an explicit (non-empty) subscription covers one of *topics*."""
        for sub in self.subscriptions:
            if sub and any(topic.encode().startswith(sub) for topic in topics):
                return True
        return False

    def _look(self) -> None:
        """Take in the subscriptions that arrived before this loop iteration's first event.

        The loop reads them when the socket's FD wakes it, but an event published earlier
        in the same iteration must not miss a subscriber that is already there. Asking
        ZeroMQ costs a ``getsockopt`` (a tenth of a mass stop's time when done for each of
        its 20,000 events), so it is asked once per iteration: what arrives later keeps
        the FD readable and the loop reads it in the next one.
        """
        if self._looked:
            return
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None  # published outside the loop: look every time
        if loop is not None:
            self._looked = True
            loop.call_soon(self._next_iteration)
        if readable(self._socket):
            self.read_subscriptions()

    def _next_iteration(self) -> None:
        self._looked = False

    def wanted(self) -> bool:
        """Whether anyone subscribes (to anything): an event published now would be sent."""
        if self._owner.closed:
            return False
        self._look()
        return bool(self.subscriptions)

    def publish(self, topic: str, payload: dict[str, Any]) -> None:
        if not self.wanted():
            return  # nobody subscribes: no encoding (a mass stop publishes thousands)
        if self.guard is not None:
            self.guard.enforce()  # a refused connection is shut before anything is sent
        with contextlib.suppress(zmq.Again):  # no room for a slow subscriber: dropped
            self._socket.send_multipart(
                [topic.encode(), json.dumps(payload).encode()], flags=zmq.NOBLOCK
            )

    def close(self) -> None:
        if self.guard is not None:
            self.guard.close()
        self._owner.close(linger=0)
