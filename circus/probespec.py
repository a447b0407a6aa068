"""The text of the watcher options ``ready`` and ``health``, parsed into probe specs.

``ready`` says when a new process counts as ready; ``health`` names a liveness check:

==================  =======  =======  ===================================================
text                ready    health   meaning
==================  =======  =======  ===================================================
``spawned``         default  no       ready as soon as it has been started
``notify``          yes      no       ready once it sends ``READY=1`` to ``NOTIFY_SOCKET``
``fd:N``            yes      no       ready once it writes a newline on descriptor N
                                      (N ≥ 3; the s6 protocol)
``tcp:HOST:PORT``   yes      yes      a TCP connection to HOST:PORT can be opened;
                                      an IPv6 address goes in brackets: ``tcp:[::1]:80``
``http:URL``        yes      yes      ``GET URL`` answers 2xx or 3xx (not followed)
``exec:COMMAND``    yes      yes      COMMAND (split like a shell line, run without a
                                      shell) exits 0
``log:REGEX``       yes      no       a line of its output matches REGEX (``re.search``)
==================  =======  =======  ===================================================

``http:URL`` is written ``http:http://host:port/path`` or ``http:https://…``; a URL alone
(``http://host:port/path``, ``https://…``) means the same, since ``http:`` followed by
``//`` cannot be anything else. The URL must be ASCII (percent-encode the rest) and hold
no user name or password.

A value may hold placeholders (``$(circus.wid)``, ``((circus.env.PORT))``, ``$WID``) that
differ per process. :func:`has_template` tells; the caller then keeps the text, checks
what it can at load with :func:`validate_ready` / :func:`validate_health`, and parses the
text again per process once substituted. The kind words are matched in any case.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
import socket
from dataclasses import dataclass
from typing import ClassVar, TypeGuard
from urllib.parse import urlsplit

from circus.util.command import has_placeholder, knowable

__all__ = [
    "HEALTH_FORMS",
    "READY_FORMS",
    "ExecProbe",
    "FdReady",
    "HttpProbe",
    "LogReady",
    "Notify",
    "ProbeSpec",
    "ReadySpec",
    "Spawned",
    "TcpProbe",
    "has_template",
    "is_probe",
    "parse_health",
    "parse_ready",
    "validate_health",
    "validate_ready",
]

READY_FORMS = "spawned, notify, fd:N, tcp:HOST:PORT, http:URL, exec:COMMAND, log:REGEX"
HEALTH_FORMS = "tcp:HOST:PORT, http:URL, exec:COMMAND"
_TCP_FORM = "tcp:HOST:PORT, or tcp:[IPV6]:PORT"
_HTTP_FORM = "http:http://HOST[:PORT]/PATH or http:https://HOST[:PORT]/PATH"

_WID = re.compile(r"\$WID(?![A-Za-z0-9_])")
_HOST = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.\-]*[A-Za-z0-9_.])?\Z")


@dataclass(frozen=True, slots=True)
class Spawned:
    """Ready as soon as the process has been started (the default)."""

    text: str = "spawned"
    kind: ClassVar[str] = "spawned"

    def describe(self) -> str:
        return "spawned"


@dataclass(frozen=True, slots=True)
class Notify:
    """Ready once the process sends ``READY=1`` on ``NOTIFY_SOCKET`` (sd_notify)."""

    text: str = "notify"
    kind: ClassVar[str] = "notify"

    def describe(self) -> str:
        return "READY=1 on NOTIFY_SOCKET"


@dataclass(frozen=True, slots=True)
class FdReady:
    """Ready once the process writes a newline on descriptor ``fd`` (s6's protocol)."""

    text: str
    fd: int
    kind: ClassVar[str] = "fd"

    def describe(self) -> str:
        return f"a newline on fd {self.fd}"


@dataclass(frozen=True, slots=True)
class LogReady:
    """Ready once a line of the process's output matches ``pattern`` (``re.search``)."""

    text: str
    pattern: re.Pattern[str]
    kind: ClassVar[str] = "log"

    def describe(self) -> str:
        return f"an output line matching {self.pattern.pattern!r}"


@dataclass(frozen=True, slots=True)
class TcpProbe:
    """A TCP connection to ``host``:``port`` can be opened (then it is closed).

    ``family`` is ``AF_INET`` or ``AF_INET6`` for an address, 0 for a name to resolve.
    """

    text: str
    host: str
    port: int
    family: int
    kind: ClassVar[str] = "tcp"

    def describe(self) -> str:
        return f"tcp connect to {_hostport(self.host, self.port)}"


@dataclass(frozen=True, slots=True)
class HttpProbe:
    """``GET`` of ``url`` answers 2xx or 3xx.

    ``target`` is the request target (path and query), ``authority`` the Host header.
    """

    text: str
    url: str
    tls: bool
    host: str
    port: int
    target: str
    authority: str
    kind: ClassVar[str] = "http"

    def describe(self) -> str:
        return f"HTTP GET {self.url}"


@dataclass(frozen=True, slots=True)
class ExecProbe:
    """``argv`` (no shell) exits 0."""

    text: str
    argv: tuple[str, ...]
    kind: ClassVar[str] = "exec"

    def describe(self) -> str:
        return f"exec {shlex.join(self.argv)}"


ProbeSpec = TcpProbe | HttpProbe | ExecProbe
ReadySpec = Spawned | Notify | FdReady | LogReady | TcpProbe | HttpProbe | ExecProbe


def is_probe(spec: ReadySpec) -> TypeGuard[ProbeSpec]:
    """Is *spec* a check to run (tcp, http, exec), rather than an event to wait for?"""
    return isinstance(spec, TcpProbe | HttpProbe | ExecProbe)


def has_template(text: str) -> bool:
    """Does *text* hold a placeholder to fill in per process (``$(circus.X)``,
    ``((circus.X))``, ``$WID``)?"""
    return has_placeholder(text) or _WID.search(text) is not None


def parse_ready(text: str) -> ReadySpec:
    """The ``ready`` option's *text*, substituted. ValueError (one line) if it is not one
    of the accepted forms."""
    return _parse(text, ready=True)


def parse_health(text: str) -> ProbeSpec:
    """The ``health`` option's *text*, substituted: ``tcp:``, ``http:`` or ``exec:``."""
    spec = _parse(text, ready=False)
    assert is_probe(spec)
    return spec


def validate_ready(text: str) -> None:
    """Check ``ready``'s *text* at load, placeholders and all; ValueError if it is wrong.

    Placeholders that stand for a number (the worker id, a socket's descriptor) are
    checked as the number 3; with any other placeholder only the kind is checked.
    """
    _validate(text, ready=True)


def validate_health(text: str) -> None:
    """:func:`validate_ready` for the ``health`` option."""
    _validate(text, ready=False)


# -- parsing ------------------------------------------------------------------------------

def _validate(text: str, *, ready: bool) -> None:
    if not has_template(text):
        _parse(text, ready=ready)
        return
    masked = knowable(text, "3")
    if masked is not None:
        _parse(masked, ready=ready, label=text.strip())
    else:
        _kind(text.strip(), text.strip(), ready=ready)


def _parse(text: str, *, ready: bool, label: str | None = None) -> ReadySpec:
    """*text* parsed; errors quote *label* (the text as written, placeholders and all)."""
    text = text.strip()
    name = text if label is None else label
    kind, rest = _kind(text, name, ready=ready)
    if kind == "spawned":
        return Spawned(text)
    if kind == "notify":
        return Notify(text)
    if kind == "fd":
        return FdReady(text, _fd(name, rest))
    if kind == "tcp":
        return _tcp(text, name, rest)
    if kind == "http":
        return _http(text, name, rest)
    if kind == "exec":
        return ExecProbe(text, _argv(name, rest))
    return LogReady(text, _regex(name, rest))


_ARGUMENT_KINDS = ("fd", "tcp", "http", "exec", "log")


def _kind(text: str, name: str, *, ready: bool) -> tuple[str, str]:
    """The kind of *text* and what follows its colon; ValueError if no kind fits."""
    forms = READY_FORMS if ready else HEALTH_FORMS
    if not text:
        raise ValueError(f"empty; expected one of {forms}")
    if text.lower().startswith(("http://", "https://")):
        return "http", text  # the shorthand: a URL alone
    word, colon, rest = text.partition(":")
    kind = word.strip().lower()
    if kind not in ("spawned", "notify", *_ARGUMENT_KINDS):
        raise ValueError(f"{name!r}: unknown kind {word.strip()!r}; expected one of {forms}")
    if not ready and kind in ("spawned", "notify", "fd", "log"):
        raise ValueError(f"{name!r}: {kind} is a readiness condition, not a health check; "
                         f"expected one of {forms}")
    if kind in ("spawned", "notify"):
        if colon:
            raise ValueError(f"{name!r}: {kind} takes no argument; expected one of {forms}")
        return kind, ""
    if not colon:
        raise ValueError(f"{name!r}: {kind} needs a colon and an argument; "
                         f"expected one of {forms}")
    return kind, rest


def _fd(name: str, rest: str) -> int:
    value = rest.strip()
    if not value.isdigit() or not value.isascii():
        raise ValueError(f"{name!r}: descriptor {value!r} is not a number; expected fd:N "
                         f"with N 3 or more")
    fd = int(value)
    if fd < 3:
        raise ValueError(f"{name!r}: descriptor {fd} is stdin, stdout or stderr; expected "
                         f"fd:N with N 3 or more")
    return fd


def _port(name: str, value: str, form: str) -> int:
    if not value:
        raise ValueError(f"{name!r}: no port; expected {form}")
    if not (value.isdigit() and value.isascii()) or not 0 < int(value) < 65536:
        raise ValueError(f"{name!r}: port {value!r} is not a number from 1 to 65535; "
                         f"expected {form}")
    return int(value)


def _tcp(text: str, name: str, rest: str) -> TcpProbe:
    rest = rest.strip()
    if rest.startswith("["):
        end = rest.find("]")
        if end < 0:
            raise ValueError(f"{name!r}: no ']' after the IPv6 address; expected {_TCP_FORM}")
        host, after = rest[1:end], rest[end + 1:]
        if not after.startswith(":"):
            raise ValueError(f"{name!r}: no port after ']'; expected {_TCP_FORM}")
        port = _port(name, after[1:], _TCP_FORM)
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{name!r}: {host!r} is not an IPv6 address; "
                             f"expected {_TCP_FORM}") from None
        return TcpProbe(text, host, port, socket.AF_INET6)
    host, colon, port_text = rest.rpartition(":")
    if not colon or not port_text:
        raise ValueError(f"{name!r}: no port; expected {_TCP_FORM}")
    if ":" in host:
        raise ValueError(f"{name!r}: an IPv6 address goes in brackets (tcp:[::1]:80); "
                         f"expected {_TCP_FORM}")
    if not host:
        raise ValueError(f"{name!r}: no host; expected {_TCP_FORM}")
    if not _HOST.match(host):
        raise ValueError(f"{name!r}: {host!r} is not a host name or address; "
                         f"expected {_TCP_FORM}")
    port = _port(name, port_text, _TCP_FORM)
    return TcpProbe(text, host, port, _family(host))


def _family(host: str) -> int:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return 0  # a name, resolved at each check
    return socket.AF_INET6 if address.version == 6 else socket.AF_INET


def _http(text: str, name: str, url: str) -> HttpProbe:
    url = url.strip()
    if not url.isascii() or any(c.isspace() or ord(c) < 32 for c in url):
        raise ValueError(f"{name!r}: the URL must be ASCII without spaces (percent-encode "
                         f"the rest); expected {_HTTP_FORM}")
    try:
        parts = urlsplit(url)
    except ValueError:  # brackets that hold no IPv6 address
        raise ValueError(f"{name!r}: the host is not a name or address; "
                         f"expected {_HTTP_FORM}") from None
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{name!r}: the port is not a number from 1 to 65535; "
                         f"expected {_HTTP_FORM}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"{name!r}: the URL must start with http:// or https://; "
                         f"expected {_HTTP_FORM}")
    if "@" in parts.netloc:
        raise ValueError(f"{name!r}: a user name or password in the URL is not supported; "
                         f"expected {_HTTP_FORM}")
    host = parts.hostname or ""
    if not host:
        raise ValueError(f"{name!r}: no host in the URL; expected {_HTTP_FORM}")
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{name!r}: {host!r} is not an IPv6 address; "
                             f"expected {_HTTP_FORM}") from None
    elif not _HOST.match(host):
        raise ValueError(f"{name!r}: {host!r} is not a host name or address; "
                         f"expected {_HTTP_FORM}")
    tls = scheme == "https"
    default = 443 if tls else 80
    if port == 0:
        raise ValueError(f"{name!r}: the port is not a number from 1 to 65535; "
                         f"expected {_HTTP_FORM}")
    port = port or default
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    authority = _hostport(host, port) if port != default else _hostport(host, None)
    clean = f"{scheme}://{authority}{target}"
    return HttpProbe(text, clean, tls, host, port, target, authority)


def _argv(name: str, rest: str) -> tuple[str, ...]:
    try:
        words = shlex.split(rest)
    except ValueError as exc:
        reason = ("unbalanced quotes" if "quotation" in str(exc)
                  else "ends with a lone backslash" if "escaped" in str(exc)
                  else str(exc))
        raise ValueError(f"{name!r}: {reason}; expected exec:COMMAND, a command line "
                         f"split like a shell's") from None
    if not words:
        raise ValueError(f"{name!r}: no command; expected exec:COMMAND")
    return tuple(words)


def _regex(name: str, rest: str) -> re.Pattern[str]:
    if not rest:
        raise ValueError(f"{name!r}: empty regular expression; expected log:REGEX")
    try:
        return re.compile(rest)
    except re.error as exc:
        raise ValueError(f"{name!r}: invalid regular expression {rest!r} ({exc}); "
                         f"expected log:REGEX, a Python regular expression") from None


def _hostport(host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"
