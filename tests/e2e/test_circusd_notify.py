"""The real circusd as a ``Type=notify`` service: the test plays systemd.

The test binds the datagram socket a service manager would (``SO_PASSCRED``, so each
message carries the sender's pid, as systemd checks it), starts circusd with
``NOTIFY_SOCKET`` pointing at it, and reads what circusd says around its start, its
reloads and its stop, and its watchdog pings.
"""

from __future__ import annotations

import os
import signal
import socket
import statistics
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from circus.kernel import CLOCK_TICKS, read_stat
from tests.conftest import pid_alive, proc_environ, stays_true, wait_until
from tests.e2e.conftest import Daemon

Message = tuple[int, dict[str, str], float]  # sender pid, fields, CLOCK_BOOTTIME at receipt


class Manager:
    """The service manager's end of ``NOTIFY_SOCKET``, read by a thread, so that circusd
    never finds the queue full (the kernel holds only a few datagrams)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(b"\0" + address[1:].encode() if address[0] == "@" else address)
        self.sock.settimeout(0.1)
        self.messages: list[Message] = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        size = socket.CMSG_SPACE(12)
        while not self._done.is_set():
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, size)
            except TimeoutError:
                continue
            except OSError:
                return
            received = time.clock_gettime(time.CLOCK_BOOTTIME)
            pid = 0
            for level, kind, cred in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("iII", cred[:12])[0]
            fields = dict(line.split("=", 1) for line in data.decode().split("\n") if line)
            with self._lock:
                self.messages.append((pid, fields, received))

    def close(self) -> None:
        self._done.set()
        self._thread.join(timeout=5)
        self.sock.close()

    def seen(self) -> list[Message]:
        with self._lock:
            return list(self.messages)

    def wait_for(self, check: Callable[[dict[str, str]], bool], what: str, *,
                 after: int = 0, timeout: float = 20) -> tuple[int, Message]:
        """The first message from index *after* on that *check* accepts, and its index."""
        def found() -> tuple[int, Message] | None:
            for i, message in enumerate(self.seen()[after:], after):
                if check(message[1]):
                    return i, message
            return None

        return wait_until(found, what=what, timeout=timeout,
                          detail=lambda: f"received: {[m[1] for m in self.seen()]}")

    def states(self, after: int = 0) -> list[dict[str, str]]:
        """The messages from index *after* on, watchdog pings left out."""
        return [m[1] for m in self.seen()[after:] if "WATCHDOG" not in m[1]]


@pytest.fixture
def manager(short_tmp: Path) -> Iterator[Callable[[str], Manager]]:
    made: list[Manager] = []

    def make(address: str) -> Manager:
        made.append(Manager(address))
        return made[-1]

    yield make
    for m in made:
        m.close()


SLEEP = "sleep 600"


def watchers(a: int = 2) -> str:
    return (f"[watcher:a]\ncmd = {SLEEP}\nnumprocesses = {a}\npriority = 2\n"
            f"copy_env = true\ngraceful_timeout = 3\n\n"
            f"[watcher:b]\ncmd = {SLEEP}\nnumprocesses = 1\npriority = 1\n"
            f"graceful_timeout = 3\n")


def is_ready(fields: dict[str, str]) -> bool:
    return fields.get("READY") == "1"


def test_circusd_tells_its_start_reloads_and_stop(
        circusd: Callable[..., Daemon], manager: Callable[[str], Manager],
        short_tmp: Path) -> None:
    m = manager(str(short_tmp / "notify"))
    # b starts 0.3 s after a, and circusd is started after b plus another 0.3 s: a READY
    # sent before the watchers were started would be seen before b's process began.
    d = circusd(watchers(), circus_extra="warmup_delay = 0.3",
                env={"NOTIFY_SOCKET": m.address}, wait=False)

    # -- start: READY=1 once the watchers run, from circusd's own pid
    _, (pid, ready, at) = m.wait_for(is_ready, "READY=1 at the start")
    assert pid == d.pid
    assert ready == {"READY": "1", "STATUS": "2 watchers, 3 processes"}
    d.wait_ready("circusd", timeout=20, interval=0.05)
    a_pids, b_pids = d.pids("a"), d.pids("b")
    assert len(a_pids) == 2 and len(b_pids) == 1
    for worker in a_pids + b_pids:  # start times count whole ticks since boot, rounded down
        st = read_stat(worker)
        assert st is not None and st.start <= int(at * CLOCK_TICKS), (
            f"pid {worker} started after READY=1")
    # the workers are not the service: NOTIFY_SOCKET is not passed on, even by copy_env
    environ = proc_environ(a_pids[0])
    assert "PATH" in environ and "NOTIFY_SOCKET" not in environ

    # -- reloadconfig: RELOADING=1 with the monotonic clock, then READY=1 with the counts
    d.ini.write_text(d.ini.read_text().replace("numprocesses = 2", "numprocesses = 3"))
    mark = len(m.seen())
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    result = d.ctl("reloadconfig", "--waiting", timeout=20)
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert result.returncode == 0, result.stderr
    # READY=1 is sent before the reply: both are here by the time circusctl returns
    m.wait_for(is_ready, "READY=1 after reloadconfig", after=mark, timeout=2)
    reloading, ready_again = m.states(mark)
    assert reloading["RELOADING"] == "1" and reloading["STATUS"] == "reloading"
    assert before <= int(reloading["MONOTONIC_USEC"]) <= after
    assert ready_again == {"READY": "1", "STATUS": "2 watchers, 4 processes"}

    # -- SIGHUP: every watcher reloaded, between RELOADING=1 and READY=1
    mark = len(m.seen())
    a_pids = d.pids("a")
    os.kill(d.pid, signal.SIGHUP)
    m.wait_for(is_ready, "READY=1 after SIGHUP", after=mark)
    reloading, ready_again = m.states(mark)
    assert reloading["RELOADING"] == "1" and "MONOTONIC_USEC" in reloading
    assert ready_again == {"READY": "1", "STATUS": "2 watchers, 4 processes"}
    assert not set(d.pids("a")) & set(a_pids)  # new processes: it did reload

    # -- quit: STOPPING=1, and nothing else after it
    mark = len(m.seen())
    assert d.ctl("quit", "--waiting", timeout=20).returncode == 0
    m.wait_for(lambda f: f.get("STOPPING") == "1", "STOPPING=1", after=mark)
    assert d.proc.wait(timeout=30) == 0
    assert m.states(mark) == [{"STOPPING": "1", "STATUS": "stopping every watcher"}]


def test_a_bad_reloadconfig_is_refused_without_a_reload(
        circusd: Callable[..., Daemon], manager: Callable[[str], Manager],
        short_tmp: Path) -> None:
    """A file circusd refuses changes nothing, and the manager hears of no reload."""
    m = manager(str(short_tmp / "notify"))
    d = circusd(watchers(), env={"NOTIFY_SOCKET": m.address}, wait=False)
    m.wait_for(is_ready, "READY=1 at the start")
    d.wait_ready("circusd", timeout=20, interval=0.05)
    d.ini.write_text(d.ini.read_text() + "\n[watcher:c]\nnumprocesses = 1\n")  # no cmd
    mark = len(m.seen())
    assert d.ctl("reloadconfig", "--waiting", timeout=20).returncode != 0
    assert d.ctl("stop", "b", "--waiting", timeout=20).returncode == 0  # a later command
    assert m.states(mark) == []


def test_watchdog_pings_every_half_of_watchdog_usec(
        circusd: Callable[..., Daemon], manager: Callable[[str], Manager]) -> None:
    m = manager(f"@circus-test-{uuid.uuid4().hex}")  # the abstract form of the address
    d = circusd(watchers(), env={"NOTIFY_SOCKET": m.address, "WATCHDOG_USEC": "200000"},
                wait=False)
    m.wait_for(is_ready, "READY=1 at the start")
    start = len(m.seen())
    wait_until(lambda: sum("WATCHDOG" in f for _, f, _ in m.seen()[start:]) >= 10,
               what="10 watchdog pings after READY=1", timeout=10)
    pings = [(pid, at) for pid, f, at in m.seen()[start:] if f.get("WATCHDOG") == "1"]
    assert {pid for pid, _ in pings} == {d.pid}
    gaps = [b - a for (_, a), (_, b) in zip(pings, pings[1:], strict=False)]
    assert 0.07 <= statistics.median(gaps) <= 0.13, gaps  # every 0.1 s
    # SIGTERM, as systemctl stop sends it: STOPPING=1; the pings go on while it stops
    mark = len(m.seen())
    os.kill(d.pid, signal.SIGTERM)
    m.wait_for(lambda f: f.get("STOPPING") == "1", "STOPPING=1", after=mark)
    assert d.proc.wait(timeout=30) == 0
    assert m.states(mark) == [{"STOPPING": "1", "STATUS": "stopping every watcher"}]


def test_no_watchdog_for_another_pid(circusd: Callable[..., Daemon],
                                     manager: Callable[[str], Manager],
                                     short_tmp: Path) -> None:
    """WATCHDOG_PID names the process the watchdog is for: not circusd, no pings."""
    m = manager(str(short_tmp / "notify"))
    circusd(watchers(), env={"NOTIFY_SOCKET": m.address, "WATCHDOG_USEC": "100000",
                             "WATCHDOG_PID": "1"}, wait=False)
    m.wait_for(is_ready, "READY=1 at the start")
    stays_true(lambda: all("WATCHDOG" not in f for _, f, _ in m.seen()), for_=0.5,
               what="no watchdog ping (10 intervals)")


def test_a_manager_that_is_gone_changes_nothing(circusd: Callable[..., Daemon],
                                                short_tmp: Path) -> None:
    """NOTIFY_SOCKET naming a socket nobody receives on: circusd runs and quits as
    without it."""
    d = circusd(watchers(), env={"NOTIFY_SOCKET": str(short_tmp / "nobody"),
                                 "WATCHDOG_USEC": "100000"})
    pids = d.pids("a")
    assert len(pids) == 2 and all(pid_alive(p) for p in pids)
    assert d.ctl("reloadconfig", "--waiting", timeout=20).returncode == 0
    assert d.ctl("quit", "--waiting", timeout=20).returncode == 0
    assert d.proc.wait(timeout=30) == 0


def test_the_documented_unit_is_the_example_unit() -> None:
    """docs/deployment.md shows examples/circusd.service without its comments."""
    root = Path(__file__).resolve().parents[2]
    doc = (root / "docs" / "deployment.md").read_text()
    block = doc.split("```ini\n# /etc/systemd/system/circusd.service\n", 1)[1].split("```", 1)[0]

    def settings(text: str) -> list[str]:  # "# prose" goes, "#WatchdogSec=30" stays
        return [line for line in text.splitlines() if line and not line.startswith("# ")]

    example = (root / "examples" / "circusd.service").read_text()
    assert settings(block) == settings(example)
    assert "Type=notify" in settings(example)
