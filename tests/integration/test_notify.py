"""circus/notify.py and circus/sdnotify.py over real sockets, with real child processes.

The children speak the protocol with nothing but the ``socket`` module, as clients in other
languages do: read ``NOTIFY_SOCKET``, send ``KEY=VALUE`` lines in one datagram.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from circus import notify as notify_mod
from circus.notify import NotifyServer, parse
from circus.sdnotify import ServiceNotifier, Watchdog, notify, watchdog_interval
from tests.conftest import PYTHON, wait_for

# What a client in any language does: the address, one datagram, nothing else.
SEND = """
import os, socket, sys
addr = os.environ["NOTIFY_SOCKET"]
if addr.startswith("@"):
    addr = "\\0" + addr[1:]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(sys.argv[1].encode().decode("unicode_escape").encode(), addr)
"""

# Sends the write end of a pipe along (as FDSTORE=1 does), closes its own copy, and exits
# 0 only when the read end sees EOF: every copy of the write end, the receiver's too, is
# closed.
SEND_FD = """
import array, os, select, socket, sys
addr = os.environ["NOTIFY_SOCKET"]
r, w = os.pipe()
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
fds = array.array("i", [w, w, w])
s.sendmsg([b"FDSTORE=1\\nFDNAME=conn"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)], 0, addr)
os.close(w)
if not select.select([r], [], [], 10)[0]:
    sys.exit(3)
sys.exit(0 if os.read(r, 1) == b"" else 4)
"""

# Sends N numbered datagrams as fast as the receiver's queue lets it.
FLOOD = """
import os, socket, sys
addr = os.environ["NOTIFY_SOCKET"]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.connect(addr)
for i in range(int(sys.argv[1])):
    s.send(b"STATUS=%d" % i)
"""


class Children:
    """Child processes of one test, killed by pid at teardown if still running."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, code: str, *args: str, address: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "NOTIFY_SOCKET": address}
        proc = subprocess.Popen([PYTHON, "-c", code, *args], env=env)
        self.procs.append(proc)
        return proc

    async def exit_code(self, proc: subprocess.Popen[bytes], within: float = 10) -> int:
        await wait_for(lambda: proc.poll() is not None, what=f"pid {proc.pid} to exit",
                       timeout=within)
        assert proc.returncode is not None
        return proc.returncode


@pytest.fixture
def children() -> Iterator[Children]:
    kids = Children()
    yield kids
    for proc in kids.procs:
        if proc.poll() is None:
            os.kill(proc.pid, 9)
            proc.wait()


class Inbox:
    """Records what a NotifyServer delivers."""

    def __init__(self) -> None:
        self.messages: list[tuple[int, dict[str, str]]] = []

    def __call__(self, pid: int, fields: dict[str, str]) -> None:
        self.messages.append((pid, fields))

    async def wait(self, n: int, within: float = 10) -> list[tuple[int, dict[str, str]]]:
        await wait_for(lambda: len(self.messages) >= n, what=f"{n} notification(s)",
                       timeout=within, detail=lambda: repr(self.messages[-5:]))
        return self.messages


@pytest.fixture
def inbox() -> Inbox:
    return Inbox()


@pytest.fixture
def server(short_tmp: Path, inbox: Inbox) -> Iterator[NotifyServer]:
    srv = NotifyServer(str(short_tmp / "notify"), inbox)
    yield srv
    srv.close()


def bound_unix_names() -> set[str]:
    """The addresses of the unix sockets bound in this network namespace (an abstract
    one shown as ``@name``)."""
    with open("/proc/net/unix") as fh:
        return {cols[7] for line in fh.readlines()[1:] if len(cols := line.split()) > 7}


def send(address: str, payload: bytes) -> None:
    """One datagram from this process."""
    target: str | bytes = b"\0" + address[1:].encode() if address[0] == "@" else address
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(payload, target)


async def test_a_childs_datagram_arrives_with_its_pid_and_fields(
        server: NotifyServer, inbox: Inbox, children: Children) -> None:
    server.open()
    proc = children.start(SEND, r"READY=1\nSTATUS=serving 3 clients\nX_APP=7",
                          address=server.address)
    assert await children.exit_code(proc) == 0
    [(pid, fields)] = await inbox.wait(1)
    assert pid == proc.pid
    assert fields == {"READY": "1", "STATUS": "serving 3 clients", "X_APP": "7"}


async def test_the_path_socket_is_private_and_its_file_goes_at_close(
        server: NotifyServer, short_tmp: Path) -> None:
    path = short_tmp / "notify"
    assert server.address == str(path)
    server.open()
    mode = os.lstat(path).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    server.close()
    assert not path.exists()
    server.close()  # twice is fine
    with pytest.raises(OSError):
        send(str(path), b"READY=1")


async def test_a_relative_path_is_made_absolute(short_tmp: Path, inbox: Inbox,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(short_tmp)
    srv = NotifyServer("rel.sock", inbox, mode=0o660)
    assert srv.address == str(short_tmp / "rel.sock")
    srv.open()
    try:
        assert stat.S_IMODE(os.lstat(short_tmp / "rel.sock").st_mode) == 0o660
    finally:
        srv.close()
    assert not (short_tmp / "rel.sock").exists()


async def test_close_leaves_a_file_that_is_no_longer_its_own(
        server: NotifyServer, short_tmp: Path) -> None:
    server.open()
    path = short_tmp / "notify"
    path.unlink()
    path.write_text("someone else's")
    server.close()
    assert path.read_text() == "someone else's"


async def test_a_stale_socket_file_is_replaced_and_a_live_one_refused(
        short_tmp: Path, inbox: Inbox) -> None:
    path = str(short_tmp / "notify")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stale.bind(path)
    live = NotifyServer(path, inbox)
    with pytest.raises(OSError) as refused:
        live.open()  # someone receives there
    assert refused.value.errno == errno.EADDRINUSE
    assert "another process receives there" in str(refused.value)
    stale.close()  # its file stays: nobody receives there any more
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    live.open()
    try:
        send(path, b"READY=1")
        [(pid, _)] = await inbox.wait(1)
        assert pid == os.getpid()
    finally:
        live.close()


async def test_a_file_that_is_not_a_socket_is_left_alone(short_tmp: Path,
                                                          inbox: Inbox) -> None:
    path = short_tmp / "notify"
    path.write_text("data")
    with pytest.raises(OSError, match="not a socket"):
        NotifyServer(str(path), inbox).open()
    assert path.read_text() == "data"


async def test_open_needs_the_running_loop_and_happens_once(server: NotifyServer) -> None:
    server.open()
    with pytest.raises(RuntimeError, match="already open"):
        server.open()


def test_open_outside_a_loop_is_refused(short_tmp: Path, inbox: Inbox) -> None:
    with pytest.raises(RuntimeError):
        NotifyServer(str(short_tmp / "n"), inbox).open()
    assert not (short_tmp / "n").exists()


def test_addresses_that_cannot_be_bound_are_named(inbox: Inbox) -> None:
    with pytest.raises(ValueError, match="at most 107 bytes"):
        NotifyServer("/tmp/" + "x" * 120, inbox)
    with pytest.raises(ValueError, match="needs a name after '@'"):
        NotifyServer("@", inbox)
    with pytest.raises(ValueError, match="needs a path"):
        NotifyServer("", inbox)


async def test_the_abstract_address_works_without_a_file(
        inbox: Inbox, children: Children, short_tmp: Path) -> None:
    name = f"@circus-test-{uuid.uuid4().hex}"
    srv = NotifyServer(name, inbox)
    assert srv.address == name
    srv.open()
    try:
        proc = children.start(SEND, r"WATCHDOG=1", address=srv.address)
        assert await children.exit_code(proc) == 0
        [(pid, fields)] = await inbox.wait(1)
        assert (pid, fields) == (proc.pid, {"WATCHDOG": "1"})
        assert name in bound_unix_names()  # in the abstract namespace
    finally:
        srv.close()
    assert name not in bound_unix_names()
    with pytest.raises(ConnectionRefusedError):
        send(name, b"READY=1")


async def test_descriptors_sent_along_are_closed(
        server: NotifyServer, inbox: Inbox, children: Children) -> None:
    server.open()
    before = set(os.listdir("/proc/self/fd"))
    proc = children.start(SEND_FD, address=server.address)
    [(pid, fields)] = await inbox.wait(1)
    assert pid == proc.pid and fields == {"FDSTORE": "1", "FDNAME": "conn"}
    # the child sees EOF only once our three copies of its pipe's write end are closed
    assert await children.exit_code(proc) == 0
    assert set(os.listdir("/proc/self/fd")) <= before


async def test_malformed_lines_are_ignored_and_the_rest_passed_on(
        server: NotifyServer, inbox: Inbox) -> None:
    server.open()
    address = server.address
    send(address, b"garbage\nREADY=1\n=novalue\n1BAD=x\nlower_ok=y\nSTATUS=a\nSTATUS=b\n"
                  b"\xff\xfe=1\nMAINPID=1\nX=has=equals\n")
    send(address, b"nothing to read here")  # no assignment at all: no call
    send(address, b"READY=1\0STATUS=nul")  # a NUL byte: dropped whole
    send(address, b"STATUS=" + b"x" * notify_mod.MAX_DATAGRAM)  # too long: dropped whole
    send(address, b"")
    send(address, b"END=1")
    await wait_for(lambda: inbox.messages and inbox.messages[-1][1] == {"END": "1"},
                   what="the last datagram")
    assert [fields for _, fields in inbox.messages] == [
        {"READY": "1", "lower_ok": "y", "STATUS": "a", "MAINPID": "1", "X": "has=equals"},
        {"END": "1"},
    ]


async def test_a_failing_handler_is_logged_and_reading_goes_on(
        short_tmp: Path, caplog: pytest.LogCaptureFixture) -> None:
    seen: list[dict[str, str]] = []

    def handler(pid: int, fields: dict[str, str]) -> None:
        seen.append(fields)
        if "BOOM" in fields:
            raise RuntimeError("handler bug")

    srv = NotifyServer(str(short_tmp / "n"), handler)
    srv.open()
    try:
        send(srv.address, b"BOOM=1")
        send(srv.address, b"READY=1")
        await wait_for(lambda: len(seen) == 2, what="both datagrams")
    finally:
        srv.close()
    assert "the handler of a notification from pid" in caplog.text
    assert "handler bug" in caplog.text


async def test_a_flood_is_read_in_batches_and_the_loop_keeps_turning(
        short_tmp: Path, inbox: Inbox, children: Children,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every datagram of 3,000 sent back to back arrives, in order, and the loop runs
    other callbacks between batches of at most BATCH datagrams.

    BATCH is lowered to 3 here: the kernel queues only ``net.unix.max_dgram_qlen`` + 1
    datagrams (11 by default), fewer than the real BATCH."""
    monkeypatch.setattr(notify_mod, "BATCH", 3)
    loop = asyncio.get_running_loop()
    turns = 0
    batches: dict[int, int] = {}

    def tick() -> None:
        nonlocal turns
        turns += 1
        if server.is_open:
            loop.call_soon(tick)

    def record(pid: int, fields: dict[str, str]) -> None:
        batches[turns] = batches.get(turns, 0) + 1
        inbox(pid, fields)

    server = NotifyServer(str(short_tmp / "n"), record)
    server.open()
    try:
        tick()
        n = 3000
        proc = children.start(FLOOD, str(n), address=server.address)
        await inbox.wait(n, within=60)
        assert await children.exit_code(proc) == 0
    finally:
        server.close()
    assert [int(f["STATUS"]) for _, f in inbox.messages] == list(range(n))
    assert max(batches.values()) == 3  # the queue held more: the bound was reached


def test_parse_follows_systemd() -> None:
    assert parse(b"READY=1\nSTATUS=\xc3\xa9t\xc3\xa9\n") == {"READY": "1", "STATUS": "été"}
    assert parse(b"A=1\nA=2") == {"A": "1"}  # the first value counts, as systemd's lookup
    assert parse(b"READY=1\n\0") == {}
    assert parse(b"STATUS=x\r\n") == {"STATUS": "x\r"}
    assert parse(b"") == {}


# -- the sending side (circus/sdnotify.py) -------------------------------------------------


async def test_notify_reaches_a_server(server: NotifyServer, inbox: Inbox,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    server.open()
    assert notify("READY=1", "STATUS=2 watchers", address=server.address) is True
    monkeypatch.setenv("NOTIFY_SOCKET", server.address)
    assert notify("STOPPING=1") is True
    messages = await inbox.wait(2)
    assert messages == [(os.getpid(), {"READY": "1", "STATUS": "2 watchers"}),
                        (os.getpid(), {"STOPPING": "1"})]


async def test_notify_reaches_an_abstract_address(inbox: Inbox) -> None:
    srv = NotifyServer(f"@circus-test-{uuid.uuid4().hex}", inbox)
    srv.open()
    try:
        assert notify("READY=1", address=srv.address) is True
        assert await inbox.wait(1) == [(os.getpid(), {"READY": "1"})]
    finally:
        srv.close()


def test_notify_without_a_listener_is_false_and_never_raises(
        short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False  # unset
    assert notify("READY=1", address=str(short_tmp / "nobody")) is False
    assert notify("READY=1", address="@circus-test-nobody-" + uuid.uuid4().hex) is False
    assert notify("READY=1", address="vsock:2:9999") is False
    assert notify("READY=1", address="relative/path") is False
    with pytest.raises(ValueError, match="not a KEY=VALUE line"):
        notify("STATUS=two\nlines", address=str(short_tmp / "nobody"))
    with pytest.raises(ValueError):
        notify("READY", address=str(short_tmp / "nobody"))


def test_notify_gives_up_on_a_full_queue_after_its_timeout(short_tmp: Path) -> None:
    """A manager that does not read: a send waits its timeout for room, then returns
    False; with no timeout (the watchdog's pings) it returns False at once."""
    path = str(short_tmp / "deaf")
    deaf = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    deaf.bind(path)
    try:
        sent = 0
        while notify("WATCHDOG=1", address=path, timeout=0):
            sent += 1  # the queue holds net.unix.max_dgram_qlen + 1
            assert sent < 100_000
        assert sent >= 1
        started = time.monotonic()
        assert notify("READY=1", address=path, timeout=0.2) is False
        assert 0.15 <= time.monotonic() - started < 5
    finally:
        deaf.close()


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    me = str(os.getpid())
    assert watchdog_interval({"WATCHDOG_USEC": "200000"}) == 0.1
    assert watchdog_interval({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": me}) == 0.1
    assert watchdog_interval({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_interval({}) is None


async def test_the_watchdog_pings_from_the_loop_until_closed() -> None:
    pings: list[float] = []
    dog = Watchdog(0.02, lambda: pings.append(time.monotonic()))
    dog.start()
    await wait_for(lambda: len(pings) >= 5, what="5 pings")
    dog.close()
    count = len(pings)
    await asyncio.sleep(0.1)  # paces the negative check: 5 intervals without a ping
    assert len(pings) == count


async def test_the_service_notifier_takes_its_variables_out_of_the_environment(
        server: NotifyServer, inbox: Inbox) -> None:
    server.open()
    env = {"NOTIFY_SOCKET": server.address, "WATCHDOG_USEC": "100000",
           "WATCHDOG_PID": str(os.getpid()), "PATH": "/bin"}
    notifier = ServiceNotifier.from_environment(env)
    assert env == {"PATH": "/bin"}
    assert notifier is not None and notifier.watchdog_interval == 0.05
    assert ServiceNotifier.from_environment(env) is None
    notifier.reloading()  # before READY: the start is not over, nothing to say
    notifier.reloaded("starting")
    notifier.ready("1 watcher, 2 processes")
    notifier.ready("again")  # once only
    notifier.reloading()
    notifier.reloading()  # overlapping reloads are one
    notifier.reloaded("1 watcher, 2 processes")
    notifier.reloaded("1 watcher, 3 processes")
    notifier.stopping()
    notifier.stopping()
    notifier.reloading()  # nothing but the watchdog once stopping
    notifier.reloaded("x")
    notifier.status("x")
    notify("END=1", address=server.address)  # datagrams of one sender arrive in order
    await wait_for(lambda: inbox.messages and inbox.messages[-1][1] == {"END": "1"},
                   what="the end marker")
    fields = [f for _, f in inbox.messages[:-1]]
    assert fields[0] == {"READY": "1", "STATUS": "1 watcher, 2 processes"}
    assert fields[1]["RELOADING"] == "1" and int(fields[1]["MONOTONIC_USEC"]) > 0
    assert fields[2] == {"READY": "1", "STATUS": "1 watcher, 3 processes"}
    assert fields[3] == {"STOPPING": "1", "STATUS": "stopping every watcher"}
    assert len(fields) == 4
