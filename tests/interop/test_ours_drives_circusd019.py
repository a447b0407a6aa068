"""Our circusctl drives Circus 0.19's circusd, and the replies have the shape of ours.

Each command goes through our ``circusctl --json`` to a 0.19 daemon and to ours, both
started on the same configuration. The replies must have the same shape: every field
0.19 sends, we send too, with a value of the same JSON type (numbers are numbers; pids
as keys are compared as pids). Where this project deliberately adds fields
(PROTOCOL.md §13: ``numprocesses`` in an incr reply without ``waiting``) ours may have
more. The effects on the 0.19 daemon are checked as well: a circusctl that sent the
wrong message would not get them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import pid_alive, wait_until
from tests.e2e.conftest import Daemon

Start = Callable[..., Daemon]

BODY = "[watcher:web]\ncmd = sleep 600\nnumprocesses = 2\ngraceful_timeout = 3\n"

# Fields we send that 0.19 does not (documented in docs/commands.md).
OUR_EXTRA = {
    ("incr",): {"numprocesses"},
    ("decr",): {"numprocesses"},
    ("reloadconfig",): {"changes"},
}
# 0.19 sends a traceback string in "tb", we send null; 0.19 leaks the config parser's
# "__name__" into options.
THEIRS_ONLY = {"__name__"}
NULL_FOR_STRING = {"tb"}


def shape_mismatches(ours: Any, theirs: Any, path: str = "", command: str = "") -> list[str]:
    """Where *ours* does not have the shape of *theirs* (empty: compatible)."""
    problems: list[str] = []
    if isinstance(theirs, dict):
        if not isinstance(ours, dict):
            return [f"{path}: object expected, got {ours!r}"]
        if theirs and all(k.isdigit() for k in theirs):  # keyed by pid
            if not ours or not all(k.isdigit() for k in ours):
                return [f"{path}: pids as keys expected, got {list(ours)}"]
            return shape_mismatches(next(iter(ours.values())), next(iter(theirs.values())),
                                    f"{path}.<pid>", command)
        for key, value in theirs.items():
            if key in THEIRS_ONLY or key in ("time", "id"):
                continue
            if key not in ours:
                problems.append(f"{path}.{key}: missing")
                continue
            problems += shape_mismatches(ours[key], value, f"{path}.{key}", command)
        if path == "":
            extra = set(ours) - set(theirs) - {"time", "id"}
            allowed = OUR_EXTRA.get((command,), set())
            problems += [f".{k}: not sent by 0.19" for k in sorted(extra - allowed)]
        return problems
    if isinstance(theirs, list):
        if not isinstance(ours, list):
            return [f"{path}: list expected, got {ours!r}"]
        if theirs and ours:
            return shape_mismatches(ours[0], theirs[0], f"{path}[0]", command)
        return []
    if isinstance(theirs, bool) or isinstance(ours, bool):
        return [] if type(theirs) is type(ours) else [f"{path}: {theirs!r} vs {ours!r}"]
    if isinstance(theirs, int | float):
        return [] if isinstance(ours, int | float) else [f"{path}: number, got {ours!r}"]
    if theirs is None:
        return [] if ours is None else [f"{path}: null, got {ours!r}"]
    if isinstance(theirs, str):
        if ours is None and path.rsplit(".", 1)[-1] in NULL_FOR_STRING:
            return []
        return [] if isinstance(ours, str) else [f"{path}: string, got {ours!r}"]
    return [f"{path}: unexpected {theirs!r}"]


def test_shape_comparison_catches_differences() -> None:
    assert shape_mismatches({"a": 1, "b": [1]}, {"a": 2.5, "b": [3]}) == []
    assert shape_mismatches({"a": "1"}, {"a": 1}) == [".a: number, got '1'"]
    assert shape_mismatches({}, {"a": 1}) == [".a: missing"]
    assert shape_mismatches({"a": 1, "z": 2}, {"a": 1}) == [".z: not sent by 0.19"]
    assert shape_mismatches({"info": {"12": {"pid": 12}}}, {"info": {"99": {"pid": 99}}}) == []


def live(d: Daemon, name: str, n: int) -> list[int]:
    def check() -> list[int] | None:
        pids = d.pids(name)
        return pids if len(pids) == n and all(map(pid_alive, pids)) else None

    return wait_until(check, what=f"{n} live processes in {name}", timeout=20)


def ours_json(d: Daemon, *args: str) -> dict[str, Any]:
    res = d.ctl("--json", *args, timeout=15)
    assert res.stdout, (args, res.returncode, res.stderr)
    reply: dict[str, Any] = json.loads(res.stdout)
    assert res.returncode == 0, (args, res)  # with --json an error reply exits 0, as in 0.19
    return reply


# (circusctl arguments, check of the 0.19 daemon afterwards or None)
STEPS: list[tuple[list[str], Callable[[Daemon], None] | None]] = [
    (["list"], None),
    (["list", "web"], None),
    (["status"], None),
    (["status", "web"], None),
    (["numprocesses"], None),
    (["numprocesses", "web"], None),
    (["numwatchers"], None),
    (["incr", "web", "2", "--waiting"], lambda d: live(d, "web", 4) and None),
    (["decr", "web", "--waiting"], lambda d: live(d, "web", 3) and None),
    (["get", "web", "numprocesses", "env", "stop_signal", "graceful_timeout",
      "stdout_stream_conf"], None),
    (["options", "web"], None),
    (["globaloptions"], None),
    (["globaloptions", "check_delay"], None),
    (["stats"], None),
    (["stats", "web"], None),
    (["stats", "web", "<pid>"], None),
    (["dstats"], None),
    (["listsockets"], None),
    (["signal", "web", "CONT"], None),
    (["set", "web", "graceful_timeout", "2", "--waiting"], None),
    (["stop", "web", "--waiting"], lambda d: wait_until(
        lambda: d.call({"command": "status", "properties": {"name": "web"}})["status"]
        == "stopped", what="web stopped") and None),
    (["start", "web", "--waiting"], lambda d: live(d, "web", 3) and None),
    (["restart", "web", "--waiting"], lambda d: live(d, "web", 3) and None),
    (["reload", "web", "--waiting"], lambda d: live(d, "web", 3) and None),
    (["add", "--start", "--waiting", "extra", "sleep", "100"],
     lambda d: live(d, "extra", 1) and None),
    (["kill", "extra", "--waiting"], None),
    (["rm", "extra", "--waiting"], lambda d: wait_until(
        lambda: d.call({"command": "list"})["watchers"] == ["web"], what="extra gone")
        and None),
    # 0.19 compares the file with the file it read before (unchanged here), we compare it
    # with what runs: the effects differ, the replies do not.
    (["reloadconfig", "--waiting"], None),
    (["status", "nope"], None),
    (["incr", "nope"], None),
    (["get", "web", "nope"], None),
]


@pytest.mark.timeout(240)
def test_our_circusctl_against_circusd019_gives_replies_of_our_shape(
    circusd: Start, circusd019: Start
) -> None:
    theirs = circusd019(BODY)
    ours = circusd(BODY, circus_extra="check_delay = 0.2")
    live(theirs, "web", 2)
    live(ours, "web", 2)
    problems: dict[str, list[str]] = {}
    for argv, check in STEPS:
        replies = []
        for d in (ours, theirs):
            args = [str(d.pids("web")[0]) if a == "<pid>" else a for a in argv]
            replies.append(ours_json(d, *args))
        if check is not None:
            check(theirs)
        ours_reply, theirs_reply = replies
        assert (ours_reply["status"] == "error") == (theirs_reply["status"] == "error"), (
            argv, ours_reply, theirs_reply)
        if ours_reply["status"] == "error":
            assert ours_reply["errno"] == theirs_reply["errno"], (argv, ours_reply,
                                                                   theirs_reply)
        found = shape_mismatches(ours_reply, theirs_reply, command=argv[0])
        if found:
            problems[" ".join(argv)] = found + [f"ours: {ours_reply}", f"0.19: {theirs_reply}"]
    assert not problems, json.dumps(problems, indent=1)


def test_our_circusctl_plain_output_and_quit_with_circusd019(circusd019: Start) -> None:
    d = circusd019(BODY)
    pids = live(d, "web", 2)
    assert d.ctl("status").stdout == "web: active\n"
    assert d.ctl("list").stdout == "web\n"
    assert sorted(map(int, d.ctl("list", "web").stdout.strip().split(","))) == sorted(pids)
    assert d.ctl("numwatchers").stdout == "1\n"
    res = d.ctl("incr", "nope")
    assert res.returncode == 3 and res.stderr == "error: program nope not found\n"
    assert d.ctl("set", "web", "numprocesses", "3", "--waiting").returncode == 0
    live(d, "web", 3)
    assert d.ctl("get", "web", "numprocesses").stdout == "numprocesses: 3\n"
    assert d.ctl("quit", "--waiting").returncode == 0
    assert d.proc.wait(timeout=30) == 0
    wait_until(lambda: not any(map(pid_alive, pids)), what="0.19's processes to stop")
