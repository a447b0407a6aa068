"""Control clients used by the benchmarks: circus's ZeroMQ protocol and supervisord's XML-RPC.

Both circus daemons (ours and Circus 0.19) and the floor are driven by the same
:class:`CircusControl`, so any difference in a figure comes from the daemon, not the client.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
import uuid
import xmlrpc.client
from typing import Any

import zmq


class ControlError(RuntimeError):
    """The daemon did not answer in time, or answered with an error."""


class CircusControl:
    """A DEALER socket speaking PROTOCOL.md: one JSON frame out, one JSON frame back."""

    def __init__(self, endpoint: str, timeout: float = 10.0) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.linger = 0
        self.socket.connect(endpoint)
        self.poller = zmq.Poller()
        self.poller.register(self.socket, zmq.POLLIN)

    def call(self, command: str, **properties: Any) -> dict[str, Any]:
        """Send one request and return its reply (matched by id); raise on timeout or error."""
        request_id = uuid.uuid4().hex
        body = {"id": request_id, "command": command, "properties": properties}
        self.socket.send(json.dumps(body).encode())
        deadline = time.monotonic() + self.timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self.poller.poll(int(remaining * 1000) + 1):
                raise ControlError(f"{command}: no reply from {self.endpoint} in {self.timeout}s")
            reply = json.loads(self.socket.recv())
            if reply.get("id") != request_id:
                continue  # a late answer to an earlier request that timed out
            if reply.get("status") == "error":
                raise ControlError(f"{command}: {reply.get('reason')}")
            return dict(reply)

    def wait_ready(self, timeout: float) -> None:
        """Retry ``status`` until the daemon answers or *timeout* seconds have passed."""
        deadline = time.monotonic() + timeout
        saved, self.timeout = self.timeout, 1.0
        try:
            while True:
                try:
                    self.call("status")
                    return
                except ControlError:
                    if time.monotonic() > deadline:
                        raise
                    # The unanswered request may still be queued on the socket: start afresh.
                    self._reconnect()
        finally:
            self.timeout = saved

    def _reconnect(self) -> None:
        self.poller.unregister(self.socket)
        self.socket.close()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.linger = 0
        self.socket.connect(self.endpoint)
        self.poller.register(self.socket, zmq.POLLIN)

    def close(self) -> None:
        self.socket.close()
        self.context.term()


class EventSubscriber:
    """A SUB socket on a circus daemon's events endpoint (``pubsub_endpoint``).

    :meth:`sync` returns once the daemon has the subscriptions (our ``tail`` with
    ``sync``, docs/output.md "Following without a gap"), so that no event published from
    then on is missed. :meth:`receive` stamps each event with CLOCK_MONOTONIC as soon as
    it is there to read.
    """

    def __init__(self, endpoint: str, topics: list[str]) -> None:
        self.endpoint = endpoint
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.SUB)
        self.socket.linger = 0
        # connect first: the subscriptions then reach the daemon in the order they are made
        self.socket.connect(endpoint)
        for topic in topics:
            self.socket.setsockopt(zmq.SUBSCRIBE, topic.encode())

    def sync(self, control: CircusControl, watcher: str, timeout: float) -> None:
        """Wait until the daemon has this socket's subscriptions (ours only).

        Subscribes last to a topic of its own and asks ``tail`` to wait for it: a
        subscriber's subscriptions arrive in order, so the earlier ones are in effect too.
        """
        token = f"sync.{uuid.uuid4().hex}"
        self.socket.setsockopt(zmq.SUBSCRIBE, token.encode())
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    control.call("tail", name=watcher, lines=0, sync=token)
                    return
                except ControlError:  # circusd waited 2 s for it in vain: ask again
                    if time.monotonic() > deadline:
                        raise
        finally:
            self.socket.setsockopt(zmq.UNSUBSCRIBE, token.encode())

    def receive(self, timeout: float) -> tuple[float, str, dict[str, Any]] | None:
        """The next event as (CLOCK_MONOTONIC when it could be read, topic, payload), or
        None if none comes within *timeout* seconds."""
        if not self.socket.poll(max(int(timeout * 1000), 1)):
            return None
        arrived = time.clock_gettime(time.CLOCK_MONOTONIC)
        topic, body = self.socket.recv_multipart()
        return arrived, topic.decode(), dict(json.loads(body))

    def close(self) -> None:
        self.socket.close()
        self.context.term()


class _UnixHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection over a Unix stream socket (supervisord's ``unix_http_server``)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__()
        self.unix_path = path
        self.timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        # Reuse the kept-alive connection, as the base class does for TCP.
        if self._connection and self._connection[0] == host and self._connection[1]:
            return self._connection[1]
        connection = _UnixHTTPConnection(self.unix_path, self.timeout)
        self._connection = host, connection
        return connection


class SupervisorControl:
    """supervisord's XML-RPC interface over its Unix socket (what ``supervisorctl`` uses)."""

    def __init__(self, socket_path: str, timeout: float = 30.0) -> None:
        self.socket_path = socket_path
        self.proxy = xmlrpc.client.ServerProxy(
            "http://localhost/RPC2", transport=_UnixTransport(socket_path, timeout)
        )

    @property
    def supervisor(self) -> Any:
        return self.proxy.supervisor

    def wait_ready(self, timeout: float) -> None:
        """Retry ``getState`` until supervisord reports RUNNING or *timeout* seconds pass."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.supervisor.getState()["statename"] == "RUNNING":
                    return
            except (OSError, xmlrpc.client.Error, http.client.HTTPException):
                pass
            if time.monotonic() > deadline:
                raise ControlError(f"supervisord on {self.socket_path} not ready in {timeout}s")
            time.sleep(0.05)

    def close(self) -> None:
        self.proxy("close")()
