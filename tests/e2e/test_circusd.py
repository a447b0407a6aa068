"""circusd as a subprocess: config, signals, exit codes, pidfile, logs, events."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    PYTHON,
    pid_alive,
    proc_cmdline,
    proc_environ,
    stays_true,
    wait_until,
)
from tests.e2e.conftest import CIRCUSD, Daemon, recv_event, wait_event

CHILD = str(Path(__file__).parent.parent / "fixtures" / "child.py")


def _limits(pid: int, name: str) -> list[str]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith(name):
            return line[len(name):].split()
    raise KeyError(name)


def test_every_watcher_runs_and_sigterm_leaves_no_child(circusd: Any) -> None:
    d: Daemon = circusd(
        "[watcher:a]\ncmd = sleep 3601\nnumprocesses = 3\n"
        "[watcher:b]\ncmd = sleep 3602\nnumprocesses = 2\n"
    )
    a, b = d.pids("a"), d.pids("b")
    assert len(a) == 3 and len(b) == 2
    wait_until(lambda: all(proc_cmdline(p) for p in a + b), what="exec")
    assert all(proc_cmdline(p) == ["sleep", "3601"] for p in a)
    assert all(proc_cmdline(p) == ["sleep", "3602"] for p in b)
    # circusd is their parent
    assert all(Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[1] == str(d.pid)
               for p in a + b)
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=30) == 0
    assert not [p for p in a + b if pid_alive(p)]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT])
def test_int_and_quit_stop_everything_too(circusd: Any, sig: int) -> None:
    d = circusd("[watcher:a]\ncmd = sleep 3600\nnumprocesses = 2\n")
    pids = d.pids("a")
    d.proc.send_signal(sig)
    assert d.proc.wait(timeout=30) == 0
    assert not [p for p in pids if pid_alive(p)]


def test_a_child_ignoring_sigterm_is_killed_after_graceful_timeout(circusd: Any,
                                                                    tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    d = circusd(
        f"[watcher:stubborn]\ncmd = {PYTHON} {CHILD} --ignore-term --spawn-child "
        f"--child-ignores-term --pidfile {pidfile}\ngraceful_timeout = 1\n"
    )
    pid, grandchild = map(int, wait_until(lambda: pidfile.exists() and pidfile.read_text(),
                                          what="the child").split())
    start = time.monotonic()
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=30) == 0
    elapsed = time.monotonic() - start
    assert 0.9 < elapsed < 10
    assert not pid_alive(pid) and not pid_alive(grandchild)
    assert "ignored SIGTERM for 1.0s, sending SIGKILL" in d.log_text()


def test_killed_child_is_replaced_without_waiting_for_check_delay(circusd: Any) -> None:
    d = circusd("[watcher:a]\ncmd = sleep 3600\nnumprocesses = 4\n",
                circus_extra="check_delay = 60")
    sub = d.subscribe("watcher.a.")
    victim = d.pids("a")[0]
    os.kill(victim, signal.SIGKILL)
    topic, reap = wait_event(sub, lambda t, p: t.endswith(".reap"))
    assert reap == {"process_pid": victim, "exit_code": -9, "time": reap["time"]}
    topic, spawn = recv_event(sub)
    assert topic == "watcher.a.spawn"
    assert spawn["time"] - reap["time"] < 0.5
    new = spawn["process_pid"]
    assert pid_alive(new) and new in d.pids("a") and victim not in d.pids("a")


def test_bug_19_check_delay_zero_still_respawns(circusd: Any) -> None:
    """OPTIONS.md §10 bug 19: with check_delay <= 0, dead children were never replaced."""
    d = circusd("[watcher:a]\ncmd = sleep 3600\n", circus_extra="check_delay = 0")
    victim = d.pids("a")[0]
    os.kill(victim, signal.SIGKILL)
    new = wait_until(lambda: [p for p in d.pids("a") if p != victim], what="a replacement")
    assert pid_alive(new[0]) and not pid_alive(victim)


def test_sighup_reloads_gracefully(circusd: Any) -> None:
    d = circusd("[watcher:a]\ncmd = sleep 3600\nnumprocesses = 2\n")
    old = d.pids("a")
    sub = d.subscribe("watcher.a.reload")
    d.proc.send_signal(signal.SIGHUP)
    recv_event(sub, timeout=15)
    new = d.pids("a")
    assert len(new) == 2 and not set(new) & set(old)
    assert not [p for p in old if pid_alive(p)]
    assert d.proc.poll() is None


def test_sigusr1_does_not_kill_circusd(circusd: Any) -> None:
    """OPTIONS.md §10 bug 15: SIGUSR1 used to kill circusd and orphan the children."""
    d = circusd("[watcher:a]\ncmd = sleep 3600\n")
    pids = d.pids("a")
    d.proc.send_signal(signal.SIGUSR1)
    # circusd logs the signal once handled; if SIGUSR1 killed it, it exits instead
    wait_until(lambda: d.proc.poll() is not None or "got SIGUSR1: ignored" in d.log_text(),
               what="circusd to handle SIGUSR1")
    assert d.proc.poll() is None
    assert d.pids("a") == pids


def test_sigterm_during_a_long_stop_still_quits(circusd: Any, tmp_path: Path) -> None:
    """OPTIONS.md §10 bug 15: a TERM that arrives while a command runs is not dropped."""
    pidfile = tmp_path / "pid"
    d = circusd(f"[watcher:slow]\ncmd = {PYTHON} {CHILD} --ignore-term --pidfile {pidfile}\n"
                "graceful_timeout = 2\n")
    wait_until(pidfile.exists, what="the child")
    assert d.call({"command": "stop", "properties": {"name": "slow"}})["status"] == "ok"
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(timeout=30) == 0


def test_priority_order_and_env_sections(circusd: Any) -> None:
    d = circusd(
        "[watcher:first]\ncmd = sleep 3600\npriority = 10\n"
        "[watcher:second]\ncmd = sleep 3600\npriority = 1\n"
        "[env]\nGLOBAL = g\n[env:sec*]\nONLY = second\n"
        "[watcher:third]\ncmd = sleep 3600\nenv = INLINE=yes\n"
    )
    first, second, third = d.pids("first")[0], d.pids("second")[0], d.pids("third")[0]
    assert os.stat(f"/proc/{first}").st_mtime <= os.stat(f"/proc/{second}").st_mtime
    wait_until(lambda: proc_cmdline(second) and proc_cmdline(third), what="exec")
    assert proc_environ(second) == {"GLOBAL": "g", "ONLY": "second"}
    assert proc_environ(third) == {"GLOBAL": "g", "INLINE": "yes"}


def test_includes(circusd: Any, short_tmp: Path) -> None:
    (short_tmp / "conf.d").mkdir()
    (short_tmp / "conf.d" / "extra.ini").write_text("[watcher:included]\ncmd = sleep 3600\n")
    d = circusd("[watcher:main]\ncmd = sleep 3600\n",
                circus_extra=f"include_dir = {short_tmp / 'conf.d'}")
    assert len(d.pids("included")) == 1


# -- configuration errors: exit 78 with file:line ---------------------------------------------


def _run_circusd(ini: Path, *args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CIRCUSD, *args, str(ini)], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize(
    ("body", "line", "needle"),
    [
        ("[watcher:w]\ncmd = sleep 1\nnumprocesses = lots\n", 3, "numprocesses"),
        ("[watcher:w]\ncmd = sleep 1\nstop_signal = SIGNOPE\n", 3, "stop_signal"),
        ("[watcher:w]\ncmd = sleep 1\nrlimit_nofiles = 10\n", 3, "rlimit_nofiles"),
        ("[watcher:w]\ncmd = sleep 1\nsingleton = true\nnumprocesses = 2\n", None,
         "singleton"),
        ("[watcher:w]\nnumprocesses = 2\n", None, "cmd"),
        ("[watcher:w]\ncmd = sleep 1\nthis line has no delimiter\n", 3, "delimiter"),
        ("[watcher:w]\ncmd = sleep 1\nenv = A=1, oops\n", 3, "env"),
    ],
)
def test_a_config_that_cannot_be_used_exits_78_naming_file_and_line(
    short_tmp: Path, body: str, line: int | None, needle: str
) -> None:
    ini = short_tmp / "bad.ini"
    ini.write_text(f"[circus]\nendpoint = ipc://{short_tmp}/c\n" + body)
    result = _run_circusd(ini)
    assert result.returncode == 78, result.stderr
    message = result.stderr.strip()
    assert str(ini) in message and needle in message
    assert "[watcher:w]" in message or "delimiter" in message
    if line is not None:
        assert f"{ini}:{line + 2}" in message
    assert message.count("\n") == 0  # one line, no traceback


def test_a_hook_that_cannot_be_imported_is_a_config_error(short_tmp: Path) -> None:
    ini = short_tmp / "bad.ini"
    ini.write_text(f"[circus]\nendpoint = ipc://{short_tmp}/c\n"
                   "[watcher:w]\ncmd = sleep 1\nhooks.before_start = no.such.module.fn\n")
    result = _run_circusd(ini)
    assert result.returncode == 78
    assert f"{ini}:5" in result.stderr and "hooks.before_start" in result.stderr


def test_missing_config_file(short_tmp: Path) -> None:
    result = _run_circusd(short_tmp / "nope.ini")
    assert result.returncode == 78
    assert "nope.ini" in result.stderr


def test_no_config_prints_usage_and_version() -> None:
    result = subprocess.run(CIRCUSD, capture_output=True, text=True, timeout=20)
    assert result.returncode == 2 and "usage: circusd" in result.stderr
    assert result.stdout == "" and "configuration file" in result.stderr
    from circus import __version__

    result = subprocess.run([*CIRCUSD, "--version"], capture_output=True, text=True,
                            timeout=20)
    assert result.returncode == 0 and result.stdout.strip() == __version__


def test_an_endpoint_in_use_is_reported(circusd: Any, short_tmp: Path) -> None:
    d = circusd("[watcher:a]\ncmd = sleep 3600\n")
    ini = short_tmp / "second.ini"
    port_user = f"[circus]\nendpoint = tcp://127.0.0.1:0\npubsub_endpoint = {d.pubsub}\n"
    ini.write_text(port_user + "[watcher:b]\ncmd = sleep 3600\n")
    # a TCP port another program holds: bind one and ask circusd for it (a live ipc
    # endpoint is refused too: tests/e2e/test_daemon_mode.py)
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    port = s.getsockname()[1]
    try:
        ini.write_text(f"[circus]\nendpoint = tcp://127.0.0.1:{port}\n"
                       f"pubsub_endpoint = ipc://{short_tmp}/other\n"
                       "[watcher:b]\ncmd = sleep 3600\n")
        result = _run_circusd(ini)
    finally:
        s.close()
    assert result.returncode == 1
    assert f"tcp://127.0.0.1:{port}" in result.stdout + result.stderr


# -- command line: pidfile, logs, daemon ---------------------------------------------------------


def test_pidfile_is_written_and_removed(circusd: Any, short_tmp: Path) -> None:
    pidfile = short_tmp / "circusd.pid"
    d = circusd("[watcher:a]\ncmd = sleep 3600\n", args=("--pidfile", str(pidfile)))
    assert pidfile.read_text() == f"{d.pid}\n"
    assert d.stop() == 0
    assert not pidfile.exists()


def test_a_live_pidfile_refuses_a_second_daemon(circusd: Any, short_tmp: Path) -> None:
    pidfile = short_tmp / "circusd.pid"
    d = circusd("[watcher:a]\ncmd = sleep 3600\n", args=("--pidfile", str(pidfile)))
    ini = short_tmp / "other.ini"
    ini.write_text(f"[circus]\nendpoint = ipc://{short_tmp}/o1\npubsub_endpoint = "
                   f"ipc://{short_tmp}/o2\n[watcher:x]\ncmd = sleep 3600\n")
    result = _run_circusd(ini, "--pidfile", str(pidfile))
    assert result.returncode == 1
    assert str(d.pid) in result.stdout + result.stderr
    assert pidfile.read_text() == f"{d.pid}\n"


def test_log_output_file_and_level(circusd: Any, short_tmp: Path) -> None:
    logfile = short_tmp / "out.log"
    d = circusd("[watcher:a]\ncmd = sleep 3600\n",
                args=("--log-output", str(logfile), "--log-level", "DEBUG"))
    wait_until(lambda: logfile.exists() and "arbiter now waiting" in logfile.read_text(),
               what="the log file")
    text = logfile.read_text()
    assert f"circus[{d.pid}] [INFO]" in text
    assert "[DEBUG]" in text
    assert d.log_text() == ""  # nothing on stdout when logging to a file


def test_logoutput_dash_means_stdout(short_tmp: Path) -> None:
    """OPTIONS.md §10 bug 20: '-' logs to stdout, not stderr; a bogus level is refused."""
    ini = short_tmp / "c.ini"
    ini.write_text(f"[circus]\nendpoint = ipc://{short_tmp}/c\npubsub_endpoint = "
                   f"ipc://{short_tmp}/p\nloglevel = bogus\n[watcher:a]\ncmd = sleep 3600\n")
    result = _run_circusd(ini)
    assert result.returncode == 78 and "loglevel" in result.stderr


def test_logger_config_json(circusd: Any, short_tmp: Path) -> None:
    logfile = short_tmp / "json.log"
    conf = short_tmp / "logging.json"
    conf.write_text(json.dumps({
        "version": 1,
        "formatters": {"plain": {"format": "JSONCONF %(levelname)s %(message)s"}},
        "handlers": {"f": {"class": "logging.FileHandler", "filename": str(logfile),
                           "formatter": "plain"}},
        "root": {"level": "INFO", "handlers": ["f"]},
    }))
    circusd("[watcher:a]\ncmd = sleep 3600\n", args=("--logger-config", str(conf)))
    wait_until(lambda: logfile.exists() and "JSONCONF INFO" in logfile.read_text(),
               what="the configured log")


def test_daemon_mode(short_tmp: Path) -> None:
    ini = short_tmp / "c.ini"
    pidfile = short_tmp / "d.pid"
    ini.write_text(f"[circus]\nendpoint = ipc://{short_tmp}/c\npubsub_endpoint = "
                   f"ipc://{short_tmp}/p\n[watcher:a]\ncmd = sleep 3600\n")
    result = _run_circusd(ini, "--daemon", "--pidfile", str(pidfile))
    assert result.returncode == 0
    pid = int(wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(),
                         what="the daemon's pidfile"))
    try:
        assert pid_alive(pid)
        assert os.getsid(pid) != os.getsid(0)  # detached from our session
        wait_until(lambda: os.path.exists(f"{short_tmp}/c"), what="the endpoint")
    finally:
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not pid_alive(pid), what="the daemon to exit", timeout=30)
    assert not pidfile.exists()


def test_nofile_soft_limit_is_raised_to_the_hard_limit(circusd: Any) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
        d = circusd("[watcher:a]\ncmd = sleep 3600\n")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    soft_d, hard_d = _limits(d.pid, "Max open files")[:2]
    assert soft_d == hard_d


def test_ipc_endpoints_are_private(circusd: Any) -> None:
    d = circusd("[watcher:a]\ncmd = sleep 3600\n")
    for endpoint in (d.endpoint, d.pubsub):
        assert os.stat(endpoint[6:]).st_mode & 0o777 == 0o600


def test_events_topics_and_payloads(circusd: Any) -> None:
    d = circusd("[watcher:Web App]\ncmd = sleep 3600\nnumprocesses = 1\n")
    sub = d.subscribe("watcher.")
    assert d.call({"command": "incr", "properties": {"name": "web app", "waiting": True}}
                  )["numprocesses"] == 2
    topic, spawn = recv_event(sub)
    assert topic == "watcher.web_app.spawn" and set(spawn) == {"process_pid", "time"}
    d.call({"command": "stop", "properties": {"name": "web app", "waiting": True}})
    seen: list[tuple[str, dict[str, Any]]] = []
    while not seen or seen[-1][0] != "watcher.web_app.stop":
        seen.append(recv_event(sub))
    kinds = [t.rsplit(".", 1)[1] for t, _ in seen]
    assert kinds.count("kill") == 2 and kinds.count("reap") == 2
    assert all(p["exit_code"] == -15 for t, p in seen if t.endswith(".reap"))


def test_idle_circusd_uses_almost_no_cpu(circusd: Any) -> None:
    d = circusd("[watcher:a]\ncmd = sleep 3600\nnumprocesses = 20\n")
    import psutil

    proc = psutil.Process(d.pid)
    before = sum(proc.cpu_times()[:2])
    started = time.monotonic()
    stays_true(lambda: d.proc.poll() is None, for_=2.0, what="circusd running", interval=0.1)
    used = sum(proc.cpu_times()[:2]) - before
    assert used / (time.monotonic() - started) < 0.01  # under 1% of a core


def test_autostart_false_leaves_the_watcher_stopped_until_asked(circusd: Any) -> None:
    d = circusd("[watcher:later]\ncmd = sleep 3600\nautostart = false\n"
                "[watcher:now]\ncmd = sleep 3600\n")
    assert d.call({"command": "status", "properties": {"name": "later"}})["status"] == "stopped"
    assert d.pids("later") == [] and len(d.pids("now")) == 1
    d.call({"command": "start", "properties": {"name": "later", "waiting": True}})
    pids = d.pids("later")
    assert len(pids) == 1 and pid_alive(pids[0])


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_uid_gid_and_working_dir(circusd: Any, short_tmp: Path) -> None:
    import pwd

    nobody = pwd.getpwnam("nobody")
    d = circusd(f"[watcher:w]\ncmd = sleep 3600\nuid = nobody\nworking_dir = {short_tmp}\n"
                "umask = 077\n")
    pid = d.pids("w")[0]
    wait_until(lambda: proc_cmdline(pid), what="exec")
    status = Path(f"/proc/{pid}/status").read_text()
    assert f"Uid:\t{nobody.pw_uid}" in status and f"Gid:\t{nobody.pw_gid}" in status
    assert "Umask:\t0077" in status
    assert os.readlink(f"/proc/{pid}/cwd") == str(short_tmp)


def test_config_warnings_reach_the_configured_log(circusd: Any, short_tmp: Path) -> None:
    logfile = short_tmp / "warn.log"
    circusd("[watcher:a]\ncmd = sleep 3600\n[unknown-section]\nx = 1\n",
            args=("--log-output", str(logfile)))
    wait_until(lambda: logfile.exists() and "unknown-section" in logfile.read_text(),
               what="the loader's warning in the log file")


def test_an_unusable_ini_logger_config_exits_78(short_tmp: Path) -> None:
    conf = short_tmp / "logging.ini"
    conf.write_text("[loggers]\nkeys = root\n")
    ini = short_tmp / "c.ini"
    ini.write_text(f"[circus]\nendpoint = ipc://{short_tmp}/c\npubsub_endpoint = "
                   f"ipc://{short_tmp}/p\nloggerconfig = {conf}\n[watcher:a]\ncmd = sleep 1\n")
    result = _run_circusd(ini)
    assert result.returncode == 78 and "loggerconfig" in result.stderr


def test_a_second_daemon_cannot_steal_an_ipc_endpoint(circusd: Any, short_tmp: Path) -> None:
    d = circusd("[watcher:a]\ncmd = sleep 3600\n")
    ini = short_tmp / "thief.ini"
    ini.write_text(f"[circus]\nendpoint = {d.endpoint}\npubsub_endpoint = ipc://{short_tmp}/t\n"
                   "[watcher:b]\ncmd = sleep 3600\n")
    result = _run_circusd(ini)
    assert result.returncode == 1 and "another process is listening" in result.stdout
    assert d.call({"command": "status"})["statuses"] == {"a": "active"}


@pytest.mark.parametrize("endpoint", ["tcp://0.0.0.0:5555", "tcp://*:5555"])
def test_a_remote_endpoint_needs_explicit_consent(short_tmp: Path, endpoint: str) -> None:
    ini = short_tmp / "c.ini"
    ini.write_text(f"[circus]\nendpoint = {endpoint}\n[watcher:a]\ncmd = sleep 1\n")
    result = _run_circusd(ini)
    assert result.returncode == 78
    assert f"{ini}:2" in result.stderr and "allow_unauthenticated_remote" in result.stderr
