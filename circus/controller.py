"""Controller: the ROUTER socket that takes commands, and the one place errors become replies.

Each request runs in its own task, so a long ``stop --waiting`` never delays a ``status``.

Ordering instead of refusal
---------------------------
Circus 0.19 refuses a command that changes watchers while another one runs ("arbiter is
already running ..."). Here a command that changes watchers declares its :class:`Scope`
(the watchers it touches, or all of them) and joins the :class:`CommandQueue` at arrival,
after validation: it runs once every earlier command whose scope overlaps its own has
finished. So two commands on one watcher run in arrival order, a command on the whole
arbiter waits for everything before it (and everything after it waits for it), and
commands on different watchers run side by side. Read-only commands are not queued.

Framing (PROTOCOL.md §2, §13): a DEALER sends ``[body]`` and the ROUTER sees
``[identity, body]``; a REQ socket adds an empty delimiter, ``[identity, b"", body]``. Both
are answered, in the shape they came in. A message of more frames gets an error reply.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import zmq
import zmq.asyncio

from circus.commands import get_commands
from circus.commands.base import Command, Props, Reply, Scope, error_reply, ok_reply
from circus.endpoints import bind
from circus.errors import CommandError, ConfigError, Errno
from circus.tasks import TaskOwner

if TYPE_CHECKING:
    from circus.arbiter import Arbiter

log = logging.getLogger(__name__)

MAX_MESSAGE = 1024 * 1024  # bytes; a larger request gets an error reply, unparsed
# ZeroMQ drops the connection of a peer sending more than this in one frame, so a hostile
# client cannot make circusd buffer gigabytes before MAX_MESSAGE is even checked.
MAX_FRAME = 64 * MAX_MESSAGE


@dataclass(eq=False)
class _Slot:
    scope: Scope
    ahead: list[asyncio.Event]
    done: asyncio.Event = field(default_factory=asyncio.Event)


class CommandQueue:
    """Runs commands whose scopes overlap one after the other, in arrival order."""

    def __init__(self) -> None:
        self._slots: list[_Slot] = []

    def admit(self, scope: Scope) -> _Slot:
        """Take a place in the queue now (synchronously: this fixes the order)."""
        ahead = [s.done for s in self._slots if s.scope.overlaps(scope)]
        slot = _Slot(scope, ahead)
        self._slots.append(slot)
        return slot

    async def wait_turn(self, slot: _Slot) -> None:
        for event in slot.ahead:
            await event.wait()
        slot.ahead.clear()

    def release(self, slot: _Slot) -> None:
        slot.done.set()
        if slot in self._slots:
            self._slots.remove(slot)

    def __len__(self) -> int:
        return len(self._slots)


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
        self.queue = CommandQueue()
        self._socket = context.socket(zmq.ROUTER)
        self._socket.linger = 0
        self._socket.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME)
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
            self._requests.spawn(self._handle(frames), name="request")

    async def _handle(self, frames: list[bytes]) -> None:
        identity = frames[0]
        # [identity, b""] is an empty request from a DEALER, not a REQ's delimiter
        delimiter = len(frames) >= 3 and frames[1] == b""
        body = frames[2:] if delimiter else frames[1:]
        if len(body) == 1:
            reply = await self.dispatch(body[0])
        else:
            log.warning("controller: refused a message of %d frames", len(frames))
            reply = error_reply(
                f"message invalid: expected the request in one frame, got {len(body)}",
                Errno.MESSAGE_ERROR,
            )
        if reply is None:
            return
        data = json.dumps(reply).encode()
        out = [identity, b"", data] if delimiter else [identity, data]
        try:
            await self._socket.send_multipart(out)
        except zmq.ZMQError as exc:
            log.debug("controller: could not reply: %s", exc)

    async def dispatch(self, raw: bytes) -> Reply | None:
        """Run one request and build its reply (None for a cast). Never raises Exception."""
        if len(raw) > MAX_MESSAGE:
            return error_reply(
                f"message too large ({len(raw)} bytes, at most {MAX_MESSAGE})",
                Errno.MESSAGE_ERROR,
            )
        if not raw.strip():
            return error_reply("message invalid: the request is empty", Errno.MESSAGE_ERROR)
        try:
            msg = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return error_reply("json invalid", Errno.INVALID_JSON)
        if not isinstance(msg, dict):
            return error_reply(
                f"message invalid: expected a JSON object, got {type(msg).__name__}",
                Errno.MESSAGE_ERROR,
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
                f"message invalid: 'command' should be a string, got {_short(name)}",
                Errno.MESSAGE_ERROR,
                msg_id,
            )
        props = msg.get("properties")
        if props is None:
            props = {}
        if not isinstance(props, dict):
            return error_reply(
                f"message invalid: 'properties' should be an object, got {_short(props)}",
                Errno.MESSAGE_ERROR,
                msg_id,
            )
        cmd = self.commands.get(name.lower())
        if cmd is None:
            return error_reply(f"unknown command: {_short(name)}", Errno.UNKNOWN_COMMAND,
                               msg_id)
        try:
            cmd.validate(self.arbiter, props)
            scope = cmd.scope(self.arbiter, props)
            waiting = Command.bool_prop(props, "waiting")
            slot = self.queue.admit(scope) if scope is not None else None
            try:
                early = cmd.admitted(self.arbiter, props)
            except BaseException:
                if slot is not None:
                    self.queue.release(slot)
                raise
            if cmd.waitable and not waiting:
                self.arbiter.background(self._execute_later(cmd, props, slot),
                                        name=f"command-{cmd.name}")
                return ok_reply(early, msg_id)
            result = await self._execute(cmd, props, slot)
            return ok_reply(result, msg_id)
        except CommandError as exc:
            return error_reply(str(exc), exc.errno, msg_id)
        except ConfigError as exc:
            return error_reply(f"configuration refused: {exc}", Errno.COMMAND_ERROR, msg_id)
        except OSError as exc:
            return error_reply(f"{cmd.name}: {exc}", Errno.OS_ERROR, msg_id)
        except (ValueError, KeyError, TypeError) as exc:
            reason = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            return error_reply(f"{cmd.name}: {reason}", Errno.MESSAGE_ERROR, msg_id)
        except Exception as exc:  # a bug: tell the client briefly, keep circusd serving
            log.exception("command %r failed", cmd.name)
            return error_reply(f"command {cmd.name!r} failed: {exc}", Errno.COMMAND_ERROR,
                               msg_id)

    async def _execute(self, cmd: Command, props: Props, slot: Any) -> Reply | None:
        if slot is None:
            return await cmd.execute(self.arbiter, props)
        try:
            await self.queue.wait_turn(slot)
            return await cmd.execute(self.arbiter, props)
        finally:
            self.queue.release(slot)

    async def _execute_later(self, cmd: Command, props: Props, slot: Any) -> None:
        """A command answered before it ran: its failure can only be logged."""
        try:
            await self._execute(cmd, props, slot)
        except (CommandError, ConfigError, OSError, ValueError, KeyError) as exc:
            log.warning("command %s %s failed after its reply was sent: %s",
                        cmd.name, _short(props), exc)

    async def close(self, drain: float = 1.0) -> None:
        """Let in-flight requests answer (at most *drain* s), then stop serving."""
        if self._serving is not None:
            self._serving.cancel()
        await self._requests.join(timeout=drain)
        await self._requests.close(timeout=1.0)
        self._socket.close(linger=0)


def _short(value: Any, limit: int = 60) -> str:
    """repr(value), cut to *limit* characters, for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
