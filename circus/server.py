"""The arbiter's face to the world: the event publisher and the controller, composed.

:class:`~circus.arbiter.Arbiter` knows watchers and sockets; it reaches ZeroMQ only through
the :class:`Frontend` it is given (or builds with :func:`frontend_for` when it opens). The
frontend binds the XPUB event socket and the ROUTER control socket, reads both from the
event loop, and hands commands to :class:`~circus.controller.Controller`, which sees the
arbiter only through :class:`circus.types.ArbiterAPI`.

On an ``ipc://`` or loopback TCP endpoint both sockets serve only the local users the
:class:`~circus.peers.Access` rule admits: root, circusd's own user, ``endpoint_owner``,
``[circus] allow_users`` / ``allow_groups``, and the processes circusd runs for plugins
(whatever their user: a plugin's process is known by its pid, or for TCP by the socket it
holds). A non-loopback TCP endpoint (``allow_unauthenticated_remote``) and ``inproc://``
serve everyone who reaches them, as before.

With ``[circus] curve_secret_key`` (circus/curve.py) both sockets are CURVE servers on every
transport: a client is known by its key, and its key's tier is what it may do.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from collections.abc import Callable
from typing import Any

import zmq
import zmq.asyncio

from circus.controller import Controller
from circus.curve import KeyAuthenticator, ServerKeys
from circus.endpoints import SocketFile, ipc_path, is_loopback, socket_file
from circus.peers import Access, ZapGate
from circus.plugins.launch import is_plugin_watcher
from circus.pubsub import EventPublisher
from circus.types import ArbiterAPI

log = logging.getLogger(__name__)


class Frontend:
    """The publisher (``pubsub_endpoint``) and the controller (``endpoint``) of one arbiter.

    Args:
        arbiter: what commands act on.
        context: the ZeroMQ context both sockets belong to.
        on_subscriptions: called when the set of subscribed topics changes.
    """

    def __init__(self, arbiter: ArbiterAPI, context: zmq.asyncio.Context,
                 on_subscriptions: Callable[[], None]) -> None:
        self.arbiter = arbiter
        self._context = context
        self._on_subscriptions = on_subscriptions
        self._publisher: EventPublisher | None = None
        self._controller: Controller | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._files: list[SocketFile] = []  # ipc:// socket files bound by open()
        self._zap: ZapGate | None = None

    def open(self, endpoint: str, pubsub_endpoint: str, owner: str | None) -> None:
        """Bind both sockets and start reading them; on failure nothing stays bound.

        Raises:
            OSError, zmq.ZMQError: an endpoint cannot be bound; another ZAP handler in the
                context.
            ValueError: ``endpoint_owner``, ``allow_users`` or ``allow_groups`` names an
                account that does not exist.
        """
        self._loop = asyncio.get_running_loop()
        curve: ServerKeys | None = getattr(self.arbiter, "curve", None)
        access = self.access(owner)
        ctl_access = access if _local_only(endpoint) and curve is None else None
        pub_access = access if _local_only(pubsub_endpoint) and curve is None else None
        if ctl_access is not None or pub_access is not None or curve is not None:
            self._open_gate()
        if curve is not None:
            assert self._zap is not None
            self._zap.curve = KeyAuthenticator(curve.ring)
        try:
            publisher = EventPublisher(self._context, pubsub_endpoint, owner=owner,
                                       on_subscriptions=self._on_subscriptions,
                                       access=pub_access, gate=self._zap, curve=curve)
        except BaseException:
            self._close_gate()
            raise
        # ZeroMQ leaves ipc:// socket files behind: those bound here are removed at close
        pub_file = socket_file(pubsub_endpoint)
        try:
            controller = Controller(self.arbiter, self._context, endpoint, owner=owner,
                                    access=ctl_access, gate=self._zap, curve=curve)
        except BaseException:
            publisher.close()
            self._close_gate()
            if pub_file is not None:
                pub_file.remove()
            raise
        self._files = [f for f in (pub_file, socket_file(endpoint)) if f is not None]
        self._publisher = publisher
        self._loop.add_reader(publisher.fd, publisher.read_subscriptions)
        self._controller = controller
        controller.start()

    def access(self, owner: str | None) -> Access:
        """The rule of this arbiter's endpoints (circus/peers.py). ``allow_users`` and
        ``allow_groups`` come with the arbiter's other keyword options."""
        options = getattr(self.arbiter, "options", None) or {}
        return Access(os.geteuid(), owner, options.get("allow_users"),
                      options.get("allow_groups"), internal=self._internal_pids)

    def _internal_pids(self) -> dict[int, str]:
        """The processes circusd runs for itself (plugins), whatever user they run as."""
        return {pid: w.name for w in self.arbiter.watchers if is_plugin_watcher(w.name)
                for pid in w.pids}

    def _open_gate(self) -> None:
        """Bind the context's ZAP handler and serve it from the loop."""
        assert self._loop is not None
        threads = self._context.get(zmq.IO_THREADS)
        if threads != 1:  # the order of a connection's events is only known with one
            raise OSError(errno.EINVAL, f"circusd's ZeroMQ context has {threads} I/O threads; "
                          "telling who connects to ipc:// and loopback endpoints needs 1")
        gate = ZapGate(self._context)
        self._loop.add_reader(gate.fd, gate.serve)
        self._zap = gate

    def _close_gate(self) -> None:
        if self._zap is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._zap.fd)
            self._zap.close()
            self._zap = None

    def publish(self, topic: str, payload: dict[str, Any]) -> None:
        if self._publisher is not None:
            self._publisher.publish(topic, payload)

    def subscribed(self, *topics: str) -> bool:
        return self._publisher is not None and self._publisher.subscribed(*topics)

    def events_wanted(self) -> bool:
        return self._publisher is not None and self._publisher.wanted()

    async def wait_subscribed(self, topic: str, limit: float) -> bool:
        if self._publisher is None:
            return False
        return await self._publisher.wait_subscribed(topic, limit)

    async def close(self) -> None:
        """Let replies in flight go out, then close both sockets."""
        if self._controller is not None:
            await self._controller.close()
            self._controller = None
        if self._publisher is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._publisher.fd)
            self._publisher.close()
            self._publisher = None
        self._close_gate()
        for file in self._files:  # only the files bound here: never another daemon's
            file.remove()
        self._files = []


def _local_only(endpoint: str) -> bool:
    """Endpoints the uid rule applies to: ``ipc://`` and loopback TCP (not ``inproc://``:
    its peers are this process; not other TCP: reaching it is allowed to anyone, on
    purpose, with ``allow_unauthenticated_remote``)."""
    if ipc_path(endpoint):
        return True
    return endpoint.startswith("tcp://") and is_loopback(endpoint)


def frontend_for(arbiter: ArbiterAPI, context: zmq.asyncio.Context,
                 on_subscriptions: Callable[[], None]) -> Frontend:
    """The default frontend factory of :class:`~circus.arbiter.Arbiter`."""
    return Frontend(arbiter, context, on_subscriptions)
