"""The option table: every ``[circus]``, ``[watcher:NAME]`` and ``[socket:NAME]`` option, once.

The INI reader, the ``set``/``get``/``options`` commands, the ``add`` command, ``circusctl``
and the docs all read these tables, so a type, a default or a help text lives in one place.

Each :class:`Option` knows how to read a value from configuration text (``from_text``)
and how to check a JSON value sent by a client (``from_wire``). ``reload`` says whether a
running watcher must be gracefully reloaded for a new value to take effect (new processes),
as opposed to being applied live.
"""

from __future__ import annotations

import math
import resource
from collections.abc import Callable
from typing import Any, NamedTuple

from circus.util.convert import (
    to_bool,
    to_family,
    to_float,
    to_int,
    to_octal,
    to_signum,
    to_socktype,
)

Converter = Callable[[Any], Any]


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


def _opt_text(value: Any) -> str | None:
    if value is None:
        return None
    return _text(value)


def _wire_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {value!r}")
    return value


def _wire_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {value!r}")
    return float(value)


def _wire_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _opt_int_text(value: Any) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return to_int(value)


def _user(value: Any) -> int | str | None:
    """A user or group: a name, or a number (kept as int)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"expected a name or a number, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        return int(text) if text.isdigit() else text
    raise ValueError(f"expected a name or a number, got {value!r}")


def _args(value: Any) -> str | list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        return [str(v) for v in value]
    raise ValueError(f"expected a string or a list of strings, got {value!r}")


class Option(NamedTuple):
    """One configuration option.

    A NamedTuple rather than a dataclass: circusctl imports this table, and the dataclasses
    module would add a noticeable share of its start-up time.
    """

    name: str
    default: Any
    from_text: Converter
    from_wire: Converter
    help: str
    reload: bool = False  # True: `set` needs a graceful reload (new processes)
    listed: bool = True  # shown by the `options` command
    kind: str = ""  # the _KINDS name of the converters (for the docs)
    minimum: float | None = None  # the smallest value accepted, if any

    def text(self, raw: str) -> Any:
        return self.check(self.from_text(raw))

    def wire(self, value: Any) -> Any:
        return self.check(self.from_wire(value))

    def check(self, value: Any) -> Any:
        """*value* if it is in range; ValueError naming the bound otherwise."""
        if self.minimum is None or value is None:
            return value
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"expected a finite number, got {value}")
        if value < self.minimum:
            if self.minimum == 0:
                raise ValueError(f"must not be negative, got {value}")
            bound = int(self.minimum) if float(self.minimum).is_integer() else self.minimum
            raise ValueError(f"must be {bound} or more, got {value}")
        return value


def _opt(name: str, default: Any, kind: str, help: str, **kw: Any) -> Option:
    text, wire = _KINDS[kind]
    return Option(name, default, text, wire, help, kind=kind, **kw)


def _probe(kind: str) -> Converter:
    """A ``ready`` or ``health`` spec: kept as written (its templates are filled per
    process), checked by circus.probespec (imported only when such a value is read)."""

    def convert(value: Any) -> str:
        text = _text(value).strip()
        if (kind == "health" and not text) or (kind == "ready" and text == "spawned"):
            return text
        from circus import probespec

        (probespec.validate_ready if kind == "ready" else probespec.validate_health)(text)
        return text

    return convert


def _depends(value: Any) -> str:
    text = _text(value)
    if not text.strip():
        return ""
    from circus.depends import normalize

    return normalize(text)


_KINDS: dict[str, tuple[Converter, Converter]] = {
    "str": (str, _text),
    "optstr": (lambda v: v if v != "" else None, _opt_text),
    "int": (to_int, _wire_int),
    "optint": (_opt_int_text, lambda v: None if v is None else _wire_int(v)),
    "float": (to_float, _wire_number),
    "bool": (to_bool, _wire_bool),
    "signal": (to_signum, to_signum),
    "optsignal": (lambda v: None if not str(v).strip() else to_signum(v),
                  lambda v: None if v is None else to_signum(v)),
    "user": (_user, _user),
    "args": (_args, _args),
    "octal": (lambda v: None if not str(v).strip() else to_octal(v),
              lambda v: None if v is None else to_octal(v)),
    "depends": (_depends, _depends),
    "ready": (_probe("ready"), _probe("ready")),
    "health": (_probe("health"), _probe("health")),
    "family": (to_family, to_family),
    "socktype": (to_socktype, to_socktype),
}


class _Declared(NamedTuple):
    default: Any
    kind: str
    help: str
    reload: bool
    listed: bool
    minimum: float | None


def _w(default: Any, kind: str, help: str, *, reload: bool = False, listed: bool = True,
       minimum: float | None = None) -> Any:
    """Declare a watcher option inside :class:`WatcherSettings` (see :func:`_table`)."""
    return _Declared(default, kind, help, reload, listed, minimum)


class WatcherSettings:
    """Every option of ``[watcher:NAME]`` with its type, default, parser and help, once.

    Each line is ``name: type = _w(default, kind, help, ...)``: the annotation is the type
    the value has in a running watcher, ``kind`` names the text and JSON parsers, ``reload``
    says that a change needs new processes (a graceful reload) rather than applying live,
    ``minimum`` is the smallest value accepted. :class:`~circus.watcher.Watcher` inherits
    these attributes; :data:`WATCHER_OPTIONS` is built from this class, and every door
    (the INI reader, ``set``/``add``, ``circusctl``, the docs) reads that table.
    """

    cmd: str = _w("", "str", "Program to run, with its arguments (split like a shell).",
                  reload=True)
    args: str | list[str] | None = _w(None, "args", "More arguments, added after those of cmd.",
                                      reload=True)
    executable: str | None = _w(
        None, "optstr", "File actually executed; the first word of cmd becomes argv[0].",
        reload=True)
    shell: bool = _w(False, "bool", "Run the command through /bin/sh -c.", reload=True)
    shell_args: str | None = _w(
        None, "optstr", "Arguments given to the shell after the command string ($0, $1, ...).",
        reload=True)
    working_dir: str | None = _w(None, "optstr", "Directory the command runs in.", reload=True)
    uid: int | str | None = _w(None, "user", "User (name or number) the processes run as.",
                               reload=True)
    gid: int | str | None = _w(None, "user", "Group (name or number) the processes run as.",
                               reload=True)
    umask: int | None = _w(None, "octal", "umask (octal) the processes start with.",
                           reload=True)
    copy_env: bool = _w(False, "bool", "Start the environment from circusd's own.",
                        reload=True)
    copy_path: bool = _w(False, "bool",
                         "Set PYTHONPATH to circusd's sys.path (needs copy_env).", reload=True)
    virtualenv: str | None = _w(
        None, "optstr",
        "Run inside this virtualenv: its bin/ on PATH and its site-packages on PYTHONPATH.",
        reload=True)
    virtualenv_py_ver: str | None = _w(
        None, "optstr", "Python version (X.Y) of the virtualenv's lib/pythonX.Y.", reload=True)
    numprocesses: int = _w(1, "int", "Number of processes to keep running.", minimum=0)
    max_processes: int | None = _w(
        None, "optint",
        "Most processes this watcher may run; a larger numprocesses is refused (unset: "
        "only [circus] max_processes applies).", minimum=1)
    warmup_delay: float = _w(0.0, "float", "Seconds to wait between two spawns.", minimum=0)
    priority: int = _w(0, "int", "Start order: higher first; stop goes the other way.")
    singleton: bool = _w(False, "bool", "At most one process.")
    respawn: bool = _w(True, "bool", "Replace processes that exit.")
    autostart: bool = _w(True, "bool", "Start the watcher when circusd starts.")
    max_retry: int = _w(
        5, "int",
        "Failed starts in a row (a spawn that fails, or a process that exits before "
        "min_uptime) after which the watcher gives up and is fatal (-1: never).",
        minimum=-1)
    min_uptime: float = _w(
        1.0, "float",
        "Seconds a process must run for its start to count as a success; an earlier exit "
        "is a failed start.", minimum=0)
    backoff_initial: float = _w(
        0.1, "float", "Wait before the spawn after the second failed start in a row.",
        minimum=0)
    backoff_factor: float = _w(
        2.0, "float", "Each further failed start in a row multiplies the wait by this.",
        minimum=1)
    backoff_max: float = _w(5.0, "float", "Longest wait between two failed starts.",
                            minimum=0)
    backoff_jitter: float = _w(
        0.1, "float", "Up to this fraction of the wait is added at random.", minimum=0)
    depends_on: str = _w(
        "", "depends",
        "Watchers to wait for before spawning, comma-separated: NAME (until it is ready) "
        "or NAME:started, NAME:completed.")
    ready: str = _w(
        "spawned", "ready",
        "When a process counts as ready: spawned, notify, fd:N, tcp:HOST:PORT, http:URL, "
        "exec:COMMAND or log:REGEX.", reload=True)
    ready_timeout: float = _w(
        60.0, "float",
        "Seconds a process has to become ready; then it is stopped, a failed start.",
        minimum=0)
    ready_interval: float = _w(1.0, "float", "Seconds between two readiness checks.",
                               minimum=0.01)
    health: str = _w(
        "", "health",
        "A liveness check once a process is ready: tcp:HOST:PORT, http:URL or exec:COMMAND.",
        reload=True)
    health_interval: float = _w(10.0, "float", "Seconds between two liveness checks.",
                                minimum=0.01)
    health_timeout: float = _w(1.0, "float", "Seconds one liveness check may take.",
                               minimum=0.01)
    health_failures: int = _w(
        3, "int", "Failed liveness checks in a row after which the process is restarted.",
        minimum=1)
    watchdog_sec: float = _w(
        0.0, "float",
        "ready = notify: a process that sends no WATCHDOG=1 for this long is restarted "
        "(0: no watchdog).", minimum=0)
    graceful_timeout: float = _w(30.0, "float", "Seconds between the stop signal and SIGKILL.",
                                 minimum=0)
    stop_signal: int = _w(15, "signal", "Signal that asks a process to stop.")
    stop_children: bool = _w(False, "bool",
                             "Also send the stop signal to each process's direct children.")
    send_hup: bool = _w(False, "bool", "Reload by sending SIGHUP instead of new processes.")
    max_age: int = _w(0, "int", "Replace a process older than this many seconds (0: never).",
                      reload=True, minimum=0)
    max_age_variance: int = _w(
        30, "int", "Random extra seconds (0..N) added to max_age for each process.",
        reload=True, minimum=0)
    use_sockets: bool = _w(False, "bool", "Processes inherit the [socket:*] sockets.",
                           reload=True)
    on_demand: bool = _w(False, "bool",
                         "Start only when a socket of the watcher gets a connection.")
    stdin_socket: str | None = _w(None, "optstr", "Socket given to the processes as stdin.",
                                  reload=True)
    close_child_stdin: bool = _w(True, "bool", "stdin of the processes is /dev/null.",
                                 reload=True)
    close_child_stdout: bool = _w(False, "bool", "stdout of the processes is /dev/null.",
                                  reload=True)
    close_child_stderr: bool = _w(False, "bool", "stderr of the processes is /dev/null.",
                                  reload=True)
    essential: bool = _w(
        False, "bool",
        "When the watcher stops for good (its processes ended and none is respawned), "
        "circusd quits with its exit status.")
    pdeathsig: int | None = _w(
        None, "optsignal", "Signal the processes get if circusd dies (PR_SET_PDEATHSIG).",
        reload=True)
    cgroup: bool = _w(
        False, "bool", "Run the processes in a cgroup v2 of their own, ended with "
        "cgroup.kill when the watcher stops (needs a writable cgroup v2: see deployment.md).",
        reload=True)
    check_flapping: bool = _w(
        True, "bool",
        "Legacy switch, kept for old configs; the flapping plugin reads flapping.active.",
        listed=False)


def _table(cls: type) -> dict[str, Option]:
    """The :class:`Option` table of *cls*; each declaration becomes its plain default."""
    table: dict[str, Option] = {}
    for name, value in list(vars(cls).items()):
        if isinstance(value, _Declared):
            table[name] = _opt(name, value.default, value.kind, value.help,
                               reload=value.reload, listed=value.listed, minimum=value.minimum)
            setattr(cls, name, value.default)
    return table


WATCHER_OPTIONS: dict[str, Option] = _table(WatcherSettings)

HOOK_NAMES = (
    "before_start",
    "after_start",
    "before_spawn",
    "after_spawn",
    "before_signal",
    "after_signal",
    "before_stop",
    "after_stop",
    "before_reap",
    "after_reap",
    "extended_stats",
)

# Hooks whose failure is ignored unless the user says otherwise.
HOOKS_IGNORED_BY_DEFAULT = frozenset(
    {"before_stop", "after_stop", "before_signal", "after_signal", "extended_stats"}
)


def rlimit_resource(name: str) -> int:
    """The ``resource.RLIMIT_*`` constant for ``nofile``/``NOFILE``; ValueError if none."""
    value = getattr(resource, "RLIMIT_" + name.upper(), None)
    if not isinstance(value, int):
        known = sorted(k[7:].lower() for k in dir(resource) if k.startswith("RLIMIT_"))
        raise ValueError(f"unknown resource limit {name!r} (known: {', '.join(known)})")
    return value


CIRCUS_OPTIONS: dict[str, Option] = {
    o.name: o
    for o in (
        _opt("endpoint", "tcp://127.0.0.1:5555", "str",
             "ZeroMQ endpoint (ROUTER) that takes commands."),
        _opt("pubsub_endpoint", "tcp://127.0.0.1:5556", "str",
             "ZeroMQ endpoint (PUB) that publishes events."),
        _opt("stats_endpoint", None, "optstr", "ZeroMQ endpoint (PUB) of circusd-stats."),
        _opt("multicast_endpoint", None, "optstr",
             "udp://ADDR:PORT to answer discovery requests on (off unless set)."),
        _opt("statsd", False, "bool", "Run circusd-stats."),
        _opt("prometheus_host", "127.0.0.1", "str",
             "Address circusd-stats serves Prometheus metrics on (with prometheus_port)."),
        _opt("prometheus_port", None, "optint",
             "Port of circusd-stats' Prometheus /metrics (off unless set; runs "
             "circusd-stats).", minimum=0),
        _opt("check_delay", 5.0, "float",
             "Accepted and reported for old configs; paces nothing (deaths and max_age "
             "are seen at once)."),
        _opt("warmup_delay", 0.0, "float", "Seconds to wait after starting each watcher."),
        _opt("minfds", 1024, "int",
             "Open files circusd needs: its RLIMIT_NOFILE is raised to at least this, or it "
             "refuses to start.", minimum=0),
        _opt("minprocs", 200, "int",
             "Processes circusd's user needs: RLIMIT_NPROC is raised to at least this, or "
             "circusd refuses to start.", minimum=0),
        _opt("max_processes", None, "optint",
             "Most processes all watchers may run together (the sum of their numprocesses); "
             "unset: derived from RLIMIT_NPROC and kernel.pid_max (see deployment.md).",
             minimum=1),
        _opt("endpoint_owner", None, "optstr",
             "User that owns ipc:// endpoint files (and may control circusd)."),
        _opt("allow_users", None, "optstr",
             "Users (names or uids, or @group) who may control circusd and read its events "
             "on ipc:// and loopback endpoints, besides root and circusd's own user."),
        _opt("allow_groups", None, "optstr",
             "Groups (names or gids) whose members may control circusd and read its events, "
             "as allow_users."),
        _opt("allow_unauthenticated_remote", False, "bool",
             "Allow TCP endpoints that other hosts can reach without curve_secret_key "
             "(anyone who reaches them controls circusd)."),
        _opt("curve_secret_key", None, "optstr",
             "circusd's CURVE key pair (a .key_secret file, mode 0600): every endpoint "
             "circusd binds then requires CURVE, and TCP on any interface is allowed."),
        _opt("curve_admin_keys", None, "optstr",
             "Directory of the public keys (.key files) of clients that may run every "
             "command."),
        _opt("curve_operator_keys", None, "optstr",
             "Directory of the public keys of clients that may also start, stop, restart, "
             "reload, signal, kill, incr and decr."),
        _opt("curve_reader_keys", None, "optstr",
             "Directory of the public keys of clients that may only read: status, list, "
             "stats, options, get, tail, listen, ..."),
        _opt("umask", None, "octal", "umask (octal) of circusd and everything it starts."),
        _opt("pidfile", None, "optstr", "File that holds circusd's pid."),
        _opt("state_file", None, "optstr",
             "File that records add, rm, set, incr and decr made over the control socket; "
             "they are applied again when circusd starts (off unless set; relative to the "
             "configuration file's directory)."),
        _opt("loglevel", "info", "str", "critical, error, warning, info or debug."),
        _opt("logoutput", "-", "str",
             "'-' or stdout, stderr, a file path (reopened after rotation), or "
             "syslog://host:port?facility."),
        _opt("loggerconfig", None, "optstr",
             "A logging configuration file (.ini, .json or .yaml)."),
        _opt("debug", False, "bool", "Capture the output of internal watchers."),
        _opt("debug_gc", False, "bool", "Run the garbage collector in debug mode."),
        _opt("fqdn_prefix", None, "optstr", "Prefix of the arbiter id."),
        _opt("httpd", False, "bool", "Run the web console (circushttpd) as a watcher."),
        _opt("httpd_host", "localhost", "str", "Address the web console listens on."),
        _opt("httpd_port", 8080, "int", "Port of the web console."),
        _opt("httpd_token_file", None, "optstr",
             "File of the web console's login token (created when missing; relative to the "
             "configuration file's directory); unset: a new token each start, printed in "
             "circusd's output."),
        _opt("stream_backend", "thread", "str",
             "Accepted for old configs and ignored: output is read on the event loop.",
             listed=False),
        _opt("include", None, "optstr", "Further config files (globs) to read.",
             listed=False),
        _opt("include_dir", None, "optstr", "Directories whose *.ini files are read.",
             listed=False),
    )
}


SOCKET_OPTIONS: dict[str, Option] = {
    o.name: o
    for o in (
        _opt("host", "localhost", "str", "Host name or address to bind."),
        _opt("port", 8080, "int", "TCP/UDP port to bind (0: any free port)."),
        _opt("family", to_family("AF_INET"), "family", "AF_INET, AF_INET6 or AF_UNIX."),
        _opt("type", to_socktype("SOCK_STREAM"), "socktype",
             "SOCK_STREAM, SOCK_DGRAM, SOCK_RAW, SOCK_RDM or SOCK_SEQPACKET."),
        _opt("proto", None, "optstr", "Protocol name (getprotobyname)."),
        _opt("backlog", 2048, "int", "Length of the listen queue."),
        _opt("path", None, "optstr", "Path of a Unix socket (implies AF_UNIX)."),
        _opt("umask", 8, "octal", "umask (octal) applied while a Unix socket path is bound."),
        _opt("replace", False, "bool", "Unix socket: remove an existing file at path."),
        _opt("blocking", False, "bool", "Leave the socket in blocking mode."),
        _opt("so_reuseport", False, "bool",
             "SO_REUSEPORT: each process gets its own socket bound to the address."),
        _opt("interface", None, "optstr", "Network interface to bind to (SO_BINDTODEVICE)."),
    )
}
