"""Shared sockets: bound once by circusd, inherited by the processes of its watchers.

Each ``[socket:NAME]`` section becomes a :class:`CircusSocket`. The arbiter binds them all
before any watcher starts and keeps them open while it runs, so a process that dies or is
replaced never takes the listening socket with it: connections wait in the kernel's
backlog until a process accepts them, and a graceful reload refuses none.

How a process gets a socket
---------------------------
circusd's sockets are close-on-exec like every descriptor Python opens. A watcher with
``use_sockets = true`` names them in ``pass_fds``, so each of its processes inherits the
same descriptor numbers circusd holds, and ``$(circus.sockets.NAME)`` in ``cmd`` or
``args`` expands to that number. ``stdin_socket = NAME`` makes the socket the process's
fd 0 instead.

``so_reuseport``
----------------
A socket with ``so_reuseport = true`` is handled differently. circusd binds it with
SO_REUSEPORT to reserve the address (and learn the port when ``port = 0``) but does not
listen on it, because the kernel would hand circusd its share of the connections and
nobody would accept them (for the same reason a datagram socket is closed once bound).
Instead every process whose ``cmd`` or ``args`` references ``$(circus.sockets.NAME)``
(or whose ``stdin_socket`` names it) gets a socket of its own, bound to the same address
and listening, which circusd closes right after the spawn. The kernel then spreads
connections evenly over the processes. The price: connections queued on a process's own
socket are reset when that process exits.

Related modules
---------------
This module is one socket: its configuration, binding, the per-process sockets of
``so_reuseport`` and the descriptors one spawn receives. :mod:`circus.socketset` holds
every socket of an arbiter and applies a reread configuration to them;
:mod:`circus.ondemand` starts ``on_demand`` watchers on their first connection.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import socket
import stat
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

log = logging.getLogger(__name__)

__all__ = [
    "CircusSocket",
    "SocketBindError",
    "SocketFds",
    "SocketWatcher",
    "referenced_sockets",
    "sockets_for_spawn",
    "watcher_sockets",
]

# Defaults of the [socket:NAME] keys (circus.options.SOCKET_OPTIONS holds the same).
DEFAULT_BACKLOG = 2048
DEFAULT_UMASK = 8  # Circus's default, an octal 010

_REFERENCE = re.compile(
    r"(?:\$\(|\(\()circus\.sockets\.([A-Za-z0-9_.\-]+)\)", re.IGNORECASE
)
_LISTENING_TYPES = (socket.SOCK_STREAM, socket.SOCK_SEQPACKET)


class SocketBindError(OSError):
    """A ``[socket:NAME]`` could not be created or bound; the message names the section."""

    def __init__(self, sock: CircusSocket, exc: OSError | str) -> None:
        reason = exc if isinstance(exc, str) else (exc.strerror or str(exc))
        super().__init__(f"[{sock.section}] cannot bind {sock.address_text()}: {reason}")
        if isinstance(exc, OSError):
            self.errno = exc.errno


def _int_option(value: Any, default: int) -> int:
    if value is None:
        return default
    return int(value)


def _family(value: Any) -> int:
    if value is None:
        return int(socket.AF_INET)
    if isinstance(value, str):
        from circus.util.convert import to_family

        return int(to_family(value))
    return int(value)


def _socktype(value: Any) -> int:
    if value is None:
        return int(socket.SOCK_STREAM)
    if isinstance(value, str):
        from circus.util.convert import to_socktype

        return int(to_socktype(value))
    return int(value)


def _proto(value: Any) -> int:
    if value is None or value == "":
        return 0
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    return socket.getprotobyname(text)


class CircusSocket:
    """One ``[socket:NAME]``: its configuration, and the bound socket while circusd runs.

    ``host`` and ``port`` read back the bound address once bound (``port = 0`` then shows
    the port the kernel chose), the configured values before.
    """

    def __init__(
        self,
        name: str,
        host: str = "localhost",
        port: int = 8080,
        family: int | str = socket.AF_INET,
        type: int | str = socket.SOCK_STREAM,  # noqa: A002 - the INI key is "type"
        backlog: int = DEFAULT_BACKLOG,
        path: str | None = None,
        umask: int = DEFAULT_UMASK,
        replace: bool = False,
        blocking: bool = False,
        so_reuseport: bool = False,
        interface: str | None = None,
        proto: int | str | None = None,
        section: str | None = None,
    ) -> None:
        self.name = name.lower()
        self.conf_host = host
        self.conf_port = int(port)
        self.path = path
        self.family = int(socket.AF_UNIX) if path else _family(family)
        self.type = _socktype(type)
        self.proto = proto
        self.backlog = int(backlog)
        self.umask = int(umask)
        self.replace = bool(replace)
        self.blocking = bool(blocking)
        self.so_reuseport = bool(so_reuseport) and self.family != socket.AF_UNIX
        self.interface = interface
        self.section = section or f"socket:{self.name}"
        self.sock: socket.socket | None = None
        self._address: Any = None  # the address bound, for the per-process sockets
        self.bound = False
        self._path_inode: tuple[int, int] | None = None  # (dev, ino) of the file we bound

    @classmethod
    def from_config(cls, conf: Mapping[str, Any]) -> CircusSocket:
        """From a socket mapping of :func:`circus.config.load_config` (or a plain dict)."""
        return cls(
            name=str(conf["name"]),
            host=conf.get("host") or "localhost",
            port=_int_option(conf.get("port"), 8080),
            family=_family(conf.get("family")),
            type=_socktype(conf.get("type")),
            backlog=_int_option(conf.get("backlog"), DEFAULT_BACKLOG),
            path=conf.get("path") or None,
            umask=_int_option(conf.get("umask"), DEFAULT_UMASK),
            replace=bool(conf.get("replace", False)),
            blocking=bool(conf.get("blocking", False)),
            so_reuseport=bool(conf.get("so_reuseport", False)),
            interface=conf.get("interface") or None,
            proto=conf.get("proto"),
            section=conf.get("_section"),
        )

    # -- what it is -------------------------------------------------------------------------

    def spec(self) -> tuple[Any, ...]:
        """The configuration, for telling whether a reloaded section changed."""
        return (self.conf_host, self.conf_port, self.family, self.type, self.proto,
                self.backlog, self.path, self.umask, self.replace, self.blocking,
                self.so_reuseport, self.interface)

    @property
    def fd(self) -> int | None:
        return self.sock.fileno() if self.sock is not None else None

    @property
    def host(self) -> str:
        if self._address is not None and self.family != socket.AF_UNIX:
            return str(self._address[0])
        return self.conf_host

    @property
    def port(self) -> int:
        if self._address is not None and self.family != socket.AF_UNIX:
            return int(self._address[1])
        return self.conf_port

    @property
    def listening(self) -> bool:
        """circusd listens on it (false for so_reuseport sockets and datagram types)."""
        return self.type in _LISTENING_TYPES and not self.so_reuseport

    def address_text(self) -> str:
        if self.path:
            return self.path
        host = self.host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def describe(self) -> dict[str, Any]:
        """The entry ``listsockets`` shows; ``fd`` is -1 while circusd holds no descriptor
        (not bound yet, or a so_reuseport datagram socket), so clients formatting it as a
        number keep working."""
        fd = self.fd
        entry: dict[str, Any] = {"fd": -1 if fd is None else fd, "name": self.name,
                                 "backlog": self.backlog}
        if self.path:
            entry["path"] = self.path
        else:
            entry["host"] = self.host
            entry["port"] = self.port
        return entry

    # -- binding ----------------------------------------------------------------------------

    def _resolve(self) -> Any:
        if self.family == socket.AF_UNIX:
            return self.path
        infos = socket.getaddrinfo(self.conf_host, self.conf_port, self.family, self.type,
                                   _proto(self.proto))
        if not infos:  # pragma: no cover - getaddrinfo raises instead
            raise OSError(errno.EADDRNOTAVAIL, f"{self.conf_host!r} has no address")
        return infos[0][4]

    def _new_socket(self) -> socket.socket:
        sock = socket.socket(self.family, self.type, _proto(self.proto))
        try:
            if self.family != socket.AF_UNIX:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if self.so_reuseport:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if self.interface:
                if not hasattr(socket, "SO_BINDTODEVICE"):
                    raise OSError(errno.ENOPROTOOPT,
                                  "interface needs SO_BINDTODEVICE (Linux)")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE,
                                self.interface.encode() + b"\0")
        except BaseException:
            sock.close()
            raise
        return sock

    def bind(self) -> None:
        """Create, bind and (for stream sockets) listen. Raises :class:`SocketBindError`."""
        if self.bound:
            return
        try:
            address = self._resolve()
            sock = self._new_socket()
        except OSError as exc:
            raise SocketBindError(self, exc) from exc
        try:
            if self.family == socket.AF_UNIX:
                self._bind_path(sock)
            else:
                sock.bind(address)
            if self.listening:
                sock.listen(self.backlog)
            sock.setblocking(self.blocking)
        except OSError as exc:
            sock.close()
            raise SocketBindError(self, exc) from exc
        self._address = sock.getsockname()
        self.bound = True
        if self.so_reuseport and self.type not in _LISTENING_TYPES:
            # A datagram socket in a SO_REUSEPORT group gets its share of the datagrams
            # whether or not anyone reads it: only learn the address, keep no socket.
            sock.close()
            log.info("socket %s: address %s for one socket per process", self.name,
                     self.address_text())
            return
        self.sock = sock
        log.info("socket %s bound to %s (fd %d)", self.name, self.address_text(), sock.fileno())

    def _bind_path(self, sock: socket.socket) -> None:
        assert self.path is not None
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            pass
        else:
            if not self.replace:
                raise OSError(errno.EADDRINUSE, "the path exists (set replace = true to "
                                                "remove it)")
            if not stat.S_ISSOCK(st.st_mode):
                # replace removes an old socket file, never a file of another kind
                raise OSError(errno.EEXIST, "the path exists and is not a socket")
            os.unlink(self.path)
        old = os.umask(self.umask)
        try:
            sock.bind(self.path)
        finally:
            os.umask(old)
        st = os.lstat(self.path)
        self._path_inode = (st.st_dev, st.st_ino)

    def open_for_process(self) -> socket.socket:
        """so_reuseport: a new socket bound to the same address, listening, for one process."""
        assert self._address is not None
        sock = self._new_socket()
        try:
            sock.bind(self._address)
            if self.type in _LISTENING_TYPES:
                sock.listen(self.backlog)
            sock.setblocking(self.blocking)
        except BaseException:
            sock.close()
            raise
        return sock

    def close(self) -> None:
        """Close circusd's socket and remove the Unix socket file it created."""
        self.bound = False
        sock, self.sock = self.sock, None
        if sock is None:
            return
        sock.close()
        if self.path and self._path_inode is not None:
            with contextlib.suppress(OSError):
                st = os.lstat(self.path)
                if (st.st_dev, st.st_ino) == self._path_inode:
                    os.unlink(self.path)
        self._path_inode = None

    def __repr__(self) -> str:
        return f"<CircusSocket {self.name} {self.address_text()} fd={self.fd}>"


class SocketFds(dict[str, int]):
    """``{name: fd}`` as the watchers see it, updated in place as sockets are (re)bound.

    Every watcher of an arbiter holds the same object. ``per_process`` holds the
    so_reuseport sockets: their entries here are circusd's reservation, and each spawn
    that references one gets a socket of its own (:func:`sockets_for_spawn`).
    """

    def __init__(self) -> None:
        super().__init__()
        self.per_process: dict[str, CircusSocket] = {}


def referenced_sockets(*texts: str | Sequence[str] | None) -> set[str]:
    """Names of the sockets that ``$(circus.sockets.NAME)`` placeholders in *texts* use."""
    names: set[str] = set()
    for text in texts:
        if text is None:
            continue
        parts = [text] if isinstance(text, str) else [str(t) for t in text]
        for part in parts:
            if "circus.sockets." in part.lower():
                names.update(m.group(1).lower() for m in _REFERENCE.finditer(part))
    return names


@contextlib.contextmanager
def sockets_for_spawn(
    fds: Mapping[str, int],
    cmd: str,
    args: str | Sequence[str] | None,
    stdin_socket: str | None,
    use_sockets: bool,
) -> Iterator[Mapping[str, int]]:
    """The ``{name: fd}`` of one spawn; so_reuseport sockets get a socket of their own.

    The per-process sockets are closed in circusd when the block ends: by then the child
    holds its own copy.
    """
    per_process = fds.per_process if isinstance(fds, SocketFds) else {}
    if not per_process:
        yield fds
        return
    wanted = referenced_sockets(cmd, args) if use_sockets else set()
    if stdin_socket:
        wanted.add(stdin_socket.lower())
    result = {name: fd for name, fd in fds.items() if name not in per_process}
    opened: list[socket.socket] = []
    try:
        for name in sorted(wanted & set(per_process)):
            sock = per_process[name].open_for_process()
            opened.append(sock)
            result[name] = sock.fileno()
        yield result
    finally:
        for sock in opened:
            sock.close()


class SocketWatcher(Protocol):
    """What the socket code reads of a watcher."""

    name: str
    cmd: str
    args: str | list[str] | None
    on_demand: bool
    autostart: bool
    use_sockets: bool
    stdin_socket: str | None

    @property
    def status(self) -> str: ...

    async def start(self) -> Any: ...

    async def stop(self) -> Any: ...



def watcher_sockets(watcher: SocketWatcher, names: Iterable[str]) -> set[str]:
    """The sockets *watcher*'s processes use: referenced by cmd/args, or stdin_socket."""
    known = set(names)
    used = referenced_sockets(watcher.cmd, watcher.args) & known
    if watcher.stdin_socket and watcher.stdin_socket.lower() in known:
        used.add(watcher.stdin_socket.lower())
    return used

