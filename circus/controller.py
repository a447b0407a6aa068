"""Controller: the ROUTER socket that takes commands, and the one place errors become replies.

Each request runs in its own task, so a long ``stop --waiting`` never delays a ``status``.
Commands that change a watcher wait for that watcher's lock instead of failing: two
commands on one watcher run in the order they arrived.

Framing (PROTOCOL.md §2, §13): a DEALER sends ``[body]`` and the ROUTER sees
``[identity, body]``; a REQ socket adds an empty delimiter, ``[identity, b"", body]``. Both
are answered, in the shape they came in. Anything else is dropped with a log line.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

import zmq
import zmq.asyncio

from circus.commands import get_commands
from circus.commands.base import Command, Props, Reply, error_reply, ok_reply
from circus.endpoints import bind
from circus.errors import CommandError, Errno
from circus.tasks import TaskOwner

if TYPE_CHECKING:
    from circus.arbiter import Arbiter

log = logging.getLogger(__name__)

MAX_MESSAGE = 1024 * 1024  # bytes; a larger request is refused, not parsed


class Controller:
    """Serves commands on *endpoint* for *arbiter*."""

    def __init__(
        self,
        arbiter: Arbiter,
        context: zmq.asyncio.Context,
        endpoint: str,
        owner: str | None = None,
    ) -> None:
        self.arbiter = arbiter
        self.endpoint = endpoint
        self.commands: dict[str, Command] = get_commands()
        self._socket = context.socket(zmq.ROUTER)
        self._socket.linger = 0
        bind(self._socket, endpoint, owner=owner)
        self._requests = TaskOwner("controller")
        self._serving: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._serving = self._requests.spawn(self._serve(), name="controller")

    async def _serve(self) -> None:
        while True:
            try:
                frames = await self._socket.recv_multipart(copy=True)
            except zmq.ZMQError as exc:
                if exc.errno == zmq.ETERM or self._socket.closed:
                    return
                log.warning("controller: receive failed: %s", exc)
                continue
            if len(frames) == 2:
                identity, body, delimiter = frames[0], frames[1], False
            elif len(frames) == 3 and frames[1] == b"":
                identity, body, delimiter = frames[0], frames[2], True
            else:
                log.warning("controller: dropped a message of %d frames", len(frames))
                continue
            self._requests.spawn(self._handle(identity, body, delimiter), name="request")

    async def _handle(self, identity: bytes, body: bytes, delimiter: bool) -> None:
        reply = await self.dispatch(body)
        if reply is None:
            return
        data = json.dumps(reply).encode()
        frames = [identity, b"", data] if delimiter else [identity, data]
        try:
            await self._socket.send_multipart(frames)
        except zmq.ZMQError as exc:
            log.debug("controller: could not reply: %s", exc)

    async def dispatch(self, raw: bytes) -> Reply | None:
        """Run one request and build its reply (None for a cast). Never raises Exception."""
        if len(raw) > MAX_MESSAGE:
            return error_reply(
                f"message too large ({len(raw)} bytes, at most {MAX_MESSAGE})",
                Errno.MESSAGE_ERROR,
            )
        try:
            msg = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return error_reply("json invalid", Errno.INVALID_JSON)
        if not isinstance(msg, dict):
            return error_reply(
                "message invalid: expected a JSON object", Errno.MESSAGE_ERROR
            )
        msg_id = msg.get("id")
        cast = msg.get("msg_type") == "cast"
        reply = await self._run(msg, msg_id)
        return None if cast else reply

    async def _run(self, msg: dict[str, Any], msg_id: Any) -> Reply:
        name = msg.get("command")
        if name is None:
            return error_reply("message invalid 'command' is missing", Errno.MESSAGE_ERROR, msg_id)
        if not isinstance(name, str):
            return error_reply(
                f"message invalid: 'command' should be a string, got {name!r}",
                Errno.MESSAGE_ERROR,
                msg_id,
            )
        props = msg.get("properties")
        if props is None:
            props = {}
        if not isinstance(props, dict):
            return error_reply(
                f"message invalid: 'properties' should be an object, got {props!r}",
                Errno.MESSAGE_ERROR,
                msg_id,
            )
        cmd = self.commands.get(name.lower())
        if cmd is None:
            return error_reply(f"unknown command: {name!r}", Errno.UNKNOWN_COMMAND, msg_id)
        try:
            cmd.validate(self.arbiter, props)
            if cmd.waitable and not Command.bool_prop(props, "waiting"):
                self.arbiter.background(
                    self._execute(cmd, props), name=f"command-{cmd.name}"
                )
                return ok_reply(None, msg_id)
            result = await self._execute(cmd, props)
            return ok_reply(result, msg_id)
        except CommandError as exc:
            return error_reply(str(exc), exc.errno, msg_id)
        except OSError as exc:
            return error_reply(str(exc), Errno.OS_ERROR, msg_id)
        except (ValueError, KeyError, TypeError) as exc:
            reason = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            return error_reply(f"{name}: {reason}", Errno.MESSAGE_ERROR, msg_id)
        except Exception as exc:  # a bug: tell the client briefly, keep circusd serving
            log.exception("command %r failed", name)
            return error_reply(f"command {name!r} failed: {exc}", Errno.COMMAND_ERROR, msg_id)

    async def _execute(self, cmd: Command, props: Props) -> Reply | None:
        return await cmd.execute(self.arbiter, props)

    async def close(self, drain: float = 1.0) -> None:
        """Let in-flight requests answer (at most *drain* s), then stop serving."""
        if self._serving is not None:
            self._serving.cancel()
        await self._requests.join(timeout=drain)
        await self._requests.close(timeout=1.0)
        self._socket.close(linger=0)
