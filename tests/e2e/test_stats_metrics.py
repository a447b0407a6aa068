"""circusd-stats' Prometheus ``/metrics``: a real HTTP GET against the circusd-stats that
circusd runs for ``prometheus_port``, checked against what circusd and the kernel say."""

from __future__ import annotations

import os
import signal
import socket
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from tests.conftest import python_cmd, wait_until
from tests.e2e.conftest import Daemon

pytest.importorskip("prometheus_client",
                    reason="/metrics needs the 'metrics' extra (prometheus-client)")

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

SLEEPER = python_cmd("import time; time.sleep(3600)")
SPINNER = python_cmd("while True: pass")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> Samples | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_every_metric_with_the_right_values(circusd: Callable[..., Daemon],
                                            short_tmp: Path) -> None:
    port = free_port()
    d = circusd(
        f"[watcher:web]\ncmd = {SLEEPER}\nnumprocesses = 2\n\n"
        f"[watcher:busy]\ncmd = {SPINNER}\nnumprocesses = 1\n\n"
        f"[watcher:later]\ncmd = {SLEEPER}\nnumprocesses = 2\nautostart = false\n",
        circus_extra=f"prometheus_port = {port}\n")
    web = wait_until(lambda: len(d.pids("web")) == 2 and d.pids("web"), what="2 web workers")
    [busy] = d.pids("busy")
    [stats_pid] = wait_until(lambda: d.pids("circusd-stats"), what="circusd-stats")

    def full() -> Samples | None:
        samples = scrape(port)
        if samples is None or ("circus_up", ()) not in samples:
            return None
        return samples if value(samples, "circus_watcher_cpu_seconds_total",
                                watcher="busy") > 0 else None

    s = wait_until(full, what="/metrics with figures", timeout=20, interval=0.2,
                   detail=d.log_text)
    assert value(s, "circus_up") == 1
    assert not [key for key in s if "pid" in dict(key[1])], "a pid label"
    for name, running, wanted in (("web", 2, 2), ("busy", 1, 1), ("later", 0, 2),
                                  ("circusd-stats", 1, 1)):
        assert value(s, "circus_watcher_processes", watcher=name) == running, name
        assert value(s, "circus_watcher_processes_wanted", watcher=name) == wanted, name
    for name, current in (("web", "active"), ("busy", "active"), ("later", "stopped")):
        for state in ("active", "starting", "stopping", "stopped"):
            assert value(s, "circus_watcher_state", watcher=name, state=state) == (
                1.0 if state == current else 0.0), (name, state)
    assert value(s, "circus_watcher_restarts_total", watcher="web") == 0

    rss = sum(psutil.Process(p).memory_info().rss for p in web)
    assert value(s, "circus_watcher_memory_rss_bytes", watcher="web") == pytest.approx(
        rss, rel=0.2)
    assert value(s, "circus_watcher_memory_rss_bytes", watcher="later") == 0
    fds = sum(len(os.listdir(f"/proc/{p}/fd")) for p in web)
    assert value(s, "circus_watcher_open_fds", watcher="web") == fds
    reply = d.call({"command": "status", "properties": {"name": "web", "details": True}})
    for process in reply["details"]["web"]["processes"]:
        started = psutil.Process(process["pid"]).create_time()
        assert value(s, "circus_process_start_time_seconds", watcher="web",
                     wid=str(process["wid"])) == pytest.approx(started, abs=0.1)

    circusd = psutil.Process(d.pid)  # circusd's own process_* metrics
    assert value(s, "process_start_time_seconds") == pytest.approx(
        circusd.create_time(), abs=0.1)
    assert value(s, "process_resident_memory_bytes") == pytest.approx(
        circusd.memory_info().rss, rel=0.2)
    assert value(s, "process_open_fds") > 0

    # a busy worker's CPU seconds grow, and stay counted once it has been killed
    first = value(s, "circus_watcher_cpu_seconds_total", watcher="busy")
    grown = wait_until(lambda: (x := scrape(port)) and value(
        x, "circus_watcher_cpu_seconds_total", watcher="busy") >= first + 0.5 and x,
        what="the busy worker's CPU seconds to grow by 0.5", timeout=20, interval=0.2)
    before_kill = value(grown, "circus_watcher_cpu_seconds_total", watcher="busy")
    os.kill(busy, signal.SIGKILL)
    wait_until(lambda: d.pids("busy") not in ([], [busy]), what="busy replaced")
    after = wait_until(lambda: (x := scrape(port)) and value(
        x, "circus_watcher_restarts_total", watcher="busy") == 1 and x,
        what="the restart of busy counted", timeout=20, interval=0.2)
    assert value(after, "circus_watcher_cpu_seconds_total", watcher="busy") >= before_kill
    assert value(after, "circus_watcher_processes", watcher="busy") == 1

    # a web worker killed: one restart, two processes again, a later start for its wid
    [wid] = [p["wid"] for p in reply["details"]["web"]["processes"] if p["pid"] == web[0]]
    os.kill(web[0], signal.SIGKILL)
    after = wait_until(lambda: (x := scrape(port)) and value(
        x, "circus_watcher_restarts_total", watcher="web") == 1 and value(
        x, "circus_watcher_processes", watcher="web") == 2 and x,
        what="the restart of web counted", timeout=20, interval=0.2)
    assert stats_pid in d.pids("circusd-stats")
    reply = d.call({"command": "status", "properties": {"name": "web", "details": True}})
    [new] = [p["pid"] for p in reply["details"]["web"]["processes"] if p["wid"] == wid]
    assert new not in web
    after = wait_until(lambda: (x := scrape(port)) and value(
        x, "circus_process_start_time_seconds", watcher="web", wid=str(wid)) == pytest.approx(
        psutil.Process(new).create_time(), abs=0.1) and x,
        what=f"the start time of wid {wid}'s new process", timeout=10, interval=0.2)
    assert time.time() - value(after, "circus_process_start_time_seconds", watcher="web",
                               wid=str(wid)) < 30
