"""The installed wheel works: its files, its versions, and every console script starts and
answers.

Each console script of [project.scripts] needs an entry in CHECKS: a function that starts
the installed command and sees it do its job. A script without one fails
test_every_console_script_has_a_check.
"""

from __future__ import annotations

import json
import shlex
import signal
import socket
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zmq

from tests.conftest import pid_alive, wait_until
from tests.smoke.conftest import (
    ROOT,
    Installed,
    Started,
    console_scripts,
    sdist_files,
    source_files,
    wheel_files,
)

# --------------------------------------------------------------------------- the files


def test_the_installed_package_is_not_the_source_tree(installed: Installed) -> None:
    where = Path(installed.python_value("import circus; print(circus.__file__)")).resolve()
    assert where.is_relative_to(installed.venv.resolve()), where
    assert not where.is_relative_to(ROOT), where


def test_the_installed_package_has_every_file_of_the_source_tree(installed: Installed) -> None:
    where = Path(installed.python_value(
        "import circus, os; print(os.path.dirname(circus.__file__))"))
    have = {p.relative_to(where).as_posix() for p in where.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    missing = sorted(source_files() - have)
    assert not missing, f"not installed (declare them in [tool.setuptools.package-data]): " \
                        f"{missing}"


def test_the_sdist_and_the_wheel_hold_every_file_of_the_source_tree(
        installed: Installed) -> None:
    if installed.sdist is None or installed.wheel is None:
        pytest.skip("CIRCUS_SMOKE_VENV names an install made elsewhere: no sdist or wheel here")
    want = source_files()
    for archive, have in ((installed.sdist, sdist_files(installed.sdist)),
                          (installed.wheel, wheel_files(installed.wheel))):
        missing = sorted(want - have)
        assert not missing, f"{archive.name} lacks {missing}"


# --------------------------------------------------------------------------- the versions


def test_every_console_script_is_installed(installed: Installed) -> None:
    listed = installed.python_value(
        "import importlib.metadata as m, json;"
        "print(json.dumps(sorted(e.name for e in m.distribution('circus').entry_points"
        " if e.group == 'console_scripts')))")
    assert json.loads(listed) == sorted(console_scripts())
    for name in console_scripts():
        assert (installed.bin / name).is_file(), name


@pytest.mark.parametrize("command", sorted(console_scripts()))
def test_version(installed: Installed, command: str) -> None:
    """Every console script prints the installed distribution's version, the same line."""
    version = installed.python_value(
        "import importlib.metadata as m; print(m.version('circus'))")
    assert version == installed.python_value("import circus; print(circus.__version__)")
    res = installed.run(command, "--version")
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"{version}\n"
    assert res.stderr == ""


# --------------------------------------------------------------------------- start and answer


def call(endpoint: str, command: str, timeout: float = 10.0, **properties: Any) -> Any:
    """One command on circusd's control socket, over ZeroMQ; its reply."""
    ctx: zmq.Context[Any] = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    try:
        sock.connect(endpoint)
        msg = {"id": uuid.uuid4().hex, "command": command, "properties": properties}
        sock.send(json.dumps(msg).encode())
        if not sock.poll(timeout * 1000):
            return None
        return json.loads(sock.recv())
    finally:
        sock.close()


class Circusd:
    """The installed circusd running one watcher of sleeping processes."""

    def __init__(self, installed: Installed, started: list[Started], tmp: Path) -> None:
        self.endpoint = f"ipc://{tmp}/ctl"
        self.pubsub = f"ipc://{tmp}/pub"
        sleeper = f"{installed.python} -c " + shlex.quote("import time; time.sleep(600)")
        ini = tmp / "smoke.ini"
        ini.write_text(
            f"[circus]\nendpoint = {self.endpoint}\npubsub_endpoint = {self.pubsub}\n"
            f"check_delay = 0.5\n\n"
            f"[watcher:sleeper]\ncmd = {sleeper}\nnumprocesses = 1\nwarmup_delay = 0\n"
        )
        self.started = installed.popen("circusd", str(ini), log=tmp / "circusd.log")
        started.append(Started(self.started, tmp / "circusd.log"))
        self.log = tmp / "circusd.log"

        def answering() -> bool:
            if self.started.poll() is not None:
                pytest.fail(f"circusd exited with {self.started.returncode}:\n"
                            f"{self.log.read_text(errors='replace')}")
            return call(self.endpoint, "status", timeout=0.5) is not None

        wait_until(answering, what="the installed circusd to answer", timeout=30,
                   interval=0.05)

    def pids(self) -> list[int]:
        reply = call(self.endpoint, "list", name="sleeper")
        assert reply is not None and reply["status"] == "ok", reply
        return list(reply["pids"])


def check_circusd(installed: Installed, started: list[Started], tmp: Path) -> None:
    daemon = Circusd(installed, started, tmp)
    pids = wait_until(daemon.pids, what="circusd to start the watcher's process", timeout=20)
    assert all(pid_alive(p) for p in pids)
    reply = call(daemon.endpoint, "quit")
    assert reply is not None and reply["status"] == "ok", reply
    assert daemon.started.wait(timeout=30) == 0, daemon.log.read_text(errors="replace")
    wait_until(lambda: not any(pid_alive(p) for p in pids),
               what="circusd's quit to stop the watcher's process")


def check_circusctl(installed: Installed, started: list[Started], tmp: Path) -> None:
    daemon = Circusd(installed, started, tmp)

    def ctl(*args: str) -> str:
        res = installed.run("circusctl", "--endpoint", daemon.endpoint, *args)
        assert res.returncode == 0, (args, res.stdout, res.stderr)
        return res.stdout.strip()

    assert ctl("list") == "sleeper"
    wait_until(lambda: ctl("status", "sleeper") == "active", what="the watcher to be active")
    assert ctl("incr", "sleeper") == "2"
    wait_until(lambda: len(daemon.pids()) == 2, what="the second process")
    ctl("quit")
    assert daemon.started.wait(timeout=30) == 0, daemon.log.read_text(errors="replace")


def check_circus_plugin(installed: Installed, started: list[Started], tmp: Path) -> None:
    """The statsd plugin, run by the installed circus-plugin against the installed circusd,
    turns circusd's events into statsd packets."""
    daemon = Circusd(installed, started, tmp)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        udp.bind(("127.0.0.1", 0))
        udp.settimeout(0.2)
        config = {"host": "127.0.0.1", "port": udp.getsockname()[1],
                  "application_name": "smoke"}
        log = tmp / "plugin.log"
        plugin = installed.popen(
            "circus-plugin", "--endpoint", daemon.endpoint, "--pubsub", daemon.pubsub,
            "--config", json.dumps(config), "--check-delay", "0.5",
            "circus.plugins.statsd.StatsdEmitter", log=log)
        started.append(Started(plugin, log))
        lines: list[str] = []

        def counted() -> bool:
            if plugin.poll() is not None:
                pytest.fail(f"circus-plugin exited with {plugin.returncode}:\n"
                            f"{log.read_text(errors='replace')}")
            # an event for the plugin to count: it may still be connecting, so again
            call(daemon.endpoint, "incr", name="sleeper")
            try:
                while True:
                    lines.extend(udp.recv(65536).decode().splitlines())
            except TimeoutError:
                pass
            return "circus.smoke.watcher.sleeper.spawn:1|c" in lines

        wait_until(counted, what="the plugin's spawn counter", timeout=30, interval=0.1)
        plugin.send_signal(signal.SIGTERM)
        assert plugin.wait(timeout=30) == 0, log.read_text(errors="replace")
    finally:
        udp.close()

def check_circusd_stats(installed: Installed, started: list[Started], tmp: Path) -> None:
    """The installed circusd-stats, run by hand against the installed circusd, publishes
    the figures of the watcher's process on its stats endpoint."""
    daemon = Circusd(installed, started, tmp)
    [pid] = wait_until(daemon.pids, what="circusd to start the watcher's process", timeout=20)
    statspoint = f"ipc://{tmp}/stats"
    log = tmp / "stats.log"
    stats = installed.popen("circusd-stats", "--endpoint", daemon.endpoint, "--pubsub",
                            daemon.pubsub, "--statspoint", statspoint, "--interval", "0.2",
                            log=log)
    started.append(Started(stats, log))
    ctx: zmq.Context[Any] = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.linger = 0
    try:
        sub.setsockopt(zmq.SUBSCRIBE, f"stat.sleeper.{pid}".encode())
        sub.connect(statspoint)

        def published() -> dict[str, Any] | None:
            if stats.poll() is not None:
                pytest.fail(f"circusd-stats exited with {stats.returncode}:\n"
                            f"{log.read_text(errors='replace')}")
            if not sub.poll(200):
                return None
            return dict(json.loads(sub.recv_multipart()[1]))

        info = wait_until(published, what="circusd-stats to publish", timeout=30, interval=0)
        assert info["pid"] == pid and info["cmdline"].startswith("python"), info
        stats.send_signal(signal.SIGTERM)
        assert stats.wait(timeout=30) == 0, log.read_text(errors="replace")
    finally:
        sub.close()


def check_circushttpd(installed: Installed, started: list[Started], tmp: Path) -> None:
    """The installed circushttpd serves the installed circusd: its JSON API lists the
    watcher, its pages and vendored files (package data) are there."""
    import re
    import urllib.request

    daemon = Circusd(installed, started, tmp)
    log = tmp / "httpd.log"
    httpd = installed.popen("circushttpd", "--endpoint", daemon.endpoint, "--port", "0",
                            "--token-file", str(tmp / "token"), log=log)
    started.append(Started(httpd, log))

    def login_url() -> re.Match[str] | None:
        if httpd.poll() is not None:
            pytest.fail(f"circushttpd exited with {httpd.returncode}:\n"
                        f"{log.read_text(errors='replace')}")
        return re.search(r"(http://[^/\s]+)/\?token=(\S+)", log.read_text(errors="replace"))

    match = wait_until(login_url, what="circushttpd's login URL", timeout=30)
    base, token = match.group(1), match.group(2)

    def get(path: str) -> tuple[int, bytes]:
        request = urllib.request.Request(base + path,
                                         headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()

    def listed() -> bool:
        data = json.loads(get("/api/status")[1])
        return any(w["name"] == "sleeper" for w in data["endpoints"][0]["watchers"])

    wait_until(listed, what="the console to list the watcher", timeout=30, interval=0.1)
    status, body = get("/static/uplot/uPlot.iife.min.js")
    assert status == 200 and body.startswith(b"/*! https://github.com/leeoniya/uPlot")
    status, body = get("/")
    assert status == 200 and b'data-watcher="sleeper"' in body
    httpd.send_signal(signal.SIGTERM)
    assert httpd.wait(timeout=30) == 0, log.read_text(errors="replace")


def check_circus_top(installed: Installed, started: list[Started], tmp: Path) -> None:
    """The installed circus-top prints a snapshot of the installed circusd's watcher, with
    the figures of the installed circusd-stats; the view's and the metrics' extras are
    importable."""
    daemon = Circusd(installed, started, tmp)
    [pid] = wait_until(daemon.pids, what="circusd to start the watcher's process", timeout=20)
    statspoint = f"ipc://{tmp}/stats"
    log = tmp / "stats.log"
    stats = installed.popen("circusd-stats", "--endpoint", daemon.endpoint, "--pubsub",
                            daemon.pubsub, "--statspoint", statspoint, "--interval", "0.2",
                            log=log)
    started.append(Started(stats, log))

    def shown() -> list[str] | None:
        res = installed.run("circus-top", "--once", "--endpoint", statspoint, "--control",
                            daemon.endpoint)
        assert res.returncode == 0, (res.stdout, res.stderr)
        rows = [line.split() for line in res.stdout.splitlines()]
        mine = [r for r in rows if r[:2] == [str(pid), "1"]]
        return mine[0] if mine and mine[0][2] != "-" else None

    row = wait_until(shown, what="circus-top to show the process with figures", timeout=30,
                     interval=0.2)
    assert row[7] in ("running", "starting"), row
    res = installed.run("python", "-c", "import textual, prometheus_client")
    assert res.returncode == 0, res.stderr
    stats.send_signal(signal.SIGTERM)
    assert stats.wait(timeout=30) == 0, log.read_text(errors="replace")


# One entry per console script: what it takes for that command to count as working.
CHECKS: dict[str, Callable[[Installed, list[Started], Path], None]] = {
    "circusd": check_circusd,
    "circusctl": check_circusctl,
    "circus-plugin": check_circus_plugin,
    "circusd-stats": check_circusd_stats,
    "circushttpd": check_circushttpd,
    "circus-top": check_circus_top,
}


def test_every_console_script_has_a_check() -> None:
    assert sorted(CHECKS) == sorted(console_scripts())


@pytest.mark.parametrize("command", sorted(CHECKS))
def test_starts_and_answers(installed: Installed, short_tmp: Path, started: list[Started],
                            command: str) -> None:
    CHECKS[command](installed, started, short_tmp)
