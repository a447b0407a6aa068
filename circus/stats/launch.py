"""The ``circusd-stats`` watcher: a singleton that circusd runs when ``[circus] statsd =
true``, ``stats_endpoint`` or ``prometheus_port`` is set (Circus 0.19 ran it under the same
name; ``prometheus_*`` are ours).

Its process inherits the ``[socket:]`` sockets (``use_sockets``), at the descriptors
``listsockets`` reports, so it can count what reaches them.
"""

from __future__ import annotations

import os
import shlex
import sys
from typing import Any

import circus

DEFAULT_STATSPOINT = "tcp://127.0.0.1:5557"
NAME = "circusd-stats"
RUNNER_MODULE = "circus.cli.stats"
GRACEFUL_TIMEOUT = 5.0
DEFAULT_PROMETHEUS_HOST = "127.0.0.1"


def python_path() -> str:
    """The ``PYTHONPATH`` that makes the process import the ``circus`` circusd runs: its
    directory first. (``copy_path`` would put circusd's working directory there too, where
    the process record's ``circus/`` directory may be found first, as a namespace package.)
    """
    here = os.path.dirname(os.path.dirname(os.path.abspath(circus.__file__)))
    rest = os.environ.get("PYTHONPATH")
    return here + (os.pathsep + rest if rest else "")


def wanted(statsd: bool, stats_endpoint: str | None,
           prometheus_port: int | None = None) -> bool:
    return bool(statsd) or bool(stats_endpoint) or prometheus_port is not None


def stats_watcher_conf(endpoint: str, pubsub_endpoint: str, stats_endpoint: str | None,
                       debug: bool = False, prometheus_host: str | None = None,
                       prometheus_port: int | None = None) -> dict[str, Any]:
    """The watcher mapping (as :func:`circus.arbiter.watcher_from_config` takes it)."""
    metrics = [] if prometheus_port is None else [
        "--prometheus-host", prometheus_host or DEFAULT_PROMETHEUS_HOST,
        "--prometheus-port", str(prometheus_port)]
    return {
        "name": NAME,
        "cmd": shlex.quote(sys.executable),
        "args": [
            "-P",  # not the working directory first on sys.path: a "circus" there would win
            "-m", RUNNER_MODULE,
            "--endpoint", endpoint,
            "--pubsub", pubsub_endpoint,
            "--statspoint", stats_endpoint or DEFAULT_STATSPOINT,
            "--log-level", "debug" if debug else "info",
            "--exit-with-parent",
            *metrics,
        ],
        "singleton": True,
        "numprocesses": 1,
        "use_sockets": True,
        "copy_env": True,
        "env": {"PYTHONPATH": python_path()},
        "graceful_timeout": GRACEFUL_TIMEOUT,
    }


def stats_watcher_confs(statsd: bool, endpoint: str, pubsub_endpoint: str,
                        stats_endpoint: str | None, debug: bool = False,
                        prometheus_host: str | None = None,
                        prometheus_port: int | None = None) -> list[dict[str, Any]]:
    """``[the circusd-stats watcher]`` when it is wanted, else ``[]``."""
    if not wanted(statsd, stats_endpoint, prometheus_port):
        return []
    return [stats_watcher_conf(endpoint, pubsub_endpoint, stats_endpoint, debug,
                               prometheus_host, prometheus_port)]
