"""circusctl tells the operator what is wrong and what to do: bad endpoints, a daemon that
is not there, usage errors, plain help, --json exit statuses, listen, shell completion."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest
import zmq

from circus.commands import get_commands
from tests.conftest import PYTHON, python_cmd, wait_until
from tests.e2e.conftest import CIRCUSCTL, Daemon

Start = Callable[..., Daemon]
SLEEP = python_cmd("import time; time.sleep(600)")
WATCHERS = (f"[watcher:web]\ncmd = {SLEEP}\n"
            f"[watcher:worker]\ncmd = {SLEEP}\n")
HINT = "--endpoint URL or $CIRCUSCTL_ENDPOINT"


def circusctl(*args: str, env: dict[str, str] | None = None,
              timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """circusctl with no endpoint in its environment unless *env* gives one."""
    base = {k: v for k, v in os.environ.items() if k != "CIRCUSCTL_ENDPOINT"}
    return subprocess.run([*CIRCUSCTL, *args], capture_output=True, text=True,
                          env={**base, **(env or {})}, timeout=timeout)


@pytest.fixture
def mute(short_tmp: Path) -> Iterator[str]:
    """An endpoint where a ROUTER takes requests and never answers."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.linger = 0
    endpoint = f"ipc://{short_tmp}/mute"
    sock.bind(endpoint)
    yield endpoint
    sock.close()
    ctx.term()


# -- (a) an endpoint that is not one ------------------------------------------------------


@pytest.mark.parametrize(("endpoint", "says"), [
    ("localhost:5555", "did you mean tcp://localhost:5555?"),
    ("http://127.0.0.1:5555", "not HTTP; did you mean tcp://127.0.0.1:5555?"),
    ("tcp://127.0.0.1", "no port"),
    ("tcp://127.0.0.1:port", "the port is a number"),
    ("tcp://*:5555", "* is for binding"),
    ("tcp://[::1]:5555", "IPv6"),
    ("ipc://", "path of the socket file"),
    ("TCP://127.0.0.1:5555", "lower case"),
    ("/run/circus.sock", "did you mean ipc:///run/circus.sock?"),
])
def test_a_malformed_endpoint_is_one_line_naming_the_forms(endpoint: str, says: str) -> None:
    started = time.monotonic()
    for res, source in (
        (circusctl("--endpoint", endpoint, "--timeout", "30", "status"), "--endpoint"),
        (circusctl("--timeout", "30", "status", env={"CIRCUSCTL_ENDPOINT": endpoint}),
         "$CIRCUSCTL_ENDPOINT"),
        (circusctl("--endpoint", endpoint, "listen"), "--endpoint"),
    ):
        assert res.returncode == 2, res
        assert res.stdout == ""
        assert res.stderr.count("\n") == 1, res.stderr  # one line, no traceback
        assert f"{source} {endpoint!r} is not an endpoint" in res.stderr
        assert says in res.stderr
        assert "tcp://HOST:PORT or ipc://PATH" in res.stderr
    assert time.monotonic() - started < 20  # refused up front, never waiting on --timeout


def test_listen_checks_an_endpoint_given_as_its_argument() -> None:
    res = circusctl("listen", "tcp://127.0.0.1")
    assert res.returncode == 2 and res.stderr.count("\n") == 1
    assert "listen 'tcp://127.0.0.1' is not an endpoint: no port" in res.stderr


# -- (b, c) a daemon that is not there --------------------------------------------------


def test_an_ipc_endpoint_without_its_socket_file_fails_at_once(short_tmp: Path) -> None:
    endpoint = f"ipc://{short_tmp}/gone"
    for args in (("status",), ("tail", "web", "-f"), ("listen",)):
        started = time.monotonic()
        res = circusctl("--endpoint", endpoint, "--timeout", "30", *args)
        assert time.monotonic() - started < 10, args  # not the 30 s timeout
        assert res.returncode == 69, (args, res)
        assert f"cannot reach circusd at {endpoint}: there is no socket file" in res.stderr
        assert HINT in res.stderr


def test_a_socket_file_nobody_listens_on_fails_at_once(short_tmp: Path) -> None:
    path = short_tmp / "stale"
    left = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left.bind(str(path))  # bound, never listening, then closed: what a killed daemon leaves
    left.close()
    started = time.monotonic()
    res = circusctl("--endpoint", f"ipc://{path}", "--timeout", "30", "status")
    assert time.monotonic() - started < 10
    assert res.returncode == 69 and f"nothing listens on {path}" in res.stderr


def test_the_default_endpoint_is_named_as_such_with_a_hint() -> None:
    from circus.client import refusal

    if refusal("tcp://127.0.0.1:5555") is None:
        pytest.skip("something listens on 127.0.0.1:5555 on this machine")
    started = time.monotonic()
    res = circusctl("--timeout", "30", "status")
    assert time.monotonic() - started < 10  # a refused connection is known at once
    assert res.returncode == 69, res
    assert ("cannot reach circusd at tcp://127.0.0.1:5555 (the default endpoint): "
            "nothing listens there") in res.stderr
    assert HINT in res.stderr


def test_an_endpoint_from_the_environment_is_named_as_such(short_tmp: Path) -> None:
    endpoint = f"ipc://{short_tmp}/gone"
    res = circusctl("status", env={"CIRCUSCTL_ENDPOINT": endpoint})
    assert res.returncode == 69
    assert f"at {endpoint} (from $CIRCUSCTL_ENDPOINT)" in res.stderr and HINT in res.stderr


def test_a_daemon_that_does_not_answer_still_times_out(mute: str) -> None:
    res = circusctl("--endpoint", mute, "--timeout", "0.5", "status")
    assert res.returncode == 75 and "did not answer within 0.5s" in res.stderr


# -- (d) usage errors ----------------------------------------------------------------------


@pytest.mark.parametrize(("args", "error", "usage"), [
    (("--bogus", "status"), "circusctl: unrecognized arguments: --bogus",
     "usage: circusctl [--endpoint URL]"),
    (("--timeout", "soon", "status"), "--timeout: a number of seconds above 0, got 'soon'",
     "usage: circusctl [--endpoint URL]"),
    (("--timeout", "-1", "status"), "a number of seconds above 0",
     "usage: circusctl [--endpoint URL]"),
    (("stauts",), "unknown command 'stauts' (did you mean stats, status or dstats?)",
     "usage: circusctl [OPTIONS] COMMAND"),
    (("incr",), "circusctl incr: missing or extra arguments",
     "usage: circusctl incr <name> [<nb>] [--waiting]  (see circusctl help incr)"),
    (("incr", "web", "two"), "circusctl incr: <nb> must be an integer, got 'two'",
     "usage: circusctl incr <name>"),
    (("stop", "web", "--bogus"), "circusctl stop: unknown option --bogus",
     "usage: circusctl stop [<name>]"),
    (("help", "nope"), "unknown command 'nope'", "usage: circusctl help"),
])
def test_a_usage_error_is_the_error_and_one_usage_line(args: tuple[str, ...], error: str,
                                                       usage: str) -> None:
    res = circusctl(*args)
    assert res.returncode == 2, res
    assert res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == 2, res.stderr  # not the 40 lines of --help
    assert error in lines[0]
    assert lines[1].startswith(usage)
    assert "(see circusctl --help)" in lines[1] or "circusctl help" in lines[1]


def test_a_command_given_help_shows_its_help() -> None:
    res = circusctl("incr", "--help")
    assert res.returncode == 0
    assert res.stdout.startswith("usage: circusctl incr <name> [<nb>] [--waiting]\n")


def test_circusd_without_a_configuration_file_is_a_usage_error() -> None:
    res = subprocess.run([PYTHON, "-m", "circus.cli.circusd"], capture_output=True,
                         text=True, timeout=30)
    assert res.returncode == 2
    assert res.stdout == "" and res.stderr.startswith("usage: circusd")


# -- (e) help as plain text ------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(get_commands()))
def test_help_is_plain_text_and_the_wire_format_only_on_request(name: str) -> None:
    command = get_commands()[name]
    res = circusctl("help", name)
    assert res.returncode == 0
    text = res.stdout
    assert text.startswith(f"usage: circusctl {command.usage}\n\n{command.short}\n")
    assert "``" not in text and ".. code-block" not in text
    assert not any(line.strip() in ("::", "=" * len(line.strip())) and line.strip()
                   for line in text.splitlines())
    assert "ZMQ Message" not in text and '"command":' not in text
    assert f"help --wire {name}" in text
    for flag in command.flags:
        assert f"--{flag.name}" in text
    wire = circusctl("help", "--wire", name).stdout
    assert "ZMQ Message:" in wire and "``" not in wire
    assert f'"command": "{name}"' in wire or name == "listen"


def test_help_of_circusctls_own_commands() -> None:
    assert circusctl("help", "completion").stdout.startswith(
        "usage: circusctl completion bash|zsh\n")
    assert "completion" in circusctl("help").stdout


# -- (g) --json and error replies ------------------------------------------------------------


def test_an_error_reply_exits_0_with_json_as_in_circus_019(circusd: Start) -> None:
    d = circusd(WATCHERS)
    for flag in ("--json", "--prettify"):
        res = d.ctl(flag, "numprocesses", "nope")
        assert res.returncode == 0, res
        reply = json.loads(res.stdout)
        assert reply["status"] == "error" and reply["errno"] == 3
        assert "program nope not found" in res.stderr
    res = d.ctl("--json", "tail", "nope", "-f")
    assert res.returncode == 0 and json.loads(res.stdout)["status"] == "error"
    plain = d.ctl("numprocesses", "nope")
    assert (plain.returncode, plain.stderr) == (3, "error: program nope not found\n")


# -- (h) listen ---------------------------------------------------------------------------------


class Output:
    """A circusctl subprocess whose stdout and stderr lines are collected by two threads."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None,
                 program: tuple[str, ...] = tuple(CIRCUSCTL)) -> None:
        self.proc = subprocess.Popen([*program, *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env)
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(pipe, lines), daemon=True)
                         for pipe, lines in ((self.proc.stdout, self.out),
                                             (self.proc.stderr, self.err))]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(pipe: IO[str], lines: list[str]) -> None:
        for line in pipe:
            lines.append(line.rstrip("\n"))

    def wait_err(self, text: str) -> None:
        wait_until(lambda: any(text in line for line in self.err),
                   what=f"{text!r} on circusctl's stderr", detail=lambda: "\n".join(self.err))

    def wait_out(self, text: str) -> str:
        return wait_until(lambda: next((x for x in self.out if text in x), ""),
                          what=f"{text!r} on circusctl's stdout",
                          detail=lambda: "\n".join(self.out + self.err))

    def stop(self) -> int:
        """Ctrl-C, by the pid recorded; SIGKILL if it does not exit within 10 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for reader in self._readers:
            reader.join(timeout=10)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
        return self.proc.returncode


def _incr(d: Daemon) -> None:
    d.call({"command": "incr", "properties": {"name": "web", "waiting": True}})


def test_listen_on_the_events_endpoint_loses_no_event(circusd: Start) -> None:
    """The event of an incr made 50 ms after listen says it listens is printed: the
    subscription is made before anything else, with no probe to wait for."""
    d = circusd(WATCHERS)
    listener = Output(["--endpoint", d.pubsub, "listen", "watcher.web."])
    try:
        listener.wait_err(f"listening to {d.pubsub}")
        time.sleep(0.05)  # paces the event: 50 ms after listen started
        _incr(d)
        line = listener.wait_out("watcher.web.spawn: ")
        assert json.loads(line.partition(": ")[2])["process_pid"] in d.pids("web")
    finally:
        assert listener.stop() == 0
    assert not any("control endpoint" in line for line in listener.err)


# circusctl's main(), after telling on stderr the monotonic time it was called at
STARTED = """\
import sys, time
from circus.cli.circusctl import main
print(f"started {time.monotonic()!r}", file=sys.stderr, flush=True)
sys.exit(main(sys.argv[1:]))
"""


def test_listen_subscribes_before_anything_else(short_tmp: Path) -> None:
    """An event published 50 ms after listen started is printed. The publisher is the
    test's own, which sees the subscription arrive: it comes at once, before the second a
    probe of the endpoint would have cost had it come first."""
    ctx = zmq.Context()
    pub = ctx.socket(zmq.XPUB)
    pub.linger = 0
    endpoint = f"ipc://{short_tmp}/events"
    pub.bind(endpoint)
    listener = Output(["--endpoint", endpoint, "listen", "watcher."],
                      program=(PYTHON, "-c", STARTED))
    try:
        listener.wait_err("started ")
        started = float(listener.err[0].split()[1])
        assert pub.poll(10_000), "no subscription within 10 s"
        arrived = time.monotonic()
        assert pub.recv() == b"\x01watcher."
        assert arrived - started < 0.8, f"subscribed {arrived - started:.2f}s after start"
        time.sleep(max(0.0, started + 0.05 - time.monotonic()))  # paces: 50 ms after start
        pub.send_multipart([b"watcher.web.spawn", b'{"process_pid": 1}'])
        listener.wait_out("watcher.web.spawn: ")
        assert listener.out == ['watcher.web.spawn: {"process_pid": 1}']
    finally:
        assert listener.stop() == 0
        pub.close()
        ctx.term()


def test_listen_given_the_control_endpoint_moves_to_the_events_endpoint(
        circusd: Start) -> None:
    d = circusd(WATCHERS)
    token = f"sync.{uuid.uuid4().hex}"
    env = {**os.environ, "CIRCUSCTL_ENDPOINT": d.endpoint}
    listener = Output(["listen", "watcher.web.", token], env=env)
    try:
        listener.wait_err(f"listening to its events endpoint {d.pubsub}")

        def subscribed() -> bool:  # circusd answers once it has the subscription to token
            reply = d.call({"command": "tail", "properties": {
                "name": "web", "lines": 0, "sync": token}})
            return bool(reply["status"] == "ok")

        wait_until(subscribed, what="circusd to have the listener's subscription")
        _incr(d)
        listener.wait_out("watcher.web.spawn: ")
    finally:
        assert listener.stop() == 0


# -- (i) completion scripts ---------------------------------------------------------------------


@pytest.fixture
def program(short_tmp: Path) -> Path:
    """A ``circusctl`` on PATH that runs this checkout's circusctl with this Python."""
    bin_dir = short_tmp / "bin"
    bin_dir.mkdir()
    path = bin_dir / "circusctl"
    path.write_text(f"#!/bin/sh\nexec {PYTHON} -m circus.cli.circusctl \"$@\"\n")
    path.chmod(0o755)
    return path


def _env(program: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CIRCUSCTL_ENDPOINT"}
    env["PATH"] = f"{program.parent}:{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    return env


def bash_complete(program: Path, line: str) -> list[str]:
    """What bash offers for *line* (the cursor at its end) with the script loaded."""
    script = (
        'source <(circusctl completion bash)\n'
        'complete -p circusctl >&2\n'
        'COMP_LINE="$1"; COMP_POINT=${#1}\n'
        'read -ra COMP_WORDS <<< "$1"\n'
        '[[ "$1" == *" " ]] && COMP_WORDS+=("")\n'
        'COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))\n'
        '_circusctl_complete\n'
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    res = subprocess.run(["bash", "-c", script, "bash", line], capture_output=True,
                         text=True, env=_env(program), timeout=30)
    assert res.returncode == 0, res
    assert "-F _circusctl_complete circusctl" in res.stderr
    return [x for x in res.stdout.splitlines() if x]


def test_bash_completes_commands_watchers_and_options(circusd: Start,
                                                      program: Path) -> None:
    d = circusd(WATCHERS)
    e = f"circusctl --endpoint {d.endpoint}"
    assert bash_complete(program, "circusctl st") == ["start", "stats", "status", "stop"]
    assert bash_complete(program, f"{e} stop ") == ["web", "worker"]
    assert bash_complete(program, f"{e} incr wo") == ["worker"]
    assert bash_complete(program, "circusctl stop web --w") == ["--waiting"]
    assert bash_complete(program, "circusctl stop --match ") == ["glob", "regex", "simple"]
    assert bash_complete(program, "circusctl --j") == ["--json"]
    assert "numprocesses" in bash_complete(program, f"{e} set web num")
    assert bash_complete(program, "circusctl help in") == ["incr"]
    assert bash_complete(program, "circusctl completion ") == ["bash", "zsh"]


def test_completion_without_a_daemon_offers_nothing_quietly(program: Path, short_tmp: Path,
                                                            mute: str) -> None:
    for endpoint in (f"ipc://{short_tmp}/gone", mute, "localhost:5555"):
        started = time.monotonic()
        res = subprocess.run(
            ["circusctl", "completion", "line", "bash",
             f"circusctl --endpoint {endpoint} --timeout 30 stop "],
            capture_output=True, text=True, env=_env(program), timeout=30)
        assert (res.returncode, res.stdout, res.stderr) == (0, "", ""), endpoint
        assert time.monotonic() - started < 10, endpoint  # asked with a short timeout


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_completes_commands_and_watchers(circusd: Start, program: Path) -> None:
    d = circusd(WATCHERS)

    def offered(*words: str) -> list[str]:
        # compadd is zsh's to call inside a completion; a function of that name stands in
        script = (
            'source <(circusctl completion zsh)\n'
            'compadd() { print -rl -- "$@" }\n'
            'words=(circusctl "$@"); CURRENT=$#words\n'
            '_circusctl\n'
        )
        res = subprocess.run(["zsh", "-f", "-c", script, "zsh", *words], capture_output=True,
                             text=True, env=_env(program), timeout=30)
        lines = res.stdout.splitlines()
        return lines[1:] if lines[:1] == ["--"] else lines

    assert offered("st") == ["start", "stats", "status", "stop"]
    assert offered("--endpoint", d.endpoint, "stop", "") == ["web", "worker"]
    assert offered("stop", "web", "--w") == ["--waiting"]
    registered = subprocess.run(
        ["zsh", "-f", "-c", "autoload -Uz compinit; compinit -u -D\n"
         "source <(circusctl completion zsh)\nprint -r -- $_comps[circusctl]"],
        capture_output=True, text=True, env=_env(program), timeout=30)
    assert registered.stdout.strip() == "_circusctl", registered
