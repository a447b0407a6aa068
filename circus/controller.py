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

Peers: on an ``ipc://`` or loopback endpoint every request is given the :class:`Peer` that
sent it (circus/peers.py); a refused one gets an error reply naming the rule (a cast, no
reply), and nothing of it is parsed beyond its ``id`` and ``command``. With CURVE
(circus/curve.py) the peer is the key named by the message's ``User-Id``, looked up again
in the key directories.

Where a command is dispatched, before it is validated, the peer's tier is checked against
the command's (``Command.tier``) and the ``endpoint_owner`` rule applied (circus/authz.py);
a reader's view of a watcher's ``env`` is redacted, and every command above ``reader``
leaves an ``audit:`` line once its result is known.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import zmq
import zmq.asyncio

from circus.authz import audit, refusal, result_of
from circus.commands import get_commands
from circus.commands.base import Command, Props, Reply, Scope, error_reply, ok_reply
from circus.endpoints import bind, readable, socket_fd
from circus.errors import CommandError, ConfigError, Errno, OptionError
from circus.kernel import trim_heap
from circus.peercred import bound_address
from circus.peers import CONTROL_DOMAIN, THROTTLE, Access, Connections, Peer, ZapGate
from circus.tasks import TaskOwner
from circus.tiers import Tier, redact

if TYPE_CHECKING:
    from circus.curve import KeyRing, ServerKeys
    from circus.types import ArbiterAPI

log = logging.getLogger(__name__)

MAX_MESSAGE = 1024 * 1024  # bytes; a larger request gets an error reply, unparsed
LARGE_REPLY = 256 * 1024  # bytes; after sending a larger reply, the C heap is trimmed
# ZeroMQ drops the connection of a peer sending more than this in one frame, so a hostile
# client cannot make circusd buffer gigabytes before MAX_MESSAGE is even checked.
MAX_FRAME = 64 * MAX_MESSAGE
KEYS_MAX_AGE = 1.0  # s: how old the key directories' listing may be when a request comes
STALE_KEY = Peer(None, None, None, "the key this connection was admitted with is no longer "
                 "in circusd's key directories", key="(removed)")


@dataclass(eq=False)
class _Slot:
    scope: Scope
    ahead: list[_Slot]
    done: asyncio.Event = field(default_factory=asyncio.Event)
    rewrites: bool = False  # writes a target (numprocesses) when its turn comes


class CommandQueue:
    """Runs commands whose scopes overlap one after the other, in arrival order."""

    def __init__(self) -> None:
        self._slots: list[_Slot] = []

    def admit(self, scope: Scope) -> _Slot:
        """Take a place in the queue now (synchronously: this fixes the order)."""
        ahead = [s for s in self._slots if s.scope.overlaps(scope)]
        slot = _Slot(scope, ahead)
        self._slots.append(slot)
        return slot

    def rewrites_ahead(self, slot: _Slot) -> bool:
        """True if a command ahead of *slot* (same watchers) writes targets at its turn."""
        return any(s.rewrites and not s.done.is_set() for s in slot.ahead)

    async def wait_turn(self, slot: _Slot) -> None:
        for earlier in slot.ahead:
            await earlier.done.wait()
        slot.ahead.clear()

    def release(self, slot: _Slot) -> None:
        slot.done.set()
        if slot in self._slots:
            self._slots.remove(slot)

    def __len__(self) -> int:
        return len(self._slots)


class _Pending:
    """A validated request whose command must run as a task (it awaits something)."""

    __slots__ = ("cmd", "props", "msg_id", "slot", "cast", "token", "peer")

    def __init__(self, cmd: Command, props: Props, msg_id: Any, slot: Any, cast: bool,
                 token: Any = None) -> None:
        self.cmd = cmd
        self.props = props
        self.msg_id = msg_id
        self.slot = slot
        self.cast = cast
        self.token = token  # what cmd.preempt() did at admission (None: nothing)
        self.peer: Peer | None = None  # who sent it (the audit line names it)


class Controller:
    """Serves commands on *endpoint* for *arbiter*.

    The socket is read from a loop reader callback, not through asyncio futures: a request
    to a command that only reads state (``status``, ``list``, …) is parsed, answered and
    replied to within that callback, so its round trip costs no task at all. Any other
    command runs in a task of its own.

    With *access*, each request's sender is looked up and only admitted peers are served;
    without, everyone who reaches the endpoint is (non-loopback TCP, inproc://). *gate*,
    the ZAP handler of *context*, comes with *access*: each new connection's handshake
    waits there until the requests queued before it have been read (circus/peers.py).
    """

    def __init__(
        self,
        arbiter: ArbiterAPI,
        context: zmq.asyncio.Context,
        endpoint: str,
        owner: str | None = None,
        access: Access | None = None,
        gate: ZapGate | None = None,
        curve: ServerKeys | None = None,
    ) -> None:
        self.arbiter = arbiter
        self.endpoint = endpoint
        self.commands: dict[str, Command] = get_commands()
        self.queue = CommandQueue()
        # a plain (blocking-API) view of the socket: it is only used with NOBLOCK
        self._owner = context.socket(zmq.ROUTER)
        self._owner.linger = 0
        self._socket: zmq.Socket[Any] = zmq.Socket.shadow(self._owner.underlying)
        self._socket.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME)
        self._ring: KeyRing | None = None
        if curve is not None:  # only clients with a known key complete the handshake
            curve.serve(self._socket)
            self._ring = curve.ring
        # the monitor must exist before the first connection can be accepted
        self._access = access
        self._peers: Connections | None = None
        if access is not None:
            if gate is None:
                raise ValueError("a controller that checks its peers needs the ZAP gate")
            self._peers = Connections(self._socket, context, access)
            self._socket.setsockopt(zmq.ZAP_DOMAIN, CONTROL_DOMAIN)
            gate.handlers[CONTROL_DOMAIN] = self._handshake
        try:
            bind(self._socket, endpoint, owner=owner)
        except BaseException:
            self.close_now()
            raise
        if self._peers is not None:
            self._peers.local = bound_address(self._socket)
        self._requests = TaskOwner("controller")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd = -1

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._fd = socket_fd(self._socket)
        self._loop.add_reader(self._fd, self._on_readable)
        self._on_readable()  # anything that arrived before the reader was in place

    def _on_readable(self) -> None:
        # ZeroMQ's FD is edge-triggered: read until the socket says there is nothing left.
        peers = self._peers
        while not self._owner.closed:
            peer: Peer | None = None
            try:
                if self._ring is not None:
                    if not readable(self._socket):
                        return
                    frame = self._socket.recv(zmq.NOBLOCK, copy=False)
                    peer = self._key_peer(frame)
                    frames = [frame.bytes]
                    while frame.more:
                        frame = self._socket.recv(zmq.NOBLOCK, copy=False)
                        frames.append(frame.bytes)
                elif peers is None:
                    if not readable(self._socket):
                        return
                    frames = self._socket.recv_multipart(zmq.NOBLOCK)
                else:
                    if peers.idle(self._socket):
                        return
                    frame = self._socket.recv(zmq.NOBLOCK, copy=False)
                    peer = peers.peer_of(_source_fd(frame))
                    frames = [frame.bytes]
                    while frame.more:  # (faster than the socket's RCVMORE)
                        frame = self._socket.recv(zmq.NOBLOCK, copy=False)
                        frames.append(frame.bytes)
            except zmq.Again:
                return
            except zmq.ZMQError as exc:
                log.warning("controller: receive failed: %s", exc)
                return
            self._receive(frames, peer)

    def _key_peer(self, frame: zmq.Frame) -> Peer:
        """The peer of a message on a CURVE socket: the key its handshake was admitted
        with (the ZAP reply's User-Id), looked up again, so a key removed from its
        directory stops working within a second for connections already open."""
        assert self._ring is not None
        try:
            public = str(frame.get("User-Id")).encode()
        except zmq.ZMQError:
            return STALE_KEY
        self._ring.refresh(max_age=KEYS_MAX_AGE)
        entry = self._ring.lookup(public)
        if entry is None:
            return STALE_KEY
        return Peer(None, None, entry.tier, f"key {entry.name}", key=entry.name)

    def _handshake(self) -> None:
        """A new connection's handshake waits on this (the ZAP gate): first every request
        already queued is read, with the peers known so far."""
        if self._peers is None or self._owner.closed:
            return
        self._on_readable()
        self._peers.letting_through()

    def _receive(self, frames: list[bytes], peer: Peer | None = None) -> None:
        identity = frames[0]
        # [identity, b""] is an empty request from a DEALER, not a REQ's delimiter
        delimiter = len(frames) >= 3 and frames[1] == b""
        body = frames[2:] if delimiter else frames[1:]
        outcome: Reply | _Pending | None
        if peer is not None and not peer.allowed:
            outcome = self._refuse(body, peer)
        elif len(body) == 1:
            outcome = self._prepare(body[0], peer)
        else:
            log.warning("controller: refused a message of %d frames", len(frames))
            outcome = error_reply(
                f"message invalid: expected the request in one frame, got {len(body)}",
                Errno.MESSAGE_ERROR,
            )
        if isinstance(outcome, _Pending):
            self._requests.spawn(self._finish(identity, delimiter, outcome), name="request")
        elif outcome is not None:
            self._send(identity, delimiter, outcome)

    async def _finish(self, identity: bytes, delimiter: bool, pending: _Pending) -> None:
        reply = await self._complete(pending)
        if reply is not None:
            self._send(identity, delimiter, reply)

    def _send(self, identity: bytes, delimiter: bool, reply: Reply) -> None:
        if self._owner.closed:
            return
        data = json.dumps(reply).encode()
        out = [identity, b"", data] if delimiter else [identity, data]
        try:
            self._socket.send_multipart(out, zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # the client is gone, or not reading its replies
            log.debug("controller: could not reply: %s", exc)
        if len(data) > LARGE_REPLY and self._loop is not None:
            self._loop.call_soon(trim_heap)  # once the reply's objects are gone
        if self._loop is not None and readable(self._socket):
            self._loop.call_soon(self._on_readable)  # input that came while we sent

    def _refuse(self, body: list[bytes], peer: Peer) -> Reply | None:
        """The reply to a refused peer's request (None for a cast): the rule, and the
        request's ``id`` so that the client matches it. Logged, at most every 10 s a user."""
        msg: Any = None
        if len(body) == 1 and len(body[0]) <= MAX_MESSAGE:
            with contextlib.suppress(ValueError, UnicodeDecodeError, RecursionError):
                msg = json.loads(body[0])
        if not isinstance(msg, dict):
            msg = {}
        command = msg.get("command")
        if THROTTLE.allow((self.endpoint, peer.uid)):
            log.warning("refused %s from %s on %s: %s",
                        _short(command) if command is not None else "a request",
                        peer.describe(), self.endpoint, peer.why)
        if msg.get("msg_type") == "cast":
            return None
        reason = (f"refused: {peer.why}" if self._access is None
                  else self._access.refusal(peer, self.endpoint))
        return error_reply(reason, Errno.COMMAND_ERROR, msg.get("id"))

    async def dispatch(self, raw: bytes, peer: Peer | None = None) -> Reply | None:
        """Run one request and build its reply (None for a cast). Never raises Exception."""
        outcome = self._prepare(raw, peer)
        if isinstance(outcome, _Pending):
            return await self._complete(outcome)
        return outcome

    def _prepare(self, raw: bytes, peer: Peer | None = None) -> Reply | _Pending | None:
        """Parse and validate; answer at once when possible. None: a cast needs no reply."""
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
        outcome = self._start(msg, msg_id, cast, peer)
        if cast and not isinstance(outcome, _Pending):
            return None
        return outcome

    def _start(self, msg: dict[str, Any], msg_id: Any, cast: bool, peer: Peer | None = None
               ) -> Reply | _Pending:
        reply = self._begin(msg, msg_id, cast, peer)
        if isinstance(reply, _Pending):
            reply.peer = peer
            return reply
        cmd = self.commands.get(str(msg.get("command")).lower())
        if cmd is not None and reply.get("status") == "ok" and peer is not None and \
                peer.tier != Tier.ADMIN and cmd.tier == Tier.READER:
            reply = redact(reply)  # below admin, no secret from a watcher's env
        if cmd is not None:
            audit(cmd, _props(msg), peer, self.endpoint, result_of(reply))
        return reply

    def _begin(self, msg: dict[str, Any], msg_id: Any, cast: bool, peer: Peer | None
               ) -> Reply | _Pending:
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
        refused = refusal(cmd, props, peer, self.arbiter)
        if refused is not None:
            return error_reply(f"refused: {refused}", Errno.COMMAND_ERROR, msg_id)
        try:
            cmd.validate(self.arbiter, props)
            if cmd.runs_inline(props):
                return ok_reply(cmd.answer(self.arbiter, props), msg_id)
            scope = cmd.scope(self.arbiter, props)
            waiting = Command.bool_prop(props, "waiting")
            slot = self.queue.admit(scope) if scope is not None else None
            try:
                targets = slot is None or not self.queue.rewrites_ahead(slot)
                token = cmd.preempt(self.arbiter, props, targets)
                if slot is not None:
                    slot.rewrites = token is None and cmd.rewrites(self.arbiter, props)
                early = cmd.admitted(self.arbiter, props)
            except BaseException:
                if slot is not None:
                    self.queue.release(slot)
                raise
            if cmd.waitable and not waiting:
                self.arbiter.background(self._execute_later(cmd, props, slot, token),
                                        name=f"command-{cmd.name}")
                return ok_reply(early, msg_id)
        except Exception as exc:
            return self._error(cmd, exc, msg_id)
        return _Pending(cmd, props, msg_id, slot, cast, token)

    async def _complete(self, pending: _Pending) -> Reply | None:
        try:
            result = await self._execute(pending.cmd, pending.props, pending.slot,
                                         pending.token)
            reply = ok_reply(result, pending.msg_id)
        except Exception as exc:
            reply = self._error(pending.cmd, exc, pending.msg_id)
        audit(pending.cmd, pending.props, pending.peer, self.endpoint, result_of(reply))
        return None if pending.cast else reply

    def _error(self, cmd: Command, exc: Exception, msg_id: Any) -> Reply:
        """The one place where an exception becomes an error reply.

        Errors raised on purpose (:mod:`circus.errors`, an option's value, the system's
        ``OSError``) are the client's to read. Anything else is a bug in circusd: it is
        logged with its traceback and answered with a short reason, and circusd serves on.
        """
        if isinstance(exc, CommandError):
            return error_reply(str(exc), exc.errno, msg_id)
        if isinstance(exc, ConfigError):
            return error_reply(f"configuration refused: {exc}", Errno.COMMAND_ERROR, msg_id)
        if isinstance(exc, OptionError):
            reason = exc.reason
            return error_reply(f"invalid value for {exc.option!r}: {reason}",
                               Errno.MESSAGE_ERROR, msg_id)
        if isinstance(exc, OSError):
            return error_reply(f"{cmd.name}: {exc}", Errno.OS_ERROR, msg_id)
        log.error("command %r failed", cmd.name, exc_info=exc)
        return error_reply(f"command {cmd.name!r} failed: {type(exc).__name__}: {str(exc)[:80]}",
                           Errno.COMMAND_ERROR, msg_id)

    async def _execute(self, cmd: Command, props: Props, slot: Any, token: Any = None
                       ) -> Reply | None:
        try:
            if slot is not None:
                await self.queue.wait_turn(slot)
            if token is not None:
                return await cmd.resume(self.arbiter, props, token)
            return await cmd.execute(self.arbiter, props)
        finally:
            if slot is not None:
                self.queue.release(slot)

    async def _execute_later(self, cmd: Command, props: Props, slot: Any, token: Any) -> None:
        """A command answered before it ran: its failure can only be logged."""
        try:
            await self._execute(cmd, props, slot, token)
        except (CommandError, ConfigError, OptionError, OSError) as exc:
            log.warning("command %s %s failed after its reply was sent: %s",
                        cmd.name, _short(props), exc)
        except Exception:
            log.exception("command %s %s failed after its reply was sent",
                          cmd.name, _short(props))

    async def close(self, drain: float = 1.0) -> None:
        """Stop taking requests; let those in flight answer (at most *drain* s)."""
        if self._loop is not None and self._fd >= 0:
            self._loop.remove_reader(self._fd)
            self._fd = -1
        await self._requests.join(timeout=drain)
        await self._requests.close(timeout=1.0)
        self.close_now()

    def close_now(self) -> None:
        """Close the socket (and its monitor) without waiting for anything."""
        if self._peers is not None:
            self._peers.close()
        self._owner.close(linger=0)


def _source_fd(frame: zmq.Frame) -> int:
    """The descriptor of the connection *frame* came from; -1 when libzmq cannot tell."""
    try:
        return int(frame.get(zmq.SRCFD))
    except zmq.ZMQError:
        return -1


def _short(value: Any, limit: int = 60) -> str:
    """repr(value), cut to *limit* characters, for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _props(msg: dict[str, Any]) -> dict[str, Any]:
    props = msg.get("properties")
    return props if isinstance(props, dict) else {}
