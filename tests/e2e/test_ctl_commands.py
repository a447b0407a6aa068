"""Every command against the real circusd, through circusctl and through raw ZeroMQ.

Each test checks the real effect (pids in /proc, signals a child recorded, files), not only
the reply. Tests marked with ``via`` run once through ``circusctl --json`` and once with a
hand-written JSON message on a DEALER socket.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from tests.conftest import pid_alive, proc_environ, python_cmd, wait_until
from tests.e2e.conftest import Daemon, wait_event
from tests.e2e.ctl_support import VIA, catches, children_of, ok, received, recorder, send

Start = Callable[..., Daemon]

SLEEP = python_cmd("import time; time.sleep(600)")


def sleeper(name: str, n: int = 1, extra: str = "") -> str:
    return f"[watcher:{name}]\ncmd = {SLEEP}\nnumprocesses = {n}\ngraceful_timeout = 5\n{extra}\n"


def live(d: Daemon, name: str, n: int) -> list[int]:
    """Wait until *name* has *n* processes, all alive in /proc; return their pids."""
    def check() -> list[int] | None:
        pids = d.pids(name)
        return pids if len(pids) == n and all(map(pid_alive, pids)) else None

    return wait_until(check, what=f"{n} live processes in {name}")


# -- read-only commands -------------------------------------------------------------------


@pytest.mark.parametrize("via", VIA)
def test_list_status_numprocesses_numwatchers(circusd: Start, via: str) -> None:
    d = circusd(sleeper("Web", 2) + sleeper("db", 1) + "autostart = false\n")
    pids = live(d, "web", 2)
    assert ok(send(d, via, ["list"], {"command": "list"}))["watchers"] == ["db", "web"]
    reply = ok(send(d, via, ["list", "WEB"], {"command": "list", "properties": {"name": "WEB"}}))
    assert sorted(reply["pids"]) == sorted(pids)
    reply = ok(send(d, via, ["listpids", "web"],
                    {"command": "listpids", "properties": {"name": "web"}}))
    assert sorted(reply["pids"]) == sorted(pids)
    assert ok(send(d, via, ["status"], {"command": "status"}))["statuses"] == {
        "Web": "active", "db": "stopped"}
    reply = send(d, via, ["status", "db"], {"command": "status", "properties": {"name": "db"}})
    assert reply["status"] == "stopped"
    assert ok(send(d, via, ["numprocesses"], {"command": "numprocesses"}))["numprocesses"] == 2
    reply = ok(send(d, via, ["numprocesses", "web"],
                    {"command": "numprocesses", "properties": {"name": "web"}}))
    assert reply["numprocesses"] == 2 and reply["watcher_name"] == "web"
    assert ok(send(d, via, ["numwatchers"], {"command": "numwatchers"}))["numwatchers"] == 2


def test_plain_output_of_read_only_commands(circusd: Start) -> None:
    d = circusd(sleeper("web", 2) + sleeper("db"))
    pids = live(d, "web", 2)
    assert d.ctl("list").stdout == "db,web\n"
    assert sorted(map(int, d.ctl("list", "web").stdout.strip().split(","))) == sorted(pids)
    assert d.ctl("status").stdout == "db: active\nweb: active\n"
    assert d.ctl("status", "web").stdout == "active\n"
    assert d.ctl("numprocesses").stdout == "3\n"
    assert d.ctl("numwatchers").stdout == "2\n"
    bad = d.ctl("status", "nope")
    assert bad.returncode == 3
    assert bad.stderr == "error: program nope not found\n"


# -- process count ------------------------------------------------------------------------


@pytest.mark.parametrize("via", VIA)
def test_incr_and_decr_start_and_stop_real_processes(circusd: Start, via: str) -> None:
    d = circusd(sleeper("web", 2))
    first = live(d, "web", 2)
    reply = ok(send(d, via, ["incr", "web", "3", "--waiting"],
                    {"command": "incr", "properties": {"name": "web", "nb": 3, "waiting": True}}))
    assert reply["numprocesses"] == 5
    after = live(d, "web", 5)
    assert set(first) < set(after)
    reply = ok(send(d, via, ["decr", "web", "2", "--waiting"],
                    {"command": "decr", "properties": {"name": "web", "nb": 2, "waiting": True}}))
    assert reply["numprocesses"] == 3
    # the oldest processes are the ones stopped
    assert not any(pid_alive(p) for p in first)
    assert len(live(d, "web", 3)) == 3
    # without waiting the new target is in the reply at once
    reply = ok(send(d, via, ["incr", "web"], {"command": "incr", "properties": {"name": "web"}}))
    assert reply["numprocesses"] == 4
    live(d, "web", 4)


def test_incr_of_a_singleton_changes_nothing(circusd: Start) -> None:
    d = circusd(sleeper("one", 1, "singleton = true"))
    pid = live(d, "one", 1)
    res = d.ctl("incr", "one")
    assert res.returncode == 0
    assert "Singleton" in res.stdout
    assert d.pids("one") == pid


def test_decr_below_zero_stops_at_zero(circusd: Start) -> None:
    d = circusd(sleeper("web", 1))
    pids = live(d, "web", 1)
    assert d.ctl("decr", "web", "5", "--waiting").stdout == "0\n"
    assert not pid_alive(pids[0])
    assert d.pids("web") == []


# -- lifecycle ------------------------------------------------------------------------------


@pytest.mark.parametrize("via", VIA)
def test_stop_start_restart_one_watcher(circusd: Start, via: str) -> None:
    d = circusd(sleeper("web", 2) + sleeper("db"))
    pids = live(d, "web", 2)
    db = live(d, "db", 1)
    reply = ok(send(d, via, ["stop", "web", "--waiting"],
                    {"command": "stop", "properties": {"name": "web", "waiting": True}}))
    assert reply.get("info") is None
    assert not any(map(pid_alive, pids))
    assert d.call({"command": "status", "properties": {"name": "web"}})["status"] == "stopped"
    reply = ok(send(d, via, ["start", "web", "--waiting"],
                    {"command": "start", "properties": {"name": "web", "waiting": True}}))
    started = live(d, "web", 2)
    assert sorted(reply["info"]["started"]) == sorted(started)
    reply = ok(send(d, via, ["restart", "web", "--waiting"],
                    {"command": "restart", "properties": {"name": "web", "waiting": True}}))
    assert sorted(reply["info"]["stopped"]) == sorted(started)
    new = live(d, "web", 2)
    assert not set(new) & set(started)
    assert not any(map(pid_alive, started))
    assert d.pids("db") == db  # untouched


@pytest.mark.parametrize("via", VIA)
def test_match_modes_select_watchers(circusd: Start, via: str) -> None:
    d = circusd(sleeper("web-1") + sleeper("web-2") + sleeper("db"))
    for name in ("web-1", "web-2", "db"):
        live(d, name, 1)
    ok(send(d, via, ["stop", "web-*", "--waiting"],
            {"command": "stop", "properties": {"name": "web-*", "waiting": True}}))
    assert d.call({"command": "status"})["statuses"] == {
        "web-1": "stopped", "web-2": "stopped", "db": "active"}
    ok(send(d, via, ["start", "web-[0-9]", "--match", "regex", "--waiting"],
            {"command": "start",
             "properties": {"name": "web-[0-9]", "match": "regex", "waiting": True}}))
    assert d.call({"command": "status"})["statuses"]["web-2"] == "active"
    reply = send(d, via, ["stop", "web-*", "--match", "simple"],
                 {"command": "stop", "properties": {"name": "web-*", "match": "simple"}})
    assert reply["status"] == "error" and reply["errno"] == 3
    assert "program web-* not found" in reply["reason"]
    ok(send(d, via, ["stop", "DB", "--match", "simple", "--waiting"],
            {"command": "stop", "properties": {"name": "DB", "match": "simple", "waiting": True}}))
    assert d.call({"command": "status"})["statuses"]["db"] == "stopped"


@pytest.mark.parametrize("via", VIA)
def test_stop_and_start_everything(circusd: Start, via: str) -> None:
    d = circusd(sleeper("a") + sleeper("b", 2))
    pids = live(d, "a", 1) + live(d, "b", 2)
    ok(send(d, via, ["stop", "--waiting"], {"command": "stop", "properties": {"waiting": True}}))
    assert not any(map(pid_alive, pids))
    assert set(d.call({"command": "status"})["statuses"].values()) == {"stopped"}
    assert d.proc.poll() is None  # circusd keeps running
    ok(send(d, via, ["start", "--waiting"], {"command": "start", "properties": {"waiting": True}}))
    live(d, "a", 1)
    live(d, "b", 2)


@pytest.mark.parametrize("via", VIA)
def test_restart_of_the_arbiter_keeps_the_daemon(circusd: Start, via: str) -> None:
    d = circusd(sleeper("a", 2))
    pids = live(d, "a", 2)
    ok(send(d, via, ["restart", "--waiting"],
            {"command": "restart", "properties": {"waiting": True}}))
    new = live(d, "a", 2)
    assert not set(new) & set(pids)
    assert d.proc.poll() is None
    assert psutil.Process(d.pid).is_running()


@pytest.mark.parametrize("via", VIA)
def test_reload_replaces_processes_gracefully(circusd: Start, via: str) -> None:
    d = circusd(sleeper("web", 2))
    old = live(d, "web", 2)
    reply = ok(send(d, via, ["reload", "web", "--waiting"],
                    {"command": "reload", "properties": {"name": "web", "waiting": True}}))
    new = live(d, "web", 2)
    assert sorted(reply["info"]["stopped"]) == sorted(old)
    assert sorted(reply["info"]["started"]) == sorted(new)
    assert not any(map(pid_alive, old))
    ok(send(d, via, ["reload", "web", "--sequential", "--waiting"],
            {"command": "reload",
             "properties": {"name": "web", "sequential": True, "waiting": True}}))
    newer = live(d, "web", 2)
    assert not set(newer) & set(new)
    ok(send(d, via, ["reload", "--terminate", "--waiting"],
            {"command": "reload", "properties": {"graceful": False, "waiting": True}}))
    assert not set(live(d, "web", 2)) & set(newer)


def test_reload_of_a_send_hup_watcher_signals_the_processes(circusd: Start,
                                                             short_tmp: Path) -> None:
    out = short_tmp / "sig"
    out.mkdir()
    d = circusd(f"[watcher:hup]\ncmd = {recorder(out)}\nnumprocesses = 2\nsend_hup = true\n")
    pids = live(d, "hup", 2)
    wait_until(lambda: all(catches(p, signal.SIGHUP) for p in pids), what="handlers")
    assert d.ctl("reload", "hup", "--waiting").returncode == 0
    assert sorted(d.pids("hup")) == sorted(pids)
    wait_until(lambda: all(received(out, p) == [signal.SIGHUP] for p in pids),
               what="SIGHUP in both processes")


# -- signals --------------------------------------------------------------------------------


@pytest.mark.parametrize("via", VIA)
def test_signal_reaches_the_processes(circusd: Start, short_tmp: Path, via: str) -> None:
    out = short_tmp / "sig"
    out.mkdir()
    d = circusd(f"[watcher:rec]\ncmd = {recorder(out)}\nnumprocesses = 2\n")
    pids = live(d, "rec", 2)
    wait_until(lambda: all(catches(p, signal.SIGUSR1) for p in pids), what="handlers")
    ok(send(d, via, ["signal", "rec", "USR1"],
            {"command": "signal", "properties": {"name": "rec", "signum": "USR1"}}))
    wait_until(lambda: all(received(out, p) == [signal.SIGUSR1] for p in pids),
               what="USR1 in every process")
    ok(send(d, via, ["signal", "rec", str(pids[0]), "12"],
            {"command": "signal", "properties": {"name": "rec", "pid": pids[0], "signum": 12}}))
    wait_until(lambda: received(out, pids[0]) == [signal.SIGUSR1, signal.SIGUSR2],
               what="USR2 in the first process")
    assert received(out, pids[1]) == [signal.SIGUSR1]
    bad = send(d, via, ["signal", "rec", "NOSUCH"],
               {"command": "signal", "properties": {"name": "rec", "signum": "NOSUCH"}})
    assert bad["status"] == "error" and bad["errno"] == 3


@pytest.mark.parametrize("via", VIA)
def test_signal_children_and_recursive(circusd: Start, short_tmp: Path, via: str) -> None:
    out = short_tmp / "sig"
    out.mkdir()
    d = circusd(f"[watcher:rec]\ncmd = {recorder(out, fork_child=True)}\n")
    (pid,) = live(d, "rec", 1)
    (child,) = wait_until(lambda: children_of(pid), what="the forked child")
    wait_until(lambda: catches(child, signal.SIGUSR1), what="the child's handler")
    ok(send(d, via, ["signal", "rec", "USR1", "--children"],
            {"command": "signal",
             "properties": {"name": "rec", "signum": "SIGUSR1", "children": True}}))
    wait_until(lambda: received(out, child) == [signal.SIGUSR1], what="USR1 in the child")
    assert received(out, pid) == []
    ok(send(d, via, ["signal", "rec", "USR2", "--recursive"],
            {"command": "signal",
             "properties": {"name": "rec", "signum": "usr2", "recursive": True}}))
    wait_until(lambda: received(out, pid) == [signal.SIGUSR2]
               and received(out, child) == [signal.SIGUSR1, signal.SIGUSR2],
               what="USR2 in the process and its child")
    ok(send(d, via, ["signal", "rec", str(pid), "HUP", "--childpid", str(child)],
            {"command": "signal", "properties": {"name": "rec", "pid": pid,
                                                 "childpid": child, "signum": 1}}))
    wait_until(lambda: received(out, child)[-1:] == [signal.SIGHUP], what="HUP in the child")
    assert received(out, pid) == [signal.SIGUSR2]


@pytest.mark.parametrize("via", VIA)
def test_kill_stops_a_process_and_the_watcher_replaces_it(circusd: Start, via: str) -> None:
    d = circusd(sleeper("web", 2))
    pids = live(d, "web", 2)
    ok(send(d, via, ["kill", "web", str(pids[0]), "--waiting"],
            {"command": "kill", "properties": {"name": "web", "pid": pids[0], "waiting": True}}))
    assert not pid_alive(pids[0])
    after = live(d, "web", 2)
    assert pids[1] in after and pids[0] not in after
    ok(send(d, via, ["kill", "web", "--signum", "KILL", "--graceful_timeout", "1", "--waiting"],
            {"command": "kill", "properties": {"name": "web", "signum": 9,
                                               "graceful_timeout": 1, "waiting": True}}))
    assert not any(map(pid_alive, after))
    assert not set(live(d, "web", 2)) & set(after)


# -- watchers at runtime ---------------------------------------------------------------------


@pytest.mark.parametrize("via", VIA)
def test_add_and_rm(circusd: Start, via: str) -> None:
    d = circusd(sleeper("web"))
    ok(send(d, via, ["add", "--start", "--waiting", "extra", *SLEEP.split(" ", 1)],
            {"command": "add", "properties": {"name": "extra", "cmd": SLEEP, "start": True,
                                              "waiting": True}}))
    (pid,) = live(d, "extra", 1)
    assert d.call({"command": "list"})["watchers"] == ["extra", "web"]
    ok(send(d, via, ["rm", "extra", "--waiting"],
            {"command": "rm", "properties": {"name": "extra", "waiting": True}}))
    assert not pid_alive(pid)
    assert d.call({"command": "list"})["watchers"] == ["web"]
    # created stopped without start
    ok(send(d, via, ["add", "idle", "sleep", "1"],
            {"command": "add", "properties": {"name": "idle", "cmd": "sleep 1"}}))
    assert d.call({"command": "status", "properties": {"name": "idle"}})["status"] == "stopped"
    dup = send(d, via, ["add", "web", "sleep", "1"],
               {"command": "add", "properties": {"name": "web", "cmd": "sleep 1"}})
    assert dup["status"] == "error" and dup["errno"] == 5


def test_add_with_options_and_args(circusd: Start) -> None:
    d = circusd(sleeper("web"))
    reply = d.call({"command": "add", "properties": {
        "name": "opts", "cmd": "sleep", "args": ["600"], "start": True, "waiting": True,
        "options": {"numprocesses": 2, "env": {"ANSWER": "42"}, "graceful_timeout": 2.5,
                    "rlimit_nofile": 100, "flapping.attempts": "3"}}})
    assert reply["status"] == "ok", reply
    pids = live(d, "opts", 2)
    assert proc_environ(pids[0]) == {"ANSWER": "42"}
    limits = Path(f"/proc/{pids[0]}/limits").read_text()
    assert any(line.startswith("Max open files") and " 100 " in line
               for line in limits.splitlines())
    got = d.call({"command": "get", "properties": {
        "name": "opts", "keys": ["graceful_timeout", "flapping.attempts", "args"]}})
    assert got["options"] == {"graceful_timeout": 2.5, "flapping.attempts": "3",
                              "args": ["600"]}
    bad = d.call({"command": "add", "properties": {
        "name": "bad", "cmd": "sleep 1", "options": {"numprocesses": "two"}}})
    assert bad["errno"] == 3 and "'numprocesses'" in bad["reason"]
    assert d.call({"command": "list"})["watchers"] == ["opts", "web"]


def test_rm_nostop_leaves_the_processes_running(circusd: Start) -> None:
    d = circusd(sleeper("web", 2))
    pids = live(d, "web", 2)
    try:
        res = d.ctl("rm", "web", "--nostop", "--waiting")
        assert res.returncode == 0, res.stderr
        assert d.call({"command": "list"})["watchers"] == []
        assert all(map(pid_alive, pids))
    finally:
        for pid in pids:
            if pid_alive(pid):
                os.killpg(pid, signal.SIGKILL)


# -- options --------------------------------------------------------------------------------


@pytest.mark.parametrize("via", VIA)
def test_get_options_globaloptions(circusd: Start, via: str) -> None:
    d = circusd(sleeper("web", 2, "stop_signal = INT\nflapping.window = 3"),
                circus_extra="check_delay = 2.5")
    reply = ok(send(d, via, ["get", "web", "numprocesses", "graceful_timeout", "stop_signal"],
                    {"command": "get", "properties": {
                        "name": "web",
                        "keys": ["numprocesses", "graceful_timeout", "stop_signal"]}}))
    assert reply["options"] == {"numprocesses": 2, "graceful_timeout": 5.0, "stop_signal": 2}
    options = ok(send(d, via, ["options", "web"],
                      {"command": "options", "properties": {"name": "web"}}))["options"]
    assert options["cmd"] == SLEEP and options["flapping.window"] == "3"
    assert {"numprocesses", "warmup_delay", "env", "respawn", "uid", "max_age"} <= set(options)
    glob = ok(send(d, via, ["globaloptions"], {"command": "globaloptions"}))["options"]
    assert glob["endpoint"] == d.endpoint and glob["pubsub_endpoint"] == d.pubsub
    assert glob["check_delay"] == 2.5
    one = ok(send(d, via, ["globaloptions", "endpoint"],
                  {"command": "globaloptions", "properties": {"option": "endpoint"}}))
    assert one["options"] == {"endpoint": d.endpoint}


def test_plain_output_of_get_and_options(circusd: Start) -> None:
    d = circusd(sleeper("web"))
    d.call({"command": "set", "properties": {"name": "web", "options": {
        "env": {"B": "2", "A": "1"}}, "waiting": True}})
    assert d.ctl("get", "web", "env", "numprocesses", "uid").stdout == (
        "env: A=1,B=2\nnumprocesses: 1\nuid: \n")
    lines = d.ctl("options", "web").stdout.splitlines()
    assert "graceful_timeout: 5.0" in lines and lines == sorted(lines)
    assert d.ctl("globaloptions", "check_delay").stdout.startswith("check_delay: ")


@pytest.mark.parametrize("via", VIA)
def test_set_applies_live_and_through_reload(circusd: Start, via: str) -> None:
    d = circusd(sleeper("web", 1))
    (pid,) = live(d, "web", 1)
    # live: numprocesses
    ok(send(d, via, ["set", "web", "numprocesses", "3", "--waiting"],
            {"command": "set", "properties": {"name": "web", "options": {"numprocesses": 3},
                                              "waiting": True}}))
    pids = live(d, "web", 3)
    assert pid in pids
    # live: graceful_timeout, a float
    ok(send(d, via, ["set", "web", "graceful_timeout", "2.5", "--waiting"],
            {"command": "set", "properties": {"name": "web",
                                              "options": {"graceful_timeout": 2.5},
                                              "waiting": True}}))
    assert sorted(d.pids("web")) == sorted(pids)  # no reload for that
    # through a reload: env, K=V on the command line
    ok(send(d, via, ["set", "web", "env", "K=V,K2=V2", "--waiting"],
            {"command": "set", "properties": {"name": "web",
                                              "options": {"env": {"K": "V", "K2": "V2"}},
                                              "waiting": True}}))
    new = live(d, "web", 3)
    assert not set(new) & set(pids)
    assert all(proc_environ(p) == {"K": "V", "K2": "V2"} for p in new)
    reply = ok(send(d, via, ["get", "web", "env", "graceful_timeout"],
                    {"command": "get", "properties": {"name": "web",
                                                      "keys": ["env", "graceful_timeout"]}}))
    assert reply["options"] == {"env": {"K": "V", "K2": "V2"}, "graceful_timeout": 2.5}
    if via == "zmq":
        bad = d.call({"command": "set", "properties": {"name": "web",
                                                        "options": {"stop_signal": "NOSUCH"}}})
        assert bad["status"] == "error" and bad["errno"] == 3 and "stop_signal" in bad["reason"]
    else:  # circusctl types the value itself and refuses it
        res = d.ctl("set", "web", "stop_signal", "NOSUCH")
        assert res.returncode == 2 and "stop_signal" in res.stderr


def test_set_refuses_unknown_keys_and_bad_values_before_applying(circusd: Start) -> None:
    d = circusd(sleeper("web", 1))
    pids = live(d, "web", 1)
    res = d.ctl("set", "web", "nosuchkey", "1")
    assert res.returncode == 2 and "unknown key 'nosuchkey'" in res.stderr
    reply = d.call({"command": "set", "properties": {"name": "web", "options": {
        "numprocesses": 4, "bogus": 1}}})
    assert reply["errno"] == 3 and "'bogus'" in reply["reason"]
    reply = d.call({"command": "set", "properties": {"name": "web", "options": {
        "numprocesses": 4, "graceful_timeout": "slow"}}})
    assert reply["errno"] == 3 and "'graceful_timeout'" in reply["reason"]
    reply = d.call({"command": "set", "properties": {"name": "web", "options": {
        "uid": "no-such-user-here"}}})
    assert reply["errno"] == 3 and "no user" in reply["reason"]
    reply = d.call({"command": "set", "properties": {"name": "web", "options": {
        "hooks.after_start": "no.such.module.fn"}}})
    assert reply["errno"] == 3 and "hooks.after_start" in reply["reason"]
    reply = d.call({"command": "set", "properties": {"name": "web", "options": {
        "stdout_stream.class": "NoSuchStream"}}})
    assert reply["errno"] == 3 and "stdout_stream" in reply["reason"]
    assert d.call({"command": "get", "properties": {"name": "web", "keys": [
        "numprocesses"]}})["options"] == {"numprocesses": 1}
    assert d.pids("web") == pids


# -- statistics -----------------------------------------------------------------------------


@pytest.mark.parametrize("via", VIA)
def test_stats_and_dstats(circusd: Start, via: str) -> None:
    d = circusd(sleeper("web", 2) + sleeper("db"))
    pids = live(d, "web", 2)
    live(d, "db", 1)
    infos = ok(send(d, via, ["stats"], {"command": "stats"}))["infos"]
    assert set(infos) == {"web", "db"}
    assert sorted(map(int, infos["web"])) == sorted(pids)
    one = ok(send(d, via, ["stats", "web"], {"command": "stats", "properties": {"name": "web"}}))
    assert one["name"] == "web" and sorted(map(int, one["info"])) == sorted(pids)
    info = one["info"][str(pids[0])]
    assert info["pid"] == pids[0]
    assert info["cmdline"] == os.path.basename(SLEEP.split()[0].strip("'"))
    assert info["username"] == psutil.Process(pids[0]).username()
    for key in ("cpu", "mem", "mem_info1", "mem_info2", "ctime", "nice", "age", "started",
                "wid", "children", "create_time"):
        assert key in info
    proc = ok(send(d, via, ["stats", "web", str(pids[1])],
                   {"command": "stats", "properties": {"name": "web", "process": pids[1]}}))
    assert proc["process"] == pids[1] and proc["info"]["pid"] == pids[1]
    me = ok(send(d, via, ["dstats"], {"command": "dstats"}))["info"]
    assert me["pid"] == d.pid and me["children"] == []


def test_plain_output_of_stats_and_dstats(circusd: Start) -> None:
    d = circusd(sleeper("web", 2))
    pids = live(d, "web", 2)
    lines = d.ctl("stats", "web").stdout.splitlines()
    assert lines[0] == "web:"
    header = lines[1].split()
    assert header == ["PID", "CMD", "USER", "NICE", "RSS", "VMS", "CPU%", "MEM%", "TIME"]
    assert sorted(int(line.split()[0]) for line in lines[2:]) == sorted(pids)
    rows = [line.split() for line in lines[2:]]
    assert all(len(row) == len(header) and row[1] == "python" for row in rows), lines
    # the columns line up under their header
    cpu = lines[1].index("CPU%")
    assert all(line[cpu - 1] == " " and line[cpu] != " " for line in lines[2:]), lines
    out = d.ctl("dstats").stdout.splitlines()
    assert out[0] == "Main Process:" and out[1].split()[0] == "PID"
    assert out[2].split()[0] == str(d.pid)


@pytest.mark.parametrize("via", VIA)
def test_listsockets_without_sockets(circusd: Start, via: str) -> None:
    d = circusd(sleeper("web"))
    assert ok(send(d, via, ["listsockets"], {"command": "listsockets"}))["sockets"] == []


def test_ipython_is_declined(circusd: Start) -> None:
    d = circusd(sleeper("web"))
    reply = d.call({"command": "ipython"})
    assert reply["status"] == "ok" and reply["shell"] is False
    assert d.ctl("ipython").returncode == 0


# -- reloadconfig -----------------------------------------------------------------------------


@pytest.mark.parametrize("via", VIA)
def test_reloadconfig_applies_the_difference(circusd: Start, via: str) -> None:
    d = circusd(sleeper("same") + sleeper("resized") + sleeper("changed") + sleeper("gone"))
    same = live(d, "same", 1)
    resized = live(d, "resized", 1)
    changed = live(d, "changed", 1)
    gone = live(d, "gone", 1)
    text = d.ini.read_text()
    text = text.replace(sleeper("resized"), sleeper("resized", 3))
    text = text.replace(sleeper("changed"), sleeper("changed", 1, "stop_signal = INT"))
    text = text.replace(sleeper("gone"), sleeper("new", 2))
    d.ini.write_text(text)
    ok(send(d, via, ["reloadconfig", "--waiting"],
            {"command": "reloadconfig", "properties": {"waiting": True}}))
    assert d.pids("same") == same
    assert set(resized) < set(live(d, "resized", 3))
    assert not set(live(d, "changed", 1)) & set(changed)
    assert not any(map(pid_alive, gone))
    live(d, "new", 2)
    assert d.call({"command": "list"})["watchers"] == ["changed", "new", "resized", "same"]


def test_reloadconfig_refuses_a_broken_file(circusd: Start) -> None:
    d = circusd(sleeper("web"))
    pids = live(d, "web", 1)
    d.ini.write_text(d.ini.read_text() + "\n[watcher:bad]\nnumprocesses = many\n")
    res = d.ctl("reloadconfig")
    assert res.returncode == 3
    assert "numprocesses" in res.stderr
    assert d.pids("web") == pids
    assert d.call({"command": "list"})["watchers"] == ["web"]


# -- quit --------------------------------------------------------------------------------------


@pytest.mark.parametrize("via", VIA)
def test_quit_stops_everything_and_exits(circusd: Start, via: str) -> None:
    d = circusd(sleeper("web", 2))
    pids = live(d, "web", 2)
    ok(send(d, via, ["quit", "--waiting"], {"command": "quit", "properties": {"waiting": True}}))
    assert d.proc.wait(timeout=20) == 0
    assert not any(map(pid_alive, pids))


# -- listen ------------------------------------------------------------------------------------


def test_listen_prints_events_as_they_come(circusd: Start) -> None:
    """`circusctl listen` finds the events endpoint through the control one."""
    from tests.e2e.conftest import CIRCUSCTL

    d = circusd(sleeper("web"))
    live(d, "web", 1)
    listener = subprocess.Popen(
        [*CIRCUSCTL, "--endpoint", d.endpoint, "listen", "watcher.web."],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        assert listener.stderr is not None and listener.stdout is not None
        assert f"listening to {d.endpoint}" in listener.stderr.readline().decode()
        # the control endpoint answers globaloptions: circusctl moves to the events endpoint
        assert f"its events endpoint {d.pubsub}" in listener.stderr.readline().decode()
        out = listener.stdout.fileno()
        os.set_blocking(out, False)
        buffer = bytearray()

        def spawned() -> bool:
            # the subscription reaches the publisher shortly after connecting: poke again
            d.call({"command": "incr", "properties": {"name": "web", "waiting": True}})
            with contextlib.suppress(BlockingIOError):
                buffer.extend(os.read(out, 65536))
            return b"watcher.web.spawn: " in buffer

        wait_until(spawned, what="a spawn event printed by circusctl listen", interval=0.2)
        line = next(x for x in buffer.decode().splitlines() if "spawn" in x)
        topic, _, payload = line.partition(": ")
        assert topic == "watcher.web.spawn"
        assert pid_alive(json.loads(payload)["process_pid"])
    finally:
        listener.send_signal(signal.SIGINT)
        assert listener.wait(timeout=10) == 0
        listener.stdout.close()  # type: ignore[union-attr]
        listener.stderr.close()  # type: ignore[union-attr]


def test_events_of_a_stop(circusd: Start) -> None:
    d = circusd(sleeper("web"))
    (pid,) = live(d, "web", 1)
    sub = d.subscribe("watcher.web.")
    try:
        d.call({"command": "stop", "properties": {"name": "web", "waiting": True}})
        wait_event(sub, lambda t, p: t == "watcher.web.kill" and p["process_pid"] == pid)
        wait_event(sub, lambda t, p: t == "watcher.web.stop")
    finally:
        sub.close()


EXTENDED = """\
def add(watcher, arbiter, hook_name, pid, stats, **kwargs):
    stats["seen_by_hook"] = pid
    return True
"""


@pytest.mark.parametrize("via", VIA)
def test_stats_extended_runs_the_hook(circusd: Start, short_tmp: Path, via: str) -> None:
    (short_tmp / "ctlstats.py").write_text(EXTENDED)
    d = circusd(sleeper("web", 1, "hooks.extended_stats = ctlstats.add"))
    (pid,) = live(d, "web", 1)
    reply = ok(send(d, via, ["stats", "--extended", "web"],
                    {"command": "stats", "properties": {"name": "web", "extended": True}}))
    assert reply["info"][str(pid)]["seen_by_hook"] == pid
    plain = ok(send(d, via, ["stats", "web"], {"command": "stats", "properties": {"name": "web"}}))
    assert "seen_by_hook" not in plain["info"][str(pid)]


def test_listen_is_not_a_control_command(circusd: Start) -> None:
    d = circusd(sleeper("web"))
    reply = d.call({"command": "listen", "properties": {"topics": ["watcher."]}})
    assert reply["errno"] == 3 and "use a pub/sub socket" in reply["reason"]
