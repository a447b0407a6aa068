"""Tests of the probe specs (circus.probespec) and of LogMatcher: no sockets, no children."""

from __future__ import annotations

import re
import socket
import time

import pytest

from circus.probes import (
    HEALTH_FORMS,
    MAX_LINE,
    READY_FORMS,
    ExecProbe,
    FdReady,
    HttpProbe,
    LogMatcher,
    LogReady,
    Notify,
    Spawned,
    TcpProbe,
    has_template,
    is_probe,
    parse_health,
    parse_ready,
    validate_health,
    validate_ready,
)

# -- the accepted forms -------------------------------------------------------------------


def test_spawned_and_notify() -> None:
    assert parse_ready("spawned") == Spawned("spawned")
    assert parse_ready("  Notify ") == Notify("Notify")
    assert parse_ready("spawned").describe() == "spawned"
    assert "NOTIFY_SOCKET" in parse_ready("notify").describe()


@pytest.mark.parametrize(("text", "fd"), [("fd:3", 3), ("fd:10", 10), ("FD: 42 ", 42)])
def test_fd(text: str, fd: int) -> None:
    spec = parse_ready(text)
    assert isinstance(spec, FdReady)
    assert spec.fd == fd
    assert spec.describe() == f"a newline on fd {fd}"


@pytest.mark.parametrize(
    ("text", "host", "port", "family"),
    [
        ("tcp:127.0.0.1:8000", "127.0.0.1", 8000, socket.AF_INET),
        ("tcp:[::1]:80", "::1", 80, socket.AF_INET6),
        ("tcp:localhost:65535", "localhost", 65535, 0),
        ("tcp:db-1.example.com:5432", "db-1.example.com", 5432, 0),
        ("TCP:10.0.0.1:1", "10.0.0.1", 1, socket.AF_INET),
    ],
)
def test_tcp(text: str, host: str, port: int, family: int) -> None:
    spec = parse_ready(text)
    assert spec == TcpProbe(text.strip(), host, port, family)
    assert parse_health(text) == spec
    shown = f"[{host}]" if ":" in host else host
    assert spec.describe() == f"tcp connect to {shown}:{port}"


@pytest.mark.parametrize(
    ("text", "url", "tls", "host", "port", "target", "authority"),
    [
        ("http:http://127.0.0.1:8000/health", "http://127.0.0.1:8000/health", False,
         "127.0.0.1", 8000, "/health", "127.0.0.1:8000"),
        # the shorthand: a URL alone
        ("http://127.0.0.1:8000/health?full=1", "http://127.0.0.1:8000/health?full=1",
         False, "127.0.0.1", 8000, "/health?full=1", "127.0.0.1:8000"),
        ("https://example.com", "https://example.com/", True, "example.com", 443, "/",
         "example.com"),
        ("http:https://example.com:8443/x", "https://example.com:8443/x", True,
         "example.com", 8443, "/x", "example.com:8443"),
        ("http:http://[::1]:80/", "http://[::1]/", False, "::1", 80, "/", "[::1]"),
        ("HTTP://Example.COM/a#frag", "http://example.com/a", False, "example.com", 80, "/a",
         "example.com"),
    ],
)
def test_http(text: str, url: str, tls: bool, host: str, port: int, target: str,
              authority: str) -> None:
    spec = parse_health(text)
    assert isinstance(spec, HttpProbe)
    assert (spec.url, spec.tls, spec.host, spec.port, spec.target, spec.authority) == (
        url, tls, host, port, target, authority)
    assert spec.text == text
    assert spec.describe() == f"HTTP GET {url}"
    assert parse_ready(text) == spec


@pytest.mark.parametrize(
    ("text", "argv"),
    [
        ("exec:pg_isready -q", ("pg_isready", "-q")),
        ("exec:sh -c 'test -f /tmp/x && exit 0'", ("sh", "-c", "test -f /tmp/x && exit 0")),
        ('exec:/usr/bin/check "a b" c\\ d', ("/usr/bin/check", "a b", "c d")),
    ],
)
def test_exec(text: str, argv: tuple[str, ...]) -> None:
    spec = parse_health(text)
    assert spec == ExecProbe(text, argv)
    assert spec.describe().startswith("exec ")


def test_log() -> None:
    spec = parse_ready(r"log:Listening on (\d+)")
    assert isinstance(spec, LogReady)
    assert spec.pattern == re.compile(r"Listening on (\d+)")
    assert spec.describe() == r"an output line matching 'Listening on (\\d+)'"
    # everything after the first colon is the expression, colons included
    assert parse_ready("log:a:b").pattern.pattern == "a:b"  # type: ignore[union-attr]


def test_is_probe() -> None:
    assert is_probe(parse_ready("tcp:h:1"))
    assert is_probe(parse_ready("http://h/"))
    assert is_probe(parse_ready("exec:true"))
    for text in ("spawned", "notify", "fd:3", "log:x"):
        assert not is_probe(parse_ready(text))


def test_specs_are_frozen_and_hashable() -> None:
    spec = parse_ready("tcp:h:1")
    with pytest.raises(AttributeError):
        spec.port = 2  # type: ignore[misc]
    assert len({parse_ready("tcp:h:1"), parse_ready("tcp:h:1"), parse_ready("log:x")}) == 2


# -- errors: one line, what is wrong, and the accepted forms ------------------------------


@pytest.mark.parametrize(
    ("text", "wrong", "forms"),
    [
        ("", "empty", READY_FORMS),
        ("bogus", "unknown kind 'bogus'", READY_FORMS),
        ("ftp://x/", "unknown kind 'ftp'", READY_FORMS),
        ("spawned:1", "spawned takes no argument", READY_FORMS),
        ("tcp", "tcp needs a colon and an argument", READY_FORMS),
        ("fd:2", "descriptor 2 is stdin, stdout or stderr", "fd:N with N 3 or more"),
        ("fd:x", "descriptor 'x' is not a number", "fd:N"),
        ("fd:-4", "not a number", "fd:N"),
        ("tcp:localhost", "no port", "tcp:HOST:PORT"),
        ("tcp:localhost:", "no port", "tcp:HOST:PORT"),
        (":80", "unknown kind ''", READY_FORMS),
        ("tcp::80", "no host", "tcp:HOST:PORT"),
        ("tcp:h:0", "port '0' is not a number from 1 to 65535", "tcp:HOST:PORT"),
        ("tcp:h:65536", "port '65536'", "tcp:HOST:PORT"),
        ("tcp:h:http", "port 'http'", "tcp:HOST:PORT"),
        ("tcp:::1:80", "an IPv6 address goes in brackets", "tcp:[IPV6]:PORT"),
        ("tcp:[::1:80", "no ']' after the IPv6 address", "tcp:[IPV6]:PORT"),
        ("tcp:[::1]80", "no port after ']'", "tcp:[IPV6]:PORT"),
        ("tcp:[nope]:80", "'nope' is not an IPv6 address", "tcp:[IPV6]:PORT"),
        ("tcp:a b:80", "'a b' is not a host name or address", "tcp:HOST:PORT"),
        ("http:", "must start with http:// or https://", "http:http://HOST"),
        ("http:ftp://h/", "must start with http:// or https://", "http:https://HOST"),
        ("http:http://", "no host in the URL", "http:http://HOST"),
        ("http://h:99999/", "the port is not a number from 1 to 65535", "http:http://HOST"),
        ("http://h:0/", "the port is not a number from 1 to 65535", "http:http://HOST"),
        ("http://u:pw@h/", "a user name or password", "http:http://HOST"),
        ("http://h/a b", "ASCII without spaces", "http:http://HOST"),
        ("http://h/caf\u00e9", "ASCII without spaces", "http:http://HOST"),
        ("http://[zz]/", "the host is not a name or address", "http:http://HOST"),
        ("exec:", "no command", "exec:COMMAND"),
        ("exec:check 'unclosed", "unbalanced quotes", "exec:COMMAND"),
        ("exec:check \\", "ends with a lone backslash", "exec:COMMAND"),
        ("log:", "empty regular expression", "log:REGEX"),
        ("log:(unclosed", "invalid regular expression '(unclosed' (missing ), "
         "unterminated subpattern at position 0)", "log:REGEX"),
        ("log:*x", "invalid regular expression '*x'", "log:REGEX"),
    ],
)
def test_ready_errors(text: str, wrong: str, forms: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_ready(text)
    message = str(info.value)
    assert "\n" not in message
    assert wrong in message
    assert forms in message
    if text.strip():
        assert message.startswith(repr(text.strip()) + ": ")


@pytest.mark.parametrize("text", ["spawned", "notify", "fd:3", "log:ready", "bogus:x", ""])
def test_health_accepts_only_checks(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_health(text)
    message = str(info.value)
    assert HEALTH_FORMS in message
    assert "\n" not in message
    if text in ("spawned", "notify", "fd:3", "log:ready"):
        assert "is a readiness condition, not a health check" in message


# -- placeholders -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tcp:127.0.0.1:800$(circus.wid)", True),
        ("tcp:127.0.0.1:((circus.env.port))", True),
        ("exec:check --id $WID", True),
        ("exec:check --width $WIDTH", False),
        ("tcp:127.0.0.1:8000", False),
        ("log:\\$\\(x\\)", False),
    ],
)
def test_has_template(text: str, expected: bool) -> None:
    assert has_template(text) is expected


def test_a_template_is_parsed_once_substituted() -> None:
    text = "tcp:127.0.0.1:800$(circus.wid)"
    with pytest.raises(ValueError):
        parse_ready(text)  # not a number yet
    validate_ready(text)  # the worker id is a number: checked as one
    spec = parse_ready(text.replace("$(circus.wid)", "2"))
    assert isinstance(spec, TcpProbe)
    assert spec.port == 8002


@pytest.mark.parametrize(
    "text",
    [
        "tcp:127.0.0.1:800$(circus.wid)",
        "tcp:127.0.0.1:((circus.wid))",
        "fd:$(circus.wid)",
        "tcp:$(circus.env.host):$(circus.env.port)",  # not knowable: only the kind is checked
        "exec:check --wid $WID --dir '$(circus.env.home)'",
        "http://127.0.0.1:80$(circus.wid)/",
        "log:worker $(circus.wid) ready",
    ],
)
def test_validate_accepts_templates(text: str) -> None:
    validate_ready(text)


@pytest.mark.parametrize(
    ("text", "wrong"),
    [
        ("tcp:127.0.0.1", "no port"),
        ("tcp:127.0.0.1:9999$(circus.wid)", "port '99993'"),
        ("exec:check 'x$(circus.wid)", "unbalanced quotes"),
        ("bogus:$(circus.env.x)", "unknown kind 'bogus'"),
        ("spawned$(circus.env.x)", "unknown kind"),
    ],
)
def test_validate_errors_quote_the_text_as_written(text: str, wrong: str) -> None:
    with pytest.raises(ValueError) as info:
        validate_ready(text)
    assert wrong in str(info.value)
    assert str(info.value).startswith(repr(text) + ": ")


def test_validate_health() -> None:
    validate_health("exec:check $WID")
    with pytest.raises(ValueError, match="readiness condition"):
        validate_health("log:$(circus.wid)")


# -- LogMatcher ---------------------------------------------------------------------------


def test_log_matcher_needs_a_complete_line() -> None:
    matcher = LogMatcher("ready")
    assert not matcher.feed(b"starting\nrea")
    assert not matcher.feed(b"dy")  # the line is not complete yet
    assert matcher.feed(b" now\n")
    assert matcher.matched


def test_log_matcher_joins_a_line_cut_across_many_chunks() -> None:
    matcher = LogMatcher(r"^listening on port \d+$")
    line = b"listening on port 8080\n"
    results = [matcher.feed(line[i:i + 1]) for i in range(len(line))]
    assert results == [False] * (len(line) - 1) + [True]


def test_log_matcher_several_lines_in_one_chunk() -> None:
    matcher = LogMatcher("^b$")
    assert matcher.feed(b"a\nb\nc\n")
    matcher = LogMatcher("^b$")
    assert not matcher.feed(b"a\nbb\nc\nb")  # the last line is not complete


def test_log_matcher_strips_crlf_and_searches() -> None:
    matcher = LogMatcher("ok$")
    assert matcher.feed(b"status: ok\r\n")
    assert LogMatcher("middle").feed(b"in the middle of a line\n")  # search, not match


def test_log_matcher_decodes_with_replacement() -> None:
    matcher = LogMatcher("caf\u00e9 \ufffd ready")
    assert not matcher.feed(b"caf\xc3")
    assert matcher.feed(b"\xa9 \xff ready\n")


def test_log_matcher_sticks_once_matched() -> None:
    matcher = LogMatcher("go")
    assert matcher.feed(b"go\n")
    assert matcher.feed(b"anything else")
    assert matcher.feed(b"")


def test_log_matcher_empty_lines_and_chunks() -> None:
    matcher = LogMatcher("^$")
    assert not matcher.feed(b"")
    assert matcher.feed(b"\n")


def test_log_matcher_long_line_is_searched_on_its_first_64k() -> None:
    head = b"x" * (MAX_LINE - 5)
    # "ready" ends exactly at MAX_LINE: found, even before the line ends
    matcher = LogMatcher("ready")
    assert matcher.feed(head + b"ready" + b"y" * 1000)
    # beyond MAX_LINE: not seen, in one chunk or in many
    assert not LogMatcher("ready").feed(head + b"yyyyyready\n")
    matcher = LogMatcher("ready")
    for _ in range(MAX_LINE // 4096):
        assert not matcher.feed(b"y" * 4096)
    assert not matcher.feed(b"ready\n")
    # the next line is searched again, from its start
    assert matcher.feed(b"ready\n")


def test_log_matcher_line_of_exactly_64k_then_newline() -> None:
    matcher = LogMatcher("^z+$")
    assert matcher.feed(b"z" * MAX_LINE)  # searched as soon as 64 KiB are known
    matcher = LogMatcher("^a")
    assert not matcher.feed(b"z" * MAX_LINE)
    assert not matcher.feed(b"\n")  # the newline ends the long line: nothing searched twice
    assert matcher.feed(b"a\n")


def test_log_matcher_accepts_a_compiled_pattern() -> None:
    matcher = LogMatcher(re.compile("(?i)READY"))
    assert matcher.feed(b"ready\n")


def test_log_matcher_is_linear_in_the_chunks() -> None:
    """100,000 one-byte chunks of one long line, then 200,000 short lines: joining the
    partial line again at every chunk would take minutes."""
    matcher = LogMatcher("never")
    started = time.perf_counter()
    for _ in range(100_000):
        matcher.feed(b"a")
    matcher.feed(b"\n")
    matcher.feed(b"line\n" * 200_000)
    assert not matcher.matched
    assert time.perf_counter() - started < 5.0
