"""Events: the PUB socket that tells subscribers what happens to watchers and processes.

Every event is two frames, ``[topic, json]``; topics are ``watcher.<name>.<event>`` and
``arbiter.<event>`` (PROTOCOL.md §6). Publishing never blocks: with no subscriber, or a
slow one past its high-water mark, ZeroMQ drops the message.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import zmq

from circus.endpoints import bind

log = logging.getLogger(__name__)


class EventPublisher:
    """Owns the PUB socket bound on ``pubsub_endpoint``."""

    def __init__(self, context: zmq.Context[Any], endpoint: str, owner: str | None = None) -> None:
        self.endpoint = endpoint
        self._socket: zmq.Socket[Any] = context.socket(zmq.PUB)
        self._socket.linger = 0
        bind(self._socket, endpoint, owner=owner)

    def publish(self, topic: str, payload: dict[str, Any]) -> None:
        if self._socket.closed:
            return
        try:
            self._socket.send_multipart(
                [topic.encode(), json.dumps(payload).encode()], flags=zmq.NOBLOCK
            )
        except zmq.Again:
            pass

    def close(self) -> None:
        self._socket.close(linger=0)
