"""The circusd-stats loop: which pids to read, learned from circusd's events, and the
publisher of their figures on the stats endpoint.

One thread, one ``zmq.Poller`` over four things: circusd's event socket (``watcher.``
topics), the stats PUB socket (an XPUB: it is told who subscribes, and nothing is read or
sent while nobody does), an edge-triggered epoll of the ``[socket:]`` sockets, and the
signal wake-up pipe. At each interval every followed process is read once (collector.py)
and published.

The pids come from one ``list`` per watcher at start, then from the events: ``spawn`` adds
a pid, ``reap`` and ``kill`` remove it, ``stop`` removes all of the watcher's. A pid whose
``/proc`` entry is gone is dropped at its next read.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import socket
import time
from collections.abc import Iterable
from typing import Any

import zmq

from circus.client import CircusClient
from circus.curve import internal_keys, stats_server
from circus.endpoints import bind, socket_file
from circus.errors import CallError
from circus.stats.collector import Collector, Gone, aggregate
from circus.stats.launch import DEFAULT_STATSPOINT
from circus.stats.metrics import Figures, MetricsServer, start_metrics

log = logging.getLogger("circus.stats")

#: Watchers whose processes are shown under the pseudo-watcher ``circus`` instead.
CIRCUS_NAMES = ("circusd", "circushttpd", "circusd-stats")
PSEUDO = "circus"
SOCKETS = "sockets"
EVENTS = b"watcher."


def stat_topic(name: str, subtopic: int | None = None) -> bytes:
    topic = f"stat.{name}" if subtopic is None else f"stat.{name}.{subtopic}"
    return topic.encode()


class SocketCounter:
    """The ``[socket:]`` sockets inherited from circusd, and how many connections reached
    each during the interval (an edge-triggered epoll: one wake-up per arrival, nothing
    while none arrive)."""

    def __init__(self) -> None:
        self.epoll = select.epoll()
        self.entries: list[tuple[int, str]] = []  # (fd in circusd, address)
        self.counts: dict[int, int] = {}  # by fd in circusd
        self._watched: dict[int, int] = {}  # our descriptor -> fd in circusd
        self._open: list[socket.socket] = []

    def add(self, fd: int, address: str) -> None:
        self.entries.append((fd, address))
        self.counts[fd] = 0
        try:  # inherited at the same number (use_sockets): check that it is that socket
            sock = socket.socket(fileno=os.dup(fd))
        except OSError:
            log.info("socket %s (fd %d) is not inherited: its reads stay 0", address, fd)
            return
        if not _same_address(sock, address):
            sock.close()
            log.info("fd %d is not the socket %s: its reads stay 0", fd, address)
            return
        self._open.append(sock)
        self._watched[sock.fileno()] = fd
        self.epoll.register(sock.fileno(), select.EPOLLIN | select.EPOLLET)

    def drain(self) -> None:
        """Count the arrivals the epoll reports."""
        for ours, _ in self.epoll.poll(0):
            fd = self._watched.get(ours)
            if fd is not None:
                self.counts[fd] += 1

    def take(self) -> list[tuple[int, str, int]]:
        """(fd, address, reads) of each socket; the counts start again from 0."""
        result = [(fd, address, self.counts[fd]) for fd, address in self.entries]
        for fd in self.counts:
            self.counts[fd] = 0
        return result

    def close(self) -> None:
        for sock in self._open:
            sock.close()
        self.epoll.close()


def _same_address(sock: socket.socket, address: str) -> bool:
    """Is *sock* bound where *address* (``host:port`` or a path) says?"""
    try:
        name = sock.getsockname()
    except OSError:
        return False
    if isinstance(name, tuple):
        return str(name[1]) == address.rpartition(":")[2]
    return bool(name) and os.fsdecode(name) == address


def socket_address(entry: dict[str, Any]) -> str:
    """``host:port`` or the path of a ``listsockets`` entry, as Circus 0.19 writes it."""
    if entry.get("path"):
        return str(entry["path"])
    return f"{entry.get('host')}:{entry.get('port')}"


class StatsStreamer:
    """Follows circusd's processes and publishes their figures every *interval* seconds."""

    def __init__(self, endpoint: str, pubsub: str, statspoint: str = DEFAULT_STATSPOINT,
                 interval: float = 1.0, context: zmq.Context[Any] | None = None,
                 timeout: float = 3.0, metrics: tuple[str, int] | None = None) -> None:
        self.endpoint, self.pubsub, self.statspoint = endpoint, pubsub, statspoint
        self.metrics_address = metrics  # (host, port) of /metrics, or None
        self.figures: Figures | None = Figures() if metrics else None
        self.metrics: MetricsServer | None = None
        self.interval = interval
        self.timeout = timeout
        self.context = context or zmq.Context()
        self._own_context = context is None
        self.collector = Collector()
        self.pids: dict[str, dict[int, None]] = {}  # watcher -> its pids, in spawn order
        self.circus_pids: dict[int, str] = {}  # pid -> circusd, circusd-stats, circushttpd
        self.sockets = SocketCounter()
        self.subscriptions: set[bytes] = set()
        self._stopping = False
        self._wake_r, self._wake_w = socket.socketpair()
        self.sub = self.context.socket(zmq.SUB)
        self.pub = self.context.socket(zmq.XPUB)
        self._socket_file: Any = None
        self._auth: Any = None  # zmq.auth's authenticator, with CURVE
        self.keys = internal_keys()  # circusd's key for its own processes, with CURVE

    # -- the pids -------------------------------------------------------------------------

    def add_pid(self, watcher: str, pid: int) -> None:
        if watcher in CIRCUS_NAMES:
            return
        self.pids.setdefault(watcher, {})[pid] = None
        self.collector.follow(pid)

    def remove_pid(self, watcher: str, pid: int) -> None:
        pids = self.pids.get(watcher)
        if pids is not None and pid in pids:
            del pids[pid]
            if self.figures is not None:
                self.figures.gone(pid)
            self.collector.forget(pid)

    def stop_watcher(self, watcher: str) -> None:
        for pid in list(self.pids.get(watcher, ())):
            self.remove_pid(watcher, pid)

    def handle_event(self, topic: bytes, body: bytes) -> None:
        """One event of circusd: ``watcher.<name>.<action>`` and its JSON."""
        text = topic.decode(errors="replace")
        watcher, _, action = text[len("watcher."):].rpartition(".")
        if action not in ("spawn", "reap", "kill", "stop") or not watcher:
            return
        if action == "stop":
            self.stop_watcher(watcher)
            return
        try:
            pid = int(json.loads(body)["process_pid"])
        except (ValueError, KeyError, TypeError):
            log.debug("%s without a process_pid: %r", text, body[:200])
            return
        if action == "spawn":
            self.add_pid(watcher, pid)
        else:
            self.remove_pid(watcher, pid)

    def initial_state(self, client: CircusClient) -> None:
        """The watchers' pids, circusd's own pid and the sockets, asked once."""
        for name in client.send_message("list").get("watchers", []):
            if name in CIRCUS_NAMES:
                continue
            reply = client.send_message("list", name=name)
            for pid in reply.get("pids", []):
                self.add_pid(str(name).replace(" ", "_"), int(pid))
        pids = {os.getpid(): "circusd-stats"}
        info = client.send_message("dstats").get("info")
        if isinstance(info, dict) and isinstance(info.get("pid"), int):
            pids[info["pid"]] = "circusd"
        else:
            pids[os.getppid()] = "circusd"
        reply = client.send_message("list", name="circushttpd")
        httpd = reply.get("pids", [])
        if reply.get("status") == "ok" and len(httpd) == 1:
            pids[int(httpd[0])] = "circushttpd"
        self.circus_pids = pids
        for entry in client.send_message("listsockets").get("sockets", []):
            if isinstance(entry.get("fd"), int):
                self.sockets.add(entry["fd"], socket_address(entry))

    # -- publishing -----------------------------------------------------------------------

    def send(self, topic: bytes, payload: dict[str, Any]) -> None:
        with contextlib.suppress(zmq.Again):  # a slow subscriber: dropped, as circusd does
            self.pub.send_multipart([topic, json.dumps(payload).encode()], flags=zmq.NOBLOCK)

    def publish_watcher(self, name: str, pids: Iterable[int], now: float,
                        names: dict[int, str] | None = None) -> None:
        """``stat.<name>.<pid>`` for each of *pids*, then ``stat.<name>``. Each message
        is made by :meth:`Collector.encode` and sent as its two frames."""
        send = self.pub.send
        more, flags = zmq.SNDMORE | zmq.NOBLOCK, zmq.NOBLOCK
        prefix = f"stat.{name}.".encode()
        seen: list[int] = []
        cpus: list[float] = []
        mems: list[Any] = []
        ages: list[float] = []
        keep = self.figures is not None
        for pid in list(pids):
            try:
                body, cpu, mem, age = self.collector.encode(
                    pid, now, names.get(pid) if names else None)
            except Gone:
                if names is None:
                    self.remove_pid(name, pid)
                continue
            seen.append(pid)
            cpus.append(cpu)
            mems.append(mem)
            ages.append(age)
            if keep:
                self._keep(names.get(pid, name) if names else name, pid)
            try:  # a slow subscriber: dropped, as circusd does
                send(prefix + str(pid).encode(), more)
                send(body, flags)
            except zmq.Again:
                continue
        self.send(stat_topic(name), aggregate(seen, cpus, mems, ages))

    def _keep(self, watcher: str, pid: int) -> None:
        """Hand the last read of *pid* to the metrics (circusd's own process aside: its
        figures are the ``process_*`` metrics)."""
        raw = self.collector.raw(pid)
        if raw is not None and self.figures is not None and watcher != "circusd":
            self.figures.update(watcher, pid, *raw)

    def sample_all(self) -> None:
        """Read every process for the metrics, publishing nothing (nobody subscribes)."""
        now = time.time()
        for name, pids in list(self.pids.items()):
            for pid in list(pids):
                try:
                    self.collector.read(pid, now)
                except Gone:
                    self.remove_pid(name, pid)
                    continue
                self._keep(name, pid)
        for pid, name in self.circus_pids.items():
            with contextlib.suppress(Gone):
                self.collector.read(pid, now)
                self._keep(name, pid)

    def circusd_pid(self) -> int:
        for pid, name in self.circus_pids.items():
            if name == "circusd":
                return pid
        return os.getppid()

    def publish_all(self) -> None:
        now = time.time()
        for name, pids in list(self.pids.items()):
            if pids:
                self.publish_watcher(name, pids, now)
        self.publish_watcher(PSEUDO, self.circus_pids, now, self.circus_pids)
        entries = self.sockets.take()
        if entries:
            total: dict[str, Any] = {"addresses": [], "reads": 0}
            for fd, address, reads in entries:
                self.send(stat_topic(SOCKETS, fd),
                          {"fd": fd, "reads": reads, "address": address, "subtopic": fd})
                total["addresses"].append(address)
                total["reads"] += reads
            self.send(stat_topic(SOCKETS), total)

    def read_subscriptions(self) -> None:
        while True:
            try:
                msg = self.pub.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if msg[:1] == b"\x01":
                self.subscriptions.add(msg[1:])
            elif msg[:1] == b"\x00":
                self.subscriptions.discard(msg[1:])

    # -- the loop -------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to end (safe from a signal handler)."""
        self._stopping = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def open(self) -> None:
        self.sub.linger = 0
        self.sub.setsockopt(zmq.RCVHWM, 0)  # events are few and must not be lost
        self.sub.setsockopt(zmq.SUBSCRIBE, EVENTS)
        if self.keys is not None:
            self.keys.apply(self.sub)
        self.sub.connect(self.pubsub)
        self.pub.linger = 0
        try:
            self._auth = stats_server(self.context, self.pub)
        except ValueError as exc:
            raise OSError(f"cannot serve {self.statspoint} with CURVE: {exc}") from None
        bind(self.pub, self.statspoint)
        self._socket_file = socket_file(self.statspoint)
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    def run(self) -> None:
        """Serve until :meth:`stop`."""
        self.open()
        client = CircusClient(context=self.context, endpoint=self.endpoint,
                              timeout=self.timeout, keys=self.keys)
        try:
            self._initial_state_retrying(client)
        finally:
            client.stop()
        log.info("following %d processes of %d watchers, publishing on %s",
                 len(self.collector), len(self.pids), self.statspoint)
        if self.metrics_address is not None and self.figures is not None:
            host, port = self.metrics_address
            self.metrics = start_metrics(host, port, self.endpoint, self.figures,
                                         self.circusd_pid, self.context)
        poller = zmq.Poller()
        poller.register(self.sub, zmq.POLLIN)
        poller.register(self.pub, zmq.POLLIN)
        poller.register(self.sockets.epoll.fileno(), zmq.POLLIN)
        poller.register(self._wake_r.fileno(), zmq.POLLIN)
        due = time.monotonic() + self.interval
        while not self._stopping:
            timeout = max(0.0, due - time.monotonic())
            ready = dict(poller.poll(int(timeout * 1000) + 1))
            if self.sub in ready:
                self._read_events()
            if self.pub in ready:
                self.read_subscriptions()
            if self.sockets.epoll.fileno() in ready:
                self.sockets.drain()
            now = time.monotonic()
            if now >= due:
                if self.subscriptions:
                    self.publish_all()
                elif self.metrics is not None:
                    self.sample_all()
                    self.sockets.take()
                else:
                    self.sockets.take()  # nobody listens: nothing read, nothing kept
                due += self.interval
                if due <= now:  # a long stall: skip the missed ticks, do not catch up
                    due = now + self.interval

    def _initial_state_retrying(self, client: CircusClient) -> None:
        while not self._stopping:
            try:
                self.initial_state(client)
                return
            except CallError as exc:
                log.warning("circusd does not answer yet (%s); asking again", exc)
                self.pids.clear()
                self.collector.forget_all()

    def _read_events(self) -> None:
        while True:
            try:
                frames = self.sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) >= 2:
                self.handle_event(frames[0], frames[1])

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None
        self.collector.forget_all()
        self.sockets.close()
        self.sub.close(linger=0)
        self.pub.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._socket_file is not None:
            self._socket_file.remove()
        self._wake_r.close()
        self._wake_w.close()
        if self._own_context:
            self.context.term()


def install_signal_handlers(streamer: StatsStreamer) -> None:
    def on_signal(signum: int, frame: Any) -> None:
        streamer.stop()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, on_signal)
