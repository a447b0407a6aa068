"""Only root, circusd's own user and the users ``allow_users`` names drive circusd on a
loopback or ``ipc://`` endpoint (docs/deployment.md, "Securing circusd").

circusd runs as root (as in CI); the other local user is ``nobody``: its clients are
Python children started through ``setpriv`` (its uid and group, no supplementary group).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import python_cmd, wait_until
from tests.e2e.conftest import CIRCUSD, Daemon, wait_event


def _nobody() -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        return None


NOBODY = _nobody()
SETPRIV = shutil.which("setpriv")
as_root = pytest.mark.skipif(os.geteuid() != 0 or NOBODY is None or SETPRIV is None,
                             reason="needs root, a 'nobody' account and setpriv")

TICKER = python_cmd("import itertools, time; [(print('tick', flush=True), time.sleep(0.1)) "
                    "for _ in itertools.count()]")

# Runs as nobody: sends each request on one DEALER; prints the replies (casts get none).
CLIENT = r"""
import json, sys, zmq
endpoint, requests = sys.argv[1], json.loads(sys.argv[2])
sock = zmq.Context().socket(zmq.DEALER)
sock.linger = 0
sock.connect(endpoint)
replies = []
for n, request in enumerate(requests):
    sock.send(json.dumps(dict(request, id=f"r{n}")).encode())
    if request.get("msg_type") != "cast":
        replies.append(json.loads(sock.recv()) if sock.poll(10000) else None)
print(json.dumps(replies))
"""

# Runs as nobody until terminated: writes the topic of every message it receives.
SPY = r"""
import sys, zmq
endpoint, path, topics = sys.argv[1], sys.argv[2], sys.argv[3:]
sock = zmq.Context().socket(zmq.SUB)
sock.connect(endpoint)
for topic in topics:
    sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
with open(path, "a") as out:
    while True:
        out.write(sock.recv_multipart()[0].decode(errors="replace") + "\n")
        out.flush()
"""

# What nobody tries: each would run a program as root or stop circusd.
ATTEMPTS: list[dict[str, Any]] = [
    {"command": "add", "properties": {"name": "pwned", "cmd": "/usr/bin/id", "start": True}},
    {"command": "set", "properties": {"name": "out", "options": {"cmd": "/usr/bin/id"}}},
    {"command": "quit", "msg_type": "cast"},
    {"command": "quit", "properties": {"waiting": False}},
    {"command": "status"},
]


class Nobody:
    """Runs Python code as ``nobody``; every process it starts is stopped at teardown."""

    def __init__(self) -> None:
        assert NOBODY is not None
        self.uid, self.gid = NOBODY.pw_uid, NOBODY.pw_gid
        self.procs: list[subprocess.Popen[str]] = []

    def setpriv(self) -> list[str]:
        """The command prefix that runs a program as nobody."""
        return [str(SETPRIV), f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups"]

    def _args(self, code: str, args: tuple[str, ...]) -> dict[str, Any]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env["HOME"] = "/"
        return {"args": [*self.setpriv(), sys.executable, "-c", code, *args], "cwd": "/",
                "env": env, "text": True}

    def run(self, code: str, *args: str, timeout: float = 60) -> str:
        res = subprocess.run(**self._args(code, args), capture_output=True, timeout=timeout)
        assert res.returncode == 0, (res.returncode, res.stdout, res.stderr)
        return str(res.stdout)

    def start(self, code: str, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(**self._args(code, args), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        self.procs.append(proc)
        return proc

    def can_exec(self, program: str) -> bool:
        """Whether a process running as nobody can start *program* (as circusd will)."""
        shell = [*self.setpriv(), "/bin/sh", "-c", 'exec "$0" -c pass', program]
        return subprocess.run(shell, cwd="/", capture_output=True, timeout=60).returncode == 0

    def requests(self, endpoint: str, requests: list[dict[str, Any]]) -> list[Any]:
        return json.loads(self.run(CLIENT, endpoint, json.dumps(requests)))  # type: ignore[no-any-return]

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()


@pytest.fixture
def nobody() -> Iterator[Nobody]:
    runner = Nobody()
    try:
        runner.run("import zmq")
    except (AssertionError, OSError) as exc:
        pytest.skip(f"this Python cannot run as nobody: {exc}")
    yield runner
    runner.stop()


@pytest.fixture
def shared_dir(short_tmp: Path) -> Path:
    """short_tmp made traversable by nobody, with a directory nobody may write in."""
    short_tmp.chmod(0o755)
    spool = short_tmp / "spool"
    spool.mkdir(mode=0o777)
    spool.chmod(0o777)
    return spool


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def tcp_circusd(short_tmp: Path) -> Iterator[Callable[..., Daemon]]:
    """The real circusd on loopback TCP endpoints (free ports); stopped at teardown."""
    daemons: list[Daemon] = []

    def start(body: str, circus_extra: str = "") -> Daemon:
        for attempt in range(5):  # a port taken between free_port() and the bind: again
            n = len(daemons)
            endpoint = f"tcp://127.0.0.1:{free_port()}"
            pubsub = f"tcp://127.0.0.1:{free_port()}"
            ini = short_tmp / f"tcp{n}.ini"
            ini.write_text(f"[circus]\nendpoint = {endpoint}\npubsub_endpoint = {pubsub}\n"
                           f"{circus_extra}\n{body}")
            log = short_tmp / f"tcp{n}.log"
            env = dict(os.environ, PYTHONUNBUFFERED="1", XDG_RUNTIME_DIR=str(short_tmp))
            with open(log, "wb") as out:
                proc = subprocess.Popen([*CIRCUSD, str(ini)], stdout=out,
                                        stderr=subprocess.STDOUT, cwd=short_tmp, env=env)
            daemon = Daemon(proc, short_tmp, ini, endpoint, pubsub, log)
            daemons.append(daemon)

            def answers(d: Daemon = daemon) -> bool:
                if d.proc.poll() is not None:
                    return True
                reply = d.try_call({"command": "status"})
                return reply is not None and "starting" not in reply["statuses"].values()

            wait_until(answers, what="circusd to answer on TCP", timeout=20)
            if daemon.proc.poll() is None:
                return daemon
            if "cannot bind" not in daemon.log_text() or attempt == 4:
                pytest.fail(f"circusd exited {daemon.proc.returncode}:\n{daemon.log_text()}")
        raise AssertionError("unreachable")

    yield start
    for daemon in daemons:
        daemon.close()


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def refused_everything(d: Daemon, replies: list[Any]) -> None:
    """Every reply is the refusal naming the rule, and nothing changed."""
    assert NOBODY is not None
    assert len(replies) == 4  # the cast got no reply
    for reply in replies:
        assert reply is not None and reply["status"] == "error", reply
        assert f"uid {NOBODY.pw_uid} (nobody) may not use {d.endpoint}" in reply["reason"]
        assert "allow_users" in reply["reason"]
    assert [r["id"] for r in replies] == ["r0", "r1", "r3", "r4"]
    assert d.proc.poll() is None  # neither quit stopped it
    assert d.call({"command": "list"})["watchers"] == ["out"]
    cmd = d.call({"command": "get", "properties": {"name": "out", "keys": ["cmd"]}})
    assert cmd["options"]["cmd"] == TICKER


@as_root
def test_loopback_tcp_serves_root_and_refuses_nobody(tcp_circusd: Callable[..., Daemon],
                                                     nobody: Nobody, shared_dir: Path) -> None:
    """The issue's scenario: nobody can neither command circusd on tcp://127.0.0.1 nor
    read its events or output, while root's circusctl works as before."""
    d = tcp_circusd(f"[watcher:out]\ncmd = {TICKER}\n")
    seen = shared_dir / "spy"
    spy = nobody.start(SPY, d.pubsub, str(seen), "", "output.out.stdout")
    wait_until(lambda: f"refused a subscriber, uid {nobody.uid}" in d.log_text(),
               what="circusd to refuse nobody's subscriber", detail=d.log_text)
    sub = d.subscribe("watcher.out.", "output.out.stdout")

    refused_everything(d, nobody.requests(d.endpoint, ATTEMPTS))
    assert f"refused 'add' from uid {nobody.uid} (nobody)" in d.log_text()

    # root's own circusctl: commands that publish events; the ticker's output is published
    assert d.ctl("incr", "out", "--waiting").stdout.strip() == "2"
    wait_event(sub, lambda topic, _: topic == "watcher.out.spawn")
    wait_event(sub, lambda topic, _: topic == "output.out.stdout")
    assert d.ctl("add", "other", "sleep 60", "--start").returncode == 0
    wait_until(lambda: d.ctl("status").stdout.split() == ["other:", "active", "out:", "active"],
               what="both watchers active")
    assert spy.poll() is None, spy.stderr
    assert lines(seen) == []  # not one event, not one line of output
    assert d.ctl("quit", "--waiting").returncode == 0
    assert d.proc.wait(timeout=30) == 0


@as_root
def test_allow_users_lets_nobody_in(tcp_circusd: Callable[..., Daemon], nobody: Nobody,
                                    shared_dir: Path) -> None:
    d = tcp_circusd(f"[watcher:out]\ncmd = {TICKER}\n", circus_extra="allow_users = nobody")
    token = f"sync.{uuid.uuid4().hex}"
    seen = shared_dir / "spy"
    nobody.start(SPY, d.pubsub, str(seen), token, "watcher.", "output.out.stdout")
    sync = {"command": "tail", "properties": {"name": "out", "lines": 0, "sync": token}}
    wait_until(lambda: d.call(sync)["status"] == "ok", what="nobody's subscription")

    replies = nobody.requests(d.endpoint, [
        {"command": "status"},
        {"command": "add", "properties": {"name": "added", "cmd": "sleep 60", "start": True}},
    ])
    assert [r["status"] for r in replies] == ["ok", "ok"], replies
    assert d.call({"command": "list"})["watchers"] == ["added", "out"]
    wait_until(lambda: "watcher.added.start" in lines(seen), what="nobody to get the events")
    wait_until(lambda: "output.out.stdout" in lines(seen), what="nobody to get the output")


@as_root
def test_ipc_refuses_nobody_even_with_a_world_writable_socket(
        circusd: Callable[..., Daemon], nobody: Nobody, shared_dir: Path) -> None:
    """The socket files are 0600; made writable by all on purpose, the uid rule still
    refuses nobody."""
    d = circusd(f"[watcher:out]\ncmd = {TICKER}\n")
    for path in (d.endpoint, d.pubsub):
        Path(path[len("ipc://"):]).chmod(0o666)
    seen = shared_dir / "spy"
    nobody.start(SPY, d.pubsub, str(seen), "", "output.out.stdout")
    wait_until(lambda: f"refused a subscriber, uid {nobody.uid}" in d.log_text(),
               what="circusd to refuse nobody's subscriber", detail=d.log_text)
    sub = d.subscribe("watcher.out.", "output.out.stdout")

    refused_everything(d, nobody.requests(d.endpoint, ATTEMPTS))

    assert d.ctl("restart", "out", "--waiting").returncode == 0
    wait_event(sub, lambda topic, _: topic == "watcher.out.start")
    wait_event(sub, lambda topic, _: topic == "output.out.stdout")
    assert lines(seen) == []


PLUGIN = '''
from circus.plugins import CircusPlugin


class Recorder(CircusPlugin):
    """Asks circusd something at each event and writes the event and the answer."""

    name = "recorder"

    def __init__(self, filename, **kwargs):
        super().__init__(**kwargs)
        self.filename = filename

    async def handle_recv(self, data):
        reply = await self.async_call("numwatchers")
        with open(self.filename, "a") as out:
            out.write(f"{data[0].decode()} {reply['status']} {reply.get('numwatchers')}\\n")
'''


@as_root
def test_a_plugin_run_as_nobody_keeps_working(tcp_circusd: Callable[..., Daemon],
                                              nobody: Nobody, short_tmp: Path,
                                              shared_dir: Path) -> None:
    """circusd started the plugin's process, so its connections are let in although its
    user is not (found by the socket it holds)."""
    if not nobody.can_exec(sys.executable):
        pytest.skip(f"{sys.executable} cannot be started by nobody (a closed directory on "
                    "its path); tests/integration/test_peers.py covers the rule")
    module = f"recorder_{uuid.uuid4().hex[:8]}"
    (short_tmp / f"{module}.py").write_text(PLUGIN)
    (short_tmp / f"{module}.py").chmod(0o644)
    seen = shared_dir / "plugin"
    d = tcp_circusd(f"[watcher:out]\ncmd = sleep 60\n\n[plugin:rec]\nuse = {module}.Recorder\n"
                    f"uid = nobody\nfilename = {seen}\n")
    assert NOBODY is not None
    pid = wait_until(lambda: d.pids("plugin:rec"), what="the plugin's process",
                     detail=d.log_text)[0]
    assert os.stat(f"/proc/{pid}").st_uid == NOBODY.pw_uid

    def answered() -> bool:  # an updated event at each poll, until the plugin has one
        d.call({"command": "set", "properties": {"name": "out",
                                                  "options": {"warmup_delay": 0}}})
        return any(line.endswith(" ok 2") for line in lines(seen))

    wait_until(answered, what="the plugin to receive an event and get an answer",
               timeout=20, interval=0.2, detail=d.log_text)
    assert "refused" not in d.log_text()


@pytest.mark.parametrize(("line", "error"), [
    ("allow_users = root, no-such-user-here", "allow_users: no user named 'no-such-user-here'"),
    ("allow_users = @no-such-group-here", "allow_users: no group named 'no-such-group-here'"),
    ("allow_groups = no-such-group-here", "allow_groups: no group named 'no-such-group-here'"),
    ("endpoint_owner = no-such-user-here",
     "endpoint_owner: no user named 'no-such-user-here'"),
])
def test_an_unknown_account_refuses_the_file(short_tmp: Path, line: str, error: str) -> None:
    ini = short_tmp / "circus.ini"
    ini.write_text(f"[circus]\nendpoint = ipc://{short_tmp}/c\n{line}\n\n"
                   "[watcher:w]\ncmd = sleep 60\n")
    res = subprocess.run([*CIRCUSD, str(ini)], capture_output=True, text=True, timeout=60,
                         cwd=short_tmp, env=dict(os.environ, XDG_RUNTIME_DIR=str(short_tmp)))
    assert res.returncode == 78, res
    assert res.stderr.strip() == f"circusd: {ini}:3: [circus] {error}"
