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

``on_demand``
-------------
:class:`OnDemand` watches the listening sockets of stopped ``on_demand`` watchers with
``loop.add_reader``. The first connection starts the watcher; circusd never accepts it,
so it waits in the backlog until a new process does. A watcher that stops again (its
processes exited with ``respawn = false``, or a ``stop`` command) waits for the next
connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import re
import socket
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

log = logging.getLogger(__name__)

__all__ = [
    "CircusSocket",
    "CircusSockets",
    "OnDemand",
    "SocketBindError",
    "SocketFds",
    "referenced_sockets",
    "sockets_for_spawn",
]

# Defaults of the [socket:NAME] keys (circus.options.SOCKET_OPTIONS holds the same).
DEFAULT_BACKLOG = 2048
DEFAULT_UMASK = 8  # Circus's default, an octal 010
# An on_demand watcher that could not be started (a hook refused, every spawn failed)
# is armed again after this pause, so a connection left in the backlog does not spin.
ON_DEMAND_RETRY = 1.0

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


class _Watcher(Protocol):
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


W = TypeVar("W", bound=_Watcher)


def watcher_sockets(watcher: _Watcher, names: Iterable[str]) -> set[str]:
    """The sockets *watcher*'s processes use: referenced by cmd/args, or stdin_socket."""
    known = set(names)
    used = referenced_sockets(watcher.cmd, watcher.args) & known
    if watcher.stdin_socket and watcher.stdin_socket.lower() in known:
        used.add(watcher.stdin_socket.lower())
    return used


@dataclass
class SocketPlan:
    """What a reread configuration changes in the sockets (:meth:`CircusSockets.plan`)."""

    added: list[CircusSocket] = field(default_factory=list)
    changed: list[CircusSocket] = field(default_factory=list)  # the new objects
    removed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.removed)

    def names(self) -> set[str]:
        return {s.name for s in (*self.added, *self.changed)} | set(self.removed)


class CircusSockets:
    """Every socket of one arbiter, by name, and the :class:`SocketFds` its watchers share."""

    def __init__(self, specs: Iterable[Mapping[str, Any] | CircusSocket] = ()) -> None:
        self._sockets: dict[str, CircusSocket] = {}
        self.fds = SocketFds()
        # called before any socket is closed, so nothing is left registered on its fd
        self.before_close: list[Callable[[], None]] = []
        for spec in specs:
            sock = spec if isinstance(spec, CircusSocket) else CircusSocket.from_config(spec)
            if sock.name in self._sockets:
                raise ValueError(f"two sockets are named {sock.name!r}")
            self._sockets[sock.name] = sock

    def __iter__(self) -> Iterator[CircusSocket]:
        return iter(list(self._sockets.values()))

    def __len__(self) -> int:
        return len(self._sockets)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._sockets

    def get(self, name: str) -> CircusSocket | None:
        return self._sockets.get(name.lower())

    def describe(self) -> list[dict[str, Any]]:
        """``listsockets``: one entry per socket, sorted by fd."""
        entries = [s.describe() for s in self._sockets.values()]
        entries.sort(key=lambda e: (e["fd"], e["name"]))
        return entries

    def _refresh(self) -> None:
        self.fds.clear()
        self.fds.per_process.clear()
        for name, sock in self._sockets.items():
            if sock.fd is not None:
                self.fds[name] = sock.fd
            if sock.so_reuseport and sock.bound:
                self.fds.per_process[name] = sock

    def bind_all(self) -> None:
        """Bind every socket; on a failure close those bound and raise SocketBindError."""
        try:
            for sock in self._sockets.values():
                sock.bind()
        except BaseException:
            self.close_all()
            raise
        self._refresh()

    def _closing(self) -> None:
        for callback in self.before_close:
            callback()

    def close_all(self) -> None:
        self._closing()
        for sock in self._sockets.values():
            sock.close()
        self._refresh()

    # -- reloadconfig -------------------------------------------------------------------------

    def plan(self, specs: Iterable[Mapping[str, Any]]) -> SocketPlan:
        """Compare the sockets of a reread configuration with the running ones."""
        wanted = {}
        for spec in specs:
            sock = CircusSocket.from_config(spec)
            wanted[sock.name] = sock
        plan = SocketPlan()
        for name, sock in wanted.items():
            current = self._sockets.get(name)
            if current is None:
                plan.added.append(sock)
            elif current.spec() != sock.spec():
                plan.changed.append(sock)
        plan.removed = sorted(set(self._sockets) - set(wanted))
        return plan

    def bind_added(self, plan: SocketPlan) -> None:
        """Bind the new sockets of *plan* (before anything else changes). All or nothing."""
        bound: list[CircusSocket] = []
        try:
            for sock in plan.added:
                sock.bind()
                bound.append(sock)
        except BaseException:
            for sock in bound:
                sock.close()
            raise
        for sock in plan.added:
            self._sockets[sock.name] = sock
        self._refresh()

    async def apply(self, plan: SocketPlan, watchers: Sequence[W]) -> list[W]:
        """Rebind changed sockets and close removed ones.

        The running watchers whose processes use a changed socket are stopped first (their
        processes hold the old socket, and the address may be the same); they are returned
        so the caller starts them again once the rest of the configuration is applied.
        A changed socket that cannot be bound keeps its old configuration, and the error
        is raised after the old socket is back.
        """
        changed = {s.name for s in plan.changed}
        stopped: list[W] = []
        if changed:
            for watcher in watchers:
                if watcher.status != "stopped" and watcher_sockets(watcher, changed):
                    await watcher.stop()
                    stopped.append(watcher)
        error: SocketBindError | None = None
        if plan.changed or plan.removed:
            self._closing()
        for new in plan.changed:
            old = self._sockets[new.name]
            old.close()
            try:
                new.bind()
            except SocketBindError as exc:
                log.error("%s; keeping the previous configuration of this socket", exc)
                error = error or exc
                with contextlib.suppress(OSError):
                    old.bind()
                continue
            self._sockets[new.name] = new
        for name in plan.removed:
            self._sockets.pop(name).close()
        self._refresh()
        if error is not None:
            for watcher in stopped:
                await watcher.start()
            raise error
        return stopped


class OnDemand:
    """Starts stopped ``on_demand`` watchers when one of their sockets becomes readable.

    Args:
        sockets: the arbiter's sockets.
        spawn: runs a coroutine as a task the arbiter owns.
    """

    def __init__(
        self,
        sockets: CircusSockets,
        spawn: Callable[..., asyncio.Task[Any]],
    ) -> None:
        self.sockets = sockets
        self._spawn = spawn
        self._armed: dict[int, set[_Watcher]] = {}  # fd -> watchers waiting on it
        self._fds: dict[_Watcher, set[int]] = {}  # watcher -> fds it waits on
        self._starting: set[_Watcher] = set()
        self._retry: dict[_Watcher, asyncio.TimerHandle] = {}
        self._closed = True
        self._watchers: Callable[[], Sequence[_Watcher]] = list
        # a socket about to close must not stay registered with the loop; refresh() arms
        # the watchers again on the new descriptors
        sockets.before_close.append(self._disarm_all)

    def open(self, watchers: Callable[[], Sequence[_Watcher]]) -> None:
        """Begin watching; *watchers* returns the arbiter's current watchers."""
        self._closed = False
        self._watchers = watchers
        self.refresh()

    def close(self) -> None:
        """Stop watching every socket (at shutdown, before the watchers are stopped)."""
        self._closed = True
        self._disarm_all()
        for timer in self._retry.values():
            timer.cancel()
        self._retry.clear()

    def _disarm_all(self) -> None:
        for watcher in list(self._fds):
            self._disarm(watcher)

    def fds_of(self, watcher: _Watcher) -> list[int]:
        """The listening fds whose first connection starts *watcher*.

        The sockets its command references (or its stdin_socket); if it names none, every
        socket, as in Circus. so_reuseport and datagram sockets are not watched: circusd
        does not listen on them.
        """
        names = [s.name for s in self.sockets]
        used = watcher_sockets(watcher, names) or set(names)
        fds = []
        for name in sorted(used):
            sock = self.sockets.get(name)
            if sock is not None and sock.listening and sock.fd is not None:
                fds.append(sock.fd)
        return fds

    def _eligible(self, watcher: _Watcher) -> bool:
        return (watcher.on_demand and watcher.autostart and watcher.status == "stopped"
                and watcher not in self._starting and watcher not in self._retry)

    def refresh(self) -> None:
        """Arm every stopped on_demand watcher; disarm those that started or went away."""
        if self._closed:
            return
        watchers = list(self._watchers())
        for watcher in list(self._fds):
            if watcher not in watchers or not self._eligible(watcher):
                self._disarm(watcher)
        for watcher in watchers:
            if watcher in self._fds or not self._eligible(watcher):
                continue
            fds = self.fds_of(watcher)
            if not fds:
                log.warning("%s: on_demand, but no listening socket to wait on; start it "
                            "with a start command", watcher.name)
                continue
            if not watcher.use_sockets and not watcher.stdin_socket:
                log.warning("%s: on_demand without use_sockets or stdin_socket: its processes "
                            "cannot accept the connection that starts them", watcher.name)
            self._arm(watcher, fds)

    def _arm(self, watcher: _Watcher, fds: list[int]) -> None:
        loop = asyncio.get_running_loop()
        self._fds[watcher] = set(fds)
        for fd in fds:
            waiting = self._armed.setdefault(fd, set())
            if not waiting:
                loop.add_reader(fd, self._readable, fd)
            waiting.add(watcher)
        log.info("%s: waiting for a connection to start (on_demand)", watcher.name)

    def _disarm(self, watcher: _Watcher) -> None:
        loop = asyncio.get_running_loop()
        for fd in self._fds.pop(watcher, set()):
            waiting = self._armed.get(fd)
            if waiting is None:
                continue
            waiting.discard(watcher)
            if not waiting:
                del self._armed[fd]
                loop.remove_reader(fd)

    def _readable(self, fd: int) -> None:
        """A connection is waiting on *fd*: start the watchers armed on it (once each)."""
        for watcher in list(self._armed.get(fd, ())):
            self._disarm(watcher)
            self._starting.add(watcher)
            log.info("%s: a connection arrived; starting (on_demand)", watcher.name)
            self._spawn(self._start(watcher), name=f"on-demand-{watcher.name}")

    async def _start(self, watcher: _Watcher) -> None:
        try:
            await watcher.start()
        finally:
            self._starting.discard(watcher)
        if watcher.status == "stopped" and not self._closed:
            # a before_start hook refused, or every spawn failed: the connection is still
            # in the backlog, so wait a moment before trying again instead of spinning
            loop = asyncio.get_running_loop()
            self._retry[watcher] = loop.call_later(ON_DEMAND_RETRY, self._retry_now, watcher)

    def _retry_now(self, watcher: _Watcher) -> None:
        self._retry.pop(watcher, None)
        self.refresh()

