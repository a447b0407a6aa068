"""Prometheus metrics of circusd-stats: ``/metrics`` over HTTP (prometheus-client, the
``metrics`` extra), served when ``[circus] prometheus_port`` is set.

A scrape asks circusd for ``status`` with ``details`` (watchers, states, wanted counts,
restarts, each process's pid and wid) on a connection of its own, and takes the CPU time
and resident memory of each process from what the stats loop read at its last interval
(:class:`Figures`). Labels name watchers (and wids), never pids: a pid changes at every
restart and would make a new series each time.

``circus_watcher_cpu_seconds_total`` stays monotonic when processes die: the loop adds the
CPU time a process had at its last read to its watcher's account when it learns that the
process has gone (CPU used after that last read, at most one interval, is not counted).

The metric names are in docs/stats.md.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import zmq

from circus.client import CircusClient
from circus.errors import CallError

log = logging.getLogger("circus.stats")

STATES = ("active", "starting", "stopping", "stopped")


def watcher_key(name: str) -> str:
    """A watcher's name as circusd's event topics spell it (lower case, ``_`` for
    spaces): how the stats loop names watchers."""
    return name.lower().replace(" ", "_")


@dataclass(slots=True)
class ProcessFigures:
    watcher: str
    cpu_seconds: float
    rss: int
    create_time: float


class Figures:
    """What the stats loop read of each process, shared with the HTTP thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_pid: dict[int, ProcessFigures] = {}
        self._dead_cpu: dict[str, float] = {}  # by watcher_key

    def update(self, watcher: str, pid: int, cpu_seconds: float, rss: int,
               create_time: float) -> None:
        key = watcher_key(watcher)
        with self._lock:
            known = self._by_pid.get(pid)
            if known is not None and known.create_time != create_time:  # pid reused
                self._dead_cpu[known.watcher] = (self._dead_cpu.get(known.watcher, 0.0)
                                                 + known.cpu_seconds)
                known = None
            if known is None:
                self._by_pid[pid] = ProcessFigures(key, cpu_seconds, rss, create_time)
            else:
                known.cpu_seconds = max(known.cpu_seconds, cpu_seconds)
                known.rss = rss

    def gone(self, pid: int) -> None:
        """*pid* has exited: its CPU time goes to its watcher's account."""
        with self._lock:
            known = self._by_pid.pop(pid, None)
            if known is not None:
                self._dead_cpu[known.watcher] = (self._dead_cpu.get(known.watcher, 0.0)
                                                 + known.cpu_seconds)

    def view(self) -> tuple[dict[int, ProcessFigures], dict[str, float]]:
        with self._lock:
            return ({pid: ProcessFigures(f.watcher, f.cpu_seconds, f.rss, f.create_time)
                     for pid, f in self._by_pid.items()}, dict(self._dead_cpu))


def open_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


class CircusCollector:
    """The ``circus_*`` metrics, built at each scrape (a prometheus-client collector)."""

    def __init__(self, endpoint: str, figures: Figures, context: zmq.Context[Any],
                 timeout: float = 3.0) -> None:
        self.endpoint, self.figures, self.context = endpoint, figures, context
        self.timeout = timeout

    def status(self) -> Mapping[str, Any] | None:
        client = CircusClient(context=self.context, endpoint=self.endpoint,
                              timeout=self.timeout)
        try:
            reply = client.send_message("status", details=True)
        except CallError as exc:
            log.warning("metrics: circusd does not answer: %s", exc)
            return None
        finally:
            client.stop()
        if reply.get("status") == "error" or not isinstance(reply.get("details"), Mapping):
            log.warning("metrics: status refused: %s", reply.get("reason"))
            return None
        return reply

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        reply = self.status()
        up = GaugeMetricFamily("circus_up", "1 when circusd answered this scrape's status.")
        up.add_metric([], 1.0 if reply is not None else 0.0)
        yield up
        if reply is None:
            return
        by_pid, dead = self.figures.view()
        statuses: Mapping[str, Any] = reply.get("statuses") or {}
        details: Mapping[str, Any] = reply["details"]
        running = GaugeMetricFamily("circus_watcher_processes",
                                    "Processes of the watcher that run now.",
                                    labels=["watcher"])
        wanted = GaugeMetricFamily("circus_watcher_processes_wanted",
                                   "Processes the watcher is asked to run (numprocesses).",
                                   labels=["watcher"])
        state = GaugeMetricFamily("circus_watcher_state",
                                  "1 for the watcher's current state, 0 for the others.",
                                  labels=["watcher", "state"])
        restarts = CounterMetricFamily(
            "circus_watcher_restarts", "Processes started in place of one that exited on "
            "its own, since the watcher was started.", labels=["watcher"])
        cpu = CounterMetricFamily(
            "circus_watcher_cpu_seconds", "CPU time (user and system) of the watcher's "
            "processes, those that have exited included.", labels=["watcher"])
        rss = GaugeMetricFamily("circus_watcher_memory_rss_bytes",
                                "Resident memory of the watcher's processes.",
                                labels=["watcher"])
        fds = GaugeMetricFamily("circus_watcher_open_fds",
                                "Open file descriptors of the watcher's processes.",
                                labels=["watcher"])
        started = GaugeMetricFamily("circus_process_start_time_seconds",
                                    "Start time of each process since the Unix epoch.",
                                    labels=["watcher", "wid"])
        now = time.time()
        for name in sorted(details):
            detail = details[name]
            if not isinstance(detail, Mapping):
                continue
            processes = [p for p in detail.get("processes") or []
                         if isinstance(p, Mapping) and isinstance(p.get("pid"), int)]
            running.add_metric([name], float(len(processes)))
            wanted.add_metric([name], float(detail.get("numprocesses") or 0))
            current = statuses.get(name)
            for word in STATES:
                state.add_metric([name, word], 1.0 if current == word else 0.0)
            restarts.add_metric([name], float(detail.get("restarts") or 0))
            key = watcher_key(name)
            cpu_seconds, rss_bytes, fd_count = dead.get(key, 0.0), 0, 0
            for process in processes:
                pid = process["pid"]
                known = by_pid.get(pid)
                if known is not None:
                    cpu_seconds += known.cpu_seconds
                    rss_bytes += known.rss
                    start = known.create_time
                else:
                    uptime = process.get("uptime")
                    start = now - uptime if isinstance(uptime, int | float) else now
                count = open_fds(pid)
                fd_count += count or 0
                wid = process.get("wid")
                if wid is not None:
                    started.add_metric([name, str(wid)], round(start, 2))
            cpu.add_metric([name], cpu_seconds)
            rss.add_metric([name], float(rss_bytes))
            fds.add_metric([name], float(fd_count))
        yield from (running, wanted, state, restarts, cpu, rss, fds, started)


class MetricsServer:
    """The HTTP server of ``/metrics`` (a thread of prometheus-client's)."""

    def __init__(self, host: str, port: int, endpoint: str, figures: Figures,
                 circusd_pid: Callable[[], int], context: zmq.Context[Any]) -> None:
        from prometheus_client import ProcessCollector, start_http_server
        from prometheus_client.registry import CollectorRegistry

        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(CircusCollector(endpoint, figures, context))
        ProcessCollector(pid=circusd_pid, registry=self.registry)
        self.server, self.thread = start_http_server(port, host, registry=self.registry)
        self.address = self.server.server_address

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def start_metrics(host: str, port: int, endpoint: str, figures: Figures,
                  circusd_pid: Callable[[], int], context: zmq.Context[Any]
                  ) -> MetricsServer | None:
    """The server, or None (with the reason logged) when it cannot run."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        log.error("prometheus_port is set but prometheus-client is not installed "
                  "(pip install 'circus[metrics]'): no /metrics")
        return None
    try:
        server = MetricsServer(host, port, endpoint, figures, circusd_pid, context)
    except (OSError, OverflowError) as exc:
        log.error("cannot serve /metrics on %s:%s: %s", host, port, exc)
        return None
    log.info("serving Prometheus metrics on http://%s:%s/metrics", *server.address[:2])
    return server
