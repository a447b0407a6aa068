"""Issue 4: circusd's own log, from `logoutput` and `loggerconfig` in `[circus]`."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

from tests.conftest import wait_until
from tests.e2e.conftest import Daemon

Start = Callable[..., Daemon]

SLEEPER = "[watcher:web]\ncmd = sleep 600\n"


def text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def test_logoutput_file_moved_away_is_reopened_without_a_signal(circusd: Start,
                                                                short_tmp: Path) -> None:
    """logrotate without copytruncate or postrotate: circusd writes to a new file."""
    log = short_tmp / "circusd.log"
    d = circusd(SLEEPER, circus_extra=f"logoutput = {log}\n")
    wait_until(lambda: "arbiter now waiting" in text(log), what="circusd's log in the file")
    assert d.log_text() == ""  # nothing on stdout: the file is the log
    rotated = short_tmp / "circusd.log.1"
    os.rename(log, rotated)

    pid = wait_until(lambda: d.pids("web"), what="the process")[0]
    os.kill(pid, signal.SIGKILL)  # circusd logs the unexpected exit
    wait_until(lambda: f"pid {pid} exited unexpectedly" in text(log),
               what="the next message in a new file at the same path")
    assert f"circus[{d.pid}] [WARNING]" in text(log)
    assert f"pid {pid}" not in text(rotated)
    assert "arbiter now waiting" in text(rotated)


def test_loggerconfig_yaml(circusd: Start, short_tmp: Path) -> None:
    log = short_tmp / "yaml.log"
    conf = short_tmp / "logging.yaml"
    conf.write_text(
        "version: 1\n"
        "formatters:\n"
        "  plain:\n"
        "    format: 'YAMLCONF %(levelname)s %(name)s %(message)s'\n"
        "handlers:\n"
        "  file:\n"
        "    class: logging.FileHandler\n"
        f"    filename: {log}\n"
        "    formatter: plain\n"
        "root:\n"
        "  level: DEBUG\n"
        "  handlers: [file]\n"
    )
    d = circusd(SLEEPER, circus_extra=f"loggerconfig = {conf}\n")
    wait_until(lambda: "YAMLCONF INFO" in text(log) and "arbiter now waiting" in text(log),
               what="the log the YAML file configures")
    assert "YAMLCONF DEBUG" in text(log)  # its level, not circusd's default
    assert d.log_text() == ""
