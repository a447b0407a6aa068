"""The receiving end of systemd's notification protocol, for workers to report to circusd.

A program written for ``Type=notify`` under systemd finds an address in ``NOTIFY_SOCKET``
and sends datagrams to it, each a list of ``KEY=VALUE`` assignments, one a line
(``sd_notify(3)``). Clients exist for every language, and many only need the ``socket``
module: that is why circusd speaks the same protocol to its workers instead of one of its
own. :class:`NotifyServer` is one ``AF_UNIX``/``SOCK_DGRAM`` socket read from the event
loop; it knows nothing of watchers. Each datagram becomes one call of
``on_message(pid, fields)``.

Who sent it: the socket has ``SO_PASSCRED`` set, so the kernel attaches the sender's
credentials (``SCM_CREDENTIALS``) to every datagram, whatever the sender does. The pid
is the kernel's, translated into circusd's pid namespace, and cannot be forged by an
unprivileged sender: it is what authenticates a message, not the socket's mode. A
datagram without credentials (pid 0: a sender in a pid namespace circusd cannot see) is
dropped. The pid is that of the process that sent, which may be a descendant of the
process circusd spawned (a shell script that runs the program without ``exec``): mapping
it to a process is the receiver's business.

What is parsed, as systemd does: a datagram of at most 4096 bytes (a longer one arrives
truncated and is dropped whole); no NUL byte in it (else dropped whole); lines split on
``\\n``; a line that is not ``NAME=value`` with ``NAME`` made of letters, digits and
``_`` (not starting with a digit) and valid UTF-8 is ignored; when a name comes twice,
the first value counts (systemd looks each key up from the start). Every well-formed
assignment is passed on, known key or not.

The keys meant for the watcher side (this module only parses them; acting on them is the
watcher's part):

============================  ============================================================
``READY=1``                   the process is ready to serve
``STATUS=<text>``             a one-line status of the process, free text
``WATCHDOG=1``                the process is alive: restarts its watchdog timer
``WATCHDOG_USEC=<µs>``        a sender-side reset of the process's watchdog timeout, as
                              ``sd_notify`` allows: the timer restarts with the new value
``STOPPING=1``                the process has begun to shut down of its own accord
``EXTEND_TIMEOUT_USEC=<µs>``  the start (before ``READY=1``) or the stop (after
                              ``STOPPING=1``) needs this much more time, from now
``MAINPID=<pid>``             ignored: circusd spawned the process and supervises that
                              pid (reaps it as its child, signals its process group);
                              systemd needs ``MAINPID`` to learn which pid a forking
                              daemon left behind, which circus does not support, and a
                              message naming another pid would let one process take over
                              another's place
============================  ============================================================

Other keys (``ERRNO``, ``FDSTORE``, a program's own) are passed on like these.

Descriptors sent along (``SCM_RIGHTS``, e.g. with ``FDSTORE=1``) are received
close-on-exec, so that a spawn running meanwhile in circusd's spawning thread cannot
inherit them, and closed at once: circusd keeps no file-descriptor store.

A flood cannot hold the loop: at most :data:`BATCH` datagrams are read per wakeup, and
the reader is called again at the loop's next turn if more are queued. The kernel queues
a bounded number of datagrams per socket (``net.unix.max_dgram_qlen``); past that, senders
wait (or get ``EAGAIN``), so a flood slows the flooder, not circusd.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import errno
import logging
import os
import re
import socket
import stat
import struct
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

MAX_DATAGRAM = 4096  # systemd's limit (PIPE_BUF); a longer datagram is refused whole
MAX_FDS = 253  # SCM_MAX_FD: the most descriptors one datagram can carry on Linux
BATCH = 64  # datagrams read per wakeup of the loop
MAX_PATH = 107  # bytes of a unix socket path (sun_path, without its NUL)

_UCRED = struct.Struct("iII")  # struct ucred: pid, uid, gid
_ANCILLARY = socket.CMSG_SPACE(_UCRED.size) + socket.CMSG_SPACE(MAX_FDS * 4)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

OnMessage = Callable[[int, dict[str, str]], object]


def parse(payload: bytes) -> dict[str, str]:
    """The assignments of one datagram, by name, in the order sent.

    Malformed lines (no ``=``, a bad name, invalid UTF-8) are left out; the first value
    of a name counts. A payload with a NUL byte gives nothing.
    """
    fields: dict[str, str] = {}
    if b"\0" in payload:
        return fields
    for raw in payload.split(b"\n"):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            continue
        name, sep, value = line.partition("=")
        if sep and _NAME.match(name) and name not in fields:
            fields[name] = value
    return fields


def socket_address(address: str) -> str | bytes:
    """What ``bind``/``connect`` take for a ``NOTIFY_SOCKET`` value: a path as given,
    ``@name`` as the abstract name (a leading NUL byte).

    Raises:
        ValueError: empty, a lone ``@``, or a path longer than a unix socket allows.
    """
    if address.startswith("@"):
        if len(address) == 1:
            raise ValueError("an abstract socket address needs a name after '@'")
        name = b"\0" + os.fsencode(address[1:])
        if len(name) > MAX_PATH + 1:
            raise ValueError(f"{address}: an abstract name has at most {MAX_PATH} bytes")
        return name
    if not address:
        raise ValueError("the notification socket needs a path or an @name")
    if len(os.fsencode(address)) > MAX_PATH:
        raise ValueError(f"{address}: a unix socket path has at most {MAX_PATH} bytes; "
                         f"choose a shorter directory")
    return address


class NotifyServer:
    """One datagram socket that workers send ``sd_notify`` messages to.

    Args:
        path: where to bind: a filesystem path (made absolute, since clients require it),
            or ``@name`` for a Linux abstract address (no file, no permissions: any
            process in circusd's network namespace may send, and the sender's pid is what
            tells who it is).
        on_message: called on the loop as ``on_message(pid, fields)`` for each datagram
            with at least one well-formed assignment; an exception it raises is logged and
            the next datagram is read.
        mode: the permissions of the socket file (default 0600: only circusd's user may
            send; workers that run under another ``uid`` need a wider mode, e.g. 0666 in a
            directory they may search).
    """

    def __init__(self, path: str, on_message: OnMessage, *, mode: int = 0o600) -> None:
        self.abstract = path.startswith("@")
        if path and not self.abstract:
            path = os.path.abspath(path)  # sd_notify clients accept no relative path
        self._path = path
        self._bind_to = socket_address(self._path)
        self._on_message = on_message
        self._mode = mode
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._file: tuple[int, int] | None = None  # (st_dev, st_ino) of the file we bound
        self._warned_at = 0.0

    @property
    def address(self) -> str:
        """The value of ``NOTIFY_SOCKET`` for the workers: an absolute path or ``@name``."""
        return self._path

    @property
    def is_open(self) -> bool:
        return self._sock is not None

    def open(self) -> None:
        """Bind the socket and start reading it from the running loop.

        A socket file left by a circusd that died (nobody receives there) is replaced;
        anything else at the path is refused.

        Raises:
            RuntimeError: not called from a running loop, or already open.
            OSError: the path is taken (``EADDRINUSE``) or cannot be created.
        """
        loop = asyncio.get_running_loop()
        if self._sock is not None:
            raise RuntimeError(f"the notification socket {self._path} is already open")
        if not self.abstract:
            _remove_stale(self._path)
        sock = socket.socket(socket.AF_UNIX,
                             socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            if not self.abstract:
                # The file takes the socket inode's mode at bind (less the umask): set it
                # first, so the path is never there with wider permissions, without
                # touching the umask that spawns running in another thread inherit.
                os.fchmod(sock.fileno(), self._mode)
            try:
                sock.bind(self._bind_to)
            except OSError as exc:
                raise OSError(exc.errno, f"cannot bind the notification socket "
                                         f"{self._path}: {exc.strerror}") from None
            if not self.abstract:
                os.chmod(self._path, self._mode)  # the umask may have taken bits away
                st = os.lstat(self._path)
                self._file = (st.st_dev, st.st_ino)
            loop.add_reader(sock.fileno(), self._read)
        except BaseException:
            sock.close()
            self._remove_file()
            raise
        self._sock = sock
        self._loop = loop
        log.debug("notification socket open on %s", self._path)

    def close(self) -> None:
        """Stop reading, close the socket and remove its file (if it is still ours).
        Safe to call more than once."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(sock.fileno())
        self._loop = None
        sock.close()
        self._remove_file()

    def _remove_file(self) -> None:
        ours, self._file = self._file, None
        if ours is None:
            return
        with contextlib.suppress(OSError):  # gone already, or the directory with it
            st = os.lstat(self._path)
            if (st.st_dev, st.st_ino) == ours:
                os.unlink(self._path)

    # -- reading ---------------------------------------------------------------------------

    def _read(self) -> None:
        """The loop's reader: at most BATCH datagrams, then back to the loop."""
        for _ in range(BATCH):
            sock = self._sock
            if sock is None:  # closed by on_message
                return
            try:
                data, ancdata, flags, _ = sock.recvmsg(MAX_DATAGRAM, _ANCILLARY,
                                                       socket.MSG_CMSG_CLOEXEC)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("cannot read the notification socket %s: %s", self._path,
                            exc.strerror or exc)
                return
            pid = _take_ancillary(ancdata)
            if flags & socket.MSG_TRUNC:
                self._warn(f"dropped a notification of more than {MAX_DATAGRAM} bytes "
                           f"from pid {pid}")
                continue
            if pid <= 0:
                log.debug("dropped a notification without the sender's pid")
                continue
            fields = parse(data)
            if not fields:
                log.debug("dropped a notification from pid %d with nothing to read: %r",
                          pid, data[:200])
                continue
            try:
                self._on_message(pid, fields)
            except Exception:  # a bug in the receiver: the socket is read on
                log.exception("the handler of a notification from pid %d failed", pid)

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._warned_at >= 1.0:  # at most one a second: a flood is not a log flood
            self._warned_at = now
            log.warning("%s", message)
        else:
            log.debug("%s", message)


def _take_ancillary(ancdata: list[tuple[int, int, bytes]]) -> int:
    """Close every descriptor received; return the sender's pid (0 when not given)."""
    pid = 0
    for level, kind, data in ancdata:
        if level != socket.SOL_SOCKET:
            continue
        if kind == socket.SCM_RIGHTS:
            fds = array.array("i")
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
        elif kind == socket.SCM_CREDENTIALS and len(data) >= _UCRED.size:
            pid = _UCRED.unpack_from(data)[0]
    return pid


def _remove_stale(path: str) -> None:
    """Unlink a socket file at *path* that nobody receives on; refuse a live one or
    anything that is not a socket."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError(errno.EEXIST, f"cannot bind the notification socket {path}: "
                                    f"a file that is not a socket is there")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # left by a process that is gone
        return
    except OSError:
        return  # e.g. EACCES: bind() says what is wrong
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"cannot bind the notification socket {path}: "
                                    f"another process receives there")


__all__ = ["BATCH", "MAX_DATAGRAM", "NotifyServer", "OnMessage", "parse", "socket_address"]
