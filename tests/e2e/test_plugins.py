"""Plugins end to end: the real circusd runs each plugin as a process under a ``plugin:NAME``
watcher, and every test checks the plugin's effect on real processes, packets or files."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import pid_alive, python_cmd, stays_true, wait_until
from tests.e2e.conftest import Daemon, wait_event

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "plugins"
SLEEPER = python_cmd("import time; time.sleep(3600)")
LOGGER = "tests.fixtures.plugins.seed_logger.Logger"


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def plugin_pid(d: Daemon, name: str) -> int:
    return wait_until(lambda: next(iter(d.pids(f"plugin:{name}")), 0),
                      what=f"the plugin:{name} process")


def replaced(d: Daemon, watcher: str, old: list[int], timeout: float = 15.0) -> list[int]:
    """Wait until none of the *old* pids is a process of *watcher* any more; the new pids."""
    def new() -> list[int]:
        pids = d.pids(watcher)
        return pids if pids and not set(pids) & set(old) else []

    def log_tail() -> str:
        tail = "\n".join(d.log_text().splitlines()[-30:])
        return f"{watcher} runs {d.pids(watcher)}; circusd's log ends with:\n{tail}"

    return wait_until(new, what=f"{watcher} to replace {old}", timeout=timeout,
                      interval=0.05, detail=log_tail)


def logged(d: Daemon, text: str) -> None:
    """Wait for *text* in circusd's log (plugin output reaches it through circusd)."""
    wait_until(lambda: text in d.log_text(), what=f"{text!r} in circusd's log")


@pytest.fixture
def udp() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    yield sock
    sock.close()


def packets(sock: socket.socket) -> list[str]:
    """Every statsd line waiting on *sock*."""
    lines: list[str] = []
    while True:
        try:
            data = sock.recv(65536)
        except (TimeoutError, BlockingIOError):
            return lines
        lines.extend(data.decode().splitlines())


# --------------------------------------------------------------------------- the seed's plugin


def test_seed_logger_plugin_runs_unchanged(circusd: Callable[..., Daemon],
                                           short_tmp: Path) -> None:
    """The Logger of the seed's "Writing a plugin" runs as printed, from a [plugin:NAME]
    section; its option has spaces and placeholders (bug 14), an inactive plugin is listed
    but never runs, and the plugin process ends with circusd."""
    target = short_tmp / "events $(circus.wid) $WID.log"
    d = circusd(
        "[watcher:cycler]\n"
        f"cmd = {python_cmd('import time; time.sleep(0.2)')}\n"
        f"[plugin:logger]\nuse = {LOGGER}\nfilename = {target}\n"
        f"[plugin:idle]\nuse = {LOGGER}\nfilename = {short_tmp / 'never'}\nactive = false\n",
        "check_delay = 0.5",
    )
    assert d.ctl("list").stdout.strip() == "cycler,plugin:idle,plugin:logger"
    pid = plugin_pid(d, "logger")
    assert d.ctl("status", "plugin:idle").stdout.strip() == "stopped"
    # the plugin has opened its file (handle_init), then sees the cycler's processes come
    # and go; stopping the plugin closes the file (handle_stop)
    wait_until(lambda: any(os.readlink(f"/proc/{pid}/fd/{fd}") == str(target)
                           for fd in os.listdir(f"/proc/{pid}/fd")
                           if os.path.exists(f"/proc/{pid}/fd/{fd}")),
               what="the logger to open its file")
    seen: set[int] = set()

    def cycled() -> bool:
        seen.update(d.pids("cycler"))
        return len(seen) >= 4

    wait_until(cycled, what="the cycler to go through 4 processes")
    assert d.ctl("stop", "plugin:logger", "--waiting").returncode == 0
    assert not pid_alive(pid)
    text = target.read_text()
    assert "watcher.cycler.spawn::{" in text and "watcher.cycler.reap::{" in text
    assert "b'" not in text
    assert not (short_tmp / "never").exists()
    # started by hand, an inactive plugin exits 0 at once and is not respawned
    d.ctl("start", "plugin:idle", "--waiting")
    wait_until(lambda: d.ctl("status", "plugin:idle").stdout.strip() == "stopped"
               and not d.pids("plugin:idle"), what="plugin:idle to stop by itself")
    logged(d, "is not active (active = false); exiting")
    assert any("] plugin:idle: pid" in line and line.endswith("exited with status 0")
               for line in d.log_text().splitlines())
    assert not (short_tmp / "never").exists()
    assert d.ctl("start", "plugin:logger", "--waiting").returncode == 0
    pid = plugin_pid(d, "logger")
    assert d.stop() == 0
    assert not pid_alive(pid)


def test_reloadconfig_adds_keeps_and_removes_plugins(circusd: Callable[..., Daemon],
                                                     short_tmp: Path) -> None:
    logger = f"[plugin:logger]\nuse = {LOGGER}\nfilename = {short_tmp / 'a.log'}\n"
    d = circusd(f"[watcher:w]\ncmd = {SLEEPER}\n")
    body = d.ini.read_text()
    d.ini.write_text(body + logger)
    assert d.ctl("reloadconfig", "--waiting").returncode == 0
    pid = plugin_pid(d, "logger")
    d.ctl("reloadconfig", "--waiting")  # unchanged: the same plugin process
    assert d.pids("plugin:logger") == [pid]
    d.ini.write_text(body + logger.replace("a.log", "b.log"))
    d.ctl("reloadconfig", "--waiting")  # changed: a new plugin process
    replaced(d, "plugin:logger", [pid])
    d.ini.write_text(body)
    d.ctl("reloadconfig", "--waiting")
    assert d.ctl("list").stdout.strip() == "w"
    wait_until(lambda: not pid_alive(pid), what="the old plugin process to exit")


def test_circus_plugin_command(circusd: Callable[..., Daemon], short_tmp: Path) -> None:
    """`circus-plugin` runs a plugin by hand, prints the seed's banner, and stops cleanly on
    SIGTERM; Circus 0.19's key:value config form is read."""
    d = circusd(f"[watcher:w]\ncmd = {SLEEPER}\n")
    target = short_tmp / "by-hand.log"
    runner = shutil.which("circus-plugin", path=str(Path(sys.executable).parent))
    assert runner is not None
    out = short_tmp / "plugin.out"
    with open(out, "wb") as fh:
        proc = subprocess.Popen([runner, "--endpoint", d.endpoint, "--pubsub", d.pubsub,
                                 "--config", f"filename:{target}", LOGGER],
                                stdout=fh, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "[INFO] Starting" in out.read_text(), what="the plugin to start")
        seen: set[int] = set()

        def restarted() -> bool:
            d.ctl("restart", "w", "--waiting")
            seen.update(d.pids("w"))
            return len(seen) >= 3

        wait_until(restarted, what="w to be restarted twice")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    banner = out.read_text()
    for line in ("[INFO] Loading the plugin...", f"[INFO] Endpoint: '{d.endpoint}'",
                 f"[INFO] Pub/sub: '{d.pubsub}'", "[INFO] Starting"):
        assert line in banner
    assert "watcher.w.spawn::{" in target.read_text()


def test_bad_plugin_section_is_refused(circusd: Callable[..., Daemon],
                                       short_tmp: Path) -> None:
    d = circusd("[plugin:broken]\nuse = circus.plugins.flapping.Flapping\nattempts = many\n",
                wait=False)
    assert d.proc.wait(timeout=20) == 78
    assert (f"{d.ini}:7: [plugin:broken] attempts: expected an integer, got 'many'"
            in d.log_text())


# --------------------------------------------------------------------------- flapping


def test_flapping_stops_retries_and_gives_up(circusd: Callable[..., Daemon]) -> None:
    """A watcher whose processes die at once is stopped, started again after retry_in,
    and left stopped after max_retry rounds; one with flapping.active = false is not."""
    crash = python_cmd("import sys; sys.exit(3)")
    d = circusd(
        f"[watcher:flap]\ncmd = {crash}\n"
        # max_retry = -1: the watcher's own give-up (health fatal) never comes either
        f"[watcher:exempt]\ncmd = {crash}\nflapping.active = false\nmax_retry = -1\n"
        "[plugin:flapping]\nuse = circus.plugins.flapping.Flapping\n"
        "attempts = 2\nwindow = 1\nretry_in = 0.5\nmax_retry = 1\n",
        "check_delay = 0.5",
    )
    sub = d.subscribe("watcher.flap.")
    sequence: list[str] = []

    def lifecycle(topic: str, payload: dict[str, Any]) -> bool:
        action = topic.rsplit(".", 1)[-1]
        if action in ("start", "stop"):
            sequence.append(action)
        return sequence[-3:] == ["stop", "start", "stop"]

    wait_event(sub, lifecycle, timeout=20)
    wait_until(lambda: d.ctl("status", "flap").stdout.strip() == "stopped",
               what="flap to be stopped")
    # given up: no more start within a few retry_in periods
    def still_stopped() -> bool:
        while sub.poll(0):
            if sub.recv_multipart()[0].endswith(b".start"):
                return False
        return bool(d.ctl("status", "flap").stdout.strip() == "stopped")

    stays_true(still_stopped, for_=2.0, interval=0.2, what="flap to stay stopped")
    assert d.ctl("status", "exempt").stdout.strip() == "active"
    logged(d, "still flapping after 1 retries")


# --------------------------------------------------------------------------- statsd


def test_statsd_counters_and_full_stats_gauges(circusd: Callable[..., Daemon],
                                               udp: socket.socket) -> None:
    port = udp.getsockname()[1]
    d = circusd(
        f"[watcher:web]\ncmd = {SLEEPER}\nnumprocesses = 2\n"
        f"[plugin:statsd]\nuse = circus.plugins._statsd.StatsdEmitter\n"
        f"host = 127.0.0.1\nport = {port}\napplication_name = shop\n"
        f"[plugin:full]\nuse = circus.plugins.statsd.FullStats\n"
        f"host = 127.0.0.1\nport = {port}\nloop_rate = 0.3\n",
    )
    lines: list[str] = []

    def counted() -> bool:
        d.ctl("incr", "web")
        lines.extend(packets(udp))
        return "circus.shop.watcher.web.spawn:1|c" in lines

    wait_until(counted, what="the spawn counter", timeout=15)
    def gauged() -> bool:
        lines.extend(packets(udp))
        return any(line.startswith("circus.app._stats.web.watchers_num:") for line in lines)

    wait_until(gauged, what="the FullStats gauges")
    gauges = {line.split(":")[0] for line in lines if line.endswith("|g")}
    for name in ("watchers_num", "cpu_max", "cpu_sum", "mem_pct_max", "mem_pct_sum",
                 "mem_max", "mem_sum"):
        assert f"circus.app._stats.web.{name}" in gauges
    assert not any("_stats.plugin" in g for g in gauges)


# --------------------------------------------------------------------------- watchdog


def test_watchdog_kills_a_process_whose_heartbeat_stops(circusd: Callable[..., Daemon]) -> None:
    port = free_port()
    d = circusd(
        f"[watcher:beating]\ncmd = {sys.executable} {FIXTURES / 'heartbeat.py'} {port} 1.0\n"
        f"[watcher:other]\ncmd = {SLEEPER}\n"
        f"[plugin:watchdog]\nuse = circus.plugins.watchdog.WatchDog\n"
        f"port = {port}\nloop_rate = 0.2\nmax_count = 2\nwatchers_regex = ^beat\n",
    )
    first = wait_until(lambda: d.pids("beating"), what="the beating process")
    other = d.pids("other")
    born = psutil.Process(first[0]).create_time()
    replaced(d, "beating", first)
    # it was killed for its silence, not before: it sent heartbeats for a second
    assert time.time() - born >= 1.0
    logged(d, "sent no heartbeat")
    assert d.pids("other") == other  # not matched by watchers_regex


# --------------------------------------------------------------------------- resources


def test_resource_watcher_restarts_a_process_past_max_mem(
        circusd: Callable[..., Daemon]) -> None:
    hog = python_cmd("import time; time.sleep(0.3); b = b'x' * (96 << 20); time.sleep(3600)")
    d = circusd(
        f"[watcher:hog]\ncmd = {hog}\n"
        "[plugin:resources]\nuse = circus.plugins.resource_watcher.ResourceWatcher\n"
        "watcher = hog\nmax_mem = 64M\nmax_cpu = 101\nhealth_threshold = 101\n"
        "loop_rate = 0.2\nmax_count = 1\n",
    )
    first = wait_until(lambda: d.pids("hog"), what="the hog process")
    replaced(d, "hog", first)
    logged(d, "over_mem")


# --------------------------------------------------------------------------- http


class Health:
    """A health URL served from a thread: 200 while ``ok``, 500 after."""

    def __init__(self) -> None:
        self.ok = True
        self.hits = 0
        health = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                health.hits += 1
                self.send_response(200 if health.ok else 500)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/health"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def health() -> Iterator[Health]:
    server = Health()
    yield server
    server.close()


def test_http_observer_restarts_when_the_url_fails(circusd: Callable[..., Daemon],
                                                   health: Health) -> None:
    d = circusd(
        f"[watcher:web]\ncmd = {SLEEPER}\nnumprocesses = 2\n"
        "[plugin:http]\nuse = circus.plugins.http_observer.HttpObserver\n"
        f"check_url = {health.url}\ntimeout = 2\nloop_rate = 0.2\nrestart_on_error = web\n",
    )
    first = wait_until(lambda: len(d.pids("web")) == 2 and d.pids("web"), what="web")
    wait_until(lambda: health.hits >= 3, what="three health checks")
    assert d.pids("web") == first  # healthy: left alone
    health.ok = False
    replaced(d, "web", first)


# --------------------------------------------------------------------------- reloader


def test_command_reloader_restarts_when_the_program_changes(circusd: Callable[..., Daemon],
                                                            short_tmp: Path) -> None:
    program = short_tmp / "server.sh"
    program.write_text("#!/bin/sh\nexec sleep 3600\n")
    program.chmod(0o755)
    d = circusd(
        f"[watcher:web]\ncmd = {program}\n"
        "[plugin:reloader]\nuse = circus.plugins.command_reloader.CommandReloader\n"
        "loop_rate = 0.1\n",
    )
    first = wait_until(lambda: d.pids("web"), what="web")
    bumps = iter(range(1, 1000))

    def changed() -> list[int]:
        # change the file at each poll until the plugin has seen it before and after
        pids = d.pids("web")
        if pids and pids != first:
            return pids
        stamp = time.time() + next(bumps)
        os.utime(program, (stamp, stamp))
        return []

    wait_until(changed, what="web to be restarted", timeout=15, interval=0.3)
    logged(d, "changed: restarting web")


# --------------------------------------------------------------------------- redis


@pytest.fixture
def redis_server(short_tmp: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (.ci/run installs it)")
    pytest.importorskip("redis")
    port = free_port(socket.SOCK_STREAM)
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(short_tmp)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_redis_observer_restarts_when_redis_stops(
        circusd: Callable[..., Daemon],
        redis_server: tuple[subprocess.Popen[bytes], int]) -> None:
    import redis

    proc, port = redis_server
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
    try:
        wait_until(lambda: _ping(client), what="redis-server to answer")

        def pings() -> int:
            info: dict[str, Any] = client.info("commandstats")  # type: ignore[assignment]
            stats = info.get("cmdstat_ping") or {}
            return int(stats.get("calls", 0))

        d = circusd(
            f"[watcher:worker]\ncmd = {SLEEPER}\n"
            "[plugin:redis]\nuse = circus.plugins.redis_observer.RedisObserver\n"
            f"redis_url = redis://127.0.0.1:{port}/0\ntimeout = 1\nloop_rate = 0.2\n"
            "restart_on_timeout = worker\n",
        )
        first = wait_until(lambda: d.pids("worker"), what="worker")
        wait_until(lambda: pings() >= 4, what="the plugin's pings")  # our own ping counts
        assert d.pids("worker") == first
    finally:
        client.close()
    proc.kill()
    proc.wait()
    replaced(d, "worker", first)


def _ping(client: Any) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False
