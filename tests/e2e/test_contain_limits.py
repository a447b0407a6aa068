"""Bounded targets and interruptible spawning, against the real circusd.

A target over ``max_processes`` (the watcher's or the daemon's) is refused at every door
with a reply naming the limit, and nothing is spawned; a new target or a stop reaches a
spawn burst of thousands within 100 ms; ``quit`` in the middle of a burst leaves nothing.

The figures (latency of the new target, processes left after quit) are printed; run with
``-s`` to see them.
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import zmq

from tests.conftest import pid_alive, proc_cmdline, stays_true, wait_until
from tests.e2e.conftest import CIRCUSD, Daemon

BURST = 2000
# The bound of the brief: a new target or a stop takes effect within this many seconds.
WITHIN = 0.1


class SpawnLog:
    """Every ``spawn`` event of one watcher, read by a thread as they come.

    The thread alone uses the SUB socket once it is handed over; it reads continuously so
    that no event waits in ZeroMQ's queues (which would drop some past their high-water
    mark).
    """

    def __init__(self, sock: zmq.Socket[Any]) -> None:
        self._sock = sock
        self.events: list[tuple[int, float]] = []  # (pid, spawn time in circusd)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._sock.poll(20):
                continue
            _topic, body = self._sock.recv_multipart()
            payload = json.loads(body)
            with self._lock:
                self.events.append((int(payload["process_pid"]), float(payload["time"])))

    def count(self) -> int:
        with self._lock:
            return len(self.events)

    def snapshot(self) -> list[tuple[int, float]]:
        with self._lock:
            return list(self.events)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _spawn_log(d: Daemon, name: str) -> SpawnLog:
    return SpawnLog(d.subscribe(f"watcher.{name}.spawn"))


def _marker() -> str:
    """A sleep argument no other process has: ``sleep 600.<digits>``."""
    return f"600.{uuid.uuid4().int % 10**9:09d}"


def _running(marker: str) -> list[int]:
    """Every process on the host that runs ``sleep <marker>`` (found in /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and proc_cmdline(int(entry))[-1:] == [marker] and pid_alive(
                int(entry)):
            found.append(int(entry))
    return found


def _ok(reply: dict[str, Any]) -> dict[str, Any]:
    assert reply["status"] == "ok", reply
    return reply


def _numprocesses(d: Daemon, name: str) -> int:
    reply = _ok(d.call({"command": "get", "properties": {"name": name,
                                                          "keys": ["numprocesses"]}}))
    return int(reply["options"]["numprocesses"])


# -- refused targets ---------------------------------------------------------------------


def test_a_huge_incr_is_refused_naming_the_limit_and_nothing_spawns(
        circusd: Any, workers: list[int]) -> None:
    marker = _marker()
    d: Daemon = circusd(f"[watcher:w]\ncmd = sleep {marker}\n")
    wait_until(lambda: len(d.pids("w")) == 1, what="the first process")
    before = d.pids("w")
    workers.extend(before)
    spawns = _spawn_log(d, "w")
    try:
        reply = d.call({"command": "incr", "properties": {"name": "w", "nb": 1000000}})
        assert reply["status"] == "error", reply
        found = re.search(
            r"numprocesses 1000001 is over the limit of (\d+) processes for all watchers "
            r"\(\[circus\] max_processes, from (RLIMIT_NPROC|kernel\.pid_max) (\d+)\); "
            r"raise \[circus\] max_processes", reply["reason"])
        assert found, reply["reason"]
        ceiling, source, value = int(found[1]), found[2], int(found[3])
        if source == "RLIMIT_NPROC":
            assert value == resource.getrlimit(resource.RLIMIT_NPROC)[0]
        else:
            assert value == int(Path("/proc/sys/kernel/pid_max").read_text())
        assert 1 <= ceiling < value
        ctl = d.ctl("incr", "w", "1000000")
        assert ctl.returncode != 0 and "max_processes" in ctl.stdout + ctl.stderr, ctl
        stays_true(lambda: spawns.count() == 0, for_=0.5, what="no spawn after the refusal")
        assert _numprocesses(d, "w") == 1
        assert d.pids("w") == before
        assert _running(marker) == before
    finally:
        spawns.close()


def test_both_ceilings_refuse_incr_and_set_and_lowering_is_always_allowed(
        circusd: Any, workers: list[int]) -> None:
    d: Daemon = circusd("[watcher:w]\ncmd = sleep 600\nnumprocesses = 2\n"
                        "[watcher:v]\ncmd = sleep 600\nnumprocesses = 3\n",
                        circus_extra="max_processes = 10")
    wait_until(lambda: len(d.pids("w")) == 2 and len(d.pids("v")) == 3,
               what="both watchers started")
    workers.extend(d.pids("w") + d.pids("v"))
    reply = d.call({"command": "incr", "properties": {"name": "w", "nb": 6}})
    assert reply["status"] == "error"
    assert reply["reason"] == (
        "numprocesses 8 for 'w' would bring all watchers to 11 processes, over the limit "
        "of 10 ([circus] max_processes, set in the configuration); raise [circus] "
        "max_processes to allow more"), reply
    reply = d.call({"command": "set", "properties": {"name": "w",
                                                     "options": {"numprocesses": 8}}})
    assert reply["status"] == "error" and "over the limit of 10" in reply["reason"], reply
    assert _numprocesses(d, "w") == 2
    _ok(d.call({"command": "incr", "properties": {"name": "w", "nb": 5, "waiting": True}}))
    assert len(d.pids("w")) == 7
    workers.extend(d.pids("w"))
    # the watcher's own ceiling: below its numprocesses is refused, then it binds
    reply = d.call({"command": "set", "properties": {"name": "w",
                                                     "options": {"max_processes": 4}}})
    assert reply["status"] == "error" and "max_processes" in reply["reason"], reply
    _ok(d.call({"command": "decr", "properties": {"name": "w", "nb": 4, "waiting": True}}))
    _ok(d.call({"command": "set", "properties": {"name": "w", "waiting": True,
                                                 "options": {"max_processes": 4}}}))
    reply = d.call({"command": "incr", "properties": {"name": "w", "nb": 2}})
    assert reply["status"] == "error", reply
    assert ("numprocesses 5 is over the limit of 4 processes for watcher 'w' (its "
            "max_processes)") in reply["reason"], reply
    assert _numprocesses(d, "w") == 3 and len(d.pids("w")) == 3


def test_add_and_reloadconfig_beyond_the_limit_change_nothing(
        circusd: Any, workers: list[int]) -> None:
    d: Daemon = circusd("[watcher:w]\ncmd = sleep 600\nnumprocesses = 2\n",
                        circus_extra="max_processes = 10")
    wait_until(lambda: len(d.pids("w")) == 2, what="w started")
    before = d.pids("w")
    workers.extend(before)
    reply = d.call({"command": "add", "properties": {
        "name": "x", "cmd": "sleep 600", "start": True, "options": {"numprocesses": 9}}})
    assert reply["status"] == "error" and "over the limit of 10" in reply["reason"], reply
    reply = d.call({"command": "add", "properties": {
        "name": "x", "cmd": "sleep 600", "options": {"numprocesses": 3,
                                                     "max_processes": 2}}})
    assert reply["status"] == "error" and "its max_processes" in reply["reason"], reply
    assert _ok(d.call({"command": "list"}))["watchers"] == ["w"]

    text = d.ini.read_text()
    d.ini.write_text(text.replace("numprocesses = 2", "numprocesses = 11"))
    reply = d.call({"command": "reloadconfig", "properties": {"waiting": True}})
    assert reply["status"] == "error", reply
    line = d.ini.read_text().splitlines().index("numprocesses = 11") + 1
    assert f"{d.ini}:{line}: [watcher:w] numprocesses: numprocesses 11 is over the limit " \
           "of 10 processes" in reply["reason"], reply
    assert _numprocesses(d, "w") == 2 and d.pids("w") == before
    # raising the ceiling in the same file makes it acceptable
    d.ini.write_text(d.ini.read_text().replace("max_processes = 10", "max_processes = 11"))
    _ok(d.call({"command": "reloadconfig", "properties": {"waiting": True}}))
    wait_until(lambda: len(d.pids("w")) == 11, what="w resized to 11")
    workers.extend(d.pids("w"))
    reply = d.call({"command": "incr", "properties": {"name": "w"}})
    assert reply["status"] == "error" and "limit of 11" in reply["reason"], reply


@pytest.mark.parametrize(("circus_extra", "watcher", "words"), [
    ("max_processes = 5", "numprocesses = 6",
     "numprocesses 6 is over the limit of 5 processes for all watchers ([circus] "
     "max_processes, set in the configuration)"),
    ("", "numprocesses = 3\nmax_processes = 2",
     "numprocesses 3 is over the limit of 2 processes for this watcher (its max_processes)"),
    ("", "numprocesses = 1000000", "processes for all watchers ([circus] max_processes, from "),
])
def test_a_configuration_over_the_limit_exits_78_naming_file_and_line(
        short_tmp: Path, circus_extra: str, watcher: str, words: str) -> None:
    ini = short_tmp / "over.ini"
    ini.write_text(f"[circus]\nendpoint = ipc://{short_tmp}/c\npubsub_endpoint = "
                   f"ipc://{short_tmp}/p\n{circus_extra}\n[watcher:w]\ncmd = sleep 600\n"
                   f"{watcher}\n")
    line = ini.read_text().splitlines().index(watcher.splitlines()[0]) + 1
    done = subprocess.run([*CIRCUSD, str(ini)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 78, (done.stdout, done.stderr)
    assert f"{ini}:{line}: [watcher:w] numprocesses: " in done.stderr, done.stderr
    assert words in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


# -- interruptible spawning ----------------------------------------------------------------


def _burst(d: Daemon, spawns: SpawnLog, start: int) -> None:
    """Ask for BURST processes (from *start*) and wait until the burst is well under way."""
    reply = _ok(d.call({"command": "incr", "properties": {"name": "w",
                                                          "nb": BURST - start}}))
    assert reply["numprocesses"] == BURST
    wait_until(lambda: spawns.count() >= 150, what="150 spawns of the burst", timeout=30)


@pytest.mark.parametrize("change", ["decr", "set"])
def test_a_new_target_stops_a_burst_of_thousands_within_100ms(
        circusd: Any, workers: list[int], change: str) -> None:
    marker = _marker()
    d: Daemon = circusd(f"[watcher:w]\ncmd = sleep {marker}\nnumprocesses = 3\n"
                        "graceful_timeout = 5\n")
    wait_until(lambda: len(d.pids("w")) == 3, what="3 processes")
    workers.extend(d.pids("w"))
    spawns = _spawn_log(d, "w")
    try:
        _burst(d, spawns, 3)
        msg: dict[str, Any] = (
            {"command": "decr", "properties": {"name": "w", "nb": BURST - 3}}
            if change == "decr" else
            {"command": "set", "properties": {"name": "w", "options": {"numprocesses": 3}}})
        sent = time.time()
        reply = _ok(d.call(msg))
        answered = time.time()
        at_reply = spawns.count()
        assert at_reply < BURST - 3, "the burst was over before the new target came"
        wait_until(lambda: len(d.pids("w")) == 3 and len(_running(marker)) == 3,
                   what="the count to converge to 3", timeout=60)
        converged = time.time() - sent
        stays_true(lambda: all(t <= sent + WITHIN for _, t in spawns.snapshot()), for_=1.0,
                   what=f"no spawn later than {WITHIN * 1000:.0f} ms after {change}")
        events = spawns.snapshot()
        workers.extend(pid for pid, _ in events)
        last = max(t for _, t in events)
        latency = max(last - sent, 0.0)
        late = [t for _, t in events if t > sent]
        print(f"\n{change} during a burst of {BURST}: {len(events)} spawned by then "
              f"({at_reply} at the reply, {len(late)} after the command was sent); last "
              f"spawn {latency * 1000:.1f} ms after the command; reply took "
              f"{(answered - sent) * 1000:.1f} ms; reply {reply}")
        assert latency <= WITHIN, f"a spawn came {latency * 1000:.0f} ms after {change}"
        assert len(events) < BURST
        print(f"converged to 3 processes {converged:.2f} s after the command")
        assert _numprocesses(d, "w") == 3
        stays_true(lambda: len(d.pids("w")) == 3, for_=0.5, what="3 processes")
    finally:
        spawns.close()


def test_quit_during_a_burst_leaves_no_process(circusd: Any, workers: list[int]) -> None:
    marker = _marker()
    d: Daemon = circusd(f"[watcher:w]\ncmd = sleep {marker}\ngraceful_timeout = 5\n")
    wait_until(lambda: len(d.pids("w")) == 1, what="the first process")
    workers.extend(d.pids("w"))
    spawns = _spawn_log(d, "w")
    try:
        _burst(d, spawns, 1)
        sent = time.time()
        _ok(d.call({"command": "quit"}))
        d.proc.wait(timeout=60)
        stopped = time.time() - sent
        assert d.proc.returncode == 0, d.log_text()[-2000:]
        events = spawns.snapshot()
        workers.extend(pid for pid, _ in events)
        alive = [pid for pid, _ in events if pid_alive(pid)]
        late = [t for _, t in events if t > sent + WITHIN]
        left = _running(marker)
        print(f"\nquit during a burst of {BURST}: {len(events)} spawned, "
              f"{len([t for _, t in events if t > sent])} after quit was sent "
              f"({len(late)} more than {WITHIN * 1000:.0f} ms after), circusd gone after "
              f"{stopped:.2f} s, {len(alive)} of the spawned pids alive, {len(left)} "
              f"'sleep {marker}' processes left on the host")
        assert len(events) < BURST
        assert alive == [] and left == []
        assert late == []
    finally:
        spawns.close()
