"""circus-top's connections: a SUB socket on circusd-stats' channel and a client of
circusd's control endpoint (``status``, ``tail`` and the actions).

:func:`snapshot` fills a model once, blocking (``--once``); :class:`Feed` is the asyncio
side the terminal view runs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import zmq

from circus.client import AsyncCircusClient, CircusClient
from circus.curve import ClientKeys, secure
from circus.errors import CallError
from circus.top.model import TopModel

STATUS = {"details": True}
TAIL_LINES = 20


def _decode(frames: list[bytes]) -> tuple[str, Any] | None:
    if len(frames) < 2:
        return None
    try:
        return frames[0].decode(errors="replace"), json.loads(frames[1])
    except ValueError:
        return None


def snapshot(model: TopModel, stats_endpoint: str, control: str | None,
             timeout: float = 3.0, call_timeout: float = 3.0,
             keys: ClientKeys | None = None) -> None:
    """Fill *model* with one status of circusd and one round of figures: the figures of
    every process that status lists, or whatever came within *timeout* seconds."""
    ctx: zmq.Context[Any] = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.linger = 0
    sub.setsockopt(zmq.SUBSCRIBE, b"stat.")
    secure(sub, keys)
    try:
        sub.connect(stats_endpoint)
        if control:
            client = CircusClient(context=ctx, endpoint=control, timeout=call_timeout,
                                  keys=keys)
            try:
                model.on_status(client.send_message("status", **STATUS))
            except CallError as exc:
                model.connection_lost(str(exc))
            finally:
                client.stop()
        deadline = time.monotonic() + timeout
        wanted = {(w, p) for w, rows in model.rows.items() for p in rows}
        aggregates: set[str] = set()
        while time.monotonic() < deadline:
            if not sub.poll(max(1, int((deadline - time.monotonic()) * 1000))):
                break
            decoded = _decode(sub.recv_multipart())
            if decoded is None:
                continue
            topic, payload = decoded
            model.on_stat(topic, payload)
            name, _, tail = topic[len("stat."):].rpartition(".")
            if name and tail.isdigit():
                wanted.discard((name, int(tail)))
            elif not name:
                aggregates.add(tail)
            seen = {(w, p) for w, rows in model.rows.items() for p, r in rows.items() if r.seen}
            if aggregates and not wanted - seen and aggregates >= set(model.watchers) - {
                    n for n, rows in model.rows.items() if not rows}:
                break
    finally:
        sub.close(linger=0)
        ctx.term()


class Feed:
    """The view's connections, on the view's asyncio loop."""

    def __init__(self, stats_endpoint: str, control: str | None,
                 call_timeout: float = 5.0, keys: ClientKeys | None = None) -> None:
        import zmq.asyncio

        self.stats_endpoint, self.control = stats_endpoint, control
        self.context = zmq.asyncio.Context()
        self.sub = self.context.socket(zmq.SUB)
        self.sub.linger = 0
        self.sub.setsockopt(zmq.SUBSCRIBE, b"stat.")
        secure(self.sub, keys)
        self.sub.connect(stats_endpoint)
        self.client = (AsyncCircusClient(control, timeout=call_timeout, context=self.context,
                                         keys=keys)
                       if control else None)

    async def next_stat(self) -> tuple[str, Any]:
        """The next message of the stats channel (topic, decoded body)."""
        while True:
            decoded = _decode(await self.sub.recv_multipart())
            if decoded is not None:
                return decoded

    async def call(self, command: str, **props: Any) -> Mapping[str, Any]:
        """A reply of circusd; a ``CallError`` when there is no control endpoint or no
        answer."""
        if self.client is None:
            raise CallError("no control endpoint (--control)")
        return await self.client.send_message(command, **props)

    async def status(self) -> Mapping[str, Any]:
        return await self.call("status", **STATUS)

    async def tail(self, watcher: str, pid: int | None, lines: int = TAIL_LINES
                   ) -> Mapping[str, Any]:
        props: dict[str, Any] = {"name": watcher, "lines": lines}
        if pid is not None:
            props["pid"] = pid
        return await self.call("tail", **props)

    def close(self) -> None:
        self.sub.close(linger=0)
        if self.client is not None:
            self.client.close()
        self.context.term()


def reply_error(reply: Mapping[str, Any]) -> str | None:
    """The reason of an error reply, else None."""
    if reply.get("status") == "error":
        return str(reply.get("reason") or "error")
    return None
