"""Consumers of the events circusd publishes on its PUB socket (``pubsub_endpoint``).

Every event is two frames, a topic such as ``watcher.web.spawn`` and a JSON object
(PROTOCOL.md §6). Topics are subscribed to by prefix: ``watcher.web.`` gives every event
of the watcher ``web``; the empty topic gives everything.

:class:`CircusConsumer` is Circus's blocking iterator of ``(topic, body)`` byte pairs;
:class:`AsyncCircusConsumer` is its asyncio twin and yields decoded :class:`Event` s.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import zmq
import zmq.asyncio

from circus.client import DEFAULT_ENDPOINT_SUB
from circus.curve import ClientKeys, secure


@dataclass(frozen=True)
class Event:
    """One event: ``topic`` (``watcher.web.spawn``) and its JSON ``payload``."""

    topic: str
    payload: dict[str, Any]

    @property
    def watcher(self) -> str | None:
        """The watcher's name as it appears in the topic (lower case), if any."""
        parts = self.topic.split(".")
        return ".".join(parts[1:-1]) if parts[0] == "watcher" and len(parts) >= 3 else None

    @property
    def action(self) -> str:
        """The last part of the topic: ``spawn``, ``reap``, ``stop`` ..."""
        return self.topic.rsplit(".", 1)[-1]


def decode(topic: bytes, body: bytes) -> Event:
    """An :class:`Event` from the two frames; a body that is not a JSON object is kept as
    ``{"raw": <text>}``."""
    text = body.decode("utf-8", "replace")
    try:
        payload = json.loads(text)
    except ValueError:
        payload = {"raw": text}
    if not isinstance(payload, dict):
        payload = {"raw": payload}
    return Event(topic.decode("utf-8", "replace"), payload)


def _topics(topics: Iterable[str | bytes] | str | bytes | None) -> list[bytes]:
    if topics is None:
        return [b""]
    if isinstance(topics, str | bytes):
        topics = [topics]
    result = [t.encode() if isinstance(t, str) else bytes(t) for t in topics]
    return result or [b""]


class CircusConsumer:
    """Iterate over events: ``for topic, body in CircusConsumer([b"watcher."]): ...``.

    Args:
        topics: topic prefixes to subscribe to (str or bytes; none or empty: all).
        context: a ``zmq.Context`` (default: a new one, terminated by ``stop()``).
        endpoint: the daemon's ``pubsub_endpoint``.
        timeout: seconds between two checks that the consumer was not stopped.
        curve_key, server_key, keys: as for :class:`circus.client.CircusClient`, when
            circusd requires CURVE.
    """

    def __init__(
        self,
        topics: Iterable[str | bytes] | str | bytes | None = None,
        context: zmq.Context[Any] | None = None,
        endpoint: str = DEFAULT_ENDPOINT_SUB,
        timeout: float = 1.0,
        *,
        curve_key: str | None = None,
        server_key: str | None = None,
        keys: ClientKeys | None = None,
    ) -> None:
        self.topics = _topics(topics)
        self.endpoint = endpoint
        self.timeout = timeout
        self._own = context is None
        self.context = context or zmq.Context()
        self.pubsub_socket = self.context.socket(zmq.SUB)
        self.pubsub_socket.linger = 0
        try:
            secure(self.pubsub_socket, keys, curve_key, server_key)
        except ValueError:
            self.stop()
            raise
        for topic in self.topics:
            self.pubsub_socket.setsockopt(zmq.SUBSCRIBE, topic)
        self.pubsub_socket.connect(endpoint)
        self._poller = zmq.Poller()
        self._poller.register(self.pubsub_socket, zmq.POLLIN)
        self._stopped = False

    def __enter__(self) -> CircusConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        return self.iter_messages()

    def iter_messages(self) -> Iterator[tuple[bytes, bytes]]:
        """``(topic, body)`` pairs as they come, until :meth:`stop`."""
        while not self._stopped:
            if not self._poller.poll(int(self.timeout * 1000)):
                continue
            frames = self.pubsub_socket.recv_multipart()
            if len(frames) == 2:
                yield frames[0], frames[1]

    def events(self) -> Iterator[Event]:
        """Decoded :class:`Event` s as they come."""
        for topic, body in self.iter_messages():
            yield decode(topic, body)

    def stop(self) -> None:
        self._stopped = True
        if not self.pubsub_socket.closed:
            self.pubsub_socket.close(linger=0)
        if self._own:
            self.context.term()


class AsyncCircusConsumer:
    """asyncio events: ``async for event in AsyncCircusConsumer(["watcher.web."]): ...``."""

    def __init__(
        self,
        topics: Iterable[str | bytes] | str | bytes | None = None,
        endpoint: str = DEFAULT_ENDPOINT_SUB,
        context: zmq.asyncio.Context | None = None,
        *,
        curve_key: str | None = None,
        server_key: str | None = None,
        keys: ClientKeys | None = None,
    ) -> None:
        self.topics = _topics(topics)
        self.endpoint = endpoint
        self._own = context is None
        self.context = context or zmq.asyncio.Context()
        self.socket = self.context.socket(zmq.SUB)
        self.socket.linger = 0
        try:
            secure(self.socket, keys, curve_key, server_key)
        except ValueError:
            self.close()
            raise
        for topic in self.topics:
            self.socket.setsockopt(zmq.SUBSCRIBE, topic)
        self.socket.connect(endpoint)

    async def recv(self) -> Event:
        """The next event (waits for it)."""
        while True:
            frames = await self.socket.recv_multipart()
            if len(frames) == 2:
                return decode(frames[0], frames[1])

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        while not self.socket.closed:
            yield await self.recv()

    def close(self) -> None:
        if not self.socket.closed:
            self.socket.close(linger=0)
        if self._own:
            self.context.term()

    async def __aenter__(self) -> AsyncCircusConsumer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
