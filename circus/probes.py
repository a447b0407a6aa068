"""Readiness and liveness probes: the checks, and what waits for a process's own signal.

The option text is parsed in :mod:`circus.probespec` (re-exported here). This module runs
what a spec asks for:

* :func:`check` runs one ``tcp:``, ``http:`` or ``exec:`` check and says why it failed;
* :class:`Poller` repeats a check for one process, until it passes (readiness) or for
  the life of the process (liveness);
* :class:`LogMatcher` finds the first output line matching ``log:REGEX`` and
  :class:`FdNotification` is the pipe of ``fd:N`` (both in :mod:`circus.probewait`).

What each check does:

``tcp:``
    opens a connection and closes it at once (a normal close: the probed server reads
    an end of file). An address is connected to without resolving; a name is resolved
    at each check and its addresses tried in turn.
``http:``
    ``GET`` of the path and query over HTTP/1.1 with ``Host`` and ``Connection:
    close``; only the status line is read: 2xx and 3xx pass, a redirect is not
    followed. ``https`` verifies the certificate against the system's CAs
    (``ssl.create_default_context``, which honours ``SSL_CERT_FILE``).
``exec:``
    runs the command without a shell, stdin, stdout and stderr on ``/dev/null``: exit
    0 passes. It is started like a worker (:func:`circus.spawn.start_child_soon`: a new
    session, circusd's spawning thread) and its exit status collected by
    :data:`circus.children.CHILDREN`, so that circusd's SIGCHLD handling neither takes
    it for an orphan nor steals its status (``asyncio.create_subprocess_exec`` would
    lose it to that handler). When the command ends, or its time is up, its process
    group is killed: a check leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
import os
import shlex
import signal
import socket
import ssl
import subprocess
from collections.abc import Callable, Mapping
from typing import Any

from circus import __version__
from circus.children import CHILDREN
from circus.probespec import (
    HEALTH_FORMS,
    READY_FORMS,
    ExecProbe,
    FdReady,
    HttpProbe,
    LogReady,
    Notify,
    ProbeSpec,
    ReadySpec,
    Spawned,
    TcpProbe,
    has_template,
    is_probe,
    parse_health,
    parse_ready,
    validate_health,
    validate_ready,
)
from circus.probewait import MAX_LINE, FdNotification, LogMatcher
from circus.spawn import SpawnSpec, start_child_soon
from circus.util.command import program_problem, search_path

log = logging.getLogger(__name__)

__all__ = [
    "HEALTH_FORMS",
    "MAX_LINE",
    "READY_FORMS",
    "ExecProbe",
    "FdNotification",
    "FdReady",
    "HttpProbe",
    "LogMatcher",
    "LogReady",
    "Notify",
    "Poller",
    "ProbeSpec",
    "ReadySpec",
    "Spawned",
    "TcpProbe",
    "check",
    "has_template",
    "is_probe",
    "parse_health",
    "parse_ready",
    "validate_health",
    "validate_ready",
]

_STATUS_LINE = 4096  # the longest HTTP status line read
_REAP_TIMEOUT = 5.0  # how long a killed exec check may take to be collected
# A poller's checks start on a grid of min(GRID, interval / 10) seconds, so that the
# checks of many processes due within one slot share a wake-up of the loop: waking costs
# more than a loopback connection (1,000 processes each checked once a second: at most
# 10 wake-ups a second, not 1,000). A check starts at most one slot late.
GRID = 0.1

_ssl_context: ssl.SSLContext | None = None


# -- one check ----------------------------------------------------------------------------

async def check(spec: ProbeSpec, *, timeout: float,  # noqa: ASYNC109  (the check's deadline)
                env: Mapping[str, str] | None = None, cwd: str | None = None) -> str | None:
    """Run the check *spec* once. None if it passed, else a short reason.

    Args:
        spec: a ``tcp:``, ``http:`` or ``exec:`` spec, substituted.
        timeout: seconds the whole check may take (connect, answer, or the command).
        env: the environment of an ``exec:`` command (default: circusd's own).
        cwd: the directory an ``exec:`` command runs in (default: circusd's own).

    Returns:
        None, or a reason such as ``connection refused``, ``HTTP 503``, ``exit 2``,
        ``timed out after 1s``. Failures are never raised.
    """
    if not timeout > 0:
        raise ValueError(f"timeout must be positive, got {timeout!r}")
    pending: socket.socket | None = None
    if isinstance(spec, TcpProbe):
        done, reason, pending = _tcp_now(spec)
        if done:
            return reason
    return await _check(spec, timeout, env, cwd, pending)


def _tcp_now(spec: TcpProbe) -> tuple[bool, str | None, socket.socket | None]:
    """Start the check *spec* without waiting: ``(True, result, None)`` when it settled
    within ``connect`` (always on loopback), else ``(False, None, socket in progress or
    None for a name to resolve)``."""
    if not spec.family:
        return False, None, None
    try:
        pending, code = _connect_now(spec.family, (spec.host, spec.port))
    except OSError as exc:
        return True, _os_reason(exc), None
    if pending is None:
        return True, None if code == 0 else _errno_reason(code), None
    return False, None, pending


async def _check(spec: ProbeSpec, timeout: float,  # noqa: ASYNC109
                 env: Mapping[str, str] | None, cwd: str | None,
                 pending: socket.socket | None) -> str | None:
    """The part of :func:`check` that waits; *pending* is a tcp connection in progress
    (closed here)."""
    try:
        async with asyncio.timeout(timeout):
            if isinstance(spec, TcpProbe):
                return await _tcp(spec, pending)
            if isinstance(spec, HttpProbe):
                return await _http(spec)
            return await _exec(spec, env, cwd)
    except TimeoutError:
        return f"timed out after {timeout:g}s"
    except OSError as exc:
        return _os_reason(exc)
    finally:
        if pending is not None:
            pending.close()


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host: {exc.strerror}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: certificate verify failed ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {str(exc.reason).lower().replace('_', ' ') if exc.reason else exc}"
    if exc.errno is not None:
        return _errno_reason(exc.errno)
    return str(exc) or type(exc).__name__


def _errno_reason(code: int) -> str:
    text = os.strerror(code)
    return text[:1].lower() + text[1:]


async def _tcp(spec: TcpProbe, pending: socket.socket | None) -> str | None:
    """The connection *pending* (an address's, in progress) or one to each address of
    the name, the first that answers, as a client would."""
    loop = asyncio.get_running_loop()
    if pending is not None:
        code = await _connected(loop, pending)
        return None if code == 0 else _errno_reason(code)
    infos = await loop.getaddrinfo(spec.host, spec.port, type=socket.SOCK_STREAM)
    reason = "no address"
    for family, _, _, _, address in infos:
        sock, code = _connect_now(family, address)
        if sock is not None:
            try:
                code = await _connected(loop, sock)
            finally:
                sock.close()
        if code == 0:
            return None
        reason = _errno_reason(code)
    return reason


def _connect_now(family: int, address: Any) -> tuple[socket.socket | None, int]:
    """Start a connection to *address*: ``(None, 0)`` connected (and closed), ``(None,
    errno)`` refused, or ``(socket, EINPROGRESS)`` still in progress.

    A plain non-blocking socket: this runs for every process every few seconds, so no
    transport, protocol or stream is built for it. On loopback the handshake (or the
    refusal) completes within ``connect`` itself.
    """
    sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    try:
        code = sock.connect_ex(address)
        if code in (errno.EINPROGRESS, errno.EAGAIN):
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code == 0:
                try:
                    sock.getpeername()
                except OSError:  # ENOTCONN: not yet
                    return sock, errno.EINPROGRESS
    except BaseException:
        sock.close()
        raise
    sock.close()
    return None, code


async def _connected(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> int:
    """Wait until the connection *sock* is made or refused: 0 or the errno."""
    fd = sock.fileno()
    done = loop.create_future()
    loop.add_writer(fd, _wake, done)
    try:
        await done
    finally:
        loop.remove_writer(fd)
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _http(spec: HttpProbe) -> str | None:
    global _ssl_context
    context: ssl.SSLContext | None = None
    if spec.tls:
        if _ssl_context is None:  # loading the CA store costs milliseconds: once
            _ssl_context = ssl.create_default_context()
        context = _ssl_context
    reader, writer = await asyncio.open_connection(
        spec.host, spec.port, ssl=context, server_hostname=spec.host if spec.tls else None,
        limit=_STATUS_LINE)
    try:
        request = (f"GET {spec.target} HTTP/1.1\r\nHost: {spec.authority}\r\n"
                   f"User-Agent: circus-probe/{__version__}\r\nAccept: */*\r\n"
                   f"Connection: close\r\n\r\n")
        writer.write(request.encode("ascii"))
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return "connection closed before an answer"
        return f"bad HTTP answer {exc.partial[:40]!r}"
    except asyncio.LimitOverrunError:
        return "bad HTTP answer (status line too long)"
    finally:
        writer.close()  # the transport finishes closing on its own (TLS: close_notify)
    return _http_reason(line)


def _http_reason(line: bytes) -> str | None:
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit() \
            or len(parts[1]) != 3:
        return f"bad HTTP answer {line[:40]!r}"
    status = int(parts[1])
    return None if 200 <= status < 400 else f"HTTP {status}"


async def _exec(spec: ExecProbe, env: Mapping[str, str] | None, cwd: str | None
                ) -> str | None:
    child_env = dict(os.environ if env is None else env)
    program = spec.argv[0]
    problem = program_problem(program, search_path(child_env), cwd)
    if problem is not None:
        return f"cannot run {program!r}: {problem}"
    launch = SpawnSpec(cmd=shlex.join(spec.argv), env=child_env, working_dir=cwd,
                       close_child_stdin=True, close_child_stdout=True,
                       close_child_stderr=True)
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[int] = loop.create_future()
    popen: subprocess.Popen[bytes] | None = None

    def on_status(status: int) -> None:
        code = os.waitstatus_to_exitcode(status)
        if popen is not None:
            popen.returncode = code  # collected: Popen must never wait for this pid
        if not exited.done():
            exited.set_result(code)

    made = asyncio.ensure_future(start_child_soon(launch))
    try:
        pid, popen, _ = await asyncio.shield(made)
    except asyncio.CancelledError:
        # the child is made regardless: collect it, then give up
        with contextlib.suppress(Exception):
            pid, popen, _ = await made
            CHILDREN.track(pid, on_status)
            _kill_group(pid)
        raise
    except (OSError, ValueError) as exc:
        return f"cannot run {program!r}: {getattr(exc, 'strerror', None) or exc}"
    CHILDREN.track(pid, on_status)
    try:
        code = await asyncio.shield(exited)
    finally:
        # Whatever it left in its group goes too; on a timeout, the command itself.
        # After a normal exit the group may be gone: a pid is handed out again only
        # after the kernel went round all pid_max numbers, not within this step.
        _kill_group(pid)
        if not exited.done():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_REAP_TIMEOUT):
                    await asyncio.shield(exited)
    if code == 0:
        return None
    if code < 0:
        return f"killed by {_signal_name(-code)}"
    return f"exit {code}"


def _kill_group(pid: int) -> None:
    # the command leads its own session and group (start_child): its pid names the group,
    # and a group id is not reused while any member lives
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


# -- a check, again and again -------------------------------------------------------------

class Poller:
    """Runs :func:`check` for one process every *interval* seconds.

    With ``until_pass`` (readiness) it stops at the first pass; otherwise (liveness) it
    runs until cancelled. *on_result* is called on the loop with each result (None: it
    passed; else the reason); ``checks``, ``failures`` (in a row), ``last`` and
    ``passed`` say how it went. Checks never overlap: *interval* runs from the start of
    one to the start of the next, and a check that outlasts it is followed at once. The
    first check starts *delay* seconds after :meth:`start` (liveness checks of many
    processes can be spread over an interval so); the later ones on a grid of
    ``min(0.1, interval / 10)`` seconds, so that checks of many processes due together
    share one wake-up of the loop.

    No task runs between checks: a timer (``loop.call_at``) starts each one. A ``tcp:``
    check that settles within ``connect`` (always on loopback) is done in that timer
    callback; any other check runs as a task the poller owns, cancelled and awaited by
    :meth:`close`.
    """

    def __init__(self, spec: ProbeSpec, *, interval: float, timeout: float,
                 on_result: Callable[[str | None], object], until_pass: bool = False,
                 env: Mapping[str, str] | None = None, cwd: str | None = None,
                 delay: float = 0.0) -> None:
        if not interval > 0 or not timeout > 0:
            raise ValueError("interval and timeout must be positive")
        self.spec = spec
        self.interval = interval
        self.timeout = timeout
        self.on_result = on_result
        self.until_pass = until_pass
        self.env = env
        self.cwd = cwd
        self.delay = max(0.0, delay)
        self.checks = 0
        self.failures = 0
        self.last: str | None = None
        self.passed = False
        self._grid = min(GRID, interval / 10)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None  # the check in flight, if it waits
        self._finished: asyncio.Future[None] | None = None
        self._due = 0.0
        self._stopped = False

    @property
    def running(self) -> bool:
        """Started, and neither cancelled nor (``until_pass``) passed."""
        return self._loop is not None and not self._stopped

    def start(self) -> None:
        """Start checking (on the running loop); the first check comes after *delay*."""
        if self._loop is not None:
            raise RuntimeError("a poller starts once")
        self._loop = loop = asyncio.get_running_loop()
        self._finished = loop.create_future()
        self._due = loop.time() + self.delay
        self._timer = loop.call_at(self._due, self._fire)

    def cancel(self) -> None:
        """Stop checking. A check in flight is cancelled; :meth:`close` waits for it."""
        self._stop()
        if self._task is not None:
            self._task.cancel()

    async def close(self) -> None:
        """Stop checking and wait until the check in flight has cleaned up (an ``exec:``
        command killed and collected)."""
        self.cancel()
        task = self._task
        if task is not None and not task.done():
            await asyncio.wait([task])

    async def run(self) -> None:
        """:meth:`start`, then wait until a pass (``until_pass``) or for ever; cancelling
        the caller stops the poller (as :meth:`close`)."""
        if self._loop is None:
            self.start()
        assert self._finished is not None
        try:
            await asyncio.shield(self._finished)
        finally:
            await self.close()

    # -- one round ------------------------------------------------------------------------

    def _fire(self) -> None:
        self._timer = None
        if self._stopped:
            return
        loop = self._loop
        assert loop is not None
        self._due = max(self._due + self.interval, loop.time())
        pending: socket.socket | None = None
        if isinstance(self.spec, TcpProbe):
            try:
                done, reason, pending = _tcp_now(self.spec)
            except Exception as exc:  # a bug: report it as a failure, go on
                log.exception("probe %s crashed", self.spec.describe())
                done, reason = True, f"probe error: {exc}"
            if done:
                self._result(reason)
                return
        self._task = loop.create_task(self._waiting(pending),
                                      name=f"probe {self.spec.describe()}")

    async def _waiting(self, pending: socket.socket | None) -> None:
        try:
            reason = await _check(self.spec, self.timeout, self.env, self.cwd, pending)
        except Exception as exc:  # a bug in a check: report it as a failure, go on
            log.exception("probe %s crashed", self.spec.describe())
            reason = f"probe error: {exc}"
        self._task = None
        self._result(reason)

    def _result(self, reason: str | None) -> None:
        if self._stopped:
            return
        self.checks += 1
        self.last = reason
        self.passed = reason is None
        self.failures = 0 if reason is None else self.failures + 1
        try:
            self.on_result(reason)
        except Exception:  # the caller's bug: keep checking
            log.exception("probe %s: result callback failed", self.spec.describe())
        if reason is None and self.until_pass:
            self._stop()
        elif not self._stopped:
            assert self._loop is not None
            grid = self._grid
            self._timer = self._loop.call_at(math.ceil(self._due / grid) * grid, self._fire)

    def _stop(self) -> None:
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._finished is not None and not self._finished.done():
            self._finished.set_result(None)
