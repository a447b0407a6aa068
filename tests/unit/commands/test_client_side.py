"""The circusctl half of the commands: arguments to messages, replies to text."""

from __future__ import annotations

from typing import Any

import pytest

from circus.commands import get_commands
from circus.commands._options import cli_value
from circus.commands.base import format_options, parse_flags
from circus.errors import ArgumentError

COMMANDS = get_commands()


def message(name: str, *argv: str) -> dict[str, Any]:
    command = COMMANDS[name]
    positional, opts = parse_flags(command.flags, argv, command.free_words)
    msg = command.message(*positional, **opts)
    assert msg["command"] == name and isinstance(msg["id"], str)
    return msg["properties"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(("argv", "props"), [
    (("list",), {}),
    (("list", "web"), {"name": "web"}),
    (("status", "web"), {"name": "web"}),
    (("numprocesses",), {}),
    (("numwatchers",), {}),
    (("listpids", "web"), {"name": "web"}),
    (("incr", "web"), {"name": "web"}),
    (("incr", "web", "3", "--waiting"), {"name": "web", "nb": 3, "waiting": True}),
    (("decr", "web", "2"), {"name": "web", "nb": 2}),
    (("start",), {}),
    (("stop", "web", "--waiting", "--match", "regex"),
     {"name": "web", "waiting": True, "match": "regex"}),
    (("restart", "--match=simple", "web"), {"name": "web", "match": "simple"}),
    (("reload", "web", "--terminate", "--sequential"),
     {"name": "web", "graceful": False, "sequential": True}),
    (("reloadconfig", "--waiting"), {"waiting": True}),
    (("quit",), {}),
    (("add", "--start", "web", "python", "-m", "http.server"),
     {"name": "web", "cmd": "python -m http.server", "start": True}),
    (("add", "web", "prog", "--bind", "x"), {"name": "web", "cmd": "prog --bind x"}),
    (("add", "web", "--", "prog", "--start"), {"name": "web", "cmd": "prog --start"}),
    (("rm", "web", "--nostop", "--waiting"), {"name": "web", "nostop": True, "waiting": True}),
    (("get", "web", "cmd", "env"), {"name": "web", "keys": ["cmd", "env"]}),
    (("options", "web"), {"name": "web"}),
    (("globaloptions",), {}),
    (("globaloptions", "endpoint"), {"option": "endpoint"}),
    (("signal", "web", "HUP"), {"name": "web", "signum": "HUP"}),
    (("signal", "web", "42", "9", "--children", "--recursive"),
     {"name": "web", "pid": 42, "signum": "9", "children": True, "recursive": True}),
    (("signal", "web", "42", "USR1", "--childpid", "43"),
     {"name": "web", "pid": 42, "signum": "USR1", "childpid": 43}),
    (("kill", "web"), {"name": "web"}),
    (("kill", "web", "42", "--signum", "INT", "--graceful_timeout", "2.5", "--waiting"),
     {"name": "web", "pid": 42, "signum": 2, "graceful_timeout": 2.5, "waiting": True}),
    (("stats",), {}),
    (("stats", "--extended", "web", "42"), {"name": "web", "process": 42, "extended": True}),
    (("dstats",), {}),
    (("listsockets",), {}),
    (("ipython",), {}),
])
def test_arguments_become_properties(argv: tuple[str, ...], props: dict[str, Any]) -> None:
    assert message(*argv) == props


@pytest.mark.parametrize(("argv", "props"), [
    (("set", "web", "numprocesses", "3"), {"numprocesses": 3}),
    (("set", "web", "graceful_timeout", "2.5", "warmup_delay", "1"),
     {"graceful_timeout": 2.5, "warmup_delay": 1.0}),
    (("set", "web", "stop_signal", "sigint"), {"stop_signal": 2}),
    (("set", "web", "send_hup", "yes", "respawn", "off"), {"send_hup": True, "respawn": False}),
    (("set", "web", "env", "A=1,B=x=y"), {"env": {"A": "1", "B": "x=y"}}),
    (("set", "web", "env", ""), {"env": {}}),
    (("set", "web", "cmd", "sleep 10", "args", "--x 1"), {"cmd": "sleep 10", "args": "--x 1"}),
    (("set", "web", "rlimit_nofile", "1024", "rlimit_core", ""),
     {"rlimit_nofile": 1024, "rlimit_core": None}),
    (("set", "web", "hooks", "before_start:a.b,after_stop:c.d"),
     {"hooks": {"before_start": "a.b", "after_stop": "c.d"}}),
    (("set", "web", "hooks.after_start", "mod.fn,true"), {"hooks.after_start": "mod.fn,true"}),
    (("set", "web", "stdout_stream.max_bytes", "1000", "stdout_stream.class", "FileStream"),
     {"stdout_stream.max_bytes": 1000, "stdout_stream.class": "FileStream"}),
    (("set", "web", "uid", "1000", "gid", "staff"), {"uid": 1000, "gid": "staff"}),
    (("set", "web", "flapping.attempts", "3"), {"flapping.attempts": "3"}),
    (("set", "web", "working_dir", ""), {"working_dir": None}),
])
def test_set_types_values_by_key(argv: tuple[str, ...], props: dict[str, Any]) -> None:
    sent = message(*argv)
    assert sent == {"name": "web", "options": props}


@pytest.mark.parametrize(("argv", "error"), [
    (("list", "a", "b"), "usage: list"),
    (("incr",), "usage: incr"),
    (("incr", "web", "x"), "<nb> must be an integer"),
    (("stop", "web", "--match", "fuzzy"), "--match must be one of"),
    (("stop", "--bogus"), "unknown option --bogus"),
    (("stop", "web", "--match"), "--match needs a value"),
    (("set", "web", "numprocesses"), "usage: set"),
    (("set", "web", "bogus", "1"), "unknown key 'bogus'"),
    (("set", "web", "stdout_stream", "x"), "unknown key 'stdout_stream'"),
    (("set", "web", "numprocesses", "many"), "invalid value for 'numprocesses'"),
    (("set", "web", "stop_signal", "NOSUCH"), "invalid value for 'stop_signal'"),
    (("set", "web", "env", "novalue"), "invalid value for 'env'"),
    (("set", "web", "rlimit_bogus", "1"), "invalid value for 'rlimit_bogus'"),
    (("set", "web", "hooks", "nocolon"), "invalid value for 'hooks'"),
    (("get", "web"), "usage: get"),
    (("options",), "usage: options"),
    (("signal", "web"), "usage: signal"),
    (("signal", "web", "x", "9"), "a pid is a number"),
    (("kill", "web", "x"), "a pid is a number"),
    (("kill", "web", "--signum", "NOPE"), "not a signal"),
    (("stats", "web", "x"), "a pid is a number"),
    (("add", "web"), "usage: add"),
    (("rm",), "usage: rm"),
    (("numwatchers", "x"), "takes no argument"),
])
def test_bad_arguments_are_refused_before_sending(argv: tuple[str, ...], error: str) -> None:
    with pytest.raises(ArgumentError, match=error.replace("(", r"\(")):
        message(*argv)


def test_cli_value_types_env_like_the_ini() -> None:
    assert cli_value("env", "A = 1 , B=2") == {"A": "1", "B": "2"}
    assert cli_value("max_age", "30") == 30
    assert cli_value("close_child_stdin", "false") is False


OK = {"status": "ok", "time": 0.0, "id": "x"}


@pytest.mark.parametrize(("name", "reply", "text"), [
    ("list", {**OK, "watchers": ["a", "b"]}, "a,b"),
    ("list", {**OK, "pids": [3, 4]}, "3,4"),
    ("listpids", {**OK, "pids": [3]}, "3"),
    ("status", {**OK, "statuses": {"b": "stopped", "a": "active"}}, "a: active\nb: stopped"),
    ("status", {"status": "active", "time": 0.0}, "active"),
    ("numprocesses", {**OK, "numprocesses": 4}, "4"),
    ("numwatchers", {**OK, "numwatchers": 2}, "2"),
    ("incr", {**OK, "numprocesses": 5}, "5"),
    ("incr", {**OK}, "ok"),
    ("decr", {**OK, "numprocesses": 1, "singleton": True},
     "This watcher is a Singleton - not changing the number of processes"),
    ("start", OK, "ok"),
    ("set", OK, "ok"),
    ("get", {**OK, "options": {"env": {"B": "2", "A": "1"}, "uid": None, "numprocesses": 2}},
     "env: A=1,B=2\nnumprocesses: 2\nuid: "),
    ("globaloptions", {**OK, "options": {"endpoint": "tcp://x", "check_delay": 5.0}},
     "check_delay: 5.0\nendpoint: tcp://x"),
    ("listsockets", {**OK, "sockets": [
        {"fd": 3, "name": "web", "backlog": 5, "host": "127.0.0.1", "port": 80},
        {"fd": 4, "name": "unix", "backlog": 5, "path": "/tmp/s"}]},
     "3:socket 'web' at 127.0.0.1:80\n4:socket 'unix' at /tmp/s"),
    ("ipython", {**OK, "shell": False, "msg": "no"}, "no"),
    ("incr", {"status": "error", "reason": "program x not found", "errno": 3},
     "error: program x not found"),
])
def test_replies_become_text(name: str, reply: dict[str, Any], text: str) -> None:
    assert COMMANDS[name].console_msg(reply) == text


PROC = {"pid": 12, "cmdline": "sleep", "username": "me", "nice": 0, "mem_info1": "1M",
        "mem_info2": "2M", "cpu": 0.5, "mem": 0.1, "ctime": "0:00.01",
        "children": [{"pid": 13, "cmdline": "sh", "username": "me", "nice": 0,
                      "mem_info1": "1M", "mem_info2": "2M", "cpu": 0.0, "mem": 0.1,
                      "ctime": "0:00.00", "children": []}]}


def test_stats_text() -> None:
    stats = COMMANDS["stats"]
    text = stats.console_msg({**OK, "infos": {"web": {"12": PROC}, "db": {}}})
    assert text.splitlines() == [
        "db:",
        "web:",
        "  PID   CMD    USER  NICE  RSS  VMS  CPU%  MEM%  TIME",
        "  12    sleep  me    0     1M   2M   0.5   0.1   0:00.01",
        "    13  sh     me    0     1M   2M   0.0   0.1   0:00.00",
    ]
    one = stats.console_msg({**OK, "process": 12, "info": PROC}).splitlines()
    assert one[0].split()[0] == "PID" and one[1].startswith("12    sleep")
    assert stats.console_msg({**OK, "name": "web", "info": {"12": "No such process (stopped?)"}}
                             ).splitlines() == ["web:", "  PID  CMD  USER  NICE  RSS  VMS  CPU%"
                                                "  MEM%  TIME", "  No such process (stopped?)"]
    dstats = COMMANDS["dstats"].console_msg({**OK, "info": PROC}).splitlines()
    assert dstats[0] == "Main Process:" and dstats[1].split()[0] == "PID"
    assert dstats[2].split()[0] == "12" and dstats[3].split()[0] == "13"


def test_format_options_sorts_and_renders() -> None:
    assert format_options({"b": [1, 2], "a": None, "c": True}) == "a: \nb: 1 2\nc: True"
