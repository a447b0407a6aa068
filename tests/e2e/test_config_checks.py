"""Telling the operator the truth about a configuration, with a real circusd.

* The README's minimal configuration, its shell session and its library snippet, taken
  from README.md as they are written and run as they are, with real processes.
* A command is found as a shell would find it: on the watcher's PATH, else circusd's.
* What can be known at load is refused (quotes, working_dir) or warned (a program not on
  PATH) at load with file:line; spawn errors name the option; ``add`` and ``set`` refuse
  what the file would.
* ``circusd --check``: every problem with its location; exit 0, 1 or 78.

The README's examples use the default TCP endpoints (127.0.0.1:5555 and 5556). They run in
a network namespace of their own (``unshare -rn``) so that they meet no other circusd; on a
host that allows none, they run on the host when both ports are free.
"""

from __future__ import annotations

import os
import re
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import pid_alive, proc_cmdline, wait_until
from tests.e2e.conftest import CIRCUSCTL, CIRCUSD, Daemon

README = Path(__file__).resolve().parents[2] / "README.md"
BIN = Path(sys.executable).parent  # holds `python`, as an activated virtualenv would

# brings the loopback interface of a new network namespace up, then runs argv[1:]
_LO_UP = """\
import fcntl, os, socket, struct, sys
s = socket.socket()
fcntl.ioctl(s, 0x8914, struct.pack("16sH14x", b"lo", 0x1 | 0x8 | 0x40))  # SIOCSIFFLAGS
os.execvp(sys.argv[1], sys.argv[1:])
"""


def readme_block(heading: str, lang: str, index: int = 0) -> str:
    """The *index*-th ``lang`` code block under ``## heading`` in README.md, as written."""
    text = README.read_text()
    assert f"\n## {heading}\n" in text, f"README.md has no section {heading!r}"
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(rf"```{lang}\n(.*?)```", section, re.S)
    return str(blocks[index])


def _netns_works() -> bool:
    """Can a network namespace be made (``unshare -rn``) and joined (``nsenter``)?"""
    if not (shutil.which("unshare") and shutil.which("nsenter")):
        return False
    holder = subprocess.Popen(  # waits in its namespace until its stdin is closed
        ["unshare", "-rn", sys.executable, "-c", _LO_UP, "sh", "-c", "echo up; read x"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert holder.stdin is not None and holder.stdout is not None
    try:
        if holder.stdout.readline() != b"up\n":  # the namespace could not be made
            return False
        joined = subprocess.run(["nsenter", "-t", str(holder.pid), "-U", "-n",
                                 "--preserve-credentials", "true"],
                                capture_output=True, timeout=30)
        return joined.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
    finally:
        holder.stdin.close()
        try:
            holder.wait(timeout=30)
        except subprocess.TimeoutExpired:
            holder.kill()
            holder.wait()
        holder.stdout.close()


def _ports_free(*ports: int) -> bool:
    for port in ports:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


class Net:
    """Where the README's examples run: a network namespace of their own, or the host."""

    def __init__(self) -> None:
        self.isolated = _netns_works()
        if not self.isolated and not _ports_free(5555, 5556):
            pytest.skip("no network namespace can be made here and 127.0.0.1:5555/5556 "
                        "are in use")

    def launch(self, argv: list[str]) -> list[str]:
        """*argv* run in a namespace of its own (its pid is that of the command)."""
        if not self.isolated:
            return argv
        return ["unshare", "-rn", sys.executable, "-c", _LO_UP, *argv]

    def join(self, pid: int, argv: list[str]) -> list[str]:
        """*argv* run in the namespace of *pid*."""
        if not self.isolated:
            return argv
        return ["nsenter", "-t", str(pid), "-U", "-n", "--preserve-credentials", *argv]


@pytest.fixture
def net() -> Net:
    return Net()


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; any still running at teardown gets SIGTERM, then SIGKILL."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def workers_dir(short_tmp: Path) -> Iterator[Path]:
    """Where the README's workers record themselves (``<wid>.<pid>`` or ``<pid>``); any
    still alive at teardown is killed by its pid."""
    directory = short_tmp / "workers"
    directory.mkdir()
    yield directory
    for pid in _recorded(directory):
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def _recorded(directory: Path) -> list[int]:
    return [int(p.name.rsplit(".", 1)[-1]) for p in directory.iterdir()]


def _alive(directory: Path) -> set[int]:
    return {pid for pid in _recorded(directory) if pid_alive(pid)}


def _env(short_tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}:/usr/bin:/bin"
    env["XDG_RUNTIME_DIR"] = str(short_tmp)  # the process record, in the test's dir
    env["PYTHONUNBUFFERED"] = "1"
    return env


# --------------------------------------------------------------------------- the README


SERVER = """\
import os, pathlib, sys, time
wid = sys.argv[sys.argv.index("--worker") + 1]
pathlib.Path("workers", f"{wid}.{os.getpid()}").write_text(os.environ.get("APP_ENV", ""))
while True:
    time.sleep(3600)
"""


def test_the_readme_configuration_and_session_run_as_written(
        short_tmp: Path, net: Net, started: list[subprocess.Popen[bytes]],
        workers_dir: Path) -> None:
    """The minimal configuration (``cmd = python -m myapp.server ...`` with the default
    copy_env = false) starts its four workers, and every command of the shell session
    after it does what its comment says."""
    (short_tmp / "circus.ini").write_text(readme_block("A minimal configuration", "ini"))
    (short_tmp / "myapp").mkdir()
    (short_tmp / "myapp" / "__init__.py").write_text("")
    (short_tmp / "myapp" / "server.py").write_text(SERVER)
    session = [shlex.split(line, comments=True)
               for line in readme_block("A minimal configuration", "sh").splitlines()]
    session = [argv for argv in session if argv]
    tools = {"circusd": CIRCUSD, "circusctl": CIRCUSCTL,
             "circus-top": [sys.executable, "-m", "circus.cli.top"]}
    env = _env(short_tmp)
    log = short_tmp / "circusd.log"
    daemon: subprocess.Popen[bytes] | None = None

    def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
        assert daemon is not None
        command = net.join(daemon.pid, [*tools[argv[0]], *argv[1:]])
        return subprocess.run(command, capture_output=True, text=True, timeout=60,
                              cwd=short_tmp, env=env)

    def workers(n: int, other_than: frozenset[int] = frozenset()) -> frozenset[int]:
        def check() -> frozenset[int]:
            assert daemon is not None and daemon.poll() is None, log.read_text()
            alive = frozenset(_alive(workers_dir))
            return alive if len(alive) == n and not alive & other_than else frozenset()

        return wait_until(check, what=f"{n} workers", timeout=30, interval=0.05,
                          detail=lambda: log.read_text())

    for argv in session:
        if argv[0] == "circusd" and "--check" in argv:
            done = subprocess.run([*CIRCUSD, *argv[1:]], capture_output=True, text=True,
                                  timeout=60, cwd=short_tmp, env=env)
            assert done.returncode == 0, done.stdout + done.stderr
            assert done.stdout.rstrip().endswith("circus.ini: no problem found")
        elif argv[0] == "circusd":
            with open(log, "wb") as out:
                daemon = subprocess.Popen(net.launch([*CIRCUSD, *argv[1:]]), stdout=out,
                                          stderr=subprocess.STDOUT, cwd=short_tmp, env=env)
            started.append(daemon)
            first = workers(4)
            wids = sorted(p.name.split(".")[0] for p in workers_dir.iterdir())
            assert wids == ["1", "2", "3", "4"]
            assert {p.read_text() for p in workers_dir.iterdir()} == {"production"}
        elif argv[1:] == ["status"]:
            done = run(argv)
            assert done.returncode == 0 and done.stdout.strip() == "web: active", done
        elif argv[1:] == ["status", "-l"]:
            done = run(argv)
            lines = done.stdout.splitlines()
            assert done.returncode == 0 and lines[0].split()[:2] == ["NAME", "HEALTH"], done
            assert lines[1].split()[0] == "web" and len(lines) == 6, done  # 4 process rows
        elif argv[1:] == ["stats", "--watch"]:
            assert daemon is not None
            watch = subprocess.Popen(net.join(daemon.pid, [*tools[argv[0]], *argv[1:]]),
                                     stdout=subprocess.PIPE, cwd=short_tmp, env=env)
            started.append(watch)
            lines = _read_until(watch, "web", 2, timeout=30)  # the table, then again
            assert sum(line.startswith("web") for line in lines) >= 2, lines
            watch.send_signal(signal.SIGINT)
            assert watch.wait(timeout=30) == 0
            assert watch.stdout is not None
            watch.stdout.close()
        elif argv == ["circus-top"]:
            # not a terminal here: one snapshot as text (without circusd-stats, no figures)
            done = run(argv)
            assert done.returncode == 0, done
            assert [line.split()[0] for line in done.stdout.splitlines()
                    if line.startswith("web")] == ["web"], done.stdout
        elif argv[1] == "incr":
            done = run(argv)
            assert done.returncode == 0 and done.stdout.strip() == "6", done
            first = workers(6)
        elif argv[1] == "reload":
            done = run(argv)
            assert done.returncode == 0, done
            workers(6, other_than=first)  # six new ones, the old ones stopped
        elif argv[1] == "quit":
            assert daemon is not None
            done = run(argv)
            assert done.returncode == 0, done
            assert daemon.wait(timeout=60) == 0, log.read_text()
            assert not _alive(workers_dir)
        else:
            pytest.fail(f"the README's session has a line this test does not know: {argv}")
    assert daemon is not None and daemon.returncode == 0  # the session ends with quit


def _read_until(proc: subprocess.Popen[bytes], prefix: str, count: int,
                timeout: float) -> list[str]:
    """The lines *proc* prints until *count* of them start with *prefix* (with a deadline:
    select, not a blocking readline)."""
    assert proc.stdout is not None
    fd, buf, lines = proc.stdout.fileno(), b"", []
    deadline = time.monotonic() + timeout
    while sum(line.startswith(prefix) for line in lines) < count:
        left = deadline - time.monotonic()
        assert left > 0, f"{count} lines starting with {prefix!r} within {timeout}s: {lines}"
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 65536)
            assert chunk, f"the output ended: {lines}"
            *done, buf = (buf + chunk).split(b"\n")
            lines += [line.decode() for line in done]
    return lines


WORKER = """\
import os, pathlib, time
pathlib.Path("workers", str(os.getpid())).write_text("")
while True:
    time.sleep(3600)
"""


def test_the_readme_library_snippet_runs_as_written(
        short_tmp: Path, net: Net, started: list[subprocess.Popen[bytes]],
        workers_dir: Path) -> None:
    """``get_arbiter([{"cmd": "python worker.py", ...}])`` runs four workers (``python``
    found on the program's PATH), and SIGTERM stops them and the program."""
    (short_tmp / "app.py").write_text(readme_block("As a library", "python"))
    (short_tmp / "worker.py").write_text(WORKER)
    out = short_tmp / "app.log"
    with open(out, "wb") as fh:
        app = subprocess.Popen(net.launch([sys.executable, "app.py"]), stdout=fh,
                               stderr=subprocess.STDOUT, cwd=short_tmp, env=_env(short_tmp))
    started.append(app)

    def four() -> bool:
        assert app.poll() is None, out.read_text()
        return len(_alive(workers_dir)) == 4

    wait_until(four, what="the 4 workers of the README's snippet", timeout=30,
               interval=0.05, detail=out.read_text)
    pids = _alive(workers_dir)
    app.send_signal(signal.SIGTERM)
    assert app.wait(timeout=60) == 0, out.read_text()
    assert not [p for p in pids if pid_alive(p)]
    assert "Traceback" not in out.read_text()


# --------------------------------------------------------------------------- finding commands


def _script(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def test_a_command_is_found_on_the_watchers_path_else_on_circusds(
        circusd: Callable[..., Daemon], short_tmp: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    sleep = shutil.which("sleep")
    assert sleep is not None
    _script(short_tmp / "bin" / "myprog", f'exec {sleep} "$1"')
    _script(short_tmp / "other" / "otherprog", f'exec {sleep} "$1"')
    monkeypatch.setenv("PATH", f"{short_tmp}/bin:/usr/bin:/bin")  # circusd's own PATH
    d = circusd("[watcher:plain]\ncmd = myprog 601\n"
                f"[watcher:ownpath]\ncmd = otherprog 602\nenv = PATH={short_tmp}/other\n"
                "[watcher:wrongpath]\ncmd = myprog 603\nenv = PATH=/nonexistent\n"
                "max_retry = 1\n")
    for name, arg in (("plain", "601"), ("ownpath", "602")):
        [pid] = d.pids(name)
        wait_until(lambda: proc_cmdline(pid) == [sleep, arg],  # noqa: B023 (awaited here)
                   what=f"{name}'s program to run", timeout=10)
    # copy_env = false and no PATH: found all the same; not in the env's own PATH: not run
    assert "PATH" not in Path(f"/proc/{d.pids('plain')[0]}/environ").read_text()
    wait_until(lambda: "wrongpath: could not spawn" in d.log_text(), what="the spawn error",
               timeout=10)
    text = d.log_text()
    assert "cmd 'myprog': not found on PATH (/nonexistent)" in text
    assert re.search(r"circus0\.ini:\d+: \[watcher:wrongpath\] cmd: 'myprog': not found on "
                     r"PATH \(/nonexistent\); the processes cannot start until it exists", text)
    wait_until(lambda: d.call({"command": "status", "properties": {"name": "wrongpath"}})
               ["status"] == "stopped", what="wrongpath to give up", timeout=10)


def test_a_spawn_error_names_the_working_dir(circusd: Callable[..., Daemon],
                                            short_tmp: Path) -> None:
    wd = short_tmp / "wd"
    wd.mkdir()
    d = circusd(f"[watcher:w]\ncmd = sleep 600\nworking_dir = {wd}\n")
    assert len(d.pids("w")) == 1
    wd.rmdir()  # gone after the file was loaded
    assert d.call({"command": "incr", "properties": {"name": "w", "waiting": True}}
                  )["status"] == "ok"
    wait_until(lambda: "could not spawn" in d.log_text(), what="the spawn error", timeout=10)
    text = d.log_text()
    assert f"w: could not spawn 'sleep 600': working_dir '{wd}': no such directory" in text


@pytest.mark.parametrize(("body", "line", "expected"), [
    ("cmd = python -c 'print(1)\n", 2, "[watcher:w] cmd: \"python -c 'print(1)\": "
                                       "unbalanced quotes (no closing quotation)"),
    ("cmd = sleep\nargs = 60 \"x\n", 3, "[watcher:w] args: '60 \"x': unbalanced quotes "
                                        "(no closing quotation)"),
    ("cmd = sleep 60\nworking_dir = /nonexistent/dir\n", 3,
     "[watcher:w] working_dir: '/nonexistent/dir': no such directory"),
])
def test_what_is_known_at_load_is_refused_at_load(short_tmp: Path, body: str, line: int,
                                                  expected: str) -> None:
    ini = short_tmp / "c.ini"
    ini.write_text(f"[watcher:w]\n{body}[circus]\nendpoint = ipc://{short_tmp}/c\n"
                   f"pubsub_endpoint = ipc://{short_tmp}/p\n")
    done = subprocess.run([*CIRCUSD, str(ini)], capture_output=True, text=True, timeout=60,
                          cwd=short_tmp)
    assert done.returncode == 78, done.stdout + done.stderr
    assert done.stderr.strip().splitlines()[-1] == f"circusd: {ini}:{line}: {expected}"
    assert not (short_tmp / "c").exists()  # nothing started


def test_add_and_set_refuse_what_the_file_would(circusd: Callable[..., Daemon]) -> None:
    d = circusd("[watcher:w]\ncmd = sleep 600\n")
    [pid] = d.pids("w")
    reply = d.call({"command": "add", "properties": {"name": "x", "cmd": "sleep 'x"}})
    assert reply["status"] == "error" and reply["errno"] == 3, reply
    assert reply["reason"] == ("cannot create watcher 'x': cmd: \"sleep 'x\": unbalanced "
                               "quotes (no closing quotation)")
    reply = d.call({"command": "add", "properties": {"name": "y", "cmd": "sleep",
                                                     "args": "1 'x", "start": True}})
    assert reply["status"] == "error" and "args: \"1 'x\": unbalanced quotes" in reply["reason"]
    assert d.call({"command": "list"})["watchers"] == ["w"]
    done = d.ctl("set", "w", "cmd", "sleep 'x")
    assert done.returncode != 0
    assert "invalid value for 'cmd': \"sleep 'x\": unbalanced quotes" in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert d.pids("w") == [pid]  # nothing was applied
    assert d.call({"command": "get", "properties": {"name": "w", "keys": ["cmd"]}}
                  )["options"]["cmd"] == "sleep 600"


# --------------------------------------------------------------------------- circusd --check


def _check(short_tmp: Path, text: str) -> tuple[int, list[str], Path]:
    ini = short_tmp / "c.ini"
    ini.write_text(text)
    done = subprocess.run([*CIRCUSD, "--check", str(ini)], capture_output=True, text=True,
                          timeout=60, cwd=short_tmp, env={**os.environ, "PATH": "/usr/bin:/bin"})
    assert done.stderr == ""
    assert not (short_tmp / "c").exists()  # checked, nothing started
    return done.returncode, done.stdout.splitlines(), ini


CIRCUS = "[circus]\nendpoint = ipc://{tmp}/c\npubsub_endpoint = ipc://{tmp}/p\n"


def test_check_of_a_clean_file_exits_0(short_tmp: Path) -> None:
    code, lines, ini = _check(short_tmp, CIRCUS.format(tmp=short_tmp)
                              + "[watcher:w]\ncmd = sleep 600\nflapping.attempts = 3\n")
    assert code == 0, lines
    assert lines[0] == f"{ini}: valid; 1 watcher(s), 1 process(es)"
    assert lines[-1] == f"{ini}: no problem found"
    assert not [line for line in lines if line.startswith(("warning", "error", "info"))]


def test_check_with_warnings_exits_1_and_lists_them_in_file_order(short_tmp: Path) -> None:
    code, lines, ini = _check(short_tmp, CIRCUS.format(tmp=short_tmp) + (
        "[watcher:w]\n"
        "cmd = pyhton -m app\n"           # line 5
        "numprocess = 2\n"                # line 6
        "flapping.attempts = 3\n"         # a plugin's key: not mentioned
        "team = ops\n"))                  # line 8
    assert code == 1, lines
    assert lines[:3] == [
        f"warning: {ini}:5: [watcher:w] cmd: 'pyhton': not found on PATH (/usr/bin:/bin); "
        "the processes cannot start until it exists",
        f"warning: {ini}:6: [watcher:w] numprocess: not a watcher option; did you mean "
        "'numprocesses'? (kept as a custom key, for plugins and hooks)",
        f"info: {ini}:8: [watcher:w] team: not a watcher option; kept as a custom key for "
        "plugins and hooks (no part of circus reads it)",
    ]
    assert lines[3] == f"{ini}: valid; 1 watcher(s), 1 process(es)"
    assert lines[-1] == f"{ini}: circusd would start, with 2 warnings"


@pytest.mark.parametrize("text", ["", "[circus]\nloglevel = info\n"])
def test_check_of_a_file_without_watchers_warns(short_tmp: Path, text: str) -> None:
    code, lines, ini = _check(short_tmp, text)
    assert code == 1, lines
    what = "the file is empty" if not text else "no [watcher:NAME] section"
    assert lines[0].startswith(f"warning: {ini}: {what}: circusd would start with nothing")


def test_check_lists_every_error_and_exits_78(short_tmp: Path) -> None:
    code, lines, ini = _check(short_tmp, CIRCUS.format(tmp=short_tmp) + (
        "[watcher:a]\n"
        "cmd = sleep 'x\n"                 # line 5
        "working_dir = /nonexistent/dir\n" # line 6
        "numprocess = 2\n"                 # line 7
        "[watcher:b]\n"
        "cmd = sleep 1\n"
        "hooks.after_start = nomodule.fn\n" # line 10
        "[socket:s]\n"
        "port = 99999\n"))                 # line 12
    assert code == 78, lines
    assert lines == [
        f"error: {ini}:5: [watcher:a] cmd: \"sleep 'x\": unbalanced quotes "
        "(no closing quotation)",
        f"error: {ini}:6: [watcher:a] working_dir: '/nonexistent/dir': no such directory",
        f"warning: {ini}:7: [watcher:a] numprocess: not a watcher option; did you mean "
        "'numprocesses'? (kept as a custom key, for plugins and hooks)",
        f"error: {ini}:10: [watcher:b] hooks.after_start: cannot import 'nomodule' for "
        "'nomodule.fn': No module named 'nomodule'",
        f"error: {ini}:12: [socket:s] port: expected a port number (0..65535), got 99999",
        f"{ini}: circusd would refuse this file: 4 errors, 1 warning",
    ]
    # and circusd itself refuses it, naming the first
    done = subprocess.run([*CIRCUSD, str(ini)], capture_output=True, text=True, timeout=60,
                          cwd=short_tmp)
    assert done.returncode == 78 and f"circusd: {ini}:" in done.stderr


def test_check_of_a_file_that_cannot_be_read(short_tmp: Path) -> None:
    code, lines, ini = _check(short_tmp, "[watcher:w]\ncmd = sleep 1\nnumprocesses 4\n")
    assert code == 78
    assert lines[0].startswith(f"error: {ini}:3: ")
