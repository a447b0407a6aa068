"""``depends_on`` with the real circusd and real workers: starts that wait for what they
need (circus/startorder.py), what start, stop, rm, quit, add, set and reloadconfig do to
related watchers, ``circusctl wait`` and ``start --wait``, and circusd's READY=1 (and
``--daemon``'s report) once the watchers are ready."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from circus.kernel import CLOCK_TICKS, read_stat
from tests.conftest import pid_alive, python_cmd, wait_until
from tests.e2e.conftest import Daemon
from tests.e2e.ready_support import free_port, worker
from tests.e2e.test_circusd_notify import Manager, is_ready
from tests.e2e.test_daemon_mode import Launcher


def needs_port(port: int) -> str:
    """A worker that connects to 127.0.0.1:*port* as it starts and exits 1 if it cannot;
    once connected it prints ``connected`` (its ``ready = log:connected``)."""
    return python_cmd("import socket, sys, time; sock = socket.socket(); "
                      f"sys.exit(1) if sock.connect_ex(('127.0.0.1', {port})) else None; "
                      "sock.close(); print('connected', flush=True); time.sleep(600)")


def db_and_app(port: int, after: str = "2") -> str:
    """The issue's case: db listens *after* seconds after its spawn; app needs it."""
    return (f"[watcher:db]\ncmd = {worker('--after', after, '--listen', str(port))}\n"
            f"ready = tcp:127.0.0.1:{port}\nready_interval = 0.05\ngraceful_timeout = 5\n\n"
            f"[watcher:app]\ncmd = {needs_port(port)}\ndepends_on = db\n"
            "ready = log:connected\ngraceful_timeout = 5\n\n")


def details(d: Daemon, name: str) -> dict[str, Any]:
    reply = d.call({"command": "status", "properties": {"name": name, "details": True}})
    assert reply["status"] != "error", reply  # a watcher's status: its state
    return dict(reply["details"][name])


def statuses(d: Daemon) -> dict[str, str]:
    reply = d.call({"command": "status"})
    assert reply["status"] == "ok", reply
    return dict(reply["statuses"])


def in_order(text: str, *lines: str) -> bool:
    """True if each of *lines* is in *text*, each after the one before."""
    at = -1
    for line in lines:
        found = text.find(line, at + 1)
        if found < 0 or found < at:
            return False
        at = found
    return True


# -- start order that waits ----------------------------------------------------------------


def test_app_starts_once_after_db_listens(circusd: Callable[..., Daemon]) -> None:
    port = free_port()
    # cache and other (which needs it) have nothing to do with db: they do not wait for it
    d = circusd(db_and_app(port) + "[watcher:cache]\ncmd = sleep 600\npriority = -1\n\n"
                "[watcher:other]\ncmd = sleep 600\ndepends_on = cache\n")
    # during db's 2 s: db is starting (not ready), app has not been spawned at all
    wait_until(lambda: statuses(d)["other"] == "active", what="other to start", timeout=10)
    db, app = details(d, "db"), details(d, "app")
    assert db["health"] == "starting" and not db["processes"][0]["ready"], db
    assert app["health"] == "stopped" and app["processes"] == [], app
    assert "app: waiting for db" in d.log_text()

    result = d.ctl("wait", "app", timeout=30)
    assert (result.returncode, result.stdout.strip()) == (0, "ok"), result.stderr
    db, app = details(d, "db"), details(d, "app")
    assert app["restarts"] == 0 and len(app["processes"]) == 1, app
    assert db["processes"][0]["ready_after"] >= 2.0, db
    # app's one process was spawned after db was ready
    younger = db["processes"][0]["uptime"] - app["processes"][0]["uptime"]
    assert younger >= db["processes"][0]["ready_after"] - 0.05, (db, app)
    assert d.log_text().count("app: started 1 process(es)") == 1

    # a later readiness drop of db stops nothing: db's process dies and is replaced, app
    # keeps its process
    app_pid, db_pid = app["processes"][0]["pid"], db["processes"][0]["pid"]
    killed = d.call({"command": "kill", "properties": {"name": "db", "waiting": True}})
    assert killed["status"] == "ok", killed
    assert d.ctl("wait", "db", timeout=30).returncode == 0
    assert [p["pid"] for p in details(d, "db")["processes"]] != [db_pid]
    after = details(d, "app")
    assert [p["pid"] for p in after["processes"]] == [app_pid] and after["restarts"] == 0, (
        after, d.log_text())


def test_started_and_completed_conditions(circusd: Callable[..., Daemon],
                                          short_tmp: Path) -> None:
    done = str(short_tmp / "migrated")
    migrate = python_cmd(f"import pathlib, time; time.sleep(1); pathlib.Path({done!r}).touch()")
    app = python_cmd(f"import os, sys, time; os.path.exists({done!r}) or sys.exit(1); "
                     "time.sleep(600)")  # exits 1 if the migration has not run
    never = free_port()  # nothing listens there: cache is started, never ready
    d = circusd(f"[watcher:migrate]\ncmd = {migrate}\nrespawn = false\n\n"
                f"[watcher:cache]\ncmd = sleep 600\nready = tcp:127.0.0.1:{never}\n"
                "ready_interval = 0.2\n\n"
                f"[watcher:app]\ncmd = {app}\ndepends_on = cache:started, migrate:completed\n")
    result = d.ctl("wait", "app", timeout=30)
    assert result.returncode == 0, result.stderr
    started, cache = details(d, "app"), details(d, "cache")
    assert started["restarts"] == 0 and len(started["processes"]) == 1, started
    assert cache["processes"][0]["ready"] is False, cache
    assert statuses(d)["migrate"] == "stopped"
    # a migration that ended with 0 counts as ready for wait
    assert d.ctl("wait", "migrate").returncode == 0


def test_a_failed_migration_leaves_its_dependent_stopped(circusd: Callable[..., Daemon]
                                                         ) -> None:
    d = circusd("[watcher:migrate]\ncmd = sh -c 'exit 1'\nrespawn = false\n\n"
                "[watcher:app]\ncmd = sleep 600\ndepends_on = migrate:completed\n")
    wait_until(lambda: "[ERROR] app: not started: migrate ended with status 1"
               in d.log_text(), what="the error line naming why app is not started",
               timeout=20, detail=d.log_text)
    assert statuses(d) == {"migrate": "stopped", "app": "stopped"}
    assert d.pids("app") == []
    result = d.ctl("wait", "app")
    assert result.returncode == 3
    assert ("error: app is stopped: not started (migrate ended with status 1)"
            in result.stderr), result.stderr
    # starting app again runs the migration again (it did not complete), and fails alike
    reply = d.call({"command": "start", "properties": {"name": "app", "waiting": True}},
                   timeout=20)
    assert reply["status"] == "error", reply
    assert reply["reason"] == "app not started: migrate ended with status 1", reply


def test_a_fatal_dependency_leaves_its_dependent_stopped(circusd: Callable[..., Daemon]
                                                         ) -> None:
    d = circusd("[watcher:db]\ncmd = false\nready = notify\nmax_retry = 0\n\n"
                "[watcher:app]\ncmd = sleep 600\ndepends_on = db\n")
    line = "[ERROR] app: not started: db is fatal: 1 failed starts in a row (last: exit 1)"
    wait_until(lambda: line in d.log_text(), what="the error line naming why app is not "
               "started", timeout=20, detail=d.log_text)
    assert statuses(d) == {"db": "stopped", "app": "stopped"}
    # start app tries db again (a user's start clears fatal), which fails again
    reply = d.call({"command": "start", "properties": {"name": "app", "waiting": True}},
                   timeout=20)
    assert reply["status"] == "error", reply
    assert reply["reason"] == ("app not started: db is fatal: 1 failed starts in a row "
                               "(last: exit 1)"), reply
    assert d.log_text().count(line) == 2


# -- what operations do to related watchers ---------------------------------------------------


def test_start_stop_rm_and_quit_follow_the_dependencies(circusd: Callable[..., Daemon]
                                                        ) -> None:
    d = circusd("[watcher:db]\ncmd = sleep 600\nautostart = false\n\n"
                "[watcher:app]\ncmd = sleep 600\ndepends_on = db\nautostart = false\n\n"
                "[watcher:web]\ncmd = sleep 600\ndepends_on = app:started\n"
                "autostart = false\n")
    # start web: what it needs (app, and what app needs: db) is started first
    reply = d.call({"command": "start", "properties": {"name": "web", "waiting": True}},
                   timeout=20)
    assert reply["status"] == "ok" and sorted(reply["dependencies"]) == ["app", "db"], reply
    assert statuses(d) == {"db": "active", "app": "active", "web": "active"}
    assert in_order(d.log_text(), "db: started", "app: started", "web: started")

    # stop db: web and app cannot run without it, they stop first (deepest first)
    mark = len(d.log_text())
    result = d.ctl("stop", "db", "--waiting", timeout=20)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok (stopped first, as they depend on it: app, web)"
    assert statuses(d) == {"db": "stopped", "app": "stopped", "web": "stopped"}
    assert in_order(d.log_text()[mark:], "web: stopped", "app: stopped", "db: stopped")
    # the reply without waiting names them too
    assert d.call({"command": "start", "properties": {"name": "web", "waiting": True}},
                  timeout=20)["status"] == "ok"
    reply = d.call({"command": "stop", "properties": {"name": "app"}})
    assert reply["status"] == "ok" and reply["dependents"] == ["web"], reply
    wait_until(lambda: statuses(d) == {"db": "active", "app": "stopped", "web": "stopped"},
               what="app and web stopped, db still running", timeout=20)

    # rm of a watcher others depend on is refused, naming them
    result = d.ctl("rm", "db")
    assert result.returncode == 3
    assert result.stderr.strip() == ("error: cannot remove db: app depends on it "
                                     "(depends_on); remove it first or change its depends_on")
    reply = d.call({"command": "rm", "properties": {"name": "app", "waiting": True}})
    assert reply["status"] == "error" and reply["errno"] == 5, reply
    assert "web depends on it" in reply["reason"]
    assert sorted(statuses(d)) == ["app", "db", "web"]

    # stop (all) and quit: dependents before their dependencies
    assert d.call({"command": "start", "properties": {"name": "web", "waiting": True}},
                  timeout=20)["status"] == "ok"
    mark = len(d.log_text())
    assert d.ctl("stop", "--waiting", timeout=20).returncode == 0
    assert in_order(d.log_text()[mark:], "web: stopped", "app: stopped", "db: stopped")
    assert d.call({"command": "start", "properties": {"name": "web", "waiting": True}},
                  timeout=20)["status"] == "ok"
    mark = len(d.log_text())
    assert d.ctl("quit", "--waiting", timeout=20).returncode == 0
    d.proc.wait(timeout=30)
    assert in_order(d.log_text()[mark:], "web: stopped", "app: stopped", "db: stopped")


def test_stopping_a_dependency_ends_a_start_waiting_for_it(
        circusd: Callable[..., Daemon]) -> None:
    never = free_port()
    d = circusd(f"[watcher:db]\ncmd = sleep 600\nready = tcp:127.0.0.1:{never}\n"
                "ready_interval = 0.1\n\n"
                "[watcher:app]\ncmd = sleep 600\ndepends_on = db\n")
    assert statuses(d) == {"db": "active", "app": "stopped"}  # app waits for db
    result = d.ctl("stop", "db", "--waiting", timeout=20)
    assert result.returncode == 0, result.stderr
    wait_until(lambda: "[ERROR] app: not started: app is being stopped" in d.log_text()
               or "[ERROR] app: not started: db is being stopped" in d.log_text(),
               what="the waiting start of app to give up", timeout=10, detail=d.log_text)
    assert statuses(d) == {"db": "stopped", "app": "stopped"}
    assert d.pids("app") == []


def test_add_and_set_refuse_unknown_names_and_cycles(circusd: Callable[..., Daemon]) -> None:
    d = circusd("[watcher:a]\ncmd = sleep 600\nautostart = false\n\n"
                "[watcher:b]\ncmd = sleep 600\ndepends_on = a\nautostart = false\n")

    def add(name: str, depends_on: str, **extra: Any) -> dict[str, Any]:
        return d.call({"command": "add", "properties": {
            "name": name, "cmd": "sleep 600", "options": {"depends_on": depends_on},
            **extra}}, timeout=20)

    reply = add("x", "nobody")
    assert (reply["status"], reply["errno"]) == ("error", 3), reply
    assert reply["reason"] == "invalid value for 'depends_on': no watcher is named 'nobody'"
    reply = add("x", "x")
    assert reply["reason"] == "invalid value for 'depends_on': x cannot depend on itself"
    assert "x" not in statuses(d)

    reply = d.call({"command": "set", "properties": {
        "name": "a", "options": {"depends_on": "b"}, "waiting": True}})
    assert (reply["status"], reply["errno"]) == ("error", 3), reply
    assert reply["reason"] == ("invalid value for 'depends_on': a dependency cycle: "
                               "a -> b -> a")
    result = d.ctl("set", "a", "depends_on", "ghost, b:started")
    assert result.returncode == 3
    assert "invalid value for 'depends_on': no watcher is named 'ghost'" in result.stderr
    got = d.call({"command": "get", "properties": {"name": "a", "keys": ["depends_on"]}})
    assert got["options"]["depends_on"] == ""

    # accepted: a known name; add --start then starts what it needs first
    reply = add("c", "b : started", start=True, waiting=True)
    assert reply["status"] == "ok", reply
    assert statuses(d) == {"a": "active", "b": "active", "c": "active"}
    assert d.ctl("set", "a", "depends_on", "").returncode == 0


def test_reloadconfig_checks_the_graph_and_starts_added_watchers_in_order(
        circusd: Callable[..., Daemon]) -> None:
    d = circusd("[watcher:keep]\ncmd = sleep 600\n")
    body = d.ini.read_text()
    d.ini.write_text(body + "\n[watcher:x]\ncmd = sleep 600\ndepends_on = y\n\n"
                     "[watcher:y]\ncmd = sleep 600\ndepends_on = x\n")
    result = d.ctl("reloadconfig", "--waiting", timeout=20)
    assert result.returncode == 3
    assert str(d.ini) in result.stderr, result.stderr
    assert "[watcher:x] depends_on: a dependency cycle: x -> y -> x" in result.stderr
    assert list(statuses(d)) == ["keep"]

    port = free_port()
    d.ini.write_text(body + "\n" + db_and_app(port, after="1.5"))
    result = d.ctl("reloadconfig", "--waiting", timeout=30)
    assert result.returncode == 0, result.stderr
    assert d.ctl("wait", "app", timeout=30).returncode == 0
    app = details(d, "app")
    assert app["restarts"] == 0 and len(app["processes"]) == 1, app


# -- circusctl wait, start --wait ---------------------------------------------------------------


def test_wait_and_start_wait(circusd: Callable[..., Daemon]) -> None:
    never = free_port()
    d = circusd(f"[watcher:slow]\ncmd = sleep 600\nready = tcp:127.0.0.1:{never}\n"
                "ready_interval = 0.1\n\n"
                "[watcher:bad]\ncmd = false\nready = notify\nmax_retry = 1\n"
                "autostart = false\n\n"
                f"[watcher:late]\ncmd = {worker('--after', '1', '--notify')}\n"
                "ready = notify\nautostart = false\n")
    # a timeout says how far the watcher got
    began = time.monotonic()
    result = d.ctl("wait", "slow", timeout=1)
    assert 1.0 <= time.monotonic() - began < 15
    assert result.returncode == 3
    assert result.stderr.strip() == ("error: slow not ready within 1s "
                                     "(starting, 0 of 1 process ready)")

    # start --wait: late is ready 1 s after its spawn
    began = time.monotonic()
    result = d.ctl("start", "late", "--wait", timeout=30)
    assert (result.returncode, result.stdout.strip()) == (0, "ok"), result.stderr
    assert time.monotonic() - began >= 1.0
    assert all(p["ready"] for p in details(d, "late")["processes"])

    # a watcher that goes fatal: start --wait, then wait, say why
    result = d.ctl("start", "bad", "--wait", timeout=30)
    assert result.returncode == 3
    assert (result.stderr.strip()
            == "error: bad is fatal: 2 failed starts in a row (last: exit 1)"), result.stderr
    result = d.ctl("wait", "bad")
    assert result.returncode == 3 and "bad is fatal" in result.stderr

    # over the wire
    reply = d.call({"command": "wait", "properties": {"name": "late", "timeout": 5}})
    assert reply["status"] == "ok" and reply["waited"] < 1, reply
    reply = d.call({"command": "wait", "properties": {"name": "slow", "timeout": 0.3}})
    assert (reply["status"], reply["errno"]) == ("error", 5), reply
    assert reply["reason"].startswith("slow not ready within 0.3s"), reply
    reply = d.call({"command": "start", "properties": {"name": "slow", "wait": True,
                                                       "timeout": 0.3}})
    assert reply["status"] == "error" and "slow not ready within 0.3s" in reply["reason"]
    reply = d.call({"command": "wait", "properties": {"name": "late", "timeout": "soon"}})
    assert (reply["status"], reply["errno"]) == ("error", 3), reply
    assert "'timeout'" in reply["reason"]
    reply = d.call({"command": "wait", "properties": {"name": "nobody"}})
    assert reply["reason"] == "program nobody not found", reply

    # a stopped watcher: at once
    assert d.call({"command": "stop", "properties": {"name": "late", "waiting": True}},
                  timeout=20)["status"] == "ok"
    result = d.ctl("wait", "late")
    assert (result.returncode, result.stderr.strip()) == (3, "error: late is stopped")


def test_wait_right_after_a_start_waits_for_it(circusd: Callable[..., Daemon]) -> None:
    """``start`` replies before it runs, and app stays stopped while its start waits
    1.5 s for db: a ``wait`` sent meanwhile waits for that start, it does not fail."""
    port = free_port()
    d = circusd(db_and_app(port, after="1.5").replace(
        "graceful_timeout = 5\n", "graceful_timeout = 5\nautostart = false\n"))
    assert statuses(d) == {"db": "stopped", "app": "stopped"}
    assert d.ctl("start", "app").returncode == 0
    assert statuses(d)["app"] == "stopped"
    result = d.ctl("wait", "app", timeout=20)
    assert result.returncode == 0, result.stderr
    assert details(d, "app")["restarts"] == 0


# -- circusd's READY=1 and --daemon's report ------------------------------------------------


@pytest.fixture
def manager(short_tmp: Path) -> Iterator[Manager]:
    m = Manager(str(short_tmp / "notify"))
    yield m
    m.close()


def test_ready_is_sent_once_the_watchers_are_ready(
        circusd: Callable[..., Daemon], manager: Manager) -> None:
    port = free_port()
    d = circusd(db_and_app(port, after="1.5")
                + "[watcher:bad]\ncmd = false\nmax_retry = 0\n",
                env={"NOTIFY_SOCKET": manager.address}, wait=False)
    _, (pid, fields, at) = manager.wait_for(is_ready, "READY=1", timeout=30)
    assert pid == d.pid
    assert fields["STATUS"] == ("3 watchers, 2 processes; not ready: bad is fatal: "
                                "1 failed starts in a row (last: exit 1)"), fields
    db = read_stat(d.pids("db")[0])
    app = read_stat(d.pids("app")[0])
    assert db is not None and app is not None
    # db's process started at least 1.5 s before READY=1 (it listens 1.5 s after its
    # spawn); app's before it (start times are whole ticks since boot, rounded down)
    assert db.start / CLOCK_TICKS + 1.5 <= at + 0.02
    assert app.start <= int(at * CLOCK_TICKS)
    assert "circusd is up, but not every watcher is ready: bad is fatal" in d.log_text()


def _status_details(endpoint: str, name: str) -> dict[str, Any]:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    try:
        sock.connect(endpoint)
        sock.send(json.dumps({"id": uuid.uuid4().hex, "command": "status", "properties": {
            "name": name, "details": True}}).encode())
        assert sock.poll(10_000), f"no answer on {endpoint}"
        return dict(json.loads(sock.recv())["details"][name])
    finally:
        sock.close()
        ctx.term()


def test_daemon_returns_once_the_watchers_are_ready(short_tmp: Path) -> None:
    launcher = Launcher(short_tmp)
    try:
        port = free_port()
        ini = launcher.ini("r", db_and_app(port, after="1.5"))
        began = time.monotonic()
        result = launcher.run(ini, short_tmp / "r.pid")
        assert result.returncode == 0, result.stderr
        assert time.monotonic() - began >= 1.5
        endpoint = f"ipc://{short_tmp}/r.c"
        db, app = _status_details(endpoint, "db"), _status_details(endpoint, "app")
        assert db["processes"][0]["ready"] is True, db
        assert len(app["processes"]) == 1 and app["processes"][0]["ready"], app
        assert all(pid_alive(p["pid"]) for p in db["processes"] + app["processes"])
    finally:
        launcher.stop()
