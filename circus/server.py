"""The arbiter's face to the world: the event publisher and the controller, composed.

:class:`~circus.arbiter.Arbiter` knows watchers and sockets; it reaches ZeroMQ only through
the :class:`Frontend` it is given (or builds with :func:`frontend_for` when it opens). The
frontend binds the XPUB event socket and the ROUTER control socket, reads both from the
event loop, and hands commands to :class:`~circus.controller.Controller`, which sees the
arbiter only through :class:`circus.types.ArbiterAPI`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import zmq.asyncio

from circus.controller import Controller
from circus.endpoints import SocketFile, socket_file
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

    def open(self, endpoint: str, pubsub_endpoint: str, owner: str | None) -> None:
        """Bind both sockets and start reading them. Raises OSError/ZMQError, binding nothing."""
        self._loop = asyncio.get_running_loop()
        publisher = EventPublisher(self._context, pubsub_endpoint, owner=owner,
                                   on_subscriptions=self._on_subscriptions)
        # ZeroMQ leaves ipc:// socket files behind: those bound here are removed at close
        pub_file = socket_file(pubsub_endpoint)
        try:
            controller = Controller(self.arbiter, self._context, endpoint, owner=owner)
        except BaseException:
            publisher.close()
            if pub_file is not None:
                pub_file.remove()
            raise
        self._files = [f for f in (pub_file, socket_file(endpoint)) if f is not None]
        self._publisher = publisher
        self._loop.add_reader(publisher.fd, publisher.read_subscriptions)
        self._controller = controller
        controller.start()

    def publish(self, topic: str, payload: dict[str, Any]) -> None:
        if self._publisher is not None:
            self._publisher.publish(topic, payload)

    def subscribed(self, *topics: str) -> bool:
        return self._publisher is not None and self._publisher.subscribed(*topics)

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
        for file in self._files:  # only the files bound here: never another daemon's
            file.remove()
        self._files = []


def frontend_for(arbiter: ArbiterAPI, context: zmq.asyncio.Context,
                 on_subscriptions: Callable[[], None]) -> Frontend:
    """The default frontend factory of :class:`~circus.arbiter.Arbiter`."""
    return Frontend(arbiter, context, on_subscriptions)
