"""CurveZMQ for circusd's endpoints: keys, the server side and the client side.

Keys are the files ``zmq.auth`` writes (``circusctl keygen NAME``): ``NAME.key`` holds the
public key, ``NAME.key_secret`` the pair. With ``[circus] curve_secret_key`` set, every
socket circusd binds is a CURVE server; a client's handshake is checked by circusd's ZAP
handler (:class:`circus.peers.ZapGate`), which drives a ``zmq.auth`` authenticator
(:class:`KeyAuthenticator`) over the public keys found in ``curve_admin_keys``,
``curve_operator_keys`` and ``curve_reader_keys``. A client whose key is in none of them
fails the handshake and never reaches the socket. The ZAP reply names the client's key as
its ``User-Id``, which ZeroMQ attaches to each of its messages: the controller maps it back
to the key's name and tier (:class:`KeyRing`) at every request, so a key removed from its
directory stops working at once for new connections, within a second for open ones.

Processes circusd runs for itself (plugins, circusd-stats) get a key pair made when circusd
starts, ``admin``, named ``circusd``, through the environment variable
``CIRCUS_CURVE_INTERNAL`` (readable only by their user and root).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import zmq
import zmq.utils.z85

from circus.tiers import Tier

log = logging.getLogger(__name__)

MIN_LIBZMQ = (4, 3, 2)
#: The ZAP domain of every CURVE socket circusd binds.
CURVE_DOMAIN = b"circus-curve"
INTERNAL_ENV = "CIRCUS_CURVE_INTERNAL"
INTERNAL_NAME = "circusd"
STATS_ENV = "CIRCUS_CURVE_SERVER"  # circusd-stats: the curve_* options, as JSON
SERVER_OPTIONS = ("curve_secret_key", "curve_admin_keys", "curve_operator_keys",
                  "curve_reader_keys")
KEY_OPTIONS = {Tier.ADMIN: "curve_admin_keys", Tier.OPERATOR: "curve_operator_keys",
               Tier.READER: "curve_reader_keys"}


def libzmq_problem() -> str | None:
    """Why CURVE cannot be used with this libzmq, or None."""
    version = zmq.zmq_version_info()
    if version < MIN_LIBZMQ:
        return (f"libzmq {zmq.zmq_version()} is older than 4.3.2 and has CVE-2019-13132 "
                "(a remote crash through CURVE); upgrade libzmq (pyzmq's wheels bundle a "
                "recent one) to use curve_secret_key")
    if not zmq.has("curve"):
        return f"libzmq {zmq.zmq_version()} was built without CURVE support"
    return None


def check_private(path: str | os.PathLike[str]) -> None:
    """Refuse a secret key file that its group or others may read.

    Raises:
        ValueError: naming the path and its mode.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise ValueError(f"cannot read {os.fspath(path)}: {exc.strerror}") from None
    if mode & 0o077:
        raise ValueError(f"{os.fspath(path)} is readable by group or others (mode "
                         f"{stat.S_IMODE(mode):04o}); it holds a secret key: chmod 600 it")


def load_secret(path: str | os.PathLike[str]) -> tuple[bytes, bytes]:
    """(public, secret) z85 keys of a ``.key_secret`` file.

    Raises:
        ValueError: the file is missing, unreadable, too open, or holds no secret key.
    """
    check_private(path)
    public, secret = _load(path)
    if not secret:
        raise ValueError(f"{os.fspath(path)} holds no secret key (use the .key_secret file)")
    return public, secret


def load_public(path: str | os.PathLike[str]) -> bytes:
    """The z85 public key of a ``.key`` (or ``.key_secret``) file.

    Raises:
        ValueError: the file is missing or holds no public key.
    """
    return _load(path)[0]


def _load(path: str | os.PathLike[str]) -> tuple[bytes, bytes | None]:
    import zmq.auth

    try:
        public, secret = zmq.auth.load_certificate(path)
    except OSError as exc:
        raise ValueError(f"cannot read {os.fspath(path)}: {exc}") from None
    except ValueError:
        raise ValueError(f"{os.fspath(path)} holds no CURVE public key") from None
    if len(public) != 40 or (secret is not None and len(secret) != 40):
        raise ValueError(f"{os.fspath(path)}: a CURVE key is 40 z85 characters")
    return public, secret


def keygen(name: str, directory: str | os.PathLike[str]) -> tuple[str, str]:
    """Write ``NAME.key`` and ``NAME.key_secret`` (mode 0600) in *directory*.

    Raises:
        ValueError: a bad name, or a key of that name exists already.
    """
    import zmq.auth

    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"invalid key name {name!r}: use letters, digits, '-' or '_'")
    base = Path(directory)
    for suffix in (".key", ".key_secret"):
        if (base / (name + suffix)).exists():
            raise ValueError(f"{base / (name + suffix)} exists already; remove it first")
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    old = os.umask(0o077)  # the secret file is never readable by others, not even briefly
    try:
        public, secret = zmq.auth.create_certificates(base, name)
    finally:
        os.umask(old)
    os.chmod(public, 0o644)
    return public, secret


# -- server side ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class KeyEntry:
    name: str
    tier: Tier
    path: str


class KeyRing:
    """The clients' public keys, from one directory per tier, re-read whenever a directory
    changes (a file added, removed or rewritten): rotation needs no restart.

    Args:
        dirs: tier -> directory (a tier may be missing).
    """

    def __init__(self, dirs: Mapping[Tier, str]) -> None:
        self.dirs = dict(dirs)
        self._signature: tuple[Any, ...] | None = None
        self._keys: dict[bytes, KeyEntry] = {}
        self._extra: dict[bytes, KeyEntry] = {}
        self._looked = -1e9  # time.monotonic() of the last look at the directories
        self.problems: list[str] = []  # files that could not be read (logged by the gate)

    def _scan(self) -> tuple[Any, ...]:
        sig: list[Any] = []
        for tier, directory in sorted(self.dirs.items()):
            try:
                with os.scandir(directory) as entries:
                    for e in entries:
                        if e.name.endswith(".key"):
                            with contextlib.suppress(OSError):
                                st = e.stat()
                                sig.append((tier, e.name, st.st_ino, st.st_mtime_ns,
                                            st.st_size))
            except OSError:
                sig.append((tier, None))
        return tuple(sorted(sig))

    def refresh(self, max_age: float = 0.0) -> bool:
        """Re-read the directories if they changed; True if they did. With *max_age*, not
        even looked at if they were less than that many seconds ago (a look costs a
        directory listing and a stat per key)."""
        now = time.monotonic()
        if max_age and now - self._looked < max_age:
            return False
        self._looked = now
        sig = self._scan()
        if sig == self._signature:
            return False
        keys: dict[bytes, KeyEntry] = {}
        problems: list[str] = []
        for tier in (Tier.READER, Tier.OPERATOR, Tier.ADMIN):  # the highest tier wins
            directory = self.dirs.get(tier)
            if not directory:
                continue
            try:
                names = sorted(n for n in os.listdir(directory) if n.endswith(".key"))
            except OSError as exc:
                problems.append(f"{directory}: {exc.strerror}")
                continue
            for name in names:
                path = os.path.join(directory, name)
                try:
                    keys[load_public(path)] = KeyEntry(name[:-4], tier, path)
                except ValueError as exc:
                    problems.append(str(exc))
        self._keys, self.problems, self._signature = keys, problems, sig
        return True

    def add(self, public: bytes, entry: KeyEntry) -> None:
        """A key that is not in a directory (circusd's own, for plugins)."""
        self._extra[public] = entry

    def lookup(self, public: bytes) -> KeyEntry | None:
        return self._extra.get(public) or self._keys.get(public)

    def keys(self) -> dict[bytes, bool]:
        """Every admitted key (z85), as ``zmq.auth`` keeps them per domain."""
        return {k: True for k in (*self._keys, *self._extra)}


class _Reply:
    """Stands for the authenticator's REP socket: its replies go out through circusd's ZAP
    ROUTER, to the handshake that asked."""

    def __init__(self, sock: zmq.Socket[Any], route: list[bytes]) -> None:
        self._sock = sock
        self._route = route
        self.status = b""

    def send_multipart(self, frames: list[bytes]) -> None:
        self.status = frames[2] if len(frames) > 2 else b""
        with contextlib.suppress(zmq.ZMQError):
            self._sock.send_multipart([*self._route, *frames], zmq.NOBLOCK)


def z85_text(key: bytes) -> str:
    """A client's 32-byte public key as z85 text, for the log."""
    try:
        return zmq.utils.z85.encode(key).decode() if len(key) == 32 else "(malformed)"
    except ValueError:
        return "(malformed)"


class KeyAuthenticator:
    """``zmq.auth``'s authenticator, driven by circusd's ZAP gate rather than by a socket
    of its own (ZeroMQ allows one ZAP handler per context). It admits the keys of *ring*
    on :data:`CURVE_DOMAIN`; the ``User-Id`` of an admitted handshake is the client's key
    (z85)."""

    def __init__(self, ring: KeyRing) -> None:
        from zmq.auth.base import Authenticator

        self.ring = ring
        self._auth = Authenticator(context=cast(Any, object()))
        self.domain = CURVE_DOMAIN

    def handle(self, frames: list[bytes], sock: zmq.Socket[Any]) -> None:
        """Answer one ZAP request (*frames* as a ROUTER receives them)."""
        if self.ring.refresh():
            for problem in self.ring.problems:
                log.warning("curve: key left out: %s", problem)
        self._auth.certs[CURVE_DOMAIN.decode()] = self.ring.keys()
        reply = _Reply(sock, frames[:2])
        self._auth.zap_socket = cast(Any, reply)
        step: Any = self._auth.handle_zap_message(frames[2:])
        if inspect.iscoroutine(step):  # a coroutine in recent pyzmq, a plain call before
            try:
                step.send(None)
            except StopIteration:
                pass
            else:
                step.close()  # only a credentials callback would suspend: none is used
        if reply.status != b"200" and len(frames) > 8:
            from circus.peers import THROTTLE

            address = frames[5].decode(errors="replace") or "a local client"
            if THROTTLE.allow(("curve", address)):
                key = z85_text(frames[8])
                log.warning("curve: refused a handshake from %s: key %s is in no "
                            "curve_*_keys directory", address, key)


@dataclass(frozen=True, slots=True)
class ServerKeys:
    """circusd's CURVE set-up (``[circus] curve_*``)."""

    public: bytes
    secret: bytes
    ring: KeyRing
    internal: tuple[bytes, bytes]  # circusd's own client pair, for plugins and stats

    @classmethod
    def load(cls, options: Mapping[str, Any]) -> ServerKeys | None:
        """From the ``[circus]`` options; None when ``curve_secret_key`` is unset.

        Raises:
            ValueError: libzmq too old, or a key file or directory that cannot be used.
        """
        path = options.get("curve_secret_key")
        if not path:
            return None
        problem = check_server_options(options)
        if problem:
            raise ValueError(problem.replace("\t", ": ", 1))
        public, secret = load_secret(path)
        dirs = {tier: str(options[key]) for tier, key in KEY_OPTIONS.items() if options.get(key)}
        ring = KeyRing(dirs)
        ring.refresh()
        pair = zmq.curve_keypair()
        ring.add(pair[0], KeyEntry(INTERNAL_NAME, Tier.ADMIN, "(circusd's own key)"))
        return cls(public, secret, ring, pair)

    def serve(self, sock: zmq.Socket[Any]) -> None:
        """Make *sock* (not yet bound) a CURVE server checked on :data:`CURVE_DOMAIN`."""
        sock.curve_server = True
        sock.curve_secretkey = self.secret
        sock.setsockopt(zmq.ZAP_DOMAIN, CURVE_DOMAIN)

    def internal_env(self) -> str:
        """The value of ``CIRCUS_CURVE_INTERNAL`` for the processes circusd starts."""
        return b" ".join((self.internal[0], self.internal[1], self.public)).decode()


def check_server_options(options: Mapping[str, Any]) -> str | None:
    """The ``curve_*`` option that cannot be used, with why, as ``(option, reason)``
    joined by a tab; None if they are fine (for the config file's file:line errors)."""
    if options.get("curve_secret_key"):
        problem = libzmq_problem()
        if problem:
            return f"curve_secret_key\t{problem}"
        try:
            load_secret(options["curve_secret_key"])
        except ValueError as exc:
            return f"curve_secret_key\t{exc}"
    for key in KEY_OPTIONS.values():
        directory = options.get(key)
        if directory and not os.path.isdir(directory):
            return f"{key}\tnot a directory: {directory}"
        if directory and os.stat(directory).st_mode & 0o022:
            return (f"{key}\t{directory} is writable by group or others: whoever can write "
                    f"a key there gets its tier; chmod go-w it")
        if directory and not options.get("curve_secret_key"):
            return f"{key}\tneeds curve_secret_key (the server's key) to be set"
    return None


# -- client side ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ClientKeys:
    """A client's key pair and the server's public key, all z85."""

    public: bytes
    secret: bytes
    server: bytes

    def apply(self, sock: zmq.Socket[Any]) -> None:
        """Make *sock* (not yet connected) a CURVE client."""
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret
        sock.curve_serverkey = self.server


def config_dir(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "circus"


def default_paths(environ: Mapping[str, str] | None = None) -> tuple[Path, Path]:
    """The per-user default key pair and server key: ``$XDG_CONFIG_HOME/circus/
    client.key_secret`` and ``server.key``."""
    base = config_dir(environ)
    return base / "client.key_secret", base / "server.key"


def client_keys(curve_key: str | os.PathLike[str] | None = None,
                server_key: str | os.PathLike[str] | bytes | None = None) -> ClientKeys | None:
    """The keys of a client given the paths of its ``.key_secret`` and of the server's
    ``.key`` (a z85 server key as bytes is taken as is); None when neither is given.

    Raises:
        ValueError: only one of them given, or a file that cannot be used.
    """
    if not curve_key and not server_key:
        return None
    if not curve_key or not server_key:
        raise ValueError("CURVE needs both the client's key (--curve-key) and the server's "
                         "public key (--server-key)")
    problem = libzmq_problem()
    if problem:
        raise ValueError(problem.replace("to use curve_secret_key", "to use CURVE"))
    public, secret = load_secret(curve_key)
    server = server_key if isinstance(server_key, bytes) else load_public(server_key)
    return ClientKeys(public, secret, server)


def cli_keys(curve_key: str | None, server_key: str | None,
             environ: Mapping[str, str] | None = None) -> ClientKeys | None:
    """circusctl's keys: the options, else ``$CIRCUSCTL_CURVE_KEY`` and
    ``$CIRCUSCTL_SERVER_KEY``, else the per-user default files when both exist."""
    env = os.environ if environ is None else environ
    curve_key = curve_key or env.get("CIRCUSCTL_CURVE_KEY") or None
    server_key = server_key or env.get("CIRCUSCTL_SERVER_KEY") or None
    if not curve_key and not server_key:
        own, server = default_paths(env)
        if own.is_file() and server.is_file():
            curve_key, server_key = str(own), str(server)
    return client_keys(curve_key, server_key)


def internal_keys(environ: Mapping[str, str] | None = None) -> ClientKeys | None:
    """The keys circusd gave a process it started (``CIRCUS_CURVE_INTERNAL``), or None."""
    value = (os.environ if environ is None else environ).get(INTERNAL_ENV, "")
    parts = value.encode().split()
    if len(parts) != 3 or any(len(p) != 40 for p in parts):
        return None
    return ClientKeys(parts[0], parts[1], parts[2])


def give_internal_key(confs: list[dict[str, Any]], keys: ServerKeys | None,
                      options: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The watcher mappings of circusd's own processes (plugins, circusd-stats), given
    circusd's key through their environment when CURVE is on; circusd-stats also gets the
    ``curve_*`` options, to make its own socket a CURVE server over the same keys."""
    if keys is None:
        return confs
    for conf in confs:
        env = dict(conf.get("env") or {})
        env[INTERNAL_ENV] = keys.internal_env()
        if conf.get("name") == "circusd-stats":
            env[STATS_ENV] = json.dumps({k: options.get(k) for k in SERVER_OPTIONS})
        conf["env"] = env
    return confs


def secure(sock: zmq.Socket[Any], keys: ClientKeys | None = None,
           curve_key: str | os.PathLike[str] | None = None,
           server_key: str | os.PathLike[str] | None = None) -> None:
    """Make a client socket (not yet connected) use CURVE when keys are given: *keys*, or
    the files *curve_key* (the client's ``.key_secret``) and *server_key* (circusd's
    ``.key``). Without any, the socket stays as it is (no CURVE).

    Raises:
        ValueError: one of the two files missing, unreadable or too open.
    """
    keys = keys or client_keys(curve_key, server_key)
    if keys is not None:
        keys.apply(sock)


class _RingProvider:
    """``zmq.auth``'s credentials callback over a :class:`KeyRing`."""

    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring

    def callback(self, domain: str, key: bytes) -> bool:
        self.ring.refresh()
        return self.ring.lookup(key) is not None


def stats_server(context: zmq.Context[Any], sock: zmq.Socket[Any],
                 environ: Mapping[str, str] | None = None) -> Any:
    """circusd-stats' side: when circusd passed its ``curve_*`` options
    (``CIRCUS_CURVE_SERVER``), make *sock* (not yet bound) a CURVE server over the same
    keys, checked by ``zmq.auth``'s thread authenticator (circusd-stats has no event loop).
    Returns the running authenticator (``stop()`` it), or None without CURVE.

    Raises:
        ValueError: a key that cannot be used.
    """
    text = (os.environ if environ is None else environ).get(STATS_ENV)
    if not text:
        return None
    options = json.loads(text)
    keys = ServerKeys.load(options)
    if keys is None:
        return None
    from zmq.auth.thread import ThreadAuthenticator

    auth = ThreadAuthenticator(context)
    auth.start()
    auth.configure_curve_callback(CURVE_DOMAIN.decode(), _RingProvider(keys.ring))
    keys.serve(sock)
    return auth
