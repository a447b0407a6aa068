"""Every watcher key through the three doors: an INI file, ``circusctl set``, JSON over the socket.

Each key gets a value written as text (the INI file and ``circusctl set`` take the same
words) and the same value as JSON. A real circusd reads the file; other watchers of the
same daemon get the value through ``circusctl set`` and through a raw ``set`` message.
``get`` must then show one and the same value for all three, and that value is the one
expected. The table must name every option of the option table and every key family.
"""

from __future__ import annotations

import getpass
import grp
import os
import signal
from typing import Any

import pytest

from circus.cgroup import unavailable
from circus.keys import FAMILIES, TABLE_KEYS, key_for
from tests.e2e.conftest import Daemon

# key, text (INI and circusctl), JSON, what `get` shows, extra INI lines the key needs
USER = getpass.getuser()
GROUP = grp.getgrgid(os.getgid()).gr_name
SAMPLES: list[tuple[str, str, Any, Any, str]] = [
    ("cmd", "sleep 7", "sleep 7", "sleep 7", ""),
    ("args", "--x 1", "--x 1", "--x 1", ""),
    ("executable", "/bin/sleep", "/bin/sleep", "/bin/sleep", ""),
    ("shell", "true", True, True, ""),
    ("shell_args", "a b", "a b", "a b", ""),
    ("working_dir", "/tmp", "/tmp", "/tmp", ""),
    ("uid", USER, USER, USER, ""),
    ("gid", GROUP, GROUP, GROUP, ""),
    ("umask", "027", 0o27, 0o27, ""),
    ("copy_env", "true", True, True, ""),
    ("copy_path", "true", True, True, "copy_env = true"),
    ("virtualenv", "/tmp/venv", "/tmp/venv", "/tmp/venv", "copy_env = true"),
    ("virtualenv_py_ver", "3.11", "3.11", "3.11", ""),
    ("numprocesses", "3", 3, 3, ""),
    ("max_processes", "8", 8, 8, ""),
    ("warmup_delay", "0.5", 0.5, 0.5, ""),
    ("priority", "7", 7, 7, ""),
    ("singleton", "true", True, True, "numprocesses = 1"),
    ("respawn", "false", False, False, ""),
    ("autostart", "false", False, False, ""),
    ("max_retry", "-1", -1, -1, ""),
    ("min_uptime", "2.5", 2.5, 2.5, ""),
    ("backoff_initial", "0.5", 0.5, 0.5, ""),
    ("backoff_factor", "3", 3.0, 3, ""),
    ("backoff_max", "60", 60.0, 60, ""),
    ("backoff_jitter", "0", 0.0, 0, ""),
    ("ready", "tcp:127.0.0.1:$(circus.wid)000", "tcp:127.0.0.1:$(circus.wid)000",
     "tcp:127.0.0.1:$(circus.wid)000", ""),
    ("health", "exec:true", "exec:true", "exec:true", ""),
    ("depends_on", "c0 : started", "c0:started", "c0:started", ""),
    ("ready_timeout", "5", 5.0, 5, ""),
    ("ready_interval", "0.25", 0.25, 0.25, ""),
    ("health_interval", "2", 2.0, 2, ""),
    ("health_timeout", "0.5", 0.5, 0.5, ""),
    ("health_failures", "2", 2, 2, ""),
    ("watchdog_sec", "3", 3.0, 3, ""),
    ("graceful_timeout", "2.5", 2.5, 2.5, ""),
    ("stop_signal", "SIGINT", "SIGINT", int(signal.SIGINT), ""),
    ("stop_children", "true", True, True, ""),
    ("send_hup", "true", True, True, ""),
    ("max_age", "300", 300, 300, ""),
    ("max_age_variance", "5", 5, 5, ""),
    ("use_sockets", "true", True, True, ""),
    ("on_demand", "true", True, True, ""),
    ("stdin_socket", "sock", "sock", "sock", ""),
    ("close_child_stdin", "false", False, False, ""),
    ("close_child_stdout", "true", True, True, ""),
    ("close_child_stderr", "true", True, True, ""),
    ("check_flapping", "false", False, False, ""),
    ("essential", "true", True, True, ""),
    ("pdeathsig", "SIGUSR1", "SIGUSR1", int(signal.SIGUSR1), ""),
    # true is refused where no cgroup v2 can be made (circus/cgroup.py)
    ("cgroup", *(("true", True, True) if unavailable() is None else ("false", False, False)),
     ""),
    ("env", "A=1,B=two", {"A": "1", "B": "two"}, {"A": "1", "B": "two"}, ""),
    ("rlimit_nofile", "unlimited", None, None, ""),
    ("rlimit_nproc", "4096", 4096, 4096, ""),
    ("hooks.after_start", "json.dumps", "json.dumps", "json.dumps", ""),
    ("stdout_stream.class", "filestream", "filestream", "FileStream",
     "stdout_stream.filename = /tmp/out.log"),
    ("stdout_stream.max_bytes", "10K", "10K", 10240, "stdout_stream.filename = /tmp/out.log"),
    ("stderr_stream.utc", "yes", True, True,
     "stderr_stream.class = TimedRotatingFileStream\nstderr_stream.filename = /tmp/err.log"),
    ("flapping.attempts", "3", "3", "3", ""),
]
# whole objects: JSON only (a file and circusctl give them key by key)
WHOLE_OBJECTS: list[tuple[str, Any, Any]] = [
    ("hooks", {"before_stop": "json.loads"}, {"before_stop": "json.loads"}),
    ("stdout_stream", {"class": "QueueStream"}, {"class": "QueueStream"}),
]


def test_the_table_covers_every_key() -> None:
    keys = [key for key, *_ in SAMPLES] + [key for key, *_ in WHOLE_OBJECTS]
    assert set(TABLE_KEYS) <= set(keys), set(TABLE_KEYS) - set(keys)
    families = {type(key_for(key)) for key in keys}
    assert {type(f) for f in FAMILIES} <= families


def _section(name: str, key: str, text: str, extra: str) -> str:
    """A stopped watcher whose section sets *key* (the first value of a key is the one kept)."""
    return f"[watcher:{name}]\n{key} = {text}\ncmd = sleep 60\nautostart = false\n{extra}\n"


def _base(name: str, extra: str) -> str:
    return f"[watcher:{name}]\ncmd = sleep 60\nautostart = false\n{extra}\n"


def _get(d: Daemon, name: str, key: str) -> Any:
    reply = d.call({"command": "get", "properties": {"name": name, "keys": [key]}})
    assert reply["status"] == "ok", reply
    return reply["options"][key]


@pytest.fixture
def doors(circusd: Any) -> Daemon:
    """One circusd: for sample i, watcher fi has the key in its section, ci and ji do not."""
    body = "[socket:sock]\nhost = 127.0.0.1\nport = 0\n"
    for i, (key, text, _json, _shown, extra) in enumerate(SAMPLES):
        body += _section(f"f{i}", key, text, extra)
        body += _base(f"c{i}", extra) + _base(f"j{i}", extra)
    for i, _ in enumerate(WHOLE_OBJECTS):
        body += _base(f"w{i}", "")
    daemon: Daemon = circusd(body)
    return daemon


def test_every_key_reads_the_same_through_the_three_doors(doors: Daemon) -> None:
    d = doors
    for i, (key, text, json_value, shown, _extra) in enumerate(SAMPLES):
        ctl = d.ctl("set", f"c{i}", key, text, "--waiting")
        assert ctl.returncode == 0, (key, ctl.stdout, ctl.stderr)
        reply = d.call({"command": "set", "properties": {
            "name": f"j{i}", "options": {key: json_value}, "waiting": True}})
        assert reply["status"] == "ok", (key, reply)
        seen = {door: _get(d, f"{door}{i}", key) for door in ("f", "c", "j")}
        assert seen == {"f": shown, "c": shown, "j": shown}, key


def test_whole_objects_go_by_json(doors: Daemon) -> None:
    d = doors
    for i, (key, json_value, shown) in enumerate(WHOLE_OBJECTS):
        reply = d.call({"command": "set", "properties": {
            "name": f"w{i}", "options": {key: json_value}, "waiting": True}})
        assert reply["status"] == "ok", (key, reply)
        assert _get(d, f"w{i}", key) == shown


@pytest.mark.parametrize(("key", "text", "json_value", "words"), [
    ("rlimit_nofile", "lots", "lots", "expected an integer"),
    ("rlimit_bogus", "1", 1, "unknown resource limit"),
    ("numprocesses", "-2", -2, "must not be negative"),
    ("max_processes", "0", 0, "must be 1 or more"),
    ("max_retry", "-3", -3, "must be -1 or more"),
    ("hooks.after_start", "nodots", "nodots", "package.module.function"),
    ("stdout_stream.class", "NoSuchStream", "NoSuchStream", "unknown stream class"),
])
def test_a_bad_value_is_refused_alike_by_the_three_doors(
        circusd: Any, key: str, text: str, json_value: Any, words: str) -> None:
    d: Daemon = circusd(_base("w", ""))
    ctl = d.ctl("set", "w", key, text)
    assert ctl.returncode != 0 and words in ctl.stdout + ctl.stderr, (ctl.stdout, ctl.stderr)
    reply = d.call({"command": "set", "properties": {"name": "w", "options": {key: json_value}}})
    assert reply["status"] == "error" and words in reply["reason"], reply
    bad = d.dir / "bad.ini"
    bad.write_text(f"[watcher:w]\ncmd = sleep 60\n{key} = {text}\n")
    from circus.config import load_config
    from circus.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert words in str(err.value) and err.value.option == key


@pytest.mark.parametrize("env", [{"A=B": "1"}, {"A": "x\0y"}, {"": "1"}])
def test_an_env_exec_cannot_take_is_refused_before_anything_changes(
        circusd: Any, env: dict[str, str]) -> None:
    d: Daemon = circusd(_base("w", "env = KEEP=1"))
    reply = d.call({"command": "set", "properties": {"name": "w", "options": {"env": env}}})
    assert reply["status"] == "error" and reply["errno"] == 3, reply
    assert "env" in reply["reason"]
    assert _get(d, "w", "env") == {"KEEP": "1"}
