"""circus-top: a live view of the processes a circusd runs.

::

    circus-top [--endpoint STATS] [--control CONTROL] [--process-timeout SECONDS]
               [--readonly] [--once] [--filter TEXT] [--sort COLUMN]
               [--curve-key PATH --server-key PATH]

The figures come from circusd-stats (``--endpoint``, default ``tcp://127.0.0.1:5557``, as
Circus 0.19's circus-top); health, wids, restarts, output and the actions from circusd
(``--control``, default ``tcp://127.0.0.1:5555``; ``--control ''`` for figures only). A
process whose figures stop coming is dropped after ``--process-timeout`` seconds (default
3). ``--once`` prints one snapshot as text and exits, as it also does when standard output
is not a terminal. The view needs the ``top`` extra (Textual); ``--once`` does not. When
circusd uses CURVE, the keys are found as circusctl finds them (``--curve-key`` and
``--server-key``, the ``CIRCUSCTL_*_KEY`` variables, the per-user default); what the keys
act on is the key's tier (a ``reader`` key: run it ``--readonly``).

Exit status: 0; 1 when the view cannot run (Textual missing); 2 for bad arguments (an
endpoint ZeroMQ refuses, an unusable key).
"""

from __future__ import annotations

import argparse
import sys

from circus import __version__
from circus.client import DEFAULT_ENDPOINT
from circus.stats.launch import DEFAULT_STATSPOINT

SORTABLE = ("pid", "wid", "cpu", "rss", "mem", "age", "restarts", "health", "cmdline")


def seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not number > 0 or number == float("inf"):
        raise argparse.ArgumentTypeError(f"expected seconds above 0, got {value!r}")
    return number


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="circus-top",
        description="A live view of circusd's watchers and processes (CPU, memory, "
                    "health, restarts, output) with keys to restart, stop, start, scale "
                    "and kill.")
    p.add_argument("--endpoint", default=DEFAULT_STATSPOINT,
                   help=f"circusd-stats' endpoint (default {DEFAULT_STATSPOINT})")
    p.add_argument("--control", default=DEFAULT_ENDPOINT,
                   help=f"circusd's control endpoint (default {DEFAULT_ENDPOINT}; '' for "
                        "figures only)")
    p.add_argument("--process-timeout", type=seconds, default=3.0,
                   help="seconds without figures after which a process leaves the view "
                        "(default 3)")
    p.add_argument("--timeout", type=seconds, default=5.0,
                   help="seconds to wait for each answer of circusd (default 5)")
    p.add_argument("--readonly", action="store_true",
                   help="no key acts on circusd (view only)")
    p.add_argument("--once", action="store_true",
                   help="print one snapshot as text and exit")
    p.add_argument("--filter", default="",
                   help="show only watchers or processes whose name, pid, command or "
                        "health contains this text")
    p.add_argument("--sort", default="cpu", choices=SORTABLE,
                   help="the column to sort processes by (default cpu, largest first)")
    p.add_argument("--curve-key", default=None, metavar="PATH",
                   help="this client's .key_secret when circusd uses CURVE (else "
                        "$CIRCUSCTL_CURVE_KEY, or the per-user default, as circusctl)")
    p.add_argument("--server-key", default=None, metavar="PATH",
                   help="circusd's public .key (else $CIRCUSCTL_SERVER_KEY)")
    p.add_argument("--ssh", default=None, help=argparse.SUPPRESS)
    p.add_argument("--version", action="version", version=__version__)
    return p


def endpoint_error(endpoint: str) -> str | None:
    """Why ZeroMQ refuses *endpoint*, or None."""
    import zmq

    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.linger = 0
    try:
        sock.connect(endpoint)
    except zmq.ZMQError as exc:
        return str(exc)
    finally:
        sock.close(linger=0)
        ctx.term()
    return None


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.ssh:
        print("circus-top: --ssh is not supported (use an ssh tunnel)", file=sys.stderr)
        return 2
    control = args.control or None
    for flag, endpoint in (("--endpoint", args.endpoint), ("--control", control)):
        problem = endpoint and endpoint_error(endpoint)
        if problem:
            print(f"circus-top: {flag} {endpoint!r}: {problem}", file=sys.stderr)
            return 2
    from circus.curve import cli_keys

    try:
        keys = cli_keys(args.curve_key, args.server_key)
    except ValueError as exc:
        print(f"circus-top: {exc}", file=sys.stderr)
        return 2
    descending = args.sort in ("cpu", "rss", "mem", "age", "restarts")
    if args.once or not (sys.stdout.isatty() and sys.stdin.isatty()):
        from circus.top.feed import snapshot
        from circus.top.model import TopModel, render_text

        model = TopModel(args.process_timeout)
        try:
            snapshot(model, args.endpoint, control, timeout=max(args.process_timeout, 1.0),
                     call_timeout=args.timeout, keys=keys)
        except KeyboardInterrupt:
            return 130
        except Exception as exc:  # a bad endpoint: zmq's error, in one line
            print(f"circus-top: {exc}", file=sys.stderr)
            return 1
        print(render_text(model, args.filter, args.sort, descending))
        return 0
    try:
        import textual  # noqa: F401
    except ImportError:
        print("circus-top: the live view needs Textual: pip install 'circus[top]' "
              "(or use --once)", file=sys.stderr)
        return 1
    from circus.top.app import TopApp

    app = TopApp(args.endpoint, control, process_timeout=args.process_timeout,
                 readonly=args.readonly, call_timeout=args.timeout, keys=keys)
    app.needle = args.filter
    app.sort_key, app.sort_reverse = args.sort, descending
    try:
        app.run()
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
