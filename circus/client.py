"""Clients of the control socket: :class:`CircusClient` (blocking) and
:class:`AsyncCircusClient` (asyncio), both with Circus's API (``call``, ``send_message``).

Each client owns one DEALER socket with a random identity. A reply is matched to its
request by ``id`` (PROTOCOL.md §2), so a late reply to a call that timed out is discarded,
and an :class:`AsyncCircusClient` can have many calls in flight at once.

A call that gets no answer within ``timeout`` raises :class:`TimedOut`, or
:class:`Unreachable` when nothing listens on the endpoint; both are
:class:`~circus.errors.CallError`. An error *reply* is returned like any other reply.
"""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import zmq

from circus.curve import ClientKeys, secure
from circus.errors import CallError

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"
DEFAULT_ENDPOINT_SUB = "tcp://127.0.0.1:5556"

Message = dict[str, Any]


def make_message(command: str, **props: Any) -> Message:
    return {"command": command, "properties": props}


def cast_message(command: str, **props: Any) -> Message:
    return {"command": command, "msg_type": "cast", "properties": props}


class Unreachable(CallError):
    """Nothing listens on the endpoint."""


class TimedOut(CallError):
    """The daemon did not answer within the timeout."""


def endpoint_reachable(endpoint: str) -> bool:
    """A cheap check that something listens on *endpoint* (ipc file or TCP port)."""
    return _connect(endpoint, 1.0) is None


def _connect(endpoint: str, timeout: float) -> OSError | None:
    """Connect to *endpoint* (``ipc://`` path or abstract ``@name``, or ``tcp://``) and
    hang up: None if that worked (or the transport is not one of these), else the error."""
    if endpoint.startswith("ipc://"):
        path = endpoint[6:]
        family, address = socket.AF_UNIX, "\0" + path[1:] if path.startswith("@") else path
    elif endpoint.startswith("tcp://"):
        url = urlparse(endpoint)
        try:
            with socket.create_connection((url.hostname or "127.0.0.1", url.port or 0),
                                          timeout):
                return None
        except OSError as exc:
            return exc
        except ValueError as exc:  # a port out of range
            return OSError(str(exc))
    else:
        return None
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        probe.connect(address)
    except OSError as exc:
        return exc
    finally:
        probe.close()
    return None


ENDPOINT_FORMS = "tcp://HOST:PORT or ipc://PATH"


def endpoint_problem(endpoint: str) -> str | None:
    """What keeps a client from connecting to *endpoint*, as a phrase; None when nothing does.

    Checked before any ZeroMQ call, which would raise a bare ``ZMQError`` (or, for some
    mistakes, wait in vain). The accepted forms are :data:`ENDPOINT_FORMS`.
    """
    scheme, sep, rest = endpoint.partition("://")
    if not sep:
        if re.fullmatch(r"[\w.-]+:\d+", endpoint):
            return f"no transport; did you mean tcp://{endpoint}?"
        if endpoint.startswith("/"):
            return f"no transport; did you mean ipc://{endpoint}?"
        return "no transport"
    if scheme != scheme.lower() and scheme.lower() in ("tcp", "ipc"):
        return f"transports are lower case: {scheme.lower()}://{rest}"
    if scheme == "ipc":
        return None if rest else "ipc:// needs the path of the socket file"
    if scheme in ("http", "https", "ws", "wss"):
        hostport = rest.split("/", 1)[0]
        hint = f"; did you mean tcp://{hostport}?" if ":" in hostport else ""
        return f"circusd speaks ZeroMQ, not {scheme.upper()}{hint}"
    if scheme == "inproc":
        return "inproc:// reaches only sockets of the same process"
    if scheme != "tcp":
        return f"{scheme}:// is not a transport circusd listens on"
    host, colon, port = rest.rpartition(":")
    if not colon:
        return "no port (tcp://HOST:PORT)"
    if host.startswith("[") or re.fullmatch(r"[0-9a-fA-F:.]*:[0-9a-fA-F:.]*", host):
        return "IPv6 addresses are not supported; use an IPv4 address or a host name"
    if host == "*":
        return "* is for binding; connect to a host name or an address"
    if not host:
        return "no host (tcp://HOST:PORT)"
    if not re.fullmatch(r"[\w.-]+", host):
        return f"{host!r} is not a host name or an address"
    if not port.isdigit() or not 0 < int(port) < 65536:
        return f"the port is a number from 1 to 65535, got {port!r}"
    return None


def refusal(endpoint: str, timeout: float = 1.0) -> str | None:
    """Why nothing can answer at *endpoint*, when that is known at once; else None.

    ZeroMQ retries a connection that is refused, silently, until the caller gives up; this
    tells in a moment: no ``ipc://`` socket file, a refused connection, an unknown host.
    A probe that takes longer than *timeout* (a slow network) proves nothing: None.
    """
    if endpoint.startswith("ipc://"):
        path = endpoint[6:]
        address = "\0" + path[1:] if path.startswith("@") else path  # Linux abstract names
        if address == path:
            try:
                mode = os.stat(path).st_mode
            except FileNotFoundError:
                return f"there is no socket file {path}"
            except OSError as exc:
                return f"cannot reach {path}: {exc.strerror or exc}"
            if not stat.S_ISSOCK(mode):
                return f"{path} is not a socket"
        problem = _connect(endpoint, timeout)
        if isinstance(problem, ConnectionRefusedError):
            if address != path:
                return f"nothing listens on {path}"
            return f"nothing listens on {path} (a socket file left by a daemon that is gone?)"
        if isinstance(problem, PermissionError):
            return f"no permission to connect to {path}"
        if problem is not None:
            return f"cannot connect to {path}: {problem.strerror or problem}"
        return None
    if endpoint.startswith("tcp://"):
        problem = _connect(endpoint, timeout)
        if isinstance(problem, ConnectionRefusedError):
            return "nothing listens there"
        if isinstance(problem, socket.gaierror):
            return f"unknown host {urlparse(endpoint).hostname!r} ({problem.strerror})"
        return None  # connected, or a slow or odd network: proves nothing
    return None


def timeout_error(endpoint: str, timeout: float) -> CallError:
    """The error for a call to *endpoint* that got no answer within *timeout* seconds."""
    if not endpoint_reachable(endpoint):
        return Unreachable(f"cannot reach circusd at {endpoint}: nothing listens there")
    return TimedOut(f"Timed out: circusd at {endpoint} did not answer within {timeout:g}s")


def _prepare(cmd: Message | str | bytes) -> tuple[Message, bytes]:
    msg = json.loads(cmd) if isinstance(cmd, str | bytes) else dict(cmd)
    if not isinstance(msg, dict):
        raise CallError(f"a message is a JSON object, got {msg!r}")
    msg.setdefault("id", os.urandom(16).hex())
    return msg, json.dumps(msg).encode()


def _parse(data: bytes) -> Message | None:
    try:
        reply = json.loads(data)
    except ValueError:
        return None
    return reply if isinstance(reply, dict) else None


def _key(msg_id: Any) -> str:
    return json.dumps(msg_id, sort_keys=True)


def _check_ssh(ssh_server: str | None) -> None:
    if ssh_server:
        raise CallError("SSH tunnels are not supported: forward the endpoint with ssh -L")


class CircusClient:
    """Blocking client: ``CircusClient(endpoint=...).call({"command": "list"})``.

    Args:
        context: a ``zmq.Context`` to use (default: a new one, terminated by ``stop()``).
        endpoint: the daemon's control endpoint.
        timeout: seconds to wait for each reply.
        curve_key, server_key: the client's ``.key_secret`` file and circusd's ``.key``
            file, when circusd requires CURVE (or *keys*, a :class:`circus.curve.ClientKeys`).
    """

    def __init__(
        self,
        context: zmq.Context[Any] | None = None,
        endpoint: str = DEFAULT_ENDPOINT,
        timeout: float = 5.0,
        ssh_server: str | None = None,
        ssh_keyfile: str | None = None,
        *,
        curve_key: str | None = None,
        server_key: str | None = None,
        keys: ClientKeys | None = None,
    ) -> None:
        _check_ssh(ssh_server)
        self.endpoint = endpoint
        self.timeout = timeout
        self._own = context is None
        self.context = context or zmq.Context()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.IDENTITY, os.urandom(16).hex().encode())
        self.socket.linger = 0
        try:
            secure(self.socket, keys, curve_key, server_key)
        except ValueError as exc:
            self.stop()
            raise CallError(str(exc)) from None
        self.socket.connect(endpoint)
        self._poller = zmq.Poller()
        self._poller.register(self.socket, zmq.POLLIN)

    def send_message(self, command: str, **props: Any) -> Message:
        """``call`` of ``{"command": command, "properties": props}``."""
        return self.call(make_message(command, **props))

    def call(self, cmd: Message | str) -> Message:
        """Send *cmd* (a dict or its JSON) and return the reply.

        A cast (``"msg_type": "cast"``) is only sent; the result is ``{"status": "ok"}``.

        Raises:
            TimedOut, Unreachable: no reply within ``timeout``.
        """
        msg, data = _prepare(cmd)
        try:
            self.socket.send(data)
        except zmq.ZMQError as exc:
            raise CallError(f"cannot send to {self.endpoint}: {exc}") from exc
        if msg.get("msg_type") == "cast":
            return {"status": "ok"}
        deadline = time.monotonic() + self.timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._poller.poll(max(int(remaining * 1000), 1)):
                raise timeout_error(self.endpoint, self.timeout)
            reply = _parse(self.socket.recv())
            if reply is not None and reply.get("id") == msg["id"]:
                return reply

    def stop(self) -> None:
        if not self.socket.closed:
            self.socket.close(linger=0)
        if self._own:
            self.context.term()

    close = stop

    def __enter__(self) -> CircusClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


if TYPE_CHECKING:
    import asyncio

    import zmq.asyncio


class AsyncCircusClient:
    """asyncio client: ``await AsyncCircusClient(endpoint=...).call({...})``.

    Calls may run concurrently on one client: whichever call is receiving hands each
    reply to the call it belongs to. ``curve_key``, ``server_key`` and ``keys`` are those
    of :class:`CircusClient`.
    """

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        timeout: float = 5.0,
        context: zmq.asyncio.Context | None = None,
        *,
        curve_key: str | None = None,
        server_key: str | None = None,
        keys: ClientKeys | None = None,
    ) -> None:
        import zmq.asyncio  # here, so that the blocking client (circusctl) never loads asyncio

        self.endpoint = endpoint
        self.timeout = timeout
        self._own = context is None
        self.context = context or zmq.asyncio.Context()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.IDENTITY, os.urandom(16).hex().encode())
        self.socket.linger = 0
        try:
            secure(self.socket, keys, curve_key, server_key)
        except ValueError as exc:
            self.close()
            raise CallError(str(exc)) from None
        self.socket.connect(endpoint)
        self._pending: dict[str, asyncio.Future[Message]] = {}  # by JSON of the id
        self._receiving: asyncio.Lock | None = None

    async def send_message(self, command: str, **props: Any) -> Message:
        return await self.call(make_message(command, **props))

    async def cast(self, command: str, **props: Any) -> None:
        """Send a command without waiting for (or getting) a reply."""
        await self.call(cast_message(command, **props))

    async def call(self, cmd: Message | str) -> Message:
        """Send *cmd* and return its reply. Raises TimedOut or Unreachable."""
        import asyncio

        msg, data = _prepare(cmd)
        if msg.get("msg_type") == "cast":
            await self.socket.send(data)
            return {"status": "ok"}
        if self._receiving is None:
            self._receiving = asyncio.Lock()
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        key = _key(msg["id"])
        self._pending[key] = future
        try:
            await self.socket.send(data)
            async with asyncio.timeout(self.timeout):
                while not future.done():
                    async with self._receiving:
                        if future.done():
                            break
                        reply = _parse(await self.socket.recv())
                    if reply is None:
                        continue
                    waiter = self._pending.get(_key(reply.get("id")))
                    if waiter is not None and not waiter.done():
                        waiter.set_result(reply)
            return future.result()
        except TimeoutError:
            raise timeout_error(self.endpoint, self.timeout) from None
        finally:
            self._pending.pop(key, None)

    def close(self) -> None:
        if not self.socket.closed:
            self.socket.close(linger=0)
        if self._own:
            self.context.term()

    stop = close

    async def __aenter__(self) -> AsyncCircusClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
