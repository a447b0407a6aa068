"""CURVE on circusd's endpoints (docs/deployment.md, "Securing circusd"): only clients
whose key is in a ``curve_*_keys`` directory are served, each with its key's tier.

One circusd serves the module: control on TCP bound to every interface (allowed because
CURVE is on), events and circusd-stats on ``ipc://``. Keys are made by ``circusctl keygen``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import zmq
from aiohttp.test_utils import TestClient, TestServer

from circus.commands import REGISTRY, command_class
from circus.curve import ClientKeys, client_keys
from circus.web.app import HUB, Settings, allowed_hosts, make_app
from circus.web.auth import Auth
from circus.web.hub import Hub
from tests.conftest import python_cmd, stays_true, wait_for, wait_until
from tests.e2e.conftest import CIRCUSCTL, CIRCUSD

PLUGIN = '''
from circus.plugins import CircusPlugin


class Recorder(CircusPlugin):
    """At each event, asks circusd something and writes the event and the answer."""

    name = "recorder"

    def __init__(self, filename, **kwargs):
        super().__init__(**kwargs)
        self.filename = filename

    async def handle_recv(self, data):
        reply = await self.async_call("numwatchers")
        with open(self.filename, "a") as out:
            out.write(f"{data[0].decode()} {reply['status']}\\n")
'''
NO_REPLY = 0.7  # seconds a refused client waits for the reply that never comes
SLEEPER = python_cmd("import time; time.sleep(600)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def keygen(name: str, directory: Path) -> None:
    out = subprocess.run([*CIRCUSCTL, "keygen", name, "--dir", str(directory)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr


@dataclass
class Curved:
    proc: subprocess.Popen[bytes]
    dir: Path
    endpoint: str  # where clients connect
    pubsub: str
    stats: str
    log: Path
    ctx: zmq.Context[Any] = field(default_factory=zmq.Context)

    def keys(self, name: str | None) -> ClientKeys | None:
        if name is None:
            return None
        return client_keys(str(self.dir / "clients" / f"{name}.key_secret"),
                           str(self.dir / "server" / "server.key"))

    def socket(self, kind: int, key: str | None, endpoint: str) -> zmq.Socket[Any]:
        sock = self.ctx.socket(kind)
        sock.linger = 0
        keys = self.keys(key)
        if keys is not None:
            keys.apply(sock)
        sock.connect(endpoint)
        return sock

    def ask(self, sock: zmq.Socket[Any], command: str, timeout: float = 10.0,
            **props: Any) -> dict[str, Any] | None:
        msg_id = uuid.uuid4().hex
        sock.send(json.dumps({"id": msg_id, "command": command,
                              "properties": props}).encode())
        if not sock.poll(timeout * 1000):
            return None
        reply: dict[str, Any] = json.loads(sock.recv())
        assert reply["id"] == msg_id
        return reply

    def call(self, key: str | None, command: str, timeout: float = 10.0,
             **props: Any) -> dict[str, Any] | None:
        """One request on a fresh connection; None when no reply comes in *timeout*."""
        sock = self.socket(zmq.DEALER, key, self.endpoint)
        try:
            return self.ask(sock, command, timeout, **props)
        finally:
            sock.close()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def make_keys(base: Path) -> None:
    keygen("server", base / "server")
    for name in ("boss", "ops", "viewer", "stranger"):
        keygen(name, base / "clients")
    for name, tier in (("boss", "admin"), ("ops", "operator"), ("viewer", "reader")):
        (base / tier).mkdir(exist_ok=True)
        shutil.copy(base / "clients" / f"{name}.key", base / tier)


def start(base: Path, extra: str = "") -> Curved:
    port = free_port()
    ini = base / "circus.ini"
    (base / "curve_recorder.py").write_text(PLUGIN)
    ini.write_text(
        "[circus]\n"
        f"endpoint = tcp://0.0.0.0:{port}\n"
        f"pubsub_endpoint = ipc://{base}/pub\n"
        f"stats_endpoint = ipc://{base}/stats\n"
        "statsd = true\n"
        "curve_secret_key = server/server.key_secret\n"
        "curve_admin_keys = admin\n"
        "curve_operator_keys = operator\n"
        "curve_reader_keys = reader\n"
        f"{extra}\n"
        f"[watcher:sleeper]\ncmd = {SLEEPER}\n"
        "env = DB_PASSWORD = hunter2, PLAIN = visible\n\n"
        f"[plugin:rec]\nuse = curve_recorder.Recorder\nfilename = {base}/plugin.out\n"
    )
    log = base / "circusd.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1", XDG_RUNTIME_DIR=str(base))
    with open(log, "wb") as out:
        proc = subprocess.Popen([*CIRCUSD, str(ini)], stdout=out, stderr=subprocess.STDOUT,
                                cwd=base, env=env)
    daemon = Curved(proc, base, f"tcp://127.0.0.1:{port}", f"ipc://{base}/pub",
                    f"ipc://{base}/stats", log)

    def ready() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"circusd exited {proc.returncode}:\n{daemon.log_text()}")
        reply = daemon.call("boss", "status", timeout=0.5)
        return reply is not None and set(reply["statuses"].values()) == {"active"}

    wait_until(ready, what="circusd to answer the admin key", timeout=20, interval=0.1)
    return daemon


def stop(daemon: Curved) -> None:
    if daemon.proc.poll() is None:
        daemon.proc.send_signal(signal.SIGTERM)
        try:
            daemon.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.proc.kill()
            daemon.proc.wait()
    daemon.ctx.destroy(linger=0)


@pytest.fixture(scope="module")
def curved() -> Iterator[Curved]:
    base = Path(tempfile.mkdtemp(prefix="cz", dir="/tmp"))
    try:
        make_keys(base)
        daemon = start(base)
        try:
            yield daemon
        finally:
            stop(daemon)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def reason(reply: dict[str, Any] | None) -> str:
    assert reply is not None, "no reply"
    return str(reply.get("reason", ""))


def test_clients_without_a_known_key_get_nothing(curved: Curved) -> None:
    assert curved.call(None, "status", timeout=NO_REPLY) is None
    assert curved.call("stranger", "status", timeout=NO_REPLY) is None
    # a known key with a wrong idea of the server's key fails the handshake too
    sock = curved.ctx.socket(zmq.DEALER)
    sock.linger = 0
    keys = curved.keys("boss")
    assert keys is not None
    ClientKeys(keys.public, keys.secret, zmq.curve_keypair()[0]).apply(sock)
    sock.connect(curved.endpoint)
    assert curved.ask(sock, "status", timeout=NO_REPLY) is None
    sock.close()
    assert curved.proc.poll() is None
    assert curved.call("boss", "status")["status"] == "ok"  # type: ignore[index]
    stranger = curved.keys("stranger")
    assert stranger is not None
    assert f"key {stranger.public.decode()} is in no curve_*_keys directory" in \
        curved.log_text()


def test_a_removed_key_stops_working_at_once(curved: Curved) -> None:
    keygen("temp", curved.dir / "clients")
    shutil.copy(curved.dir / "clients" / "temp.key", curved.dir / "reader")
    assert curved.call("temp", "status")["status"] == "ok"  # type: ignore[index]
    open_conn = curved.socket(zmq.DEALER, "temp", curved.endpoint)
    try:
        assert curved.ask(open_conn, "status")["status"] == "ok"  # type: ignore[index]
        (curved.dir / "reader" / "temp.key").unlink()
        assert curved.call("temp", "status", timeout=NO_REPLY) is None  # a stale key

        def refused() -> bool:  # its connection was open before: within a second
            reply = curved.ask(open_conn, "status")
            assert reply is not None
            return reply["status"] == "error" and "no longer" in reason(reply)

        wait_until(refused, what="the removed key's open connection to be refused",
                   timeout=5, interval=0.2)
    finally:
        open_conn.close()
    assert curved.call("viewer", "status")["status"] == "ok"  # type: ignore[index]


def test_each_tier_runs_its_commands(curved: Curved) -> None:
    assert curved.call("viewer", "status")["status"] == "ok"  # type: ignore[index]
    assert "operator" in reason(curved.call("viewer", "stop", name="sleeper"))
    assert "admin" in reason(curved.call("viewer", "set", name="sleeper",
                                         options={"graceful_timeout": 2}))
    stopped = curved.call("ops", "stop", name="sleeper", waiting=True)
    assert stopped is not None and stopped["status"] == "ok", stopped
    started = curved.call("ops", "start", name="sleeper", waiting=True)
    assert started is not None and started["status"] == "ok", started
    assert "admin" in reason(curved.call("ops", "add", name="extra", cmd=SLEEPER))
    added = curved.call("boss", "add", name="extra", cmd=SLEEPER)
    assert added is not None and added["status"] == "ok", added
    removed = curved.call("boss", "rm", name="extra", waiting=True)
    assert removed is not None and removed["status"] == "ok", removed

    def audited() -> bool:
        text = curved.log_text()
        return ('audit: who=key:boss command=add args={"cmd": ' in text
                and "audit: who=key:ops command=stop" in text
                and "audit: who=key:viewer command=stop" in text and "result=error" in text)

    wait_until(audited, what="the audit lines in circusd's log", timeout=5)


def test_secrets_are_hidden_below_admin(curved: Curved) -> None:
    for key, shown in (("viewer", "<redacted>"), ("ops", "<redacted>"), ("boss", "hunter2")):
        reply = curved.call(key, "get", name="sleeper", keys=["env"])
        assert reply is not None and reply["status"] == "ok", reply
        env = reply["options"]["env"]
        assert env["DB_PASSWORD"] == shown and env["PLAIN"] == "visible"
        options = curved.call(key, "options", name="sleeper")
        assert options is not None and options["options"]["env"]["DB_PASSWORD"] == shown


NEEDS = {"reader": 0, "operator": 1, "admin": 2}


@pytest.mark.parametrize("key,rank", [("viewer", 0), ("ops", 1), ("boss", 2)])
def test_every_command_of_the_table_is_checked(curved: Curved, key: str, rank: int) -> None:
    """Each command is sent with properties it refuses (no such watcher, a bad
    ``waiting``): a command above the key's tier is refused naming its tier, any other
    gets past the tier check (and fails later, or runs harmlessly)."""
    for name in sorted(REGISTRY):
        cls = command_class(name)
        assert cls is not None
        needed = str(cls.tier)
        reply = curved.call(key, name, name="no-such-watcher", waiting="neither",
                            keys=["cmd"], signum="TERM", lines=0)
        assert reply is not None, name
        text = reason(reply) if reply["status"] == "error" else ""
        if NEEDS[needed] > rank:
            assert f"needs the {needed} tier" in text, (name, reply)
        else:
            assert "tier" not in text, (name, reply)
    assert curved.proc.poll() is None


def test_events_and_stats_need_a_key(curved: Curved) -> None:
    plain = curved.socket(zmq.SUB, None, curved.pubsub)
    keyed = curved.socket(zmq.SUB, "viewer", curved.pubsub)
    stats_plain = curved.socket(zmq.SUB, None, curved.stats)
    stats_keyed = curved.socket(zmq.SUB, "viewer", curved.stats)
    try:
        for sock in (plain, keyed, stats_plain, stats_keyed):
            sock.setsockopt(zmq.SUBSCRIBE, b"")

        def event_arrives() -> bool:  # restarts make events until one reaches the SUB
            curved.call("ops", "restart", name="sleeper", waiting=True)
            return bool(keyed.poll(200))

        wait_until(event_arrives, what="an event for the reader key", timeout=10)
        # circusd-stats subscribes to events and calls list with circusd's own key
        wait_until(lambda: stats_keyed.poll(200), what="circusd-stats' figures", timeout=10)
        assert stats_keyed.recv_multipart()[0].startswith(b"stat.")
        curved.call("ops", "restart", name="sleeper", waiting=True)
        stays_true(lambda: not plain.poll(0) and not stats_plain.poll(0), for_=NO_REPLY,
                   what="no event nor figure for a SUB without a key")
    finally:
        for sock in (plain, keyed, stats_plain, stats_keyed):
            sock.close()


def test_a_plugin_started_by_circusd_uses_its_key(curved: Curved) -> None:
    out = curved.dir / "plugin.out"

    def answered() -> bool:  # restarts make events until the plugin has one answered
        curved.call("ops", "restart", name="sleeper", waiting=True)
        return out.exists() and any(line.endswith(" ok") for line in out.read_text().split("\n"))

    wait_until(answered, what="the plugin to receive an event and be answered", timeout=15,
               interval=0.2)
    assert "audit: who=key:circusd" not in curved.log_text()  # numwatchers is a reader's


def test_circusctl_uses_its_options_environment_and_default(curved: Curved,
                                                           tmp_path: Path) -> None:
    secret = str(curved.dir / "clients" / "viewer.key_secret")
    server = str(curved.dir / "server" / "server.key")
    base = [*CIRCUSCTL, "--endpoint", curved.endpoint, "--timeout", "2"]
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path))
    env.pop("CIRCUSCTL_CURVE_KEY", None)
    env.pop("CIRCUSCTL_SERVER_KEY", None)

    def run(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*base, *args], capture_output=True, text=True, timeout=30,
                              env={**env, **extra})

    out = run("--curve-key", secret, "--server-key", server, "status", "sleeper")
    assert out.returncode == 0 and out.stdout.strip() == "active", out
    out = run("stop", "sleeper", CIRCUSCTL_CURVE_KEY=secret, CIRCUSCTL_SERVER_KEY=server)
    assert out.returncode == 3 and "needs the operator tier" in out.stdout + out.stderr, out
    out = run("status")
    assert out.returncode == 75 and "--curve-key" in out.stderr, out
    (tmp_path / "circus").mkdir()
    shutil.copy(secret, tmp_path / "circus" / "client.key_secret")
    shutil.copy(server, tmp_path / "circus" / "server.key")
    out = run("list")
    assert out.returncode == 0 and "sleeper" in out.stdout, out


def test_a_key_readable_by_others_is_refused_at_load(tmp_path: Path) -> None:
    keygen("server", tmp_path)
    secret = tmp_path / "server.key_secret"
    secret.chmod(0o640)
    ini = tmp_path / "circus.ini"
    ini.write_text(f"[circus]\nendpoint = ipc://{tmp_path}/c\npubsub_endpoint = "
                   f"ipc://{tmp_path}/p\ncurve_secret_key = {secret}\n")
    out = subprocess.run([*CIRCUSD, str(ini)], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert f"{ini}:4" in out.stderr and str(secret) in out.stderr
    assert "readable by group or others" in out.stderr and "Traceback" not in out.stderr


def test_remote_tcp_without_curve_is_refused_at_load(tmp_path: Path) -> None:
    ini = tmp_path / "circus.ini"
    ini.write_text(f"[circus]\nendpoint = tcp://0.0.0.0:{free_port()}\n"
                   f"pubsub_endpoint = ipc://{tmp_path}/p\n")
    out = subprocess.run([*CIRCUSD, str(ini)], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and f"{ini}:2" in out.stderr, out.stderr
    assert "allow_unauthenticated_remote" in out.stderr


def test_keygen_refuses_to_overwrite(tmp_path: Path) -> None:
    keygen("me", tmp_path)
    assert (tmp_path / "me.key_secret").stat().st_mode & 0o777 == 0o600
    out = subprocess.run([*CIRCUSCTL, "keygen", "me", "--dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "exists already" in out.stderr


# -- circushttpd in front of it: the console's key decides what it may do ---------------

WEB_TOKEN = "k" * 20 + "-test-token"
BEARER = {"Authorization": f"Bearer {WEB_TOKEN}"}


@asynccontextmanager
async def console(endpoint: str, keys: ClientKeys | None
                  ) -> AsyncIterator[tuple[TestClient[Any, Any], Hub]]:
    settings = Settings(endpoints=[endpoint], auth=Auth(WEB_TOKEN), timeout=2.0,
                        allowed_hosts=allowed_hosts("127.0.0.1", []),
                        client_options={"keys": keys} if keys is not None else {})
    app = make_app(settings)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client, app[HUB]


def _state(curved: Curved, name: str) -> str:
    reply = curved.call("boss", "status", name=name)
    assert reply is not None
    return str(reply["status"])


async def test_a_reader_key_sees_everything_and_changes_nothing(curved: Curved) -> None:
    line = "audit: who=key:viewer command=stop"
    before = curved.log_text().count(line)
    async with console(curved.endpoint, curved.keys("viewer")) as (client, hub):
        await wait_for(lambda: hub.endpoints[0].connected, what="the console to connect")
        response = await client.get("/api/status", headers=BEARER)
        assert response.status == 200
        (endpoint,) = (await response.json())["endpoints"]
        assert "sleeper" in [w["name"] for w in endpoint["watchers"]]
        response = await client.post("/api/watchers/sleeper/stop", headers=BEARER)
        body = await response.json()
        assert response.status != 200 and "operator" in body["reason"], body
        assert _state(curved, "sleeper") == "active"
    await wait_for(lambda: curved.log_text().count(line) > before,
                   what="the audit line of the refused stop")


async def test_an_operator_key_may_stop_and_start(curved: Curved) -> None:
    async with console(curved.endpoint, curved.keys("ops")) as (client, hub):
        await wait_for(lambda: hub.endpoints[0].connected, what="the console to connect")
        for action, state in (("stop", "stopped"), ("start", "active")):
            response = await client.post(f"/api/watchers/sleeper/{action}", headers=BEARER)
            assert response.status == 200, await response.text()
            await wait_for(lambda s=state: _state(curved, "sleeper") == s,  # type: ignore[misc]
                           what=f"sleeper {state}")


async def test_a_console_without_a_known_key_never_connects(curved: Curved) -> None:
    async with console(curved.endpoint, curved.keys("stranger")) as (_, hub):
        deadline = asyncio.get_running_loop().time() + 1.5
        while asyncio.get_running_loop().time() < deadline:  # a bounded observation
            assert not hub.endpoints[0].connected
            await asyncio.sleep(0.05)


def test_circus_top_uses_the_keys_as_circusctl_does(curved: Curved) -> None:
    (pid,) = wait_until(lambda: curved.call("boss", "list", name="sleeper")["pids"],  # type: ignore[index]
                        what="the sleeper's pid")
    top = [sys.executable, "-m", "circus.cli.top", "--once", "--endpoint", curved.stats,
           "--control", curved.endpoint, "--process-timeout", "3"]
    keys = ["--curve-key", str(curved.dir / "clients" / "viewer.key_secret"),
            "--server-key", str(curved.dir / "server" / "server.key")]

    def shown() -> bool:
        out = subprocess.run([*top, *keys], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        return any(line.split()[:1] == [str(pid)] for line in out.stdout.splitlines())

    wait_until(shown, what="circus-top with a reader key to show the sleeper", timeout=20)
    out = subprocess.run(top, capture_output=True, text=True, timeout=30)
    assert not any(line.split()[:1] == [str(pid)] for line in out.stdout.splitlines()), \
        out.stdout
