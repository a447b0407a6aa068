"""The ``circushttpd`` watcher: a singleton that circusd runs when ``[circus] httpd = true``
(Circus 0.19 ran its console under the same name), on ``httpd_host`` and ``httpd_port``.

Its login token is read from ``httpd_token_file`` (relative to the configuration file's
directory; created with a new token, mode 0600, when missing); without one, each start makes
a new token, which the console prints with its login URL on its stdout: circusd's output,
and ``circusctl tail circushttpd``.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping
from typing import Any

from circus.stats.launch import python_path

NAME = "circushttpd"
RUNNER_MODULE = "circus.cli.httpd"
GRACEFUL_TIMEOUT = 5.0


def local_endpoint(endpoint: str) -> str:
    """circusd's control *endpoint* as a client on this host reaches it."""
    if endpoint.startswith("tcp://"):
        host, _, port = endpoint[6:].rpartition(":")
        if host in ("*", "0.0.0.0"):
            return f"tcp://127.0.0.1:{port}"
    return endpoint


def httpd_watcher_conf(endpoint: str, host: str, port: int, token_file: str | None,
                       debug: bool = False) -> dict[str, Any]:
    """The watcher mapping (as :func:`circus.arbiter.watcher_from_config` takes it)."""
    args = ["-P", "-m", RUNNER_MODULE, "--endpoint", local_endpoint(endpoint),
            "--host", host, "--port", str(port),
            "--log-level", "debug" if debug else "info", "--exit-with-parent"]
    if token_file:
        args += ["--token-file", token_file]
    return {
        "name": NAME,
        "cmd": shlex.quote(sys.executable),
        "args": args,
        "singleton": True,
        "numprocesses": 1,
        "copy_env": True,
        "env": {"PYTHONPATH": python_path()},
        "graceful_timeout": GRACEFUL_TIMEOUT,
    }


def httpd_watcher_confs(endpoint: str, options: Mapping[str, Any], config_file: str | None,
                        debug: bool = False) -> list[dict[str, Any]]:
    """``[the circushttpd watcher]`` when ``httpd`` is set in *options*, else ``[]``."""
    if not options.get("httpd"):
        return []
    token_file = options.get("httpd_token_file")
    if token_file:
        base = os.path.dirname(os.path.abspath(config_file)) if config_file else os.getcwd()
        token_file = os.path.join(base, os.path.expanduser(str(token_file)))
    return [httpd_watcher_conf(endpoint, str(options.get("httpd_host") or "localhost"),
                               int(options.get("httpd_port") or 8080), token_file, debug)]
