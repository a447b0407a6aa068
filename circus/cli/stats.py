"""circusd-stats: publish the figures of every process a circusd runs.

::

    circusd-stats [--endpoint E] [--pubsub P] [--statspoint S] [--interval SECONDS]
                  [--prometheus-host H --prometheus-port N] [--log-level L] [--log-output O]

It asks circusd (``--endpoint``) once for its watchers, pids and sockets, then follows its
events (``--pubsub``), and every ``--interval`` seconds (default 1) publishes on
``--statspoint`` (default ``tcp://127.0.0.1:5557``) what Circus 0.19's circusd-stats
publishes (docs/stats.md). circusd runs it as the watcher ``circusd-stats`` when ``[circus]
statsd = true``, ``stats_endpoint`` or ``prometheus_port`` is set. With
``--prometheus-port`` it also serves Prometheus metrics on ``http://HOST:PORT/metrics``
(circus/stats/metrics.py). SIGTERM, SIGINT and SIGQUIT stop it.

Exit status: 0 after a stop; 1 when the stats endpoint cannot be bound; 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import sys

from circus import __version__
from circus.client import DEFAULT_ENDPOINT, DEFAULT_ENDPOINT_SUB
from circus.stats.launch import DEFAULT_STATSPOINT

log = logging.getLogger("circus.stats")


def interval(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not seconds > 0 or seconds != seconds or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"expected seconds above 0, got {value!r}")
    return seconds


def port(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port (0 to 65535), got {value!r}")
    return number


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="circusd-stats",
                                description="Runs the stats aggregator for Circus.")
    p.add_argument("--endpoint", default=DEFAULT_ENDPOINT,
                   help=f"circusd's control endpoint (default {DEFAULT_ENDPOINT})")
    p.add_argument("--pubsub", default=DEFAULT_ENDPOINT_SUB,
                   help=f"circusd's event endpoint (default {DEFAULT_ENDPOINT_SUB})")
    p.add_argument("--statspoint", default=DEFAULT_STATSPOINT,
                   help=f"the endpoint to publish on (default {DEFAULT_STATSPOINT})")
    p.add_argument("--interval", type=interval, default=1.0,
                   help="seconds between two publications (default 1)")
    p.add_argument("--log-level", dest="loglevel", type=str.lower, default="info",
                   choices=("critical", "error", "warning", "info", "debug"))
    p.add_argument("--log-output", dest="logoutput", default="-",
                   help="'-' (stdout), 'stderr', a file, or syslog://host:port?facility")
    p.add_argument("--curve-key", default=None,
                   help="this client's .key_secret, when circusd requires CURVE (circusd "
                        "gives the circusd-stats it starts a key of its own)")
    p.add_argument("--server-key", default=None, help="circusd's public .key")
    p.add_argument("--prometheus-host", default="127.0.0.1",
                   help="the address /metrics is served on (default 127.0.0.1)")
    p.add_argument("--prometheus-port", type=port, default=None,
                   help="serve Prometheus metrics on http://HOST:PORT/metrics (off unless "
                        "given; needs the 'metrics' extra)")
    p.add_argument("--ssh", default=None, help=argparse.SUPPRESS)
    p.add_argument("--exit-with-parent", action="store_true",
                   help="stop when the process that started this one exits (circusd)")
    p.add_argument("--version", action="version", version=__version__)
    return p


def configure_logging(level: str, output: str) -> None:
    from circus.logs import configure

    configure(level, output, program="circusd-stats")


def raise_open_files() -> None:
    """Two descriptors are kept for each process followed: raise the soft limit on open
    files to the hard one (else, past it, each read opens its file again)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            log.debug("cannot raise the limit on open files above %d", soft)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.ssh:
        print("circusd-stats: --ssh is not supported (use an ssh tunnel)", file=sys.stderr)
        return 2
    try:
        configure_logging(args.loglevel, args.logoutput)
    except (ValueError, OSError) as exc:
        print(f"circusd-stats: --log-output: {exc}", file=sys.stderr)
        return 2
    raise_open_files()
    from circus.curve import client_keys
    from circus.stats.streamer import StatsStreamer, install_signal_handlers

    try:
        keys = client_keys(args.curve_key, args.server_key)
    except ValueError as exc:
        print(f"circusd-stats: {exc}", file=sys.stderr)
        return 2
    metrics = (None if args.prometheus_port is None
               else (args.prometheus_host, args.prometheus_port))
    streamer = StatsStreamer(args.endpoint, args.pubsub, args.statspoint, args.interval,
                             metrics=metrics)
    if keys is not None:
        streamer.keys = keys
    install_signal_handlers(streamer)
    if args.exit_with_parent:
        from circus.cli.plugin import exit_with_parent

        exit_with_parent()
    try:
        streamer.run()
    except OSError as exc:
        log.error("%s", exc)
        return 1
    finally:
        streamer.close()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
