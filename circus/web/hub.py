"""What the console knows of each circusd, kept current.

One :class:`Endpoint` per ``--endpoint``. It asks circusd ``globaloptions`` for its pub/sub
and stats endpoints, then:

* reads ``status`` with ``details`` at start, again ~30 ms after each ``watcher.*`` event
  (spawn, reap, kill, start, stop, add ...), and every second while a page is open (which
  also tells whether circusd still answers: the connection state of a fleet's hosts);
* takes each process's CPU and memory from circusd-stats's ``stat.*`` channel; when none
  came for 3 s (no circusd-stats runs) the periodic ``status`` asks ``stats`` too. Figures
  are followed only while a page is open or the API asked for them in the last minute;
* keeps each watcher's CPU and memory of the last :data:`HISTORY` seconds for the charts;
* forwards events and, for the log panes that follow a watcher, its ``output.*`` chunks
  (joined without a gap, docs/output.md), to the :class:`Listener` s (the WebSockets).

The control client is made by :meth:`Endpoint.make_client`; keyword arguments for it
(CURVE keys) come from ``client_options``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import zmq
import zmq.asyncio

from circus.client import AsyncCircusClient, refusal
from circus.commands.tail import topic_name
from circus.consumer import decode
from circus.curve import secure
from circus.errors import CallError

log = logging.getLogger("circus.web")

HISTORY = 300  # seconds of figures kept per watcher
EVENTS_KEPT = 200
STATS_STALE = 3.0  # seconds without a stat.* message before status asks for stats
FIGURES_WANTED = 60.0  # seconds figures are kept current after an API call asked for them
DEBOUNCE = 0.03
SIZE = re.compile(r"^(\d+(?:\.\d+)?)([KMGT]?)B?$")
UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}

Message = dict[str, Any]


class Listener(Protocol):
    """A WebSocket of a page: gets what concerns it, never blocks the hub."""

    def notify(self, kind: str, endpoint: Endpoint, payload: Message) -> None: ...


def parse_size(value: object) -> int | None:
    """Bytes from circusd's ``mem_info1`` (``"3.45M"``, ``"512"``); None if not a size."""
    if isinstance(value, int | float):
        return int(value)
    if not isinstance(value, str):
        return None
    match = SIZE.match(value.strip())
    if not match:
        return None
    return int(float(match.group(1)) * UNITS[match.group(2)])


def reachable_from(endpoint: str, control: str) -> str:
    """*endpoint* (which circusd may have bound on ``0.0.0.0`` or ``*``) as a client on
    this host connects to it: the host of the control endpoint *control* in their place."""
    if not endpoint.startswith("tcp://"):
        return endpoint
    host, _, port = endpoint[6:].rpartition(":")
    if host in ("*", "0.0.0.0", ""):
        control_host = urlsplit(control).hostname or "127.0.0.1"
        return f"tcp://{control_host}:{port}"
    return endpoint


@dataclass
class Follower:
    """A log pane following one watcher's output."""

    listener: Listener
    topic: str  # the watcher's name as topics spell it
    snapshot: float | None = None  # None until the tail reply came: chunks are held
    held: list[Message] = field(default_factory=list)


class Endpoint:
    """One circusd: its connection, watchers, figures, events and log followers."""

    def __init__(self, index: int, url: str, hub: Hub, timeout: float = 5.0,
                 client_options: dict[str, Any] | None = None) -> None:
        self.index = index
        self.url = url
        self.hub = hub
        self.timeout = timeout
        self.client_options = dict(client_options or {})
        self.context = zmq.asyncio.Context()
        self.client = self.make_client()
        self.connected = False
        self.error: str | None = "connecting"
        self.pubsub_endpoint: str | None = None
        self.stats_endpoint: str | None = None
        self.watchers: dict[str, Message] = {}  # by name, in circusd's order
        self.updated = 0.0  # when watchers was read (time.time())
        self.figures: dict[int, tuple[float, int | None]] = {}  # pid -> (cpu %, rss bytes)
        self.figures_at = 0.0  # monotonic time of the last stat.* message
        self.history: dict[str, deque[tuple[float, float, float]]] = {}
        self.events: deque[Message] = deque(maxlen=EVENTS_KEPT)
        self.followers: dict[str, list[Follower]] = {}
        self._events_sock: zmq.asyncio.Socket | None = None
        self._stats_sock: zmq.asyncio.Socket | None = None
        self._stats_subscribed = False
        self._refresh_wanted = asyncio.Event()
        self._refreshed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def make_client(self) -> AsyncCircusClient:
        """The control client. ``client_options`` are passed on as keyword arguments
        (``keys``: the CURVE keys)."""
        return AsyncCircusClient(endpoint=self.url, timeout=self.timeout,
                                 context=self.context, **self.client_options)

    def subscriber(self, endpoint: str) -> zmq.asyncio.Socket:
        """A SUB socket connected to *endpoint* (events, stats), with the CURVE keys of
        ``client_options`` when there are."""
        sock = self.context.socket(zmq.SUB)
        sock.linger = 0
        secure(sock, self.client_options.get("keys"))
        sock.connect(endpoint)
        return sock

    # -- life -----------------------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._main(), name=f"endpoint {self.url}")]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.client.close()
        for sock in (self._events_sock, self._stats_sock):
            if sock is not None:
                sock.close(linger=0)
        self.context.term()

    async def _main(self) -> None:
        while self.pubsub_endpoint is None:
            reason = await asyncio.to_thread(refusal, self.url)
            if reason is not None:
                self._set_connected(False, f"cannot reach circusd at {self.url}: {reason}")
                await asyncio.sleep(1.0)
                continue
            try:
                reply = await self.call("globaloptions")
            except CallError as exc:
                self._set_connected(False, str(exc))
                await asyncio.sleep(1.0)
                continue
            options = reply.get("options", {})
            self.pubsub_endpoint = reachable_from(str(options.get("pubsub_endpoint")), self.url)
            stats = options.get("stats_endpoint")
            self.stats_endpoint = reachable_from(str(stats), self.url) if stats else None
        self._events_sock = self.subscriber(self.pubsub_endpoint)
        self._events_sock.setsockopt(zmq.SUBSCRIBE, b"watcher.")
        await self.refresh()
        self._refreshed.set()
        tasks = [self._read_events(), self._refresher(), self._ticker()]
        if self.stats_endpoint:
            self._stats_sock = self.subscriber(self.stats_endpoint)
            tasks.append(self._read_stats())
        async with asyncio.TaskGroup() as group:
            for coro in tasks:
                group.create_task(coro)

    def _set_connected(self, connected: bool, error: str | None = None) -> None:
        changed = connected != self.connected or error != self.error
        self.connected, self.error = connected, error
        if changed:
            self.hub.publish("status", self, {})

    # -- commands -------------------------------------------------------------------------

    async def call(self, command: str, **props: Any) -> Message:
        """Send *command*; the reply (an error reply included). Raises CallError when
        circusd does not answer."""
        return await self.client.send_message(command, **props)

    # -- status ---------------------------------------------------------------------------

    def refresh_soon(self) -> None:
        self._refresh_wanted.set()

    async def refreshed(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Wait for the next status read to finish (tests, and the API after a change)."""
        self._refreshed.clear()
        self.refresh_soon()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._refreshed.wait(), timeout)

    async def _refresher(self) -> None:
        while True:
            period = 1.0 if self.hub.listeners else 5.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._refresh_wanted.wait(), period)
            if self._refresh_wanted.is_set():
                await asyncio.sleep(DEBOUNCE)  # one read for a burst of events
            self._refresh_wanted.clear()
            await self.refresh()
            self._refreshed.set()

    async def refresh(self) -> None:
        self._follow_stats()
        with_stats = time.monotonic() - self.figures_at > STATS_STALE and \
            self.hub.figures_wanted()
        try:
            reply = await self.call("status", details=True, stats=with_stats)
        except CallError as exc:
            self._set_connected(False, str(exc))
            return
        if reply.get("status") == "error":
            self._set_connected(True, str(reply.get("reason")))
            return
        statuses = reply.get("statuses", {})
        details = reply.get("details", {})
        watchers: dict[str, Message] = {}
        for name, state in statuses.items():
            detail = details.get(name, {})
            processes = []
            for p in detail.get("processes", []):
                entry = {"pid": p.get("pid"), "wid": p.get("wid"), "uptime": p.get("uptime"),
                         "restarts": p.get("restarts", 0), "health": p.get("health")}
                if with_stats and "cpu" in p:
                    cpu = p.get("cpu")
                    self.figures[int(p["pid"])] = (
                        float(cpu) if isinstance(cpu, int | float) else 0.0,
                        parse_size(p.get("mem_info1")))
                processes.append(entry)
            watchers[name] = {
                "name": name, "status": state, "health": detail.get("health", state),
                "reason": detail.get("reason"), "restarts": detail.get("restarts", 0),
                "numprocesses": detail.get("numprocesses", len(processes)),
                "running": len(processes), "last_exit": detail.get("last_exit"),
                "processes": processes,
            }
        self.watchers = watchers
        self.updated = time.time()
        live = {p["pid"] for w in watchers.values() for p in w["processes"]}
        for pid in [pid for pid in self.figures if pid not in live]:
            del self.figures[pid]
        for name in [n for n in self.history if n not in watchers]:
            del self.history[name]
        self.connected, self.error = True, None
        self.hub.publish("status", self, {})

    def snapshot(self, watcher: str | None = None, processes: bool = True) -> Message:
        """This endpoint as ``/api/status`` shows it: every watcher, or only *watcher*;
        without *processes*, no process lists (the dashboard's view)."""
        out = []
        for name, w in self.watchers.items():
            if watcher is not None and name != watcher:
                continue
            entry = {k: v for k, v in w.items() if k != "processes"}
            cpu, mem = self.watcher_figures(w)
            entry["cpu"], entry["mem"] = cpu, mem
            if processes:
                entry["processes"] = [self.process_view(p) for p in w["processes"]]
            out.append(entry)
        return {"endpoint": self.url, "index": self.index, "connected": self.connected,
                "error": self.error, "time": self.updated, "stats": self.has_stats(),
                "watchers": out}

    def process_view(self, p: Message) -> Message:
        cpu, rss = self.figures.get(p["pid"], (None, None))
        return {**p, "cpu": cpu, "mem": rss}

    def has_stats(self) -> bool:
        return time.monotonic() - self.figures_at <= STATS_STALE

    def watcher_figures(self, w: Message) -> tuple[float | None, int | None]:
        cpus, mems = [], []
        for p in w["processes"]:
            cpu, rss = self.figures.get(p["pid"], (None, None))
            if cpu is not None:
                cpus.append(cpu)
            if rss is not None:
                mems.append(rss)
        return (round(sum(cpus), 1) if cpus else None), (sum(mems) if mems else None)

    # -- figures --------------------------------------------------------------------------

    async def _read_stats(self) -> None:
        assert self._stats_sock is not None
        while True:
            frames = await self._stats_sock.recv_multipart()
            if len(frames) != 2:
                continue
            event = decode(frames[0], frames[1])
            pid, cpu = event.payload.get("pid"), event.payload.get("cpu")
            if not isinstance(pid, int) or event.topic.startswith(("stat.circus",
                                                                   "stat.sockets")):
                continue
            self.figures[pid] = (float(cpu) if isinstance(cpu, int | float) else 0.0,
                                 parse_size(event.payload.get("mem_info1")))
            self.figures_at = time.monotonic()

    def _follow_stats(self) -> None:
        """Subscribe to the stats channel while figures are wanted (a page open, or the API
        asked for them within :data:`FIGURES_WANTED` seconds), else not: circusd-stats then
        reads and sends nothing for us."""
        wanted = self.hub.figures_wanted()
        if self._stats_sock is None or wanted == self._stats_subscribed:
            return
        option = zmq.SUBSCRIBE if wanted else zmq.UNSUBSCRIBE
        self._stats_sock.setsockopt(option, b"stat.")
        self._stats_subscribed = wanted

    async def _ticker(self) -> None:
        """Once a second: a point of each watcher's history, sent to the pages."""
        while True:
            self._follow_stats()
            await asyncio.sleep(1.0 - time.time() % 1.0)
            now = round(time.time())
            points: dict[str, list[float | None]] = {}
            for name, w in self.watchers.items():
                cpu, mem = self.watcher_figures(w)
                if cpu is None and mem is None:
                    continue
                mb = round(mem / 1048576, 2) if mem is not None else 0.0
                history = self.history.setdefault(name, deque(maxlen=HISTORY))
                history.append((now, cpu or 0.0, mb))
                points[name] = [cpu, mb]
            if points:
                self.hub.publish("figures", self, {"time": now, "watchers": points})

    # -- events and output ----------------------------------------------------------------

    async def _read_events(self) -> None:
        assert self._events_sock is not None
        while True:
            frames = await self._events_sock.recv_multipart()
            if len(frames) != 2:
                continue
            event = decode(frames[0], frames[1])
            if event.topic.startswith("output."):
                self._output(event.topic, event.payload)
                continue
            if event.topic.startswith("watcher."):
                entry = {"topic": event.topic, "payload": event.payload,
                         "time": event.payload.get("time", time.time())}
                self.events.append(entry)
                self.hub.publish("event", self, entry)
                self.refresh_soon()

    def _output(self, topic: str, payload: Message) -> None:
        parts = topic.split(".")
        stream = parts[-1]
        name = ".".join(parts[1:-1])
        chunk = {"watcher": name, "pid": payload.get("pid"), "stream": stream,
                 "data": payload.get("data", ""), "time": payload.get("time", 0.0)}
        for follower in self.followers.get(name, []):
            if follower.snapshot is None:
                follower.held.append(chunk)
            elif chunk["time"] >= follower.snapshot:
                follower.listener.notify("output", self, chunk)

    def _subscribe_output(self, topic: str, on: bool) -> None:
        assert self._events_sock is not None
        option = zmq.SUBSCRIBE if on else zmq.UNSUBSCRIBE
        for stream in ("stdout", "stderr"):
            self._events_sock.setsockopt(option, f"output.{topic}.{stream}".encode())

    async def follow(self, listener: Listener, watcher: str, lines: int) -> Message:
        """Start following *watcher*'s output for *listener*: the tail reply (its last
        *lines*), after which each new chunk is sent as an ``output`` notice."""
        if self._events_sock is None:
            raise CallError(f"not connected to {self.url}")
        topic = topic_name(watcher)
        follower = Follower(listener, topic)
        first = not self.followers.get(topic)
        self.followers.setdefault(topic, []).append(follower)
        if first:
            self._subscribe_output(topic, True)
        sync = f"sync.{os.urandom(8).hex()}"
        self._events_sock.setsockopt(zmq.SUBSCRIBE, sync.encode())
        try:
            for _attempt in range(3):
                reply = await self.call("tail", name=watcher, lines=lines, sync=sync)
                if reply.get("errno") != 5:
                    break
        except CallError:
            self.unfollow(listener)
            raise
        finally:
            self._events_sock.setsockopt(zmq.UNSUBSCRIBE, sync.encode())
        if reply.get("status") != "ok":
            self.unfollow(listener)
            return reply
        follower.snapshot = float(reply.get("snapshot", 0.0))
        held, follower.held = follower.held, []
        reply["held"] = [c for c in held if c["time"] >= follower.snapshot]
        return reply

    def unfollow(self, listener: Listener) -> None:
        for topic in list(self.followers):
            kept = [f for f in self.followers[topic] if f.listener is not listener]
            if kept:
                self.followers[topic] = kept
            else:
                del self.followers[topic]
                if self._events_sock is not None:
                    self._subscribe_output(topic, False)


class Hub:
    """Every endpoint, and the listeners to tell what changes."""

    def __init__(self, urls: list[str], timeout: float = 5.0,
                 client_options: dict[str, Any] | None = None) -> None:
        self.endpoints = [Endpoint(i, url, self, timeout, client_options)
                          for i, url in enumerate(urls)]
        self.listeners: set[Listener] = set()
        self.api_used = -FIGURES_WANTED  # monotonic time of the last /api/status

    def start(self) -> None:
        for endpoint in self.endpoints:
            endpoint.start()

    async def close(self) -> None:
        for endpoint in self.endpoints:
            await endpoint.close()

    def publish(self, kind: str, endpoint: Endpoint, payload: Message) -> None:
        for listener in list(self.listeners):
            listener.notify(kind, endpoint, payload)

    def figures_wanted(self) -> bool:
        return bool(self.listeners) or time.monotonic() - self.api_used < FIGURES_WANTED

    def status(self) -> Message:
        return {"endpoints": [e.snapshot() for e in self.endpoints]}
