"""Tests of circus.config: the INI dialect, every section kind, includes and the errors."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import textwrap
from pathlib import Path
from typing import Any

import pytest

from circus.config import Config, load_config, watcher_defaults
from circus.errors import ConfigError
from circus.options import CIRCUS_OPTIONS, WATCHER_OPTIONS

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "config"

ENVIRON = {"HOME": "/home/op", "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}


def write(directory: Path, text: str, name: str = "circus.ini") -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def load(directory: Path, text: str, environ: dict[str, str] | None = None) -> Config:
    return load_config(write(directory, text), environ=ENVIRON if environ is None else environ)


def load_error(directory: Path, text: str, environ: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(directory, text, environ)
    return info.value


def watcher(config: Config, name: str) -> dict[str, Any]:
    matches = [w for w in config.watchers if w["name"] == name]
    assert len(matches) == 1, [w["name"] for w in config.watchers]
    return matches[0]


def only_watcher(
    directory: Path, body: str, environ: dict[str, str] | None = None
) -> dict[str, Any]:
    config = load(directory, "[watcher:w]\n" + textwrap.dedent(body), environ)
    return watcher(config, "w")


# --------------------------------------------------------------------------- file syntax


def test_comments_in_column_zero(tmp_path: Path) -> None:
    w = only_watcher(
        tmp_path,
        """\
        # a comment
        ; another
        cmd = run
        #numprocesses = 4
        ;numprocesses = 5
        """,
    )
    assert w["cmd"] == "run"
    assert "numprocesses" not in w


@pytest.mark.parametrize("word", ["rem", "REM", "Rem", "rEm"])
def test_rem_lines_are_comments(tmp_path: Path, word: str) -> None:
    w = only_watcher(tmp_path, f"cmd = run\n{word} numprocesses = 4\n{word}\n")
    assert w == {"name": "w", "cmd": "run", "env": {}}


def test_words_starting_with_rem_are_keys(tmp_path: Path) -> None:
    w = only_watcher(tmp_path, "cmd = run\nremote = yes\n")
    assert w["remote"] == "yes"


@pytest.mark.parametrize(
    ("line", "value"),
    [
        ("x = a ;c", "a"),
        ("x = a\t; c", "a"),
        ("x = a;c", "a;c"),
        ("x = a#c", "a#c"),
        ("x = a #c", "a #c"),
        ("x = ;c", ""),
        ("x =;c", ";c"),
        ("x = a;b ;c", "a;b"),
    ],
)
def test_inline_comments(tmp_path: Path, line: str, value: str) -> None:
    w = only_watcher(tmp_path, f"cmd = run\n{line}\n")
    assert w["x"] == value


def test_colon_delimiter_and_first_delimiter_wins(tmp_path: Path) -> None:
    w = only_watcher(
        tmp_path,
        """\
        cmd: run --x=1
        numprocesses : 3
        hooks.before_start = pkg.mod:fn
        url = http://example.org/?a=b
        """,
    )
    assert w["cmd"] == "run --x=1"
    assert w["numprocesses"] == 3
    assert w["hooks"]["before_start"][0] == "pkg.mod:fn"
    assert w["url"] == "http://example.org/?a=b"


def test_line_without_delimiter_is_an_error(tmp_path: Path) -> None:
    err = load_error(tmp_path, "[watcher:w]\ncmd = run\nnumprocesses 4\n")
    assert err.line == 3
    assert err.path == str(tmp_path / "circus.ini")
    assert f"{tmp_path / 'circus.ini'}:3:" in str(err)


def test_empty_key_is_an_error(tmp_path: Path) -> None:
    err = load_error(tmp_path, "[watcher:w]\n= run\n")
    assert err.line == 2


def test_text_before_first_section_is_an_error(tmp_path: Path) -> None:
    err = load_error(tmp_path, "# fine\n\ncmd = run\n[watcher:w]\n")
    assert err.line == 3
    assert "before the first [section]" in str(err)
    assert str(err).startswith(f"{tmp_path / 'circus.ini'}:3: ")


@pytest.mark.parametrize("header", ["[watcher:w", "[]", "[ ]", "[watcher:w] junk"])
def test_bad_section_header_is_an_error(tmp_path: Path, header: str) -> None:
    err = load_error(tmp_path, f"[circus]\n{header}\ncmd = run\n")
    assert err.line == 2


def test_header_with_trailing_comment(tmp_path: Path) -> None:
    config = load(tmp_path, "[watcher:w] ; the web\ncmd = run\n")
    assert config.watchers[0]["name"] == "w"


def test_indented_line_without_key_is_an_error(tmp_path: Path) -> None:
    err = load_error(tmp_path, "[watcher:w]\n  cmd = run\n")
    assert err.line == 2
    assert "column 0" in str(err)


def test_indented_comment_after_header_is_skipped(tmp_path: Path) -> None:
    w = only_watcher(tmp_path, "  # indented comment\ncmd = run\n")
    assert w["cmd"] == "run"


def test_keys_are_case_sensitive(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="circus.config"):
        w = only_watcher(tmp_path, "cmd = run\nNumProcesses = 4\n")
    assert w["NumProcesses"] == "4"
    assert "numprocesses" not in w
    assert "did you mean 'numprocesses'?" in caplog.text


def test_section_names_are_case_sensitive(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="circus.config"):
        config = load(tmp_path, "[Watcher:x]\ncmd = run\n[Circus]\nendpoint = ipc://x\n")
    assert config.watchers == []
    assert config.circus["endpoint"] == "tcp://127.0.0.1:5555"
    assert "[Watcher:x]" in caplog.text
    assert "[Circus]" in caplog.text


def test_unknown_sections_are_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="circus.config"):
        config = load(tmp_path, "[program:x]\ncommand = run\n[watcher:w]\ncmd = run\n")
    assert [w["name"] for w in config.watchers] == ["w"]
    assert "circus.ini:1: section [program:x]" in caplog.text


def test_values_are_stripped_and_double_quotes_mean_empty(tmp_path: Path) -> None:
    w = only_watcher(
        tmp_path,
        """\
        cmd =    run it   \t
        empty = ""
        quoted = "x"
        single = ''
        half = "
        """,
    )
    assert w["cmd"] == "run it"
    assert w["empty"] == ""
    assert w["quoted"] == '"x"'
    assert w["single"] == "''"
    assert w["half"] == '"'


def test_empty_string_for_optional_option_means_none(tmp_path: Path) -> None:
    w = only_watcher(tmp_path, 'cmd = run\nworking_dir = ""\nexecutable =\n')
    assert w["working_dir"] is None
    assert w["executable"] is None


def test_continuation_lines(tmp_path: Path) -> None:
    w = only_watcher(
        tmp_path,
        """\
        cmd = python
            -m http.server
        \t  8000
        args =
          --one
          --two ; a comment
        numprocesses = 2
        """,
    )
    assert w["cmd"] == "python\n-m http.server\n8000"
    assert w["args"] == "--one\n--two"
    assert w["numprocesses"] == 2


def test_blank_line_does_not_end_a_value(tmp_path: Path) -> None:
    w = only_watcher(tmp_path, "cmd = run\n\n  more\n")
    assert w["cmd"] == "run\nmore"


def test_crlf_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "circus.ini"
    path.write_bytes(b"\xef\xbb\xbf[watcher:w]\r\ncmd = run\r\nnumprocesses = 2\r\n")
    w = load_config(path, environ=ENVIRON).watchers[0]
    assert (w["cmd"], w["numprocesses"]) == ("run", 2)


def test_invalid_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "circus.ini"
    path.write_bytes(b"[watcher:w]\ncmd = run\nx = \xff\xfe\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.line == 3
    assert "UTF-8" in str(info.value)


def test_duplicate_sections_merge(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        [watcher:w]
        cmd = run
        [socket:s]
        port = 1
        [watcher:w]
        numprocesses = 3
        """,
    )
    assert len(config.watchers) == 1
    assert watcher(config, "w")["numprocesses"] == 3
    assert config.section_sources["watcher:w"] == (str(tmp_path / "circus.ini"), 1)


def test_bug_11_duplicate_key_first_wins_and_its_continuation_is_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="circus.config"):
        config = load(
            tmp_path,
            """
            [watcher:w]
            cmd = first
              first-continued
            cmd = second
              second-continued
            numprocesses = 2
            [watcher:w]
            numprocesses = 5
              7
            """,
        )
    w = watcher(config, "w")
    assert w["cmd"] == "first\nfirst-continued"
    assert w["numprocesses"] == 2
    assert config.sources[("watcher:w", "cmd")] == (str(tmp_path / "circus.ini"), 2)
    assert "already set at line 2" in caplog.text


def test_default_section_applies_everywhere(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        [DEFAULT]
        numprocesses = 4
        warmup_delay = 1.5
        owner = team-a

        [circus]
        check_delay = 2

        [env]
        A = 1

        [watcher:one]
        cmd = run

        [watcher:two]
        cmd = run
        numprocesses = 1

        [plugin:p]
        use = pkg.mod.Plugin
        """,
    )
    one, two = watcher(config, "one"), watcher(config, "two")
    assert one["numprocesses"] == 4 and one["owner"] == "team-a"
    assert two["numprocesses"] == 1 and two["warmup_delay"] == 1.5
    assert config.circus["warmup_delay"] == 1.5
    assert config.env == {"numprocesses": "4", "warmup_delay": "1.5", "owner": "team-a", "A": "1"}
    assert config.plugins[0]["owner"] == "team-a"
    assert config.sources[("watcher:one", "owner")] == (str(tmp_path / "circus.ini"), 4)


def test_default_keys_unknown_to_circus_are_not_warned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="circus.config"):
        load(tmp_path, "[DEFAULT]\nowner = x\n[circus]\n[socket:s]\n[watcher:w]\ncmd = sleep 1\n")
    assert caplog.text == ""


def test_missing_main_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.ini")
    assert info.value.path == str(tmp_path / "nope.ini")
    assert "no such file" in str(info.value)


def test_main_file_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="directory"):
        load_config(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any file")
def test_unreadable_main_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[circus]\n")
    path.chmod(0)
    with pytest.raises(ConfigError, match="cannot read") as info:
        load_config(path)
    assert info.value.path == str(path)


def test_relative_path_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "[watcher:w]\ncmd = run\n")
    monkeypatch.chdir(tmp_path)
    config = load_config("circus.ini", environ=ENVIRON)
    assert config.path == str(tmp_path / "circus.ini")
    assert config.files == [config.path]


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, "")
    assert config.watchers == [] and config.sockets == [] and config.plugins == []
    assert config.env == {}
    assert config.circus["endpoint"] == "tcp://127.0.0.1:5555"


# --------------------------------------------------------------------------- [circus]


def test_circus_defaults_cover_every_option(tmp_path: Path) -> None:
    config = load(tmp_path, "[circus]\n")
    expected = {
        name: option.default
        for name, option in CIRCUS_OPTIONS.items()
        if name not in ("include", "include_dir", "stream_backend")
    }
    assert config.circus == expected


def test_circus_options_are_parsed(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        [circus]
        endpoint = ipc:///tmp/c.sock
        statsd = yes
        check_delay = 0.25
        warmup_delay = 2
        umask = 027
        httpd_port = 9000
        debug = On
        loglevel = WARNING
        multicast_endpoint = udp://237.219.251.97:12027
        pidfile =
        """,
    )
    c = config.circus
    assert c["endpoint"] == "ipc:///tmp/c.sock"
    assert c["statsd"] is True and c["debug"] is True
    assert c["check_delay"] == 0.25
    assert c["warmup_delay"] == 2.0
    assert c["umask"] == 0o027
    assert c["httpd_port"] == 9000
    assert c["loglevel"] == "warning"
    assert c["multicast_endpoint"] == "udp://237.219.251.97:12027"
    assert c["pidfile"] is None


def test_bug_1_circus_warmup_delay_accepts_a_float(tmp_path: Path) -> None:
    assert load(tmp_path, "[circus]\nwarmup_delay = 0.5\n").circus["warmup_delay"] == 0.5


@pytest.mark.parametrize(
    ("line", "option"),
    [
        ("statsd = maybe", "statsd"),
        ("check_delay = soon", "check_delay"),
        ("check_delay = nan", "check_delay"),
        ("warmup_delay = -1", "warmup_delay"),
        ("warmup_delay = nan", "warmup_delay"),
        ("httpd_port = http", "httpd_port"),
        ("httpd_port = 70000", "httpd_port"),
        ("umask = 089", "umask"),
        ("loglevel = bogus", "loglevel"),
        ("multicast_endpoint = udp://10.0.0.1:12027", "multicast_endpoint"),
        ("multicast_endpoint = tcp://237.1.1.1:1", "multicast_endpoint"),
    ],
)
def test_bad_circus_values(tmp_path: Path, line: str, option: str) -> None:
    err = load_error(tmp_path, f"[circus]\n\n{line}\n")
    assert (err.section, err.option, err.line) == ("circus", option, 3)
    assert str(err).startswith(f"{tmp_path / 'circus.ini'}:3: [circus] {option}: ")


def test_unknown_circus_key_is_warned_and_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="circus.config"):
        config = load(tmp_path, "[circus]\nbogus = 1\n")
    assert "bogus" not in config.circus
    assert "circus.ini:2: [circus] bogus is not a circus option" in caplog.text


def test_stream_backend_is_accepted_and_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="circus.config"):
        config = load(tmp_path, "[circus]\nstream_backend = gevent\n")
    assert "stream_backend" not in config.circus
    records = [r for r in caplog.records if "[circus] stream_backend" in r.getMessage()]
    assert len(records) == 1 and records[0].levelno == logging.INFO


def test_circus_values_expand_environment_and_env_section(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        [circus]
        endpoint = ipc://$(circus.env.home)/$(circus.env.SOCK)
        pidfile = ((circus.env.run))/circusd.pid
        logoutput = $(circus.env.missing)
        [env]
        SOCK = ctl.sock
        RUN = /run
        """,
    )
    assert config.circus["endpoint"] == "ipc:///home/op/ctl.sock"
    assert config.circus["pidfile"] == "/run/circusd.pid"
    assert config.circus["logoutput"] == "$(circus.env.missing)"


def test_empty_circus_umask_means_inherited(tmp_path: Path) -> None:
    assert load(tmp_path, "[circus]\numask =\n").circus["umask"] is None


# --------------------------------------------------------------------------- [env]


def test_env_section_expands_from_os_environ_only(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        [env]
        Mixed_Case = kept
        HOME_BIN = $(circus.env.home)/bin
        OTHER = $(circus.env.mixed_case)
        """,
    )
    assert config.env == {
        "Mixed_Case": "kept",
        "HOME_BIN": "/home/op/bin",
        "OTHER": "$(circus.env.mixed_case)",
    }


def test_env_applies_to_every_watcher(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        "[env]\nA = 1\n[watcher:x]\ncmd = run\n[watcher:y]\ncmd = run\ncopy_env = false\n",
    )
    assert watcher(config, "x")["env"] == {"A": "1"}
    assert watcher(config, "y")["env"] == {"A": "1"}


def test_env_pattern_sections(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        [env]
        LEVEL = base
        [env:web*, api]
        LEVEL = web
        SEEN = $(circus.env.home)
        [env:web-2]
        LEVEL = web-2
        [env:Api?, [xy]]
        LEVEL = glob
        [watcher:web-1]
        cmd = run
        [watcher:web-2]
        cmd = run
        [watcher:api]
        cmd = run
        [watcher:Api1]
        cmd = run
        [watcher:x]
        cmd = run
        [watcher:other]
        cmd = run
        """,
    )
    assert watcher(config, "web-1")["env"] == {"LEVEL": "web", "SEEN": "$(circus.env.home)"}
    assert watcher(config, "web-2")["env"]["LEVEL"] == "web-2"
    assert watcher(config, "api")["env"]["LEVEL"] == "web"
    assert watcher(config, "Api1")["env"] == {"LEVEL": "glob"}
    assert watcher(config, "x")["env"] == {"LEVEL": "glob"}
    assert watcher(config, "other")["env"] == {"LEVEL": "base"}


def test_env_pattern_matches_name_key_and_is_case_sensitive(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        [env:renamed]
        HIT = yes
        [env:WEB]
        CASE = no
        [watcher:web]
        name = renamed
        cmd = run
        [watcher:web2]
        cmd = run
        name = web
        """,
    )
    assert watcher(config, "renamed")["env"] == {"HIT": "yes"}
    assert watcher(config, "web")["env"] == {}


def test_bug_9_env_key_in_watcher_is_honoured(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        [env]
        A = from-env
        B = from-env
        C = from-env
        [env:w]
        B = from-pattern
        [watcher:w]
        cmd = run
        env = A = from-watcher , D=$(circus.env.b),
          E=
        """,
    )
    assert watcher(config, "w")["env"] == {
        "A": "from-watcher",
        "B": "from-pattern",
        "C": "from-env",
        "D": "from-pattern",
        "E": "",
    }


def test_env_key_in_watcher_syntax_error(tmp_path: Path) -> None:
    err = load_error(tmp_path, "[watcher:w]\ncmd = run\nenv = A=1, oops\n")
    assert (err.section, err.option, err.line) == ("watcher:w", "env", 3)


def test_bug_10_no_name_key_anywhere(tmp_path: Path) -> None:
    config = load_config(FIXTURES / "full.ini", environ=ENVIRON)
    assert "__name__" not in config.env
    assert "__name__" not in config.circus
    for item in (*config.watchers, *config.sockets, *config.plugins):
        assert "__name__" not in item
        assert "__name__" not in item.get("env", {})


def test_bug_12_var_pass_applies_to_config_values_only(tmp_path: Path) -> None:
    environ = {**ENVIRON, "FROM_OS": "v$HOME"}
    config = load(
        tmp_path,
        """
        [env]
        A = $HOME/x
        B = ${HOME} $home $UNSET_VAR.
        [watcher:w]
        cmd = run
        copy_env = true
        """,
        environ,
    )
    env = watcher(config, "w")["env"]
    assert env == {"A": "/home/op/x", "B": "${HOME} $home ."}
    assert "FROM_OS" not in env  # copy_env is applied at spawn time, unexpanded
    assert config.env["A"] == "$HOME/x"


def test_var_pass_uses_os_environ_not_env_section(tmp_path: Path) -> None:
    config = load(tmp_path, "[env]\nMINE = m\nA = $MINE\n[watcher:w]\ncmd = run\n")
    assert watcher(config, "w")["env"] == {"MINE": "m", "A": ""}


# --------------------------------------------------------------------------- [watcher:NAME]


def test_watcher_defaults() -> None:
    defaults = watcher_defaults()
    assert defaults == {name: option.default for name, option in WATCHER_OPTIONS.items()}
    assert defaults["numprocesses"] == 1 and defaults["max_retry"] == 5


def test_watcher_minimal_shape(tmp_path: Path) -> None:
    assert only_watcher(tmp_path, "cmd = run\n") == {"name": "w", "cmd": "run", "env": {}}


def test_watcher_name_keeps_case_and_spaces(tmp_path: Path) -> None:
    config = load(tmp_path, "[watcher:My App 2]\ncmd = run\n[watcher: padded ]\ncmd = run\n")
    assert [w["name"] for w in config.watchers] == ["My App 2", "padded"]


def test_name_key_replaces_section_name(tmp_path: Path) -> None:
    config = load(tmp_path, "[watcher:w]\nname = $(circus.env.x)-web\ncmd = run\n[env]\nX = a\n")
    assert [w["name"] for w in config.watchers] == ["a-web"]


def test_watchers_are_sorted_by_name(tmp_path: Path) -> None:
    config = load(tmp_path, "".join(f"[watcher:{n}]\ncmd = run\n" for n in "cDab"))
    assert [w["name"] for w in config.watchers] == ["D", "a", "b", "c"]


def test_duplicate_watcher_names_are_an_error(tmp_path: Path) -> None:
    err = load_error(tmp_path, "[watcher:Web]\ncmd = run\n[watcher:x]\nname = web\ncmd = run\n")
    assert (err.section, err.option, err.line) == ("watcher:x", "name", 4)
    assert "[watcher:Web]" in str(err)


@pytest.mark.parametrize("text", ["[watcher:]\ncmd = run\n", "[watcher:w]\nname =\ncmd = run\n"])
def test_watcher_needs_a_name(tmp_path: Path, text: str) -> None:
    err = load_error(tmp_path, text)
    assert "name" in str(err)


def test_typed_watcher_options(tmp_path: Path) -> None:
    w = only_watcher(
        tmp_path,
        """\
        cmd = run
        args = --a $(circus.env.home)
        executable = /usr/bin/python3
        shell = true
        shell_args = x
        working_dir = /srv
        uid = 1000
        gid = www-data
        umask = 002
        copy_env = yes
        copy_path = 1
        virtualenv = /venv
        numprocesses = 3
        warmup_delay = 1
        priority = -2
        singleton = false
        respawn = off
        autostart = no
        max_retry = -1
        graceful_timeout = 0.5
        stop_signal = SIGINT
        stop_children = true
        send_hup = true
        max_age = 10
        max_age_variance = 0
        use_sockets = true
        on_demand = true
        close_child_stdin = false
        close_child_stdout = true
        close_child_stderr = true
        check_flapping = false
        """,
    )
    expected = {
        "cmd": "run",
        "args": "--a /home/op",
        "executable": "/usr/bin/python3",
        "shell": True,
        "shell_args": "x",
        "working_dir": "/srv",
        "uid": 1000,
        "gid": "www-data",
        "umask": 0o002,
        "copy_env": True,
        "copy_path": True,
        "virtualenv": "/venv",
        "numprocesses": 3,
        "warmup_delay": 1.0,
        "priority": -2,
        "singleton": False,
        "respawn": False,
        "autostart": False,
        "max_retry": -1,
        "graceful_timeout": 0.5,
        "stop_signal": signal.SIGINT,
        "stop_children": True,
        "send_hup": True,
        "max_age": 10,
        "max_age_variance": 0,
        "use_sockets": True,
        "on_demand": True,
        "close_child_stdin": False,
        "close_child_stdout": True,
        "close_child_stderr": True,
        "check_flapping": False,
    }
    assert {k: w[k] for k in expected} == expected
    assert set(w) == set(expected) | {"name", "env"}
    assert isinstance(w["warmup_delay"], float)


def test_bug_1_watcher_warmup_delay_accepts_a_float(tmp_path: Path) -> None:
    assert only_watcher(tmp_path, "cmd = run\nwarmup_delay = 0.5\n")["warmup_delay"] == 0.5


@pytest.mark.parametrize(
    ("line", "option"),
    [
        ("shell = perhaps", "shell"),
        ("copy_env = 2", "copy_env"),
        ("numprocesses = two", "numprocesses"),
        ("numprocesses = 1.5", "numprocesses"),
        ("max_age = 0.5", "max_age"),
        ("priority = high", "priority"),
        ("warmup_delay = fast", "warmup_delay"),
        ("graceful_timeout = 3s", "graceful_timeout"),
        ("stop_signal = SIGNOPE", "stop_signal"),
        ("stop_signal = 999", "stop_signal"),
        ("umask = 9", "umask"),
    ],
)
def test_wrong_type_is_an_error_with_location(tmp_path: Path, line: str, option: str) -> None:
    err = load_error(tmp_path, f"[watcher:web]\ncmd = run\n{line}\n")
    assert (err.path, err.line) == (str(tmp_path / "circus.ini"), 3)
    assert (err.section, err.option) == ("watcher:web", option)
    assert str(err).startswith(f"{tmp_path / 'circus.ini'}:3: [watcher:web] {option}: ")


@pytest.mark.parametrize(
    ("text", "option", "words"),
    [
        ("singleton = true\nnumprocesses = 2\n", "numprocesses", "singleton"),
        ("numprocesses = 2\nsingleton = true\n", "numprocesses", "singleton"),
        ("copy_path = true\n", "copy_path", "copy_env = true"),
        ("copy_env = false\nvirtualenv = /venv\n", "virtualenv", "set copy_env = true"),
        ("numprocesses = -1\n", "numprocesses", "negative"),
        ("max_retry = -2\n", "max_retry", "-1"),
        ("graceful_timeout = -1\n", "graceful_timeout", "negative"),
        ("warmup_delay = -0.1\n", "warmup_delay", "negative"),
        ("max_age = -5\n", "max_age", "negative"),
        ("stdin_socket = nope\n", "stdin_socket", "[socket:nope]"),
    ],
)
def test_unusable_watcher_is_an_error(tmp_path: Path, text: str, option: str, words: str) -> None:
    err = load_error(tmp_path, "[watcher:web]\ncmd = run\n" + text)
    assert (err.section, err.option) == ("watcher:web", option)
    assert err.line is not None and err.line >= 3
    assert words in str(err)
    assert f"circus.ini:{err.line}: [watcher:web] {option}: " in str(err)


def test_singleton_with_one_or_zero_processes_is_fine(tmp_path: Path) -> None:
    assert only_watcher(tmp_path, "cmd = run\nsingleton = true\n")["singleton"] is True
    w = only_watcher(tmp_path, "cmd = run\nsingleton = true\nnumprocesses = 0\n")
    assert w["numprocesses"] == 0


def test_zero_processes_is_warned(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="circus.config"):
        only_watcher(tmp_path, "cmd = run\nnumprocesses = 0\n")
    assert "numprocesses = 0" in caplog.text


def test_shell_args_without_shell_is_warned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="circus.config"):
        only_watcher(tmp_path, "cmd = run\nshell_args = x\n")
    assert "shell_args" in caplog.text


@pytest.mark.parametrize(
    ("text", "line"),
    [("", 1), ("numprocesses = 2\n", 1), ("cmd =\n", 2), ('cmd = ""\n', 2)],
)
def test_watcher_without_cmd_is_an_error(tmp_path: Path, text: str, line: int) -> None:
    err = load_error(tmp_path, "[watcher:empty]\n" + text)
    assert err.section == "watcher:empty" and err.line == line
    assert "cmd is required" in str(err)


def test_watcher_with_only_default_keys_still_needs_cmd(tmp_path: Path) -> None:
    err = load_error(tmp_path, "[DEFAULT]\nnumprocesses = 2\n[watcher:x]\n")
    assert (err.section, err.line) == ("watcher:x", 3)


def test_cmd_from_default_section(tmp_path: Path) -> None:
    config = load(tmp_path, "[DEFAULT]\ncmd = run\n[watcher:x]\n")
    assert watcher(config, "x")["cmd"] == "run"


def test_stdin_socket_matches_without_case_and_is_lowercased(tmp_path: Path) -> None:
    config = load(tmp_path, "[socket:Web]\nport = 0\n[watcher:w]\ncmd = run\nstdin_socket = WEB\n")
    assert watcher(config, "w")["stdin_socket"] == "web"


def test_spawn_time_placeholders_are_kept(tmp_path: Path) -> None:
    w = only_watcher(
        tmp_path,
        """\
        cmd = run --fd $(circus.sockets.web) --id $(circus.wid) ((circus.WID)) $WID
        args = $(circus.env.home) $(circus.env.unknown_var) $(circus.working_dir)
        shell_args = $(circus.env.LANG) $(circus.uid)
        """,
    )
    assert w["cmd"] == "run --fd $(circus.sockets.web) --id $(circus.wid) ((circus.WID)) $WID"
    assert w["args"] == "/home/op $(circus.env.unknown_var) $(circus.working_dir)"
    assert w["shell_args"] == "C.UTF-8 $(circus.uid)"


def test_watcher_string_keys_see_env_sections(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        [env]
        ROOT = /srv
        [env:w]
        APP = app1
        [watcher:w]
        cmd = $(circus.env.root)/$(circus.env.app)/bin/run
        working_dir = ((circus.env.ROOT))
        numprocesses = $(circus.env.count)
        custom = $(circus.env.app)
        [env:w]
        COUNT = 3
        """,
    )
    w = watcher(config, "w")
    assert w["cmd"] == "/srv/app1/bin/run"
    assert w["working_dir"] == "/srv"
    assert w["numprocesses"] == 3
    assert w["custom"] == "app1"


def test_stop_signal_is_never_expanded(tmp_path: Path) -> None:
    err = load_error(
        tmp_path, "[env]\nSIG = TERM\n[watcher:w]\ncmd = run\nstop_signal = $(circus.env.sig)\n"
    )
    assert err.option == "stop_signal"


def test_custom_keys_are_kept_as_strings(tmp_path: Path) -> None:
    w = only_watcher(
        tmp_path,
        """\
        cmd = run
        flapping.attempts = 3
        flapping.window = $(circus.env.home)
        foo = bar
        loglevel = debug
        """,
    )
    assert w["flapping.attempts"] == "3"
    assert w["flapping.window"] == "/home/op"
    assert w["foo"] == "bar"
    assert w["loglevel"] == "debug"


@pytest.mark.parametrize("key", ["stdout_stream", "hooks", "rlimits", "prereload_fn", "loop"])
def test_reserved_keys_are_an_error(tmp_path: Path, key: str) -> None:
    err = load_error(tmp_path, f"[watcher:w]\ncmd = run\n{key} = x\n")
    assert (err.option, err.line) == (key, 3)


def test_rlimits(tmp_path: Path) -> None:
    w = only_watcher(
        tmp_path,
        """\
        cmd = run
        rlimit_nofile = 4096
        rlimit_CORE =
        rlimit_as = unlimited
        """,
    )
    assert w["rlimits"] == {"nofile": 4096, "core": None, "as": None}
    assert "rlimit_nofile" not in w


def test_rlimits_are_not_expanded(tmp_path: Path) -> None:
    err = load_error(tmp_path, "[watcher:w]\ncmd = run\nrlimit_nofile = $(circus.env.n)\n")
    assert err.option == "rlimit_nofile"


@pytest.mark.parametrize(
    ("line", "words"),
    [("rlimit_bogus = 1", "unknown resource limit"), ("rlimit_nofile = many", "integer")],
)
def test_bad_rlimits(tmp_path: Path, line: str, words: str) -> None:
    err = load_error(tmp_path, f"[watcher:w]\ncmd = run\n\n{line}\n")
    assert (err.section, err.option, err.line) == ("watcher:w", line.split()[0], 4)
    assert words in str(err)


def test_hooks(tmp_path: Path) -> None:
    w = only_watcher(
        tmp_path,
        """\
        cmd = run
        hooks.before_start = pkg.hooks.check
        hooks.after_spawn = pkg.hooks:spawned, true
        hooks.before_spawn = pkg.hooks.gate , NO
        hooks.after_stop = pkg.hooks.done
        """,
    )
    assert w["hooks"] == {
        "before_start": ("pkg.hooks.check", False),
        "after_spawn": ("pkg.hooks:spawned", True),
        "before_spawn": ("pkg.hooks.gate", False),
        "after_stop": ("pkg.hooks.done", True),  # ignored by default
    }


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("hooks.before_launch = pkg.fn", "unknown hook"),
        ("hooks.before_start = pkg.fn, sometimes", "ignore_failure"),
        ("hooks.before_start = pkg.fn,", "ignore_failure"),
        ("hooks.before_start = fn", "package.module"),
        ("hooks.before_start =", "package.module"),
        ("hooks.before_start = pkg fn", "package.module"),
    ],
)
def test_bad_hooks(tmp_path: Path, line: str, words: str) -> None:
    err = load_error(tmp_path, f"[watcher:w]\ncmd = run\n{line}\n")
    assert (err.option, err.line) == (line.split()[0], 3)
    assert words in str(err)


def test_hooks_are_not_imported(tmp_path: Path) -> None:
    w = only_watcher(tmp_path, "cmd = run\nhooks.before_start = no_such_pkg_xyz.mod.fn\n")
    assert w["hooks"]["before_start"] == ("no_such_pkg_xyz.mod.fn", False)


def test_streams(tmp_path: Path) -> None:
    w = only_watcher(
        tmp_path,
        """\
        cmd = run
        stdout_stream.class = FileStream
        stdout_stream.filename = $(circus.env.home)/out-$(circus.wid).log
        stdout_stream.max_bytes = 1000
        stdout_stream.backup_count = 5
        stderr_stream.filename = err.log
        """,
    )
    assert w["stdout_stream"] == {
        "class": "FileStream",
        "filename": "/home/op/out-$(circus.wid).log",
        "max_bytes": 1000,
        "backup_count": 5,
    }
    assert w["stderr_stream"] == {"class": "FileStream", "filename": "err.log"}
    assert not any(k.startswith("stdout_stream.") for k in w)


def test_absent_streams_are_omitted(tmp_path: Path) -> None:
    w = only_watcher(tmp_path, "cmd = run\nstdout_stream.class = StdoutStream\n")
    assert w["stdout_stream"] == {"class": "StdoutStream"}
    assert "stderr_stream" not in w


@pytest.mark.parametrize(
    ("cls", "expected"),
    [
        ("timedrotatingfilestream", "TimedRotatingFileStream"),
        ("FancyStdoutStream", "FancyStdoutStream"),
        ("my.pkg.Stream", "my.pkg.Stream"),
        ("my.pkg:Stream", "my.pkg:Stream"),
    ],
)
def test_stream_class_names(tmp_path: Path, cls: str, expected: str) -> None:
    w = only_watcher(tmp_path, f"cmd = run\nstderr_stream.class = {cls}\n")
    assert w["stderr_stream"]["class"] == expected


@pytest.mark.parametrize(
    ("lines", "option", "words"),
    [
        ("stdout_stream.max_bytes = 10\n", "stdout_stream.max_bytes", "class or a filename"),
        ("stdout_stream.class = NoSuchStream\n", "stdout_stream.class", "unknown stream class"),
        ("stderr_stream.class = pkg..Bad\n", "stderr_stream.class", "dotted"),
        ("stdout_stream. = x\n", "stdout_stream.", "stdout_stream.<option>"),
    ],
)
def test_bad_streams(tmp_path: Path, lines: str, option: str, words: str) -> None:
    err = load_error(tmp_path, "[watcher:w]\ncmd = run\n" + lines)
    assert (err.option, err.line) == (option, 3)
    assert words in str(err)


# --------------------------------------------------------------------------- [socket:NAME]


def test_socket_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, "[socket:Web]\n")
    assert config.sockets == [
        {
            "name": "web",
            "host": "localhost",
            "port": 8080,
            "family": socket.AF_INET,
            "type": socket.SOCK_STREAM,
            "proto": None,
            "backlog": 2048,
            "path": None,
            "umask": 8,
            "replace": False,
            "so_reuseport": False,
            "interface": None,
            "blocking": False,
        }
    ]


def test_socket_options(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        [env]
        PORT = 9001
        [socket:a]
        host = $(circus.env.host_name)
        port = $(circus.env.port)
        family = af_inet6
        type = dgram
        proto = udp
        backlog = 10
        replace = true
        blocking = yes
        so_reuseport = 1
        interface = eth0
        [socket:b]
        path = /tmp/b.sock
        umask = 0
        [socket:c]
        family = AF_UNIX
        path = /tmp/c.sock
        type = SOCK_SEQPACKET
        """,
        {**ENVIRON, "HOST_NAME": "::1"},
    )
    a, b, c = config.sockets
    assert a["host"] == "::1" and a["port"] == 9001
    assert a["family"] == socket.AF_INET6 and a["type"] == socket.SOCK_DGRAM
    assert (a["proto"], a["backlog"], a["interface"]) == ("udp", 10, "eth0")
    assert a["replace"] is a["blocking"] is a["so_reuseport"] is True
    assert b["family"] == socket.AF_UNIX and b["path"] == "/tmp/b.sock" and b["umask"] == 0
    assert c["family"] == socket.AF_UNIX and c["type"] == socket.SOCK_SEQPACKET


def test_bug_4_socket_umask_is_octal(tmp_path: Path) -> None:
    config = load(tmp_path, "[socket:s]\npath = /tmp/s.sock\numask = 022\n")
    assert config.sockets[0]["umask"] == 0o022 == 18


@pytest.mark.parametrize(
    ("line", "option"),
    [
        ("port = http", "port"),
        ("port = 65536", "port"),
        ("port = -1", "port"),
        ("backlog = -1", "backlog"),
        ("family = AF_APPLETALK_NOPE", "family"),
        ("family = AF_UNIX", "family"),
        ("type = SOCK_BOGUS", "type"),
        ("umask = 8", "umask"),
        ("replace = sure", "replace"),
    ],
)
def test_bad_socket_values(tmp_path: Path, line: str, option: str) -> None:
    err = load_error(tmp_path, f"[socket:s]\n{line}\n")
    assert (err.section, err.option, err.line) == ("socket:s", option, 2)


def test_socket_names_are_unique_without_case(tmp_path: Path) -> None:
    err = load_error(tmp_path, "[socket:Web]\n[socket:web]\n")
    assert err.section == "socket:web" and err.line == 2


def test_socket_needs_a_name(tmp_path: Path) -> None:
    assert load_error(tmp_path, "[socket:]\nport = 1\n").section == "socket:"


def test_unknown_socket_key_is_warned(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="circus.config"):
        config = load(tmp_path, "[socket:s]\nspeed = fast\n")
    assert "speed" not in config.sockets[0]
    assert "speed is not a socket option" in caplog.text


# --------------------------------------------------------------------------- [plugin:NAME]


def test_plugins(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        [env]
        PORT = 8125
        [plugin:Statsd]
        use = circus.plugins.statsd.StatsdEmitter
        host = localhost
        port = $(circus.env.port)
        [plugin:flap]
        use = circus.plugins.flapping:Flapping
        priority = 3
        active = false
        """,
    )
    assert config.plugins == [
        {
            "name": "Statsd",
            "use": "circus.plugins.statsd.StatsdEmitter",
            "priority": 1,
            "host": "localhost",
            "port": "8125",
        },
        {
            "name": "flap",
            "use": "circus.plugins.flapping:Flapping",
            "priority": 3,
            "active": "false",
        },
    ]


@pytest.mark.parametrize(
    ("text", "option", "line"),
    [
        ("host = x\n", None, 1),
        ("use = not a path\n", "use", 2),
        ("use = pkg.P\npriority = high\n", "priority", 3),
    ],
)
def test_bad_plugins(tmp_path: Path, text: str, option: str | None, line: int) -> None:
    err = load_error(tmp_path, "[plugin:p]\n" + text)
    assert (err.section, err.option, err.line) == ("plugin:p", option, line)


# --------------------------------------------------------------------------- sources


def test_sources_record_every_key(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
        [circus]
        check_delay = 3

        [env]
        A = 1
        [watcher:w]
        cmd = run
        rlimit_nofile = 10
        """,
    )
    path = str(tmp_path / "circus.ini")
    assert config.sources == {
        ("circus", "check_delay"): (path, 2),
        ("env", "A"): (path, 5),
        ("watcher:w", "cmd"): (path, 7),
        ("watcher:w", "rlimit_nofile"): (path, 8),
    }
    assert config.location("watcher:w", "cmd") == (path, 7)
    assert config.location("watcher:w", "numprocesses") == (path, 6)
    assert config.location("watcher:w") == (path, 6)
    assert config.location("watcher:nope") is None


# --------------------------------------------------------------------------- the fixture


def test_full_fixture(tmp_path: Path) -> None:
    config = load_config(FIXTURES / "full.ini", environ=ENVIRON)
    assert config.files == [str(FIXTURES / "full.ini")]
    assert config.circus["warmup_delay"] == 0.5
    assert config.circus["umask"] == 0o22
    assert config.circus["loglevel"] == "debug"
    assert config.circus["stats_endpoint"] == "tcp://127.0.0.1:5557"
    assert [w["name"] for w in config.watchers] == ["anotherprogram", "myprogram"]
    my = watcher(config, "myprogram")
    assert my["args"] == "-u myprogram.py $WID $(circus.wid)"
    assert my["working_dir"] == "/tmp"
    assert my["stop_signal"] == signal.SIGQUIT
    assert my["graceful_timeout"] == 2.5
    assert my["rlimits"] == {"nofile": 1024}
    assert my["stdout_stream"] == {
        "class": "FileStream",
        "filename": "/tmp/test.log",
        "refresh_time": "0.3",
    }
    assert my["env"] == {"APP_HOME": "/tmp"}
    other = watcher(config, "anotherprogram")
    assert other["hooks"] == {"before_start": ("myapp.hooks:check_db", True)}
    assert other["flapping.attempts"] == "3"
    assert config.sockets[0]["name"] == "web" and config.sockets[0]["port"] == 8080
    assert config.plugins == [
        {
            "name": "flapping",
            "use": "circus.plugins.flapping.Flapping",
            "priority": 1,
            "retry_in": "3",
            "max_retry": "2",
        }
    ]


# --------------------------------------------------------------------------- includes


def test_includes_fixture() -> None:
    base = FIXTURES / "include"
    config = load_config(base / "main.ini", environ=ENVIRON)
    assert config.files == [
        str(base / "main.ini"),
        str(base / "extra-a.ini"),
        str(base / "extra-b.ini"),
        str(base / "conf.d" / "one.ini"),
    ]
    assert [w["name"] for w in config.watchers] == ["from-a", "from-b", "from-dir", "main"]
    main = watcher(config, "main")
    assert main["numprocesses"] == 1  # the main file wins
    assert main["priority"] == 1  # an earlier include beats a later one
    assert main["max_retry"] == 7  # includes add keys to existing sections
    assert config.circus["endpoint"] == "tcp://127.0.0.1:7555"
    assert config.circus["check_delay"] == 2.0
    assert "include" not in config.circus and "include_dir" not in config.circus
    assert config.sources[("watcher:main", "max_retry")] == (str(base / "extra-a.ini"), 7)


def test_bug_11_include_globs_are_sorted(tmp_path: Path) -> None:
    names = ["m.ini", "b.ini", "z.ini", "a.ini", "k.ini"]
    for index, name in enumerate(names):
        write(tmp_path / "inc", f"[watcher:w]\npriority = {index}\n", name)
    write(tmp_path / "dir", "[watcher:w]\nmax_age = 1\n", "b.ini")
    write(tmp_path / "dir", "[watcher:w]\nmax_age = 2\n", "a.ini")
    config = load(
        tmp_path, "[circus]\ninclude = inc/*.ini\ninclude_dir = dir\n[watcher:w]\ncmd = run\n"
    )
    assert [Path(f).relative_to(tmp_path).as_posix() for f in config.files] == [
        "circus.ini",
        "inc/a.ini",
        "inc/b.ini",
        "inc/k.ini",
        "inc/m.ini",
        "inc/z.ini",
        "dir/a.ini",
        "dir/b.ini",
    ]
    w = watcher(config, "w")
    assert w["priority"] == names.index("a.ini")
    assert w["max_age"] == 2


def test_include_paths_are_relative_to_main_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "conf", "[watcher:x]\ncmd = run\n", "x.ini")
    main = write(tmp_path / "conf", "[circus]\ninclude = x.ini\n", "main.ini")
    monkeypatch.chdir(tmp_path)
    config = load_config(Path("conf/main.ini"), environ=ENVIRON)
    assert [w["name"] for w in config.watchers] == ["x"]
    assert config.files == [str(main), str(tmp_path / "conf" / "x.ini")]


def test_include_several_entries_absolute_and_env(tmp_path: Path) -> None:
    other = write(tmp_path / "elsewhere", "[watcher:b]\ncmd = run\n", "b.ini")
    write(tmp_path, "[watcher:a]\ncmd = run\n", "a.ini")
    config = load(
        tmp_path,
        """
        [circus]
        include = a.ini
          $(circus.env.other_file)
        """,
        {**ENVIRON, "OTHER_FILE": str(other)},
    )
    assert [w["name"] for w in config.watchers] == ["a", "b"]


def test_include_does_not_read_a_file_twice(tmp_path: Path) -> None:
    write(tmp_path, "[watcher:a]\ncmd = run\n", "a.ini")
    config = load(tmp_path, "[circus]\ninclude = a.ini a.ini *.ini\ninclude_dir = .\n")
    assert [Path(f).name for f in config.files] == ["circus.ini", "a.ini"]


def test_include_in_included_file_is_not_followed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(tmp_path, "[circus]\ninclude = b.ini\n[watcher:a]\ncmd = run\n", "a.ini")
    write(tmp_path, "[watcher:b]\ncmd = run\n", "b.ini")
    with caplog.at_level(logging.WARNING, logger="circus.config"):
        config = load(tmp_path, "[circus]\ninclude = a.ini\n")
    assert [w["name"] for w in config.watchers] == ["a"]
    assert "a.ini:2: include in an included file is not followed" in caplog.text


@pytest.mark.parametrize(
    ("line", "option"),
    [
        ("include = nothing-*.ini", "include"),
        ("include = missing.ini", "include"),
        ("include_dir = no-such-dir", "include_dir"),
        ("include_dir = file.txt", "include_dir"),
    ],
)
def test_include_without_match_is_an_error(tmp_path: Path, line: str, option: str) -> None:
    write(tmp_path, "not a dir\n", "file.txt")
    err = load_error(tmp_path, f"[circus]\ncheck_delay = 1\n{line}\n")
    assert (err.path, err.line) == (str(tmp_path / "circus.ini"), 3)
    assert (err.section, err.option) == ("circus", option)
    assert f"circus.ini:3: [circus] {option}: " in str(err)


def test_include_dir_without_ini_files_is_fine(tmp_path: Path) -> None:
    write(tmp_path / "conf.d", "[watcher:x]\ncmd = run\n", "x.conf")
    config = load(tmp_path, "[circus]\ninclude_dir = conf.d\n")
    assert config.watchers == []
    assert len(config.files) == 1


def test_error_in_included_file_names_that_file(tmp_path: Path) -> None:
    write(tmp_path, "[watcher:x]\ncmd = run\nnumprocesses = lots\n", "x.ini")
    err = load_error(tmp_path, "[circus]\ninclude = x.ini\n")
    assert (err.path, err.line) == (str(tmp_path / "x.ini"), 3)


def test_syntax_error_in_included_file_names_that_file(tmp_path: Path) -> None:
    write(tmp_path, "[watcher:x]\ncmd = run\nbroken line\n", "x.ini")
    err = load_error(tmp_path, "[circus]\ninclude = x.ini\n")
    assert (err.path, err.line) == (str(tmp_path / "x.ini"), 3)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any file")
def test_unreadable_include_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "[watcher:x]\ncmd = run\n", "x.ini").chmod(0)
    err = load_error(tmp_path, "[circus]\ninclude = x.ini\n")
    assert (err.option, err.line) == ("include", 2)


def test_config_files_can_be_reloaded(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "include", tmp_path / "inc")
    first = load_config(tmp_path / "inc" / "main.ini", environ=ENVIRON)
    write(tmp_path / "inc", "[watcher:new]\ncmd = run\n", "extra-c.ini")
    second = load_config(first.path, environ=ENVIRON)
    assert len(second.files) == len(first.files) + 1
    assert "new" in {w["name"] for w in second.watchers}


def test_read_error_of_main_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "[circus]\n")

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("circus.ini.open", refuse, raising=False)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.path == str(path)
    assert str(info.value) == f"{path}: cannot read: Permission denied"


@pytest.mark.parametrize(("key", "value"), [("uid", "no-such-user-here"),
                                            ("gid", "no-such-group-here")])
def test_unknown_user_or_group_is_a_config_error(tmp_path: Path, key: str, value: str) -> None:
    err = load_error(tmp_path, f"[watcher:w]\ncmd = sleep 1\n{key} = {value}\n")
    assert key in str(err) and value in str(err) and ":3:" in str(err)


def test_syslog_stream_by_bare_name(tmp_path: Path) -> None:
    c = load(tmp_path, "[watcher:w]\ncmd = sleep 1\nstdout_stream.class = SyslogStream\n")
    assert c.watchers[0]["stdout_stream"]["class"] == "SyslogStream"
