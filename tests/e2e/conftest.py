"""The real circusd as a subprocess, driven by circusctl, raw ZeroMQ and a PUB subscriber."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import zmq

from tests.conftest import pid_alive, wait_until

BIN = Path(sys.executable).parent
CIRCUSD = [sys.executable, "-m", "circus.cli.circusd"]
CIRCUSCTL = [sys.executable, "-m", "circus.cli.circusctl"]


@dataclass
class Daemon:
    """A running circusd started by the ``circusd`` fixture."""

    proc: subprocess.Popen[bytes]
    dir: Path
    ini: Path
    endpoint: str
    pubsub: str
    log: Path
    circus019: bool = False  # Circus 0.19's circusd (tests/interop), not ours
    _ctx: zmq.Context[Any] = field(default_factory=zmq.Context)
    _subs: list[zmq.Socket[Any]] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def ctl(self, *args: str, timeout: float = 5) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CIRCUSCTL, "--endpoint", self.endpoint, "--timeout", str(timeout), *args],
            capture_output=True, text=True, timeout=timeout + 25,
        )

    def call(self, msg: dict[str, Any] | bytes, timeout: float = 10.0) -> dict[str, Any]:
        """Send one message on a fresh DEALER and return the reply."""
        sock = self._ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.connect(self.endpoint)
        try:
            if isinstance(msg, dict):
                msg = dict(msg)
                msg.setdefault("id", uuid.uuid4().hex)
                data = json.dumps(msg).encode()
            else:
                data = msg
            sock.send(data)
            if not sock.poll(timeout * 1000):
                pytest.fail(f"circusd did not answer {data[:200]!r} within {timeout}s")
            return json.loads(sock.recv())  # type: ignore[no-any-return]
        finally:
            sock.close()

    def try_call(self, msg: dict[str, Any], timeout: float = 0.5) -> dict[str, Any] | None:
        """Like call(), but None when there is no answer within *timeout*."""
        sock = self._ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.connect(self.endpoint)
        try:
            sock.send(json.dumps({"id": uuid.uuid4().hex, **msg}).encode())
            if not sock.poll(timeout * 1000):
                return None
            return json.loads(sock.recv())  # type: ignore[no-any-return]
        finally:
            sock.close()

    def subscribe(self, *topics: str, timeout: float = 10.0) -> zmq.Socket[Any]:
        """A SUB socket on *topics* (none: every event) whose subscription circusd has.

        Ours: the sync handshake (docs/output.md, "Following without a gap"). The socket
        subscribes to *topics*, then to a topic of its own that nothing publishes, and a
        ``tail`` naming that topic as ``sync`` is answered only once the subscription has
        reached circusd's events socket. A subscriber's subscriptions arrive in the order
        they were made, so by then *topics* are in effect too.

        Circus 0.19 has no such handshake: the socket subscribes last to the ``updated``
        events of a watcher, which a ``set`` of an option to its current value publishes,
        and sets it until one of those events, newer than the set, arrives. Whatever came
        before it is drained.
        """
        sock = self._ctx.socket(zmq.SUB)
        sock.linger = 0
        self._subs.append(sock)
        # connect first: subscriptions made on a connected socket travel in the order made
        sock.connect(self.pubsub)
        for topic in topics or ("",):
            sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        watchers = self.call({"command": "list"}).get("watchers") or []
        if not watchers:
            pytest.fail("subscribe() needs a watcher to name in its handshake")
        name = str(watchers[0])
        if self.circus019:
            marker = f"watcher.{name.lower().replace(' ', '_')}.updated"
            self._handshake_019(sock, marker, name, timeout)
        else:
            marker = f"sync.{uuid.uuid4().hex}"
            self._handshake(sock, marker, name, timeout)
        sock.setsockopt(zmq.UNSUBSCRIBE, marker.encode())
        return sock

    def _handshake(self, sock: zmq.Socket[Any], token: str, name: str,
                   timeout: float) -> None:
        sock.setsockopt(zmq.SUBSCRIBE, token.encode())
        sync = {"command": "tail", "properties": {"name": name, "lines": 0, "sync": token}}

        def synced() -> bool:
            reply = self.call(sync, timeout=timeout)
            if reply.get("errno") == 5:  # circusd waited 2 s in vain: ask again
                return False
            assert reply["status"] == "ok", reply
            return True

        wait_until(synced, what=f"circusd to have the subscription to {token}",
                   timeout=timeout)

    def _handshake_019(self, sock: zmq.Socket[Any], marker: str, name: str,
                       timeout: float) -> None:
        sock.setsockopt(zmq.SUBSCRIBE, marker.encode())
        current = self.call({"command": "get", "properties": {
            "name": name, "keys": ["warmup_delay"]}})["options"]["warmup_delay"]
        poke = {"command": "set", "properties": {
            "name": name, "options": {"warmup_delay": current}}}

        def arrived() -> bool:
            sent = time.time()
            assert self.call(poke)["status"] == "ok"
            until = time.monotonic() + 0.2
            while (left := until - time.monotonic()) > 0 and sock.poll(int(left * 1000) + 1):
                topic, body = sock.recv_multipart()
                # an updated event of an earlier set is older than this one
                if topic.decode() == marker and json.loads(body)["time"] >= sent:
                    return True
            return False

        wait_until(arrived, what=f"circusd 0.19 to publish {marker} to us", timeout=timeout)

    def pids(self, name: str) -> list[int]:
        reply = self.call({"command": "list", "properties": {"name": name}})
        return list(reply.get("pids", []))

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def close(self) -> None:
        """Stop the daemon and close every socket the test opened on it."""
        self.stop()
        for sock in self._subs:
            sock.close(linger=0)
        self._ctx.destroy(linger=0)

    def wait_ready(self, what: str, timeout: float, interval: float) -> None:
        """Wait until the daemon answers ``status`` and no watcher is still ``starting``
        (commands are answered while the first spawns are made); fail with its log if it
        exits."""
        def ready() -> bool:
            if self.proc.poll() is not None:
                pytest.fail(f"{what} exited with {self.proc.returncode}:\n{self.log_text()}")
            if not os.path.exists(self.endpoint[6:]):
                return False
            reply = self.try_call({"command": "status"})
            return reply is not None and "starting" not in reply.get("statuses", {}).values()

        wait_until(ready, what=f"{what} to answer", timeout=timeout, interval=interval)


def recv_event(sock: zmq.Socket[Any], timeout: float = 5.0) -> tuple[str, dict[str, Any]]:
    if not sock.poll(timeout * 1000):
        pytest.fail(f"no event within {timeout}s")
    topic, body = sock.recv_multipart()
    return topic.decode(), json.loads(body)


def wait_event(sock: zmq.Socket[Any], predicate: Callable[[str, dict[str, Any]], bool],
               timeout: float = 10.0) -> tuple[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"the expected event did not come within {timeout}s")
        topic, payload = recv_event(sock, remaining)
        if predicate(topic, payload):
            return topic, payload


@pytest.fixture
def workers() -> Iterator[list[int]]:
    """Pids a test saw (processes circusd no longer owns); any still alive at teardown is
    killed by its pid."""
    seen: list[int] = []
    yield seen
    for pid in seen:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def circusd(short_tmp: Path) -> Iterator[Callable[..., Daemon]]:
    """Start the real daemon on an INI body (watcher sections); stopped at teardown.

    ``start(body, circus_extra="", wait=True, args=())``: the ``[circus]`` section gets ipc
    endpoints in a short temp dir; *circus_extra* adds lines to it; *env* adds variables
    to circusd's environment.
    """
    daemons: list[Daemon] = []

    def start(body: str, circus_extra: str = "", wait: bool = True,
              args: tuple[str, ...] = (), preexec: Callable[[], None] | None = None,
              ready_timeout: float = 20, env: Mapping[str, str] | None = None) -> Daemon:
        n = len(daemons)
        endpoint = f"ipc://{short_tmp}/c{n}"
        pubsub = f"ipc://{short_tmp}/p{n}"
        ini = short_tmp / f"circus{n}.ini"
        ini.write_text(
            f"[circus]\nendpoint = {endpoint}\npubsub_endpoint = {pubsub}\n"
            f"{circus_extra}\n{body}"
        )
        log = short_tmp / f"circusd{n}.log"
        environ = dict(os.environ)
        environ["PYTHONUNBUFFERED"] = "1"
        environ["XDG_RUNTIME_DIR"] = str(short_tmp)  # the process record, in the test's dir
        environ.update(env or {})
        with open(log, "wb") as out:
            proc = subprocess.Popen([*CIRCUSD, *args, str(ini)], stdout=out,
                                    stderr=subprocess.STDOUT, cwd=short_tmp, env=environ,
                                    preexec_fn=preexec)
        daemon = Daemon(proc, short_tmp, ini, endpoint, pubsub, log)
        daemons.append(daemon)
        if wait:
            daemon.wait_ready("circusd", timeout=ready_timeout, interval=0.05)
        return daemon

    yield start
    for daemon in daemons:
        daemon.close()
