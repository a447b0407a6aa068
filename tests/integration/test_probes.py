"""Probes against real things: listening sockets on ports the tests bound (port 0), a
small HTTP server on the test's loop, real commands, and a real child writing on fd N."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from circus import probes
from circus.children import CHILDREN
from circus.probes import FdNotification, Poller, check, parse_health
from tests.conftest import PYTHON, pid_alive, wait_for

CHILD = str(Path(__file__).parent.parent / "fixtures" / "child.py")


# -- fixtures -----------------------------------------------------------------------------

@pytest.fixture
def bound() -> Iterator[Callable[..., socket.socket]]:
    """Sockets bound to port 0 of loopback (listening unless told otherwise), closed at
    teardown."""
    made: list[socket.socket] = []

    def make(*, listen: bool = True, backlog: int = 16,
             family: socket.AddressFamily = socket.AF_INET) -> socket.socket:
        sock = socket.socket(family, socket.SOCK_STREAM)
        made.append(sock)
        sock.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
        if listen:
            sock.listen(backlog)
        return sock

    yield make
    for sock in made:
        sock.close()


def port_of(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


@pytest.fixture
def pids() -> Iterator[list[int]]:
    """Pids a test learnt of (from a pidfile); any still running at teardown is killed
    by that pid."""
    known: list[int] = []
    yield known
    for pid in known:
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def popens() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Children a test started with Popen: killed by their pid and waited for."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def _collected(pid: int) -> bool:
    """*pid* is no child of ours any more (not even a zombie waiting to be reaped)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


async def read_pids(path: Path) -> list[int]:
    text = await wait_for(lambda: path.exists() and path.read_text(), what=f"{path.name}")
    return [int(word) for word in text.split()]


async def stays(check_: Callable[[], bool], *, for_: float, what: str) -> None:
    """Fail as soon as *check_* is false within *for_* seconds (a bounded negative check)."""
    deadline = time.monotonic() + for_
    while time.monotonic() < deadline:
        assert check_(), f"{what} stopped holding"
        await asyncio.sleep(0.01)


def child_cmd(*args: str) -> str:
    return shlex.join([PYTHON, CHILD, *args])


# -- tcp ----------------------------------------------------------------------------------

async def test_tcp_passes_and_really_connects(bound: Callable[..., socket.socket]) -> None:
    server = bound()
    assert await check(parse_health(f"tcp:127.0.0.1:{port_of(server)}"), timeout=2) is None
    server.settimeout(5)
    conn, _ = server.accept()  # the check's connection reached the queue
    conn.close()


async def test_tcp_refused(bound: Callable[..., socket.socket]) -> None:
    closed = bound(listen=False)  # holds the port, so nothing else listens there
    spec = parse_health(f"tcp:127.0.0.1:{port_of(closed)}")
    assert await check(spec, timeout=2) == "connection refused"


async def test_tcp_ipv6(bound: Callable[..., socket.socket]) -> None:
    try:
        server = bound(family=socket.AF_INET6)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    assert await check(parse_health(f"tcp:[::1]:{port_of(server)}"), timeout=2) is None
    closed = bound(family=socket.AF_INET6, listen=False)
    assert await check(parse_health(f"tcp:[::1]:{port_of(closed)}"),
                       timeout=2) == "connection refused"


async def test_tcp_by_name_tries_each_address(bound: Callable[..., socket.socket]) -> None:
    """``localhost`` may resolve to ::1 first, where nothing listens: 127.0.0.1 answers."""
    server = bound()
    assert await check(parse_health(f"tcp:localhost:{port_of(server)}"), timeout=5) is None
    closed = bound(listen=False)
    assert await check(parse_health(f"tcp:localhost:{port_of(closed)}"),
                       timeout=5) == "connection refused"


def fill_backlog(port: int) -> list[socket.socket]:
    """Connect to *port* (listening with backlog 0, never accepting) until a connection
    hangs: from then on the kernel drops the SYNs, so a connection stays in progress."""
    fillers = []
    for _ in range(20):
        sock = socket.socket()
        fillers.append(sock)
        sock.settimeout(0.3)
        try:
            sock.connect(("127.0.0.1", port))
        except TimeoutError:
            return fillers
    for sock in fillers:
        sock.close()
    pytest.skip("the accept queue never filled")


async def test_tcp_times_out_when_nobody_answers(bound: Callable[..., socket.socket]) -> None:
    server = bound(backlog=0)
    fillers = fill_backlog(port_of(server))
    try:
        spec = parse_health(f"tcp:127.0.0.1:{port_of(server)}")
        started = time.monotonic()
        assert await check(spec, timeout=0.3) == "timed out after 0.3s"
        assert 0.25 < time.monotonic() - started < 3
    finally:
        for sock in fillers:
            sock.close()


# -- http ---------------------------------------------------------------------------------

ANSWERS = {
    "/ok": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "/created": b"HTTP/1.0 201 Created\r\n\r\n",
    "/down": b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n",
    "/moved": b"HTTP/1.1 302 Found\r\nLocation: /down\r\nContent-Length: 0\r\n\r\n",
    "/missing": b"HTTP/1.1 404 Not Found\r\n\r\n",
    "/garbage": b"hello there\r\n\r\n",
    "/silent": b"",
}


class HttpServer:
    """A tiny HTTP server on the test's loop: the answer depends on the path."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []
        self.release = asyncio.Event()  # /hang answers once set
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self, context: ssl.SSLContext | None = None) -> None:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0, ssl=context)
        self.port = self.server.sockets[0].getsockname()[1]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.requests.append(head)
            path = head.split(b" ")[1].split(b"?")[0].decode()
            if path == "/hang":
                await self.release.wait()
            writer.write(ANSWERS.get(path, ANSWERS["/ok"]))
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass  # the probe went away: nothing to answer
        finally:
            writer.close()

    async def stop(self) -> None:
        self.release.set()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def http() -> AsyncIterator[HttpServer]:
    server = HttpServer()
    await server.start()
    yield server
    await server.stop()


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/ok", None),
        ("/created", None),
        ("/moved", None),  # 3xx passes; the redirect is not followed
        ("/down", "HTTP 503"),
        ("/missing", "HTTP 404"),
        ("/garbage", "bad HTTP answer b'hello there\\r\\n'"),
        ("/silent", "connection closed before an answer"),
    ],
)
async def test_http_answers(http: HttpServer, path: str, reason: str | None) -> None:
    spec = parse_health(f"http:http://127.0.0.1:{http.port}{path}")
    assert await check(spec, timeout=5) == reason
    assert len(http.requests) == 1  # a redirect is not followed


async def test_http_request_is_plain_http11(http: HttpServer) -> None:
    spec = parse_health(f"http://127.0.0.1:{http.port}/ok?deep=1&x=%20y")
    assert await check(spec, timeout=5) is None
    lines = http.requests[0].decode("ascii").split("\r\n")
    assert lines[0] == "GET /ok?deep=1&x=%20y HTTP/1.1"
    headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines[1:] if line)}
    assert headers["host"] == f"127.0.0.1:{http.port}"
    assert headers["connection"] == "close"


async def test_http_times_out(http: HttpServer) -> None:
    spec = parse_health(f"http://127.0.0.1:{http.port}/hang")
    assert await check(spec, timeout=0.5) == "timed out after 0.5s"


async def test_http_refused(bound: Callable[..., socket.socket]) -> None:
    closed = bound(listen=False)
    spec = parse_health(f"http://127.0.0.1:{port_of(closed)}/")
    assert await check(spec, timeout=2) == "connection refused"


async def test_https_to_a_plain_server_is_a_tls_failure() -> None:
    async def talk_first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(ANSWERS["/ok"])  # plain HTTP where a TLS handshake was expected
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(talk_first, "127.0.0.1", 0)
    try:
        spec = parse_health(f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/ok")
        reason = await check(spec, timeout=5)
        assert reason is not None and reason.startswith("TLS: "), reason
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1 (made by the openssl tool)."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    try:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
             "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
            check=True, capture_output=True, timeout=60)
    except (FileNotFoundError, subprocess.CalledProcessError):
        pytest.skip("no openssl tool to make a certificate")
    return key, cert


async def test_https_verifies_the_certificate(certificate: tuple[Path, Path],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    key, cert = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = HttpServer()
    await server.start(context)
    try:
        spec = parse_health(f"https://localhost:{server.port}/down")
        # not trusted: refused before any request
        monkeypatch.setattr(probes, "_ssl_context", None)
        reason = await check(spec, timeout=5)
        assert reason is not None and reason.startswith("TLS: certificate verify failed ("), \
            reason
        assert server.requests == []
        # trusted (the default context reads SSL_CERT_FILE): the answer counts
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        monkeypatch.setattr(probes, "_ssl_context", None)
        assert await check(spec, timeout=5) == "HTTP 503"
        ok = parse_health(f"https://localhost:{server.port}/ok")
        assert await check(ok, timeout=5) is None
        assert server.requests[0].startswith(b"GET /down HTTP/1.1\r\n")
    finally:
        await server.stop()


# -- exec ---------------------------------------------------------------------------------

def py(code: str) -> str:
    return f"exec:{shlex.join([PYTHON, '-c', code])}"


async def test_exec_exit_codes() -> None:
    assert await check(parse_health(py("pass")), timeout=10) is None
    assert await check(parse_health(py("raise SystemExit(2)")), timeout=10) == "exit 2"
    assert await check(parse_health(py("import os; os.kill(os.getpid(), 15)")),
                       timeout=10) == "killed by SIGTERM"


async def test_exec_program_not_found() -> None:
    reason = await check(parse_health("exec:no-such-probe-program --x"), timeout=5,
                         env={"PATH": "/nonexistent"})
    assert reason == "cannot run 'no-such-probe-program': not found on PATH (/nonexistent)"


async def test_exec_gets_env_and_cwd(tmp_path: Path) -> None:
    spec = parse_health(py(
        "import os, sys; sys.exit(0 if os.environ.get('PROBE') == 'yes' "
        f"and os.getcwd() == {str(tmp_path)!r} else 3)"))
    env = {"PROBE": "yes", "PATH": os.environ.get("PATH", "")}
    assert await check(spec, timeout=10, env=env, cwd=str(tmp_path)) is None
    assert await check(spec, timeout=10, cwd=str(tmp_path)) == "exit 3"
    assert await check(spec, timeout=10, env=env) == "exit 3"


async def test_exec_stdio_is_devnull(tmp_path: Path) -> None:
    out = tmp_path / "fds"
    spec = parse_health(py(
        "import os; open(" + repr(str(out)) + ", 'w').write("
        "' '.join(os.readlink(f'/proc/self/fd/{n}') for n in range(3)))"))
    assert await check(spec, timeout=10) is None
    assert out.read_text().split() == ["/dev/null"] * 3


async def test_exec_that_hangs_is_killed_with_its_child(tmp_path: Path,
                                                       pids: list[int]) -> None:
    pidfile = tmp_path / "pids"
    spec = parse_health(f"exec:{child_cmd('--spawn-child', '--pidfile', str(pidfile))}")
    started = time.monotonic()
    assert await check(spec, timeout=1.0) == "timed out after 1s"
    assert time.monotonic() - started < 8
    command, grandchild = await read_pids(pidfile)
    pids.extend([command, grandchild])
    assert _collected(command)  # killed and reaped: no zombie left to us
    assert not pid_alive(command)
    await wait_for(lambda: not pid_alive(grandchild), what="the command's child to die")


async def test_exec_that_passes_leaves_nothing_behind(tmp_path: Path,
                                                     pids: list[int]) -> None:
    pidfile = tmp_path / "pids"
    spec = parse_health(
        f"exec:{child_cmd('--spawn-child', '--pidfile', str(pidfile), '--exit', '0')}")
    assert await check(spec, timeout=10) is None
    command, grandchild = await read_pids(pidfile)
    pids.extend([command, grandchild])
    assert _collected(command)
    await wait_for(lambda: not pid_alive(grandchild), what="the child it left to die")


async def test_exec_cancelled_kills_and_reaps(tmp_path: Path, pids: list[int]) -> None:
    pidfile = tmp_path / "pids"
    spec = parse_health(f"exec:{child_cmd('--spawn-child', '--pidfile', str(pidfile))}")
    task = asyncio.ensure_future(check(spec, timeout=60))
    command, grandchild = await read_pids(pidfile)
    pids.extend([command, grandchild])
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    assert _collected(command)
    await wait_for(lambda: not pid_alive(grandchild), what="the command's child to die")


async def test_exec_under_circusds_sigchld_collector() -> None:
    """With circusd's SIGCHLD handler on (CHILDREN.listen), the status still reaches the
    check: it is neither stolen nor taken for an orphan's."""
    assert CHILDREN.listen()
    try:
        assert await check(parse_health(py("raise SystemExit(3)")), timeout=10) == "exit 3"
        assert await check(parse_health(py("pass")), timeout=10) is None
    finally:
        CHILDREN.unlisten()


# -- fd:N ---------------------------------------------------------------------------------

NOTIFIER = """
import os, sys, time
w, n, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
os.dup2(w, n)
os.close(w)
if mode == "ready":
    os.write(n, b"ready\\n")
    os.close(n)
elif mode == "partial":
    os.write(n, b"almost")
    sys.exit(0)
elif mode == "exit":
    sys.exit(1)
time.sleep(60)
"""


def spawn_notifier(notification: FdNotification, mode: str, fd: int = 7
                   ) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [PYTHON, "-c", NOTIFIER, str(notification.write_fd), str(fd), mode],
        pass_fds=(notification.write_fd,))


def sleeper() -> subprocess.Popen[bytes]:
    """A child that inherits every inheritable descriptor of ours."""
    return subprocess.Popen([PYTHON, "-c", "import time; time.sleep(60)"], close_fds=False)


@pytest.fixture
def notification() -> Iterator[FdNotification]:
    note = FdNotification()
    yield note
    note.close()


async def test_fd_notification_newline(notification: FdNotification,
                                       popens: list[subprocess.Popen[bytes]]) -> None:
    proc = spawn_notifier(notification, "ready")
    popens.append(proc)
    notification.close_write()
    assert await asyncio.wait_for(notification.wait(), 10) is True
    assert proc.poll() is None  # it said so while running
    assert await notification.wait() is True  # the answer is kept


@pytest.mark.parametrize("mode", ["exit", "partial"])
async def test_fd_notification_ends_without_newline(notification: FdNotification,
                                                    popens: list[subprocess.Popen[bytes]],
                                                    mode: str) -> None:
    popens.append(spawn_notifier(notification, mode))
    notification.close_write()
    assert await asyncio.wait_for(notification.wait(), 10) is False


async def test_fd_notification_process_killed(notification: FdNotification,
                                              popens: list[subprocess.Popen[bytes]]) -> None:
    proc = spawn_notifier(notification, "silent")
    popens.append(proc)
    notification.close_write()
    waiting = asyncio.ensure_future(notification.wait())
    await stays(lambda: not waiting.done(), for_=0.3, what="waiting")
    proc.kill()
    assert await asyncio.wait_for(waiting, 10) is False


async def test_fd_notification_not_inherited_by_others(
        notification: FdNotification, popens: list[subprocess.Popen[bytes]]) -> None:
    """Another child started meanwhile does not hold the pipe open (close-on-exec)."""
    other = sleeper()
    popens.append(other)
    popens.append(spawn_notifier(notification, "exit"))
    notification.close_write()
    assert await asyncio.wait_for(notification.wait(), 10) is False
    assert other.poll() is None


# -- Poller -------------------------------------------------------------------------------

async def run_until(condition: Callable[[], object], what: str) -> None:
    await wait_for(condition, what=what, timeout=10)


async def test_poller_readiness_stops_at_the_first_pass(
        bound: Callable[..., socket.socket]) -> None:
    server = bound(listen=False)
    results: list[str | None] = []
    poller = Poller(parse_health(f"tcp:127.0.0.1:{port_of(server)}"), interval=0.05,
                    timeout=1, on_result=results.append, until_pass=True)
    task = asyncio.ensure_future(poller.run())
    try:
        await run_until(lambda: len(results) >= 2, "two failed checks")
        assert poller.failures == len(results)
        server.listen(4)
        await asyncio.wait_for(task, 10)
    finally:
        task.cancel()
    assert results[-1] is None
    assert set(results[:-1]) == {"connection refused"}
    assert poller.passed and poller.failures == 0 and not poller.running
    assert poller.checks == len(results)
    count = len(results)
    await stays(lambda: len(results) == count, for_=0.3, what="no check after the pass")


async def test_poller_liveness_runs_until_closed(bound: Callable[..., socket.socket]) -> None:
    server = bound()
    results: list[str | None] = []
    poller = Poller(parse_health(f"tcp:127.0.0.1:{port_of(server)}"), interval=0.05,
                    timeout=1, on_result=results.append)
    poller.start()
    try:
        await run_until(lambda: results.count(None) >= 3, "three passes")
        server.close()  # the process "dies": checks now fail
        await run_until(lambda: poller.failures >= 2, "two failures in a row")
        assert poller.last == "connection refused"
        assert poller.running
    finally:
        await poller.close()
    assert not poller.running
    count = len(results)
    await stays(lambda: len(results) == count, for_=0.3, what="no check after close")


async def test_poller_spaces_checks_by_the_interval(bound: Callable[..., socket.socket]) -> None:
    server = bound()
    times: list[float] = []
    poller = Poller(parse_health(f"tcp:127.0.0.1:{port_of(server)}"), interval=0.2,
                    timeout=1, on_result=lambda _: times.append(time.monotonic()), delay=0.1)
    started = time.monotonic()
    poller.start()
    try:
        await run_until(lambda: len(times) >= 4, "four checks")
    finally:
        await poller.close()
    assert times[0] - started >= 0.09  # the delay
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert all(0.15 < gap < 0.6 for gap in gaps), gaps


async def test_poller_waiting_check_times_out(bound: Callable[..., socket.socket]) -> None:
    """A connection in progress is awaited in the poller's own task, under the timeout."""
    server = bound(backlog=0)
    fillers = fill_backlog(port_of(server))
    results: list[str | None] = []
    poller = Poller(parse_health(f"tcp:127.0.0.1:{port_of(server)}"), interval=0.05,
                    timeout=0.2, on_result=results.append)
    poller.start()
    try:
        await run_until(lambda: len(results) >= 2, "two checks")
    finally:
        await poller.close()
        for sock in fillers:
            sock.close()
    assert results[:2] == ["timed out after 0.2s"] * 2


async def test_poller_close_kills_a_running_exec(tmp_path: Path, pids: list[int]) -> None:
    pidfile = tmp_path / "pids"
    results: list[str | None] = []
    spec = parse_health(f"exec:{child_cmd('--spawn-child', '--pidfile', str(pidfile))}")
    poller = Poller(spec, interval=1, timeout=60, on_result=results.append)
    poller.start()
    command, grandchild = await read_pids(pidfile)
    pids.extend([command, grandchild])
    await poller.close()
    assert _collected(command)
    await wait_for(lambda: not pid_alive(grandchild), what="the command's child to die")
    assert results == []


async def test_poller_cancelled_run_closes(http: HttpServer) -> None:
    results: list[str | None] = []
    poller = Poller(parse_health(f"http://127.0.0.1:{http.port}/hang"), interval=0.05,
                    timeout=30, on_result=results.append)
    task = asyncio.ensure_future(poller.run())
    await run_until(lambda: http.requests, "the request")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    assert not poller.running and results == []


async def test_poller_survives_a_failing_callback(http: HttpServer,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str | None] = []

    def on_result(reason: str | None) -> None:
        calls.append(reason)
        raise RuntimeError("the caller's bug")

    poller = Poller(parse_health(f"http://127.0.0.1:{http.port}/down"), interval=0.05,
                    timeout=5, on_result=on_result)
    poller.start()
    try:
        await run_until(lambda: len(calls) >= 3, "three results")
    finally:
        await poller.close()
    assert set(calls) == {"HTTP 503"}
    assert "result callback failed" in caplog.text


async def test_many_pollers_share_wakeups(bound: Callable[..., socket.socket]) -> None:
    """200 pollers on one listening port, each once per 0.5 s: every check passes."""
    server = bound(backlog=1024)
    server.setblocking(False)
    loop = asyncio.get_running_loop()

    def drain() -> None:
        with contextlib.suppress(BlockingIOError):
            while True:
                server.accept()[0].close()

    loop.add_reader(server.fileno(), drain)
    results: list[str | None] = []
    pollers = [Poller(parse_health(f"tcp:127.0.0.1:{port_of(server)}"), interval=0.5,
                      timeout=1, on_result=results.append, delay=i / 400)
               for i in range(200)]
    for poller in pollers:
        poller.start()
    try:
        await run_until(lambda: len(results) >= 600, "three rounds")
    finally:
        await asyncio.gather(*(poller.close() for poller in pollers))
        loop.remove_reader(server.fileno())
    assert set(results) == {None}
