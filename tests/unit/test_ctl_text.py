"""circusctl's text helpers: endpoint checks, help rendering, completion candidates."""

from __future__ import annotations

import pytest

from circus.cli.completion import candidates, split_line
from circus.cli.helptext import plain
from circus.client import endpoint_problem

DOC = """\
Do a thing
==========

Runs ``thing`` on ``<name>``, see `the guide <https://example.org/guide>`_ and
:ref:`options <opts>`; **never** twice. The ``sync``
property spans ``{"a":
1}`` lines.

Example::

    $ circusctl thing web
      done

.. code-block:: ini

    [circus]
    endpoint = ipc:///run/c

.. note:: it takes time

* first item, long enough to
  be wrapped over two lines
* second item

ZMQ Message
-----------

::

    {"command": "thing"}

Command line
------------

::

    $ circusctl thing <name>
"""


def test_plain_text_has_no_markup_left() -> None:
    text = plain(DOC, width=60)
    assert text.splitlines()[:2] == ["Do a thing", ""]
    for markup in ("``", "::", ".. ", "**", "`_", ":ref:", "====", "----"):
        assert markup not in text, markup
    prose = " ".join(text.split())
    assert ("Runs 'thing' on <name>, see the guide (https://example.org/guide) and options; "
            "never twice. The 'sync' property spans {\"a\": 1} lines.") in prose
    assert "Example:\n\n    $ circusctl thing web\n      done\n" in text
    assert "    [circus]\n    endpoint = ipc:///run/c" in text
    assert "Note: it takes time" in text
    assert "* first item, long enough to be wrapped over two lines\n* second item" in text
    assert all(len(line) <= 60 for line in text.splitlines())


def test_the_wire_section_only_on_request_and_never_the_command_line() -> None:
    assert '"command"' not in plain(DOC) and "ZMQ Message" not in plain(DOC)
    wire = plain(DOC, wire=True)
    assert 'ZMQ Message:\n\n    {"command": "thing"}' in wire
    assert "$ circusctl thing <name>" not in wire


@pytest.mark.parametrize(("endpoint", "problem"), [
    ("tcp://127.0.0.1:5555", None),
    ("tcp://localhost:5555", None),
    ("tcp://circus-1.example.org:65535", None),
    ("ipc:///run/circus/ctl", None),
    ("ipc://relative/path", None),
    ("ipc://@abstract", None),
    ("localhost:5555", "no transport; did you mean tcp://localhost:5555?"),
    ("", "no transport"),
    ("https://host:8080/x", "circusd speaks ZeroMQ, not HTTPS; did you mean tcp://host:8080?"),
    ("inproc://x", "inproc:// reaches only sockets of the same process"),
    ("udp://127.0.0.1:5555", "udp:// is not a transport circusd listens on"),
    ("tcp://127.0.0.1:0", "the port is a number from 1 to 65535, got '0'"),
    ("tcp://127.0.0.1:5555/", "the port is a number from 1 to 65535, got '5555/'"),
    ("tcp://a b:1", "'a b' is not a host name or an address"),
    ("tcp://:1", "no host (tcp://HOST:PORT)"),
])
def test_endpoint_problems(endpoint: str, problem: str | None) -> None:
    assert endpoint_problem(endpoint) == problem


def _watchers(endpoint: str, timeout: float) -> list[str]:
    asked.append((endpoint, timeout))
    return ["web", "worker", "db"]


asked: list[tuple[str, float]] = []


@pytest.mark.parametrize(("line", "offered"), [
    ("circusctl ", None),  # every command
    ("circusctl st", ["start", "stats", "status", "stop"]),
    ("circusctl --json st", ["start", "stats", "status", "stop"]),
    ("circusctl --t", ["--timeout"]),
    ("circusctl --endpoint ", []),
    ("circusctl --endpoint=ipc:///x --timeout 3 incr w", ["web", "worker"]),
    ("circusctl incr web ", []),
    ("circusctl stop --match ", ["glob", "regex", "simple"]),
    ("circusctl stop --match=", []),
    ("circusctl rm web --n", ["--nostop"]),
    ("circusctl list web --p", ["--prettify"]),
    ("circusctl set web numpr", ["numprocesses"]),
    ("circusctl get web max_a", ["max_age", "max_age_variance"]),
    ("circusctl help ", None),
    ("circusctl help --w", ["--wire"]),
    ("circusctl help stop ", []),
    ("circusctl completion ", ["bash", "zsh"]),
    ("circusctl nosuch ", []),
])
def test_candidates(line: str, offered: list[str] | None) -> None:
    words, index = split_line(line)
    found = candidates(words, index, _watchers)
    if offered is None:
        assert {"help", "completion", "status", "incr"} <= set(found)
    else:
        assert found == offered


def test_watchers_are_asked_at_the_endpoint_typed_with_a_short_timeout(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CIRCUSCTL_ENDPOINT", "ipc:///from/env")
    asked.clear()
    candidates(*split_line("circusctl stop "), _watchers)
    candidates(*split_line("circusctl --endpoint ipc:///typed --timeout 0.2 stop "), _watchers)
    candidates(*split_line("circusctl --timeout 30 stop "), _watchers)
    assert asked == [("ipc:///from/env", 1.0), ("ipc:///typed", 0.2), ("ipc:///from/env", 1.0)]


def test_split_line_keeps_quoted_words() -> None:
    assert split_line("circusctl stop 'two wo") == (["stop", "two wo"], 1)
    assert split_line('circusctl stop "two words" ') == (["stop", "two words", ""], 2)
