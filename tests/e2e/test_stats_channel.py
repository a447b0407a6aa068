"""circusd-stats end to end: the real circusd with ``statsd = true`` runs it as a watcher,
and a SUB socket on the stats endpoint sees what Circus 0.19's circusd-stats publishes,
checked against what the kernel (through psutil) says of each process."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import zmq

from tests.conftest import pid_alive, python_cmd, wait_until
from tests.e2e.conftest import Daemon

SLEEPER = python_cmd("import time; time.sleep(3600)")
PROCESS_FIELDS = {"pid", "cpu", "mem", "mem_info1", "mem_info2", "ctime", "username", "nice",
                  "create_time", "age", "cmdline", "children", "subtopic", "name"}
SIZE = re.compile(r"^\d+(\.\d\d[KMGT])?$")
CTIME = re.compile(r"^\d+:\d\d\.\d\d$")
UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


class StatsSub:
    """A SUB socket on the stats endpoint and the last message of each topic."""

    def __init__(self, endpoint: str, daemon: Daemon) -> None:
        self.daemon = daemon
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.linger = 0
        self.sock.setsockopt(zmq.SUBSCRIBE, b"stat.")
        self.sock.connect(endpoint)
        self.last: dict[str, dict[str, Any]] = {}
        self.reads: dict[str, int] = {}  # the most reads seen, by stat.sockets topic

    def read(self, timeout: float = 0.2) -> None:
        if not self.sock.poll(timeout * 1000):
            return
        while True:
            try:
                topic, body = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            name, payload = topic.decode(), json.loads(body)
            self.last[name] = payload
            if name.startswith("stat.sockets"):
                self.reads[name] = max(self.reads.get(name, 0), payload["reads"])

    def until(self, check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
        def step() -> Any:
            self.read()
            return check()

        return wait_until(step, what=what, timeout=timeout, interval=0.0,
                          detail=self.detail)

    def detail(self) -> str:
        tail = "\n".join(self.daemon.log_text().splitlines()[-20:])
        return f"topics seen: {sorted(self.last)}; circusd's log ends with:\n{tail}"

    def close(self) -> None:
        self.sock.close(linger=0)
        self.ctx.term()


@pytest.fixture
def stats_daemon(circusd: Callable[..., Daemon], short_tmp: Path
                 ) -> Iterator[tuple[Daemon, StatsSub]]:
    endpoint = f"ipc://{short_tmp}/stats"
    d = circusd(
        f"[watcher:web]\ncmd = {SLEEPER}\nnumprocesses = 3\n\n"
        "[socket:web]\nhost = 127.0.0.1\nport = 0\n",
        circus_extra=f"statsd = true\nstats_endpoint = {endpoint}\n",
    )
    sub = StatsSub(endpoint, d)
    try:
        yield d, sub
    finally:
        sub.close()


def size_bytes(text: str) -> float:
    match = re.match(r"^([\d.]+)([KMGT]?)$", text)
    assert match, text
    return float(match.group(1)) * UNITS[match.group(2)]


def check_process(info: dict[str, Any], pid: int, name: str | None) -> None:
    """Every field of one ``stat.<watcher>.<pid>`` message, against the kernel's figures."""
    assert set(info) >= PROCESS_FIELDS, sorted(PROCESS_FIELDS - set(info))
    proc = psutil.Process(pid)
    assert info["pid"] == info["subtopic"] == pid
    assert info["name"] == name
    assert isinstance(info["cpu"], float) and info["cpu"] >= 0
    assert isinstance(info["mem"], float) and 0 < info["mem"] < 100
    assert info["mem"] == pytest.approx(proc.memory_percent(), abs=0.05)
    assert SIZE.match(info["mem_info1"]) and SIZE.match(info["mem_info2"]), info
    memory = proc.memory_info()
    assert size_bytes(info["mem_info1"]) == pytest.approx(memory.rss, rel=0.3)
    assert size_bytes(info["mem_info2"]) == pytest.approx(memory.vms, rel=0.3)
    assert CTIME.match(info["ctime"]), info["ctime"]
    assert info["username"] == proc.username()
    assert info["nice"] == proc.nice()
    assert info["create_time"] == pytest.approx(proc.create_time(), abs=0.05)
    assert 0 <= info["age"] == pytest.approx(time.time() - proc.create_time(), abs=5)
    assert info["cmdline"] == os.path.basename(proc.cmdline()[0])
    assert info["children"] == []


def test_every_field_of_processes_watchers_circus_and_sockets(
        stats_daemon: tuple[Daemon, StatsSub]) -> None:
    d, sub = stats_daemon
    pids = wait_until(lambda: len(d.pids("web")) == 3 and d.pids("web"), what="3 workers")
    topics = [f"stat.web.{pid}" for pid in pids]
    sub.until(lambda: all(t in sub.last for t in topics) and "stat.web" in sub.last
              and "stat.circus" in sub.last and "stat.sockets" in sub.last,
              what="stats of the 3 workers, the aggregate, circus and the sockets")
    for pid, topic in zip(pids, topics, strict=True):
        check_process(sub.last[topic], pid, None)

    web = sub.last["stat.web"]
    assert set(web) >= {"pid", "cpu", "mem", "age"}
    assert sorted(web["pid"]) == sorted(pids)
    singles = [sub.last[t] for t in topics]
    assert isinstance(web["cpu"], float) and web["cpu"] >= 0
    assert web["mem"] == pytest.approx(sum(s["mem"] for s in singles), abs=0.01)
    assert web["age"] >= max(s["age"] for s in singles) - 2.0  # a later interval's ages

    [stats_pid] = d.pids("circusd-stats")
    circus = sub.last["stat.circus"]
    assert sorted(circus["pid"]) == sorted([d.pid, stats_pid])
    sub.until(lambda: f"stat.circus.{d.pid}" in sub.last
              and f"stat.circus.{stats_pid}" in sub.last, what="circusd and circusd-stats")
    check_process(sub.last[f"stat.circus.{d.pid}"], d.pid, "circusd")
    check_process(sub.last[f"stat.circus.{stats_pid}"], stats_pid, "circusd-stats")

    [entry] = d.call({"command": "listsockets"})["sockets"]
    address = f"{entry['host']}:{entry['port']}"
    topic = f"stat.sockets.{entry['fd']}"
    assert sub.last[topic] == {"fd": entry["fd"], "reads": 0, "address": address,
                               "subtopic": entry["fd"]}
    assert sub.last["stat.sockets"] == {"addresses": [address], "reads": 0}
    # a connection waits in the backlog (the sleepers never accept): one read is counted
    with socket.create_connection((entry["host"], entry["port"]), timeout=5):
        sub.until(lambda: sub.reads["stat.sockets"] >= 1 and sub.reads[topic] >= 1,
                  what="the connection to be counted")
    assert sub.last["stat.sockets"]["addresses"] == [address]


def test_a_killed_process_disappears_and_its_replacement_appears(
        stats_daemon: tuple[Daemon, StatsSub], workers: list[int]) -> None:
    d, sub = stats_daemon
    pids = wait_until(lambda: len(d.pids("web")) == 3 and d.pids("web"), what="3 workers")
    sub.until(lambda: sorted(sub.last.get("stat.web", {}).get("pid", [])) == sorted(pids),
              what="the aggregate of the 3 workers")
    victim = pids[0]
    workers.append(victim)
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: not pid_alive(victim) or None, what="the victim to die")

    def replaced() -> list[int] | None:
        now = d.pids("web")
        return now if len(now) == 3 and victim not in now else None

    new = sorted(wait_until(replaced, what="circusd to replace the victim"))
    [fresh] = set(new) - set(pids)
    sub.until(lambda: sorted(sub.last.get("stat.web", {}).get("pid", [])) == new,
              what="the aggregate to drop the victim and list its replacement")
    # one whole interval: from one aggregate to the next
    sub.last.clear()
    sub.until(lambda: "stat.web" in sub.last, what="an aggregate")
    sub.last.clear()
    sub.until(lambda: "stat.web" in sub.last, what="the next aggregate")
    assert f"stat.web.{victim}" not in sub.last
    check_process(sub.last[f"stat.web.{fresh}"], fresh, None)
    assert d.log_text().count("circusd-stats: started") == 1  # learned, not restarted
