"""Plugins without circusd: option parsing, the runner's command line, and each built-in
plugin's decisions, driven with a fake ``async_call``."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from circus.arbiter import watcher_from_config
from circus.cli.plugin import parse_config, parser
from circus.errors import OptionError
from circus.plugins import CircusPlugin, EventFrame
from circus.plugins.command_reloader import CommandReloader, program_of
from circus.plugins.flapping import Flapping, _Track
from circus.plugins.http_observer import CheckFailed, fetch_status
from circus.plugins.launch import (
    check_plugin,
    inert_json,
    load_class,
    plugin_watcher_conf,
)
from circus.plugins.resource_watcher import Limit, ResourceWatcher, aggregate, memory_limit
from circus.plugins.statsd import FullStats, StatsdEmitter, metric
from circus.plugins.watchdog import WatchDog
from tests.conftest import wait_for

ENDPOINTS = {"endpoint": "ipc:///nonexistent/c", "pubsub_endpoint": "ipc:///nonexistent/p",
             "check_delay": 1.0}


class Calls:
    """A fake ``async_call``: records each command and answers from a table."""

    def __init__(self, answers: dict[str, Any] | None = None) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.answers = answers or {}

    async def __call__(self, command: str, **props: Any) -> dict[str, Any]:
        self.calls.append((command, props))
        answer = self.answers.get(command, {})
        if callable(answer):
            answer = answer(**props)
        return {"status": "ok", **answer}

    def commands(self, *names: str) -> list[tuple[str, Any]]:
        return [(c, p.get("name")) for c, p in self.calls if not names or c in names]


@pytest.fixture
def made() -> Iterator[list[CircusPlugin]]:
    plugins: list[CircusPlugin] = []
    yield plugins
    for plugin in plugins:
        statsd = getattr(plugin, "statsd", None)
        if statsd is not None:
            statsd.close()
        plugin._close_clients()


def make(made: list[CircusPlugin], cls: type, calls: Calls | None = None, **config: Any) -> Any:
    plugin = cls(**ENDPOINTS, **config)
    made.append(plugin)
    if calls is not None:
        plugin.async_call = calls
    return plugin


def event(watcher: str, name: str, **payload: Any) -> tuple[bytes, bytes]:
    return (EventFrame(f"watcher.{watcher}.{name}".encode()),
            EventFrame(json.dumps(payload).encode()))


# --------------------------------------------------------------------------- the base


def test_event_frames_are_bytes_that_print_as_text() -> None:
    topic = EventFrame(b"watcher.web.spawn")
    assert isinstance(topic, bytes) and topic.split(b".")[-1] == b"spawn"
    # the seed's Logger formats the frames with %s
    text = "%s::%s" % (topic, EventFrame(b"{}"))  # type: ignore[str-bytes-safe]  # noqa: UP031
    assert text == "watcher.web.spawn::{}"
    assert f"{topic}" == "watcher.web.spawn"
    assert json.loads(EventFrame(b'{"a": 1}')) == {"a": 1}


def test_split_data_keeps_dots_in_watcher_names() -> None:
    assert CircusPlugin.split_data((b"watcher.my.app.reap", b"{}")) == ("my.app", "reap", b"{}")


def test_declared_options_are_converted_and_checked(made: list[CircusPlugin]) -> None:
    plugin = make(made, StatsdEmitter, port="9000", sample_rate="0.5", application_name="x")
    assert plugin.settings["port"] == 9000 and plugin.sample_rate == 0.5
    assert plugin.config["port"] == "9000"  # the raw mapping stays as given
    with pytest.raises(OptionError) as err:
        StatsdEmitter.check_config({"port": "http"})
    assert err.value.option == "port"
    with pytest.raises(OptionError, match="required"):
        ResourceWatcher.check_config({})
    assert ResourceWatcher.check_config({"service": "web"})["watcher"] == "web"


def test_ssh_tunnels_are_refused() -> None:
    with pytest.raises(ValueError, match="SSH"):
        StatsdEmitter(**ENDPOINTS, ssh_server="me@host")


async def test_stop_before_run_returns_at_once(made: list[CircusPlugin]) -> None:
    plugin = make(made, StatsdEmitter)
    plugin.stop()
    async with asyncio.timeout(2):
        await plugin.run()


async def test_every_runs_sync_and_async_callbacks(made: list[CircusPlugin]) -> None:
    plugin = make(made, StatsdEmitter)
    ticks: list[str] = []

    async def tick_async() -> None:
        ticks.append("async")

    def tick_sync() -> None:
        ticks.append("sync")
        if ticks.count("sync") >= 3 and "async" in ticks:
            plugin.stop()

    plugin.every(0.01, tick_sync, first=0.0)
    plugin.every(0.01, tick_async)
    async with asyncio.timeout(5):
        await plugin.run()
    assert ticks.count("sync") >= 3 and "async" in ticks
    assert not plugin.running


# --------------------------------------------------------------------------- launching


def test_runner_command_line_survives_whitespace_and_placeholders(tmp_path: Path) -> None:
    """Bug 14: option values with spaces, quotes and $ placeholders reach the plugin as
    written, through the watcher's substitutions and argv."""
    plugin = {"name": "log", "use": "tests.fixtures.plugins.seed_logger.Logger",
              "priority": 3, "filename": "a b\t'c\" $(circus.wid) ((circus.wid)) $WID $HOME",
              "n": 2}
    conf = plugin_watcher_conf(plugin, "ipc:///x/c", "ipc:///x/p", 0.25, debug=True)
    assert conf["name"] == "plugin:log" and conf["singleton"] and conf["priority"] == 3
    assert conf["copy_env"] and conf["copy_path"]
    watcher = watcher_from_config(conf)
    cmd, args = watcher.spawner.command(1, watcher.spawner.env(), watcher.sockets)
    assert shlex.split(cmd) == [sys.executable]
    assert isinstance(args, list)
    assert "$" not in " ".join(args) and "((" not in " ".join(args)
    parsed = parser().parse_args(args[2:])
    assert parsed.plugin == plugin["use"]
    assert (parsed.endpoint, parsed.pubsub, parsed.check_delay) == ("ipc:///x/c", "ipc:///x/p",
                                                                    0.25)
    assert parsed.loglevel == "debug" and parsed.exit_with_parent
    assert parse_config(parsed.config) == {"name": "log", "filename": plugin["filename"], "n": 2}


def test_inert_json_round_trips() -> None:
    value = {"a": "$(x) ((y)) $WID", "b": [1, None, True]}
    text = inert_json(value)
    assert "$" not in text and "(" not in text
    assert json.loads(text) == value


def test_legacy_config_form() -> None:
    assert parse_config("a:1:::b:x:y") == {"a": "1", "b": "x:y"}
    assert parse_config("") == {}
    with pytest.raises(ValueError):
        parse_config("[1]")
    with pytest.raises(ValueError):
        parse_config("novalue")


def test_inactive_plugin_watcher_does_not_start_or_respawn() -> None:
    conf = plugin_watcher_conf({"use": "circus.plugins.flapping.Flapping", "active": "false"},
                               "ipc:///x/c", "ipc:///x/p", 1.0)
    assert conf["name"] == "plugin:circus.plugins.flapping.Flapping"
    assert conf["autostart"] is False and conf["respawn"] is False


def test_process_keys_apply_to_the_plugin_watcher(tmp_path: Path) -> None:
    conf = plugin_watcher_conf({"name": "p", "use": "circus.plugins.flapping.Flapping",
                                "working_dir": str(tmp_path), "uid": "0", "max_retry": "0"},
                               "ipc:///x/c", "ipc:///x/p", 1.0)
    assert conf["working_dir"] == str(tmp_path) and conf["uid"] == 0
    assert "max_retry" not in conf  # the plugin's max_retry is not the watcher's


@pytest.mark.parametrize(
    ("plugin", "option"),
    [
        ({}, "use"),
        ({"use": "no.such.module.Plugin"}, "use"),
        ({"use": "circus.plugins.flapping.Nope"}, "use"),
        ({"use": "circus.plugins.flapping.Flapping", "endpoint": "x"}, "endpoint"),
        ({"use": "circus.plugins.flapping.Flapping", "attempts": "many"}, "attempts"),
        ({"use": "circus.plugins.watchdog.WatchDog", "msg_regex": "^(?P<x>.*)$"}, "msg_regex"),
        ({"use": "tests.fixtures.plugins.seed_logger.Logger", "active": "maybe"}, "active"),
    ],
)
def test_check_plugin_names_the_bad_option(plugin: dict[str, Any], option: str) -> None:
    with pytest.raises(OptionError) as err:
        check_plugin(plugin)
    assert err.value.option == option


def test_load_class_forms() -> None:
    assert load_class("circus.plugins.flapping.Flapping") is Flapping
    assert load_class("circus.plugins.flapping:Flapping") is Flapping
    assert load_class("circus.plugins._statsd.StatsdEmitter") is StatsdEmitter
    with pytest.raises(ImportError):
        load_class("circus.plugins.flapping.log")  # not a class


# --------------------------------------------------------------------------- flapping


async def test_flapping_stops_a_burst_then_retries(made: list[CircusPlugin]) -> None:
    calls = Calls({"options": {"options": {}}})
    plugin = make(made, Flapping, calls, attempts="3", window="1", retry_in="0.05")
    now = time.time()
    for i, pid in enumerate((10, 11)):
        await plugin.handle_recv(event("web", "reap", process_pid=pid, time=now + i * 0.1))
    assert calls.commands("stop", "start") == []
    await plugin.handle_recv(event("web", "reap", process_pid=12, time=now + 0.2))
    assert calls.commands("stop") == [("stop", "web")]
    await wait_for(lambda: calls.commands("start"), what="the start after retry_in")
    assert calls.commands("stop", "start") == [("stop", "web"), ("start", "web")]
    await plugin._tasks.close()


async def test_flapping_ignores_exits_circusd_caused(made: list[CircusPlugin]) -> None:
    calls = Calls({"options": {"options": {}}})
    plugin = make(made, Flapping, calls)
    for pid in (1, 2, 3):
        await plugin.handle_recv(event("web", "kill", process_pid=pid))
    for pid in (1, 2, 3):
        await plugin.handle_recv(event("web", "reap", process_pid=pid, time=time.time()))
    assert calls.commands("stop") == []


async def test_flapping_gives_up_after_max_retry(made: list[CircusPlugin]) -> None:
    calls = Calls({"options": {"options": {}}})
    plugin = make(made, Flapping, calls, max_retry="1", retry_in="60")
    now = time.time()
    pid = 100
    for _round in range(2):
        for _ in range(2):
            pid += 1
            await plugin.handle_recv(event("web", "reap", process_pid=pid, time=now))
    assert calls.commands("stop") == [("stop", "web"), ("stop", "web")]
    assert plugin.tracks["web"].tries == 0  # a start by hand gets every round again
    await plugin._tasks.close()


async def test_flapping_spread_out_exits_reset_the_rounds(made: list[CircusPlugin]) -> None:
    calls = Calls({"options": {"options": {}}})
    plugin = make(made, Flapping, calls, window="1")
    track_time = time.time()
    plugin.tracks["web"] = _Track(tries=3)
    await plugin.handle_recv(event("web", "reap", process_pid=1, time=track_time))
    await plugin.handle_recv(event("web", "reap", process_pid=2, time=track_time + 5))
    assert plugin.tracks["web"].tries == 0
    assert calls.commands("stop") == []


async def test_flapping_reads_watcher_overrides_and_refreshes_them(
        made: list[CircusPlugin]) -> None:
    options: dict[str, Any] = {"flapping.active": "false"}
    calls = Calls({"options": lambda name: {"options": dict(options)}})
    plugin = make(made, Flapping, calls)
    now = time.time()
    for pid in (1, 2, 3):
        await plugin.handle_recv(event("web", "reap", process_pid=pid, time=now))
    assert calls.commands("stop") == []
    assert calls.commands("options") == [("options", "web")]  # read once, then cached
    options.update({"flapping.active": "true", "flapping.attempts": "3",
                    "flapping.retry_in": "bogus"})
    await plugin.handle_recv(event("web", "updated", time=now))
    for pid in (4, 5):
        await plugin.handle_recv(event("web", "reap", process_pid=pid, time=now))
    assert calls.commands("stop") == []
    await plugin.handle_recv(event("web", "reap", process_pid=6, time=now))
    assert calls.commands("stop") == [("stop", "web")]
    assert plugin.tracks["web"].conf == {"attempts": 3, "window": 1.0, "retry_in": 7.0,
                                         "max_retry": 5, "active": True}
    await plugin._tasks.close()


# --------------------------------------------------------------------------- watchdog


async def test_watchdog_kills_the_silent_process_only(made: list[CircusPlugin]) -> None:
    calls = Calls()
    plugin = make(made, WatchDog, calls, loop_rate="0.01", max_count="2",
                  watchers_regex="^web", watchers_stop_signal="KILL")
    plugin.handle_recv(event("web", "spawn", process_pid=1))
    plugin.handle_recv(event("web", "spawn", process_pid=2))
    plugin.handle_recv(event("other", "spawn", process_pid=3))
    plugin.handle_recv(event("plugin:x", "spawn", process_pid=4))
    assert set(plugin.pids) == {1, 2}
    limit = plugin.loop_rate * plugin.max_count
    # both are silent past the limit now; then 2 is heard from, 1 is not
    await wait_for(lambda: time.monotonic() - max(t for _, t in plugin.pids.values()) > limit,
                   what="the processes to be silent for longer than loop_rate * max_count")
    plugin.heartbeat(b"2;12345.6")
    plugin.heartbeat(b"garbage")
    await plugin.look()
    await wait_for(lambda: calls.calls, what="the kill")
    assert calls.calls == [("kill", {"name": "web", "pid": 1, "signum": 9})]
    await plugin.look()  # already being killed: not again
    plugin.handle_recv(event("web", "reap", process_pid=1))
    assert set(plugin.pids) == {2}
    await plugin._tasks.close()


# --------------------------------------------------------------------------- resources


def test_memory_limits() -> None:
    assert memory_limit("90") == Limit(90.0, True)
    assert memory_limit("12.5%") == Limit(12.5, True)
    assert memory_limit(50) == Limit(50.0, True)
    assert memory_limit("200M") == Limit(200 * 1024**2, False)
    with pytest.raises(ValueError):
        memory_limit("lots")


def test_aggregate_takes_the_worst_process() -> None:
    reading = aggregate([
        {"cpu": 5.0, "mem": 1.0, "mem_info1": "10.00M"},
        {"cpu": "N/A", "mem": 3.5, "mem_info1": "1.00G"},
    ])
    assert reading == (5.0, 3.5, 1024**3)


async def test_resource_watcher_restarts_after_max_count(made: list[CircusPlugin]) -> None:
    stats = {"info": {"1": {"pid": 1, "cpu": 1.0, "mem": 0.5, "mem_info1": "300.00M",
                            "children": []}}}
    calls = Calls({"stats": stats})
    plugin = make(made, ResourceWatcher, calls, watcher="web", max_mem="200M",
                  min_cpu="0.5", max_count="2")
    assert plugin.failures(aggregate(list(stats["info"].values()))) == ["over_mem"]
    await plugin.look()
    await plugin.look()
    assert calls.commands("restart") == []
    await plugin.look()
    assert calls.commands("restart") == [("restart", "web")]
    assert plugin.counters["over_mem"] == 0


async def test_resource_watcher_signals_offending_children(made: list[CircusPlugin]) -> None:
    child = {"pid": 7, "cpu": 99.0, "mem": 0.1, "mem_info1": "1.00M"}
    calls = Calls({"stats": {"info": {"1": {"pid": 1, "cpu": 0.0, "mem": 0.1,
                                            "mem_info1": "1.00M", "children": [child]}}}})
    plugin = make(made, ResourceWatcher, calls, watcher="web", max_count="0",
                  process_children="true", child_signal="USR1")
    await plugin.look()
    assert [c for c in calls.calls if c[0] == "signal"] == [
        ("signal", {"name": "web", "pid": 1, "childpid": 7, "signum": 10})]


def test_full_stats_gauges() -> None:
    gauges = FullStats.gauges({
        "1": {"cpu": 10.0, "mem": 2.0, "mem_info1": "1.00K"},
        "2": {"cpu": 30.0, "mem": 1.0, "mem_info1": "2.00K"},
        "3": "No such process (stopped?)",
    })
    assert gauges == {"watchers_num": 2, "cpu_max": 30.0, "cpu_sum": 40.0, "mem_pct_max": 2.0,
                      "mem_pct_sum": 3.0, "mem_max": 2048, "mem_sum": 3072}


def test_metric_names_are_made_safe() -> None:
    assert metric("circus", "my app", "plugin:x", "a|b@c") == "circus.my_app.plugin_x.a_b_c"


# --------------------------------------------------------------------------- reloader


def test_program_of(tmp_path: Path) -> None:
    script = tmp_path / "prog"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    link = tmp_path / "link"
    link.symlink_to(script)
    found = program_of(f"{link} --flag 'x y'")
    assert found is not None and found.path == str(script)
    assert program_of("sh -c true") is not None
    assert program_of(str(tmp_path / "missing")) is None
    assert program_of("") is None


async def test_command_reloader_restarts_on_change(made: list[CircusPlugin],
                                                   tmp_path: Path) -> None:
    script = tmp_path / "prog"
    script.write_text("#!/bin/sh\n")
    calls = Calls({"list": {"watchers": ["plugin:me", "web"]},
                   "get": {"options": {"cmd": f"{script} --serve"}}})
    plugin = make(made, CommandReloader, calls)
    await plugin.look()
    await plugin.look()
    assert calls.commands("restart") == []
    os.utime(script, ns=(time.time_ns(), time.time_ns() + 10**9))
    await plugin.look()
    assert calls.commands("restart") == [("restart", "web")]
    assert ("get", "plugin:me") not in calls.commands("get")


# --------------------------------------------------------------------------- http


async def _serve(answer: bytes) -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            if answer:
                writer.write(answer)
                await writer.drain()
            else:
                await reader.read()  # say nothing until the client gives up
        finally:
            writer.close()
            await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [(b"HTTP/1.1 204 No Content\r\n\r\n", 204), (b"HTTP/1.0 503 Down\r\n\r\n", 503)],
)
async def test_fetch_status(answer: bytes, expected: int) -> None:
    server, port = await _serve(answer)
    async with server:
        assert await fetch_status(f"http://127.0.0.1:{port}/health?x=1", 2.0) == expected


async def test_fetch_status_failures() -> None:
    server, port = await _serve(b"SSH-2.0-nope\r\n")
    async with server:
        with pytest.raises(CheckFailed, match="not an HTTP answer"):
            await fetch_status(f"http://127.0.0.1:{port}/", 2.0)
    server, port = await _serve(b"")
    async with server:
        with pytest.raises(CheckFailed, match="no answer within"):
            await fetch_status(f"http://127.0.0.1:{port}/", 0.2)
        server.close()
    with pytest.raises(CheckFailed):
        await fetch_status(f"http://127.0.0.1:{port}/", 2.0)


# --------------------------------------------------------------------------- redis


def test_redis_observer_without_the_client_is_a_config_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from circus.plugins.redis_observer import RedisObserver

    monkeypatch.setitem(sys.modules, "redis.asyncio", None)
    with pytest.raises(OptionError, match=r"circus\[redis\]") as err:
        check_plugin({"use": "circus.plugins.redis_observer.RedisObserver"})
    assert err.value.option == "use"
    monkeypatch.undo()
    assert RedisObserver.check_config({"redis_url": "redis://h:1/0"})["timeout"] == 5.0
    with pytest.raises(OptionError):
        RedisObserver.check_config({"redis_url": "http://h/"})
