"""Clients of the control socket: :class:`CircusClient` (blocking) and
:class:`AsyncCircusClient` (asyncio), both with Circus's API (``call``, ``send_message``).

A reply is matched to its request by ``id``; replies to other requests (for example a
timed-out earlier call) are discarded.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from typing import Any
from urllib.parse import urlparse

import zmq
import zmq.asyncio

from circus.errors import CallError

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"


def make_message(command: str, **props: Any) -> dict[str, Any]:
    return {"command": command, "properties": props}


def cast_message(command: str, **props: Any) -> dict[str, Any]:
    return {"command": command, "msg_type": "cast", "properties": props}


class Unreachable(CallError):
    """Nothing listens on the endpoint."""


class TimedOut(CallError):
    """The daemon did not answer within the timeout."""


def endpoint_reachable(endpoint: str) -> bool:
    """A cheap check that something listens on *endpoint* (ipc file or TCP port)."""
    if endpoint.startswith("ipc://"):
        path = endpoint[6:]
        if not os.path.exists(path):
            return False
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            return False
        finally:
            probe.close()
        return True
    if endpoint.startswith("tcp://"):
        url = urlparse(endpoint)
        try:
            with socket.create_connection((url.hostname or "127.0.0.1", url.port or 0), 1.0):
                return True
        except OSError:
            return False
    return True


def _timeout_error(endpoint: str) -> CallError:
    if not endpoint_reachable(endpoint):
        return Unreachable(f"cannot reach circusd at {endpoint}")
    return TimedOut(f"Timed out: circusd at {endpoint} did not answer")


class CircusClient:
    """Blocking client: ``CircusClient(endpoint).call({"command": "list"})``."""

    def __init__(
        self,
        context: zmq.Context[Any] | None = None,
        endpoint: str = DEFAULT_ENDPOINT,
        timeout: float = 5.0,
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._own = context is None
        self.context = context or zmq.Context()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.IDENTITY, uuid.uuid4().hex.encode())
        self.socket.linger = 0
        self.socket.connect(endpoint)

    def send_message(self, command: str, **props: Any) -> dict[str, Any]:
        return self.call(make_message(command, **props))

    def call(self, cmd: dict[str, Any] | str) -> dict[str, Any]:
        """Send *cmd* and return the reply. Raises CallError on timeout."""
        msg = json.loads(cmd) if isinstance(cmd, str) else dict(cmd)
        msg_id = msg.setdefault("id", uuid.uuid4().hex)
        self.socket.send(json.dumps(msg).encode())
        if msg.get("msg_type") == "cast":
            return {"status": "ok"}
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        import time

        deadline = time.monotonic() + self.timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not poller.poll(remaining * 1000):
                raise _timeout_error(self.endpoint)
            reply = json.loads(self.socket.recv())
            if reply.get("id") == msg_id:
                return reply  # type: ignore[no-any-return]

    def stop(self) -> None:
        self.socket.close(linger=0)
        if self._own:
            self.context.term()

    close = stop

    def __enter__(self) -> CircusClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class AsyncCircusClient:
    """asyncio client: ``await AsyncCircusClient(endpoint).call({...})``."""

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        timeout: float = 5.0,
        context: zmq.asyncio.Context | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._own = context is None
        self.context = context or zmq.asyncio.Context()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.IDENTITY, uuid.uuid4().hex.encode())
        self.socket.linger = 0
        self.socket.connect(endpoint)

    async def send_message(self, command: str, **props: Any) -> dict[str, Any]:
        return await self.call(make_message(command, **props))

    async def call(self, cmd: dict[str, Any]) -> dict[str, Any]:
        import asyncio

        msg = dict(cmd)
        msg_id = msg.setdefault("id", uuid.uuid4().hex)
        await self.socket.send(json.dumps(msg).encode())
        if msg.get("msg_type") == "cast":
            return {"status": "ok"}
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    reply = json.loads(await self.socket.recv())
                    if reply.get("id") == msg_id:
                        return reply  # type: ignore[no-any-return]
        except TimeoutError:
            raise _timeout_error(self.endpoint) from None

    def close(self) -> None:
        self.socket.close(linger=0)
        if self._own:
            self.context.term()

    async def __aenter__(self) -> AsyncCircusClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
