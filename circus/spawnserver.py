"""circusd's side of the spawn server (the process itself is :mod:`circus.spawnd`).

While an arbiter runs as a child subreaper with its SIGCHLD handler (the usual case:
circusd, or ``get_arbiter`` in the main thread), its workers are made by the spawn server,
a small process of circusd's that keeps a short descriptor table, instead of by
``posix_spawn`` in circusd's spawning thread: a spawn then costs the same with 10,000
processes running as with 10, and the spawning runs on another core. Only what the
``posix_spawn`` path can make goes there; a watcher that needs ``subprocess.Popen``
(a user, a group, limits, another directory, ...) is still made in circusd.

Each :meth:`SpawnServer.spawn` is one request on the socket pair and one future, answered
when the reply comes back on the loop (the loop reads the socket). Requests are not made
one at a time: a watcher that starts many processes has many in flight, and the server
makes each batch in one short-lived process. Every spawn is *in flight* for
:mod:`circus.children` from before its request is sent until its pid is registered, so a
worker that dies at once is never taken for an orphan.

When the server cannot be started or has ended, spawns go back to circusd's thread (and
a request too large for one message, or with more than 250 descriptors to pass, always
does); the server's end is logged once. ``CIRCUS_SPAWN_SERVER=0`` in circusd's
environment turns it off.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import logging
import os
import pickle
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Any

from circus import spawnd
from circus.children import CHILDREN
from circus.kernel import Action

log = logging.getLogger(__name__)

BUFFER = 4 << 20  # asked for both directions of the socket pair (the kernel may cap it)
STOP_WAIT = 2.0  # seconds the server gets to end after its socket is closed


class Unavailable(Exception):
    """This spawn cannot go through the server: make it in circusd instead."""


class SpawnServer:
    """The spawn server of the running loop: start it with :func:`start`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, soft_nofile: int | None) -> None:
        self._loop = loop
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for sock in (ours, theirs):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER)
        try:
            argv = [sys.executable, "-I", "-S", spawnd.__file__, "3", str(soft_nofile or 0)]
            actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                       (os.POSIX_SPAWN_DUP2, theirs.fileno(), 3)]
            # in circusd's session, so that circus.children never takes it for an orphan
            self.pid = os.posix_spawn(sys.executable, argv, {}, file_actions=actions)
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        self._sock = ours
        ours.setblocking(False)
        self._serial = 0
        self._pending: dict[int, tuple[asyncio.Future[int], int]] = {}
        self._outbox: collections.deque[tuple[bytes, list[int]]] = collections.deque()
        self._writing = False
        self._ended = loop.create_future()
        self.alive = True
        CHILDREN.track(self.pid, self._on_exit)
        loop.add_reader(ours.fileno(), self._on_readable)

    # -- requests ---------------------------------------------------------------------

    async def spawn(self, program: str, argv: Sequence[str], env: dict[str, str],
                    actions: Sequence[Action]) -> int:
        """Make one worker; its pid. Raises OSError as ``posix_spawn`` does, or
        :class:`Unavailable` when this request has to be made in circusd."""
        if not self.alive:
            raise Unavailable("the spawn server has ended")
        fds: list[int] = []
        wire: list[tuple[Any, ...]] = []
        for action in actions:
            if action[0] == os.POSIX_SPAWN_DUP2:
                source, target = action[1], action[2]  # type: ignore[misc]
                if source not in fds:
                    fds.append(source)
                wire.append(("dup", fds.index(source), target))
            elif action[0] == os.POSIX_SPAWN_OPEN:
                wire.append(("open", *action[1:]))
            else:
                wire.append(("close", action[1]))
        self._serial += 1
        rid = self._serial
        data = pickle.dumps((rid, program, list(argv), env, wire), pickle.HIGHEST_PROTOCOL)
        if len(data) > spawnd.MAX_MESSAGE or len(fds) > spawnd.MAX_FDS:
            raise Unavailable("too large for one message")
        future: asyncio.Future[int] = self._loop.create_future()
        self._pending[rid] = (future, CHILDREN.begin_spawn())
        self._outbox.append((data, fds))
        self._flush()
        # the descriptors must stay open until the request is sent: the caller closes
        # them once this returns, and it returns only after the reply
        return await future

    def _flush(self) -> None:
        while self._outbox and self.alive:
            data, fds = self._outbox[0]
            try:
                socket.send_fds(self._sock, [data], fds)
            except BlockingIOError:
                if not self._writing:
                    self._loop.add_writer(self._sock.fileno(), self._flush)
                    self._writing = True
                return
            except OSError as exc:
                self._end(f"its socket failed ({exc})")
                return
            self._outbox.popleft()
        if self._writing:
            self._loop.remove_writer(self._sock.fileno())
            self._writing = False

    def _on_readable(self) -> None:
        while self.alive:
            try:
                data = self._sock.recv(4096)
            except BlockingIOError:
                return
            except OSError as exc:
                self._end(f"its socket failed ({exc})")
                return
            if not data:
                self._end("it closed its socket")
                return
            rid, pid, err, text = pickle.loads(data)
            if rid == spawnd.DONE:
                self._batch_done(pid)
                continue
            future, token = self._pending.pop(rid, (None, 0))
            if pid:
                CHILDREN.register(pid)
            if token:
                CHILDREN.end_spawn(token)
            if future is None or future.done():
                continue  # its caller was cancelled: the worker is an orphan now
            if pid:
                future.set_result(pid)
            elif err:
                future.set_exception(OSError(err, text))
            else:
                future.set_exception(ValueError(text))

    def _batch_done(self, rids: list[int]) -> None:
        for rid in rids:
            future, token = self._pending.pop(rid, (None, 0))
            if token:
                CHILDREN.end_spawn(token)
            if future is not None and not future.done():
                future.set_exception(OSError(errno.EIO, "the spawn server's batch failed"))

    # -- the end ----------------------------------------------------------------------

    def _end(self, why: str) -> None:
        if not self.alive:
            return
        self.alive = False
        if why:
            log.warning("the spawn server (pid %d) ended: %s; circusd makes its "
                        "workers itself from now on", self.pid, why)
        self._loop.remove_reader(self._sock.fileno())
        if self._writing:
            self._loop.remove_writer(self._sock.fileno())
            self._writing = False
        self._sock.close()
        self._outbox.clear()
        pending, self._pending = self._pending, {}
        for future, token in pending.values():
            CHILDREN.end_spawn(token)
            if not future.done():
                future.set_exception(Unavailable("the spawn server has ended"))

    def _on_exit(self, status: int) -> None:
        if not self._ended.done():
            self._ended.set_result(status)
        self._end(f"it exited ({os.waitstatus_to_exitcode(status)})")

    async def close(self) -> None:
        """Close the socket pair and wait for the server to end (SIGKILL after
        :data:`STOP_WAIT`)."""
        self._end("")
        try:
            await asyncio.wait_for(asyncio.shield(self._ended), STOP_WAIT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            # circus.children collects it (it is tracked) while the loop runs
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._ended), STOP_WAIT)


_current: SpawnServer | None = None


def current() -> SpawnServer | None:
    """The spawn server of the running loop, if it is alive."""
    server = _current
    if server is None or not server.alive:
        return None
    try:
        if asyncio.get_running_loop() is not server._loop:
            return None
    except RuntimeError:
        return None
    return server


def start(soft_nofile: int | None) -> SpawnServer | None:
    """Start the spawn server on the running loop; None when it is turned off, or when
    workers could not be collected from it (circusd is not a child subreaper, or has no
    SIGCHLD handler)."""
    global _current
    from circus.kernel import is_subreaper

    if os.environ.get("CIRCUS_SPAWN_SERVER", "1") == "0" or not sys.executable:
        return None
    if not (CHILDREN.listening and is_subreaper()):
        return None
    try:
        server = SpawnServer(asyncio.get_running_loop(), soft_nofile)
    except OSError as exc:
        log.warning("cannot start the spawn server (%s): circusd makes its workers itself",
                    exc)
        return None
    _current = server
    return server


async def stop(server: SpawnServer | None) -> None:
    global _current
    if server is None:
        return
    if _current is server:
        _current = None
    await server.close()


__all__ = ["SpawnServer", "Unavailable", "current", "start", "stop"]
