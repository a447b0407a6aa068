"""What the loader checks beyond each value's type (circus/configcheck.py) and how a
command is split and found (circus/util/command.py): misspelt keys, a missing working_dir,
unbalanced quotes, a program not on PATH, placeholders that are known only at spawn."""

from __future__ import annotations

import errno
import logging
import os
import textwrap
from pathlib import Path

import pytest

from circus.config import Config, load_config
from circus.configcheck import close_to
from circus.errors import ConfigError, OptionError
from circus.keys import check_changes
from circus.options import WATCHER_OPTIONS
from circus.util.command import (
    SpawnError,
    explain,
    find_program,
    knowable,
    not_found,
    search_path,
    split_words,
    words_problem,
)

ENVIRON = {"HOME": "/home/op", "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None,
         problems: list[ConfigError] | None = None) -> Config:
    path = tmp_path / "circus.ini"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return load_config(path, environ=ENVIRON if environ is None else environ,
                       problems=problems)


def refused(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    return info.value


def messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level]


@pytest.fixture
def bindir(tmp_path: Path) -> Path:
    """A directory holding one executable, ``myprog``."""
    directory = tmp_path / "bin"
    directory.mkdir()
    prog = directory / "myprog"
    prog.write_text("#!/bin/sh\nexit 0\n")
    prog.chmod(0o755)
    return directory


# --------------------------------------------------------------------------- misspelt keys


@pytest.mark.parametrize(("word", "expected"), [
    ("numprocess", "numprocesses"), ("NumProcesses", "numprocesses"),
    ("graceful_timout", "graceful_timeout"), ("warmup", "warmup_delay"),
    ("copyenv", "copy_env"), ("owner", None), ("flapping", None), ("x", None),
])
def test_close_to_names_the_option_a_word_misspells(word: str, expected: str | None) -> None:
    assert close_to(word, [*WATCHER_OPTIONS, "env"]) == expected


def test_a_misspelt_watcher_key_is_warned_with_its_line_and_the_option(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="circus"):
        config = load(tmp_path, """
            [watcher:web]
            cmd = sleep 1
            numprocess = 2
            """)
    assert config.watchers[0]["numprocess"] == "2"  # kept, as before, for plugins
    assert "numprocesses" not in config.watchers[0]
    path = tmp_path / "circus.ini"
    assert messages(caplog, logging.WARNING) == [
        f"{path}:3: [watcher:web] numprocess: not a watcher option; did you mean "
        "'numprocesses'? (kept as a custom key, for plugins and hooks)"]


def test_a_misspelt_namespace_is_warned_a_plugin_namespace_is_not(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="circus"):
        load(tmp_path, """
            [DEFAULT]
            team = ops
            [watcher:web]
            cmd = sleep 1
            stdout_steam.class = FileStream
            flapping.attempts = 3
            myhook.threshold = 5
            """)
    assert messages(caplog, logging.WARNING) == [
        f"{tmp_path / 'circus.ini'}:5: [watcher:web] stdout_steam.class: not a watcher "
        "option; did you mean 'stdout_stream.class'? (kept as a custom key, for plugins and "
        "hooks)"]
    assert messages(caplog, logging.INFO) == []  # plugin keys and [DEFAULT] keys are quiet


def test_a_key_close_to_no_option_is_only_an_info_line(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="circus"):
        load(tmp_path, "[watcher:web]\ncmd = sleep 1\nbackend_url = x\n")
    assert messages(caplog, logging.WARNING) == []
    [info] = messages(caplog, logging.INFO)
    assert info.endswith(":3: [watcher:web] backend_url: not a watcher option; kept as a "
                         "custom key for plugins and hooks (no part of circus reads it)")


def test_misspelt_circus_socket_and_section_names_get_a_suggestion(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="circus"):
        load(tmp_path, """
            [circus]
            endpont = ipc:///tmp/x
            [socket:s]
            familly = AF_INET
            [watchr:web]
            cmd = sleep 1
            """)
    text = "\n".join(messages(caplog, logging.WARNING))
    assert ":2: [circus] endpont is not a circus option and is ignored; did you mean " \
           "'endpoint'?" in text
    assert ":4: [socket:s] familly is not a socket option and is ignored; did you mean " \
           "'family'?" in text
    assert ":5: section [watchr:web] is not a circus section" in text
    assert "did you mean [watcher:web]?" in text


@pytest.mark.parametrize("text", ["", "[circus]\nloglevel = info\n"])
def test_a_file_without_watchers_is_warned(tmp_path: Path, text: str,
                                           caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="circus"):
        config = load(tmp_path, text)
    assert config.watchers == []
    [warning] = messages(caplog, logging.WARNING)
    what = "the file is empty" if not text else "no [watcher:NAME] section"
    assert warning.startswith(f"{tmp_path / 'circus.ini'}: {what}: circusd would start with "
                              "nothing to run")


# --------------------------------------------------------------------------- commands


@pytest.mark.parametrize(("body", "key", "line"), [
    ("cmd = python -c 'print(1)\n", "cmd", 2),
    ("cmd = sleep\nargs = 1 \"x\n", "args", 3),
    ("cmd = sleep 1 \\\n", "cmd", 2),
    ("cmd = sleep 1\nshell = true\nshell_args = 'a\n", "shell_args", 4),
])
def test_unbalanced_quotes_are_refused_at_load(tmp_path: Path, body: str, key: str,
                                               line: int) -> None:
    err = refused(tmp_path, "[watcher:w]\n" + body)
    assert (err.section, err.option, err.line) == ("watcher:w", key, line)
    assert str(err).startswith(f"{tmp_path / 'circus.ini'}:{line}: [watcher:w] {key}: ")
    assert "unbalanced quotes" in str(err) or "lone backslash" in str(err)


def test_quotes_are_left_to_the_shell_with_shell_true(tmp_path: Path) -> None:
    config = load(tmp_path, "[watcher:w]\ncmd = echo 'it\nshell = true\n")
    assert config.watchers[0]["cmd"] == "echo 'it"


def test_a_missing_working_dir_is_refused_at_load(tmp_path: Path) -> None:
    err = refused(tmp_path, f"[watcher:w]\ncmd = sleep 1\nworking_dir = {tmp_path}/nope\n")
    assert str(err) == (f"{tmp_path / 'circus.ini'}:3: [watcher:w] working_dir: "
                        f"'{tmp_path}/nope': no such directory")
    (tmp_path / "file").write_text("")
    err = refused(tmp_path, f"[watcher:w]\ncmd = sleep 1\nworking_dir = {tmp_path}/file\n")
    assert str(err).endswith("working_dir: " f"'{tmp_path}/file': not a directory")


def test_what_holds_a_placeholder_is_checked_only_as_far_as_it_is_known(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="circus"):
        config = load(tmp_path, """
            [watcher:a]
            cmd = prog-$(circus.env.flavour) --x 'a b'
            working_dir = /srv/$(circus.env.app)
            args = $(circus.env.opts)'
            [watcher:b]
            cmd = sleep $(circus.wid) ((circus.sockets.web))
            working_dir = /nonexistent/$(circus.wid)
            """)
    assert [w["name"] for w in config.watchers] == ["a", "b"]
    assert messages(caplog, logging.WARNING) == []
    # the worker id is a number: what is around it is known, and checked
    err = refused(tmp_path, "[watcher:w]\ncmd = sleep $(circus.wid) 'x\n")
    assert err.option == "cmd"


def test_a_program_not_on_path_is_a_warning_naming_the_path(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="circus"):
        config = load(tmp_path, "[watcher:w]\ncmd = pyhton -m app\n")
    assert config.watchers[0]["cmd"] == "pyhton -m app"  # loaded: it may appear later
    assert messages(caplog, logging.WARNING) == [
        f"{tmp_path / 'circus.ini'}:2: [watcher:w] cmd: 'pyhton': not found on PATH "
        "(/usr/bin:/bin); the processes cannot start until it exists"]


def test_the_program_is_looked_up_on_the_path_the_processes_get(
        tmp_path: Path, bindir: Path, caplog: pytest.LogCaptureFixture) -> None:
    own = {**ENVIRON, "PATH": f"{bindir}:/usr/bin:/bin"}
    with caplog.at_level(logging.WARNING, logger="circus"):
        load(tmp_path, f"""
            [watcher:on-circusd-path]
            cmd = myprog
            [watcher:on-its-own-path]
            cmd = myprog
            env = PATH={bindir}
            [watcher:in-its-venv]
            cmd = myprog
            copy_env = true
            virtualenv = {tmp_path}
            [watcher:not-on-its-path]
            cmd = myprog
            env = PATH=/usr/bin
            [watcher:relative-to-working-dir]
            cmd = ./bin/myprog
            working_dir = {tmp_path}
            [watcher:executable]
            cmd = anything
            executable = {tmp_path}/nope
            """, environ=own)
    warned = sorted(m.split("[watcher:")[1].split("]")[0]
                    for m in messages(caplog, logging.WARNING))
    assert warned == ["executable", "not-on-its-path"]
    assert "cmd: 'myprog': not found on PATH (/usr/bin)" in caplog.text
    assert f"executable: '{tmp_path}/nope': no such file" in caplog.text


def test_check_mode_collects_every_error(tmp_path: Path) -> None:
    problems: list[ConfigError] = []
    config = load(tmp_path, """
        [watcher:a]
        cmd = sleep 'x
        working_dir = /nope/nope
        numprocesses = many
        [watcher:b]
        cmd = sleep 1
        [socket:s]
        port = 99999
        """, problems=problems)
    assert [(p.section, p.option) for p in problems] == [
        ("socket:s", "port"), ("watcher:a", "numprocesses"), ("watcher:a", "cmd"),
        ("watcher:a", "working_dir")]
    assert [w["name"] for w in config.watchers] == ["b"]  # a is left out


# --------------------------------------------------------------------------- the command


def test_split_words_names_the_option() -> None:
    assert split_words("a 'b c'", "cmd") == ["a", "b c"]
    with pytest.raises(ValueError, match=r"""^cmd "a 'b": unbalanced quotes"""):
        split_words("a 'b", "cmd")


def test_knowable_stands_numbers_for_the_worker_id_and_sockets() -> None:
    assert knowable("run --id $(circus.wid) ((circus.sockets.web)) $WID") == "run --id 0 0 0"
    assert knowable("run $(circus.env.x)") is None
    assert knowable("run ((circus.numprocesses))") is None


def test_words_problem_follows_shell() -> None:
    assert words_problem({"cmd": "a 'b"}) == ("cmd", "\"a 'b\": unbalanced quotes "
                                                     "(no closing quotation)")
    assert words_problem({"cmd": "a 'b", "shell": True}) is None
    assert words_problem({"cmd": "a", "shell_args": "'x"}) is None  # unused without shell
    assert words_problem({"cmd": "a", "args": ["'x"]}) is None  # a list is not split


def test_set_and_add_refuse_unbalanced_quotes_naming_the_key() -> None:
    current = {name: option.default for name, option in WATCHER_OPTIONS.items()}
    current["cmd"] = "sleep 1"
    with pytest.raises(OptionError) as info:
        check_changes({"cmd": "sleep 'x"}, current.__getitem__)
    assert info.value.option == "cmd" and "unbalanced quotes" in info.value.reason
    with pytest.raises(OptionError) as info:
        check_changes({"args": ["ok"], "shell": True, "shell_args": '"x'}, current.__getitem__)
    assert info.value.option == "shell_args"
    assert check_changes({"cmd": "echo 'x", "shell": True}, current.__getitem__)


def test_search_path_is_the_childs_else_circusds() -> None:
    assert search_path({"PATH": "/opt/bin"}, {"PATH": "/usr/bin"}) == "/opt/bin"
    assert search_path({}, {"PATH": "/usr/bin"}) == "/usr/bin"
    assert search_path({}, {}) == os.defpath


def test_find_program(bindir: Path, tmp_path: Path) -> None:
    path = f"/nonexistent:{bindir}"
    assert find_program("myprog", path) == f"{bindir}/myprog"
    assert find_program("myprog", "/usr/bin") is None
    assert find_program("./x/y", "/usr/bin") == "./x/y"  # a slash: taken as written
    assert find_program("myprog", "bin", str(tmp_path)) == "bin/myprog"  # from working_dir
    (bindir / "plain").write_text("")  # not executable
    assert find_program("plain", str(bindir)) is None


def test_spawn_errors_name_the_option() -> None:
    missing = not_found("cmd", "pyhton", "/usr/bin:/bin")
    assert str(missing) == "cmd 'pyhton': not found on PATH (/usr/bin:/bin)"
    assert isinstance(missing, FileNotFoundError) and missing.errno == errno.ENOENT
    chdir = FileNotFoundError(errno.ENOENT, "No such file or directory", "/nope")
    told = explain(chdir, what="cmd", name="sleep", program="/bin/sleep", working_dir="/nope")
    assert str(told) == "working_dir '/nope': no such directory"
    assert isinstance(told, SpawnError) and isinstance(told, FileNotFoundError)
    denied = PermissionError(errno.EACCES, "Permission denied", "/etc/passwd")
    assert str(explain(denied, what="executable", name="/etc/passwd", program="/etc/passwd",
                       working_dir=None)).startswith("executable '/etc/passwd': permission")
    gone = FileNotFoundError(errno.ENOENT, "No such file or directory", "/opt/x")
    assert str(explain(gone, what="cmd", name="/opt/x", program="/opt/x",
                       working_dir=None)) == "cmd '/opt/x': no such file"
    full = OSError(errno.EMFILE, "Too many open files")
    assert explain(full, what="cmd", name="x", program="x", working_dir=None) is full
