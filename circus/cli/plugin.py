"""circus-plugin: run one plugin against a running circusd.

::

    circus-plugin [--endpoint E] [--pubsub P] [--config JSON] [--check-delay S]
                  [--log-level L] [--log-output O] PLUGIN

``PLUGIN`` is the dotted path of a :class:`~circus.plugins.CircusPlugin` subclass. circusd
runs each ``[plugin:NAME]`` section this way, as a singleton watcher; the same command
runs a plugin by hand. ``--config`` is a JSON object of the plugin's options (Circus
0.19's ``key:value:::key:value`` form is read too). SIGTERM and SIGINT stop the plugin
cleanly.

Exit status: 0 after a stop (or at once when the options say ``active = false``); 1 when
the plugin cannot be imported, built or run; 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import logging.handlers
import os
import signal
import sys
from typing import Any

from circus import __version__
from circus.client import DEFAULT_ENDPOINT, DEFAULT_ENDPOINT_SUB

log = logging.getLogger("circus.plugins")

PR_SET_PDEATHSIG = 1


def parse_config(text: str) -> dict[str, Any]:
    """The plugin options given on the command line: a JSON object, or ``k:v:::k:v``."""
    text = text.strip()
    if not text:
        return {}
    if text.startswith("{"):
        value = json.loads(text)
        if not isinstance(value, dict):
            raise ValueError("--config must be a JSON object")
        return value
    config: dict[str, Any] = {}
    for item in text.split(":::"):
        key, sep, value = item.partition(":")
        if not sep or not key:
            raise ValueError(f"expected key:value, got {item!r}")
        config[key] = value
    return config


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="circus-plugin", description="Run a Circus plugin.")
    p.add_argument("plugin", help="dotted path of the plugin class (pkg.module.Class)")
    p.add_argument("--endpoint", default=DEFAULT_ENDPOINT, help="circusd's control endpoint")
    p.add_argument("--pubsub", default=DEFAULT_ENDPOINT_SUB, help="circusd's event endpoint")
    p.add_argument("--config", default="{}", help="the plugin's options, a JSON object")
    p.add_argument("--check-delay", dest="check_delay", type=float, default=5.0,
                   help="circusd's check_delay (default 5.0)")
    p.add_argument("--curve-key", default=None,
                   help="this client's .key_secret, when circusd requires CURVE (circusd "
                        "gives the plugins it starts a key of its own)")
    p.add_argument("--server-key", default=None, help="circusd's public .key")
    p.add_argument("--ssh", default=None, help=argparse.SUPPRESS)
    p.add_argument("--log-level", dest="loglevel", type=str.lower, default="info",
                   choices=("critical", "error", "warning", "info", "debug"))
    p.add_argument("--log-output", dest="logoutput", default="-",
                   help="'-' (stdout), 'stderr', a file, or syslog://host:port?facility")
    p.add_argument("--exit-with-parent", action="store_true",
                   help="stop when the process that started this one exits (circusd)")
    p.add_argument("--version", action="version", version=__version__)
    return p


def configure_logging(level: str, output: str) -> None:
    from circus.logs import configure

    configure(level, output, program="circus-plugin")


def exit_with_parent() -> None:
    """Have the kernel send SIGTERM when our parent exits (Linux), so a circusd that was
    killed outright leaves no plugin behind."""
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if parent == 1 or os.getppid() != parent:  # the parent was gone already
        os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        configure_logging(args.loglevel, args.logoutput)
    except (ValueError, OSError) as exc:
        print(f"circus-plugin: --log-output: {exc}", file=sys.stderr)
        return 2
    try:
        config = parse_config(args.config)
    except ValueError as exc:
        log.error("--config: %s", exc)
        return 2

    from circus.plugins.launch import RESERVED, is_active, load_class

    if not is_active(config):
        log.info("%s is not active (active = false); exiting", args.plugin)
        return 0
    reserved = sorted(RESERVED & set(config))
    if reserved:
        log.error("--config: %r is reserved: it is given by its own option", reserved[0])
        return 2
    log.info("Loading the plugin...")
    log.info("Endpoint: %r", args.endpoint)
    log.info("Pub/sub: %r", args.pubsub)
    try:
        cls = load_class(args.plugin)
    except Exception as exc:  # importing user code can fail in any way
        log.error("cannot import the plugin %r: %s", args.plugin, exc)
        return 1
    from circus.curve import client_keys, internal_keys

    try:
        keys = client_keys(args.curve_key, args.server_key) or internal_keys()
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    if keys is not None:
        config["keys"] = keys
    try:
        plugin = cls(endpoint=args.endpoint, pubsub_endpoint=args.pubsub,
                     check_delay=args.check_delay, ssh_server=args.ssh, **config)
    except Exception as exc:
        log.error("cannot create the plugin %r: %s", args.plugin, exc)
        return 1

    def on_signal(signum: int, frame: Any) -> None:
        plugin.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    if args.exit_with_parent:
        exit_with_parent()
    log.info("Starting")
    try:
        plugin.start()
    except Exception:
        log.exception("the plugin %r failed", args.plugin)
        return 1
    log.info("Stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
