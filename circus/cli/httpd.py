"""circushttpd: the web console of one circusd, or of several (a fleet view).

::

    circushttpd [--endpoint URL ...] [--host 127.0.0.1] [--port 8080]
                [--token-file PATH] [--password-file PATH] [--allowed-host NAME ...]
                [--readonly] [--timeout SECONDS] [--log-level L] [--log-output O]
                [--curve-key PATH --server-key PATH]
    circushttpd --hash-password USER      (reads the password on stdin)

Serves the dashboard, the watcher pages, the add-a-watcher form, the events feed and the
JSON API of docs/web.md, updated live over a WebSocket. Each ``--endpoint`` is a circusd's
control endpoint (default ``tcp://127.0.0.1:5555``); its events and figures are found
through ``globaloptions``.

Authentication is always on: a token, random per start unless ``--token-file`` names a
file that holds it (a missing file is created, mode 0600), printed at start with a ready
login URL; users of ``--password-file`` may log in with a password too. It binds
127.0.0.1 unless ``--host`` says otherwise; ``--allowed-host`` adds a name the ``Host``
header may give (the name a proxy in front serves). ``--readonly`` shows no controls and
refuses every change. With CURVE on circusd, ``--curve-key`` (the console's
``.key_secret``) and ``--server-key`` (circusd's ``.key``) are its keys, and the key's tier
is what the console may do: give a console a ``reader`` key and ``--readonly``. circusd
runs it as the watcher ``circushttpd`` when ``[circus] httpd = true`` (with circusd's own
key when CURVE is on). SIGTERM and SIGINT stop it.

Exit status: 0 after a stop; 1 when the port cannot be bound or the web extra is missing;
2 for bad arguments or an unusable token or password file.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import sys

from circus import __version__
from circus.client import DEFAULT_ENDPOINT, endpoint_problem

log = logging.getLogger("circus.web")

MISSING_EXTRA = ("circushttpd: the web console needs the 'web' extra "
                 "(pip install 'circus[web]'): {}")


def port_number(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number (0..65535), got {value!r}")
    return port


def seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if not 0 < number < float("inf"):
        raise argparse.ArgumentTypeError(f"expected seconds above 0, got {value!r}")
    return number


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="circushttpd", description="The web console of circusd.")
    p.add_argument("--endpoint", action="append", default=None, metavar="URL",
                   help=f"a circusd's control endpoint; several make a fleet view "
                        f"(default {DEFAULT_ENDPOINT})")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=port_number, default=8080,
                   help="port to listen on (default 8080; 0: any free port)")
    p.add_argument("--token-file", metavar="PATH",
                   help="the login token's file (created with a new token when missing)")
    p.add_argument("--password-file", metavar="PATH",
                   help="users who may log in with a password (lines user:scrypt$...)")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="a further name the Host header may give (repeatable)")
    p.add_argument("--readonly", action="store_true",
                   help="show no controls and refuse every change")
    p.add_argument("--curve-key", metavar="PATH",
                   help="the console's CURVE key pair (.key_secret), when circusd uses CURVE")
    p.add_argument("--server-key", metavar="PATH",
                   help="circusd's public CURVE key (.key)")
    p.add_argument("--timeout", type=seconds, default=5.0,
                   help="seconds to wait for circusd's answer (default 5)")
    p.add_argument("--hash-password", metavar="USER",
                   help="print a password-file line for USER (the password is read on stdin)")
    p.add_argument("--log-level", dest="loglevel", type=str.lower, default="info",
                   choices=("critical", "error", "warning", "info", "debug"))
    p.add_argument("--log-output", dest="logoutput", default="-",
                   help="'-' (stdout), 'stderr', a file, or syslog://host:port?facility")
    p.add_argument("--exit-with-parent", action="store_true",
                   help="stop when the process that started this one exits (circusd)")
    p.add_argument("--version", action="version", version=__version__)
    return p


def login_url(host: str, port: int, token: str) -> str:
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/?token={token}"


def hash_password_line(user: str) -> int:
    from circus.web.auth import hash_password

    if ":" in user or not user:
        print("circushttpd: --hash-password: a user name has no ':'", file=sys.stderr)
        return 2
    password = getpass.getpass("password: ") if sys.stdin.isatty() else \
        sys.stdin.readline().rstrip("\n")
    if not password:
        print("circushttpd: --hash-password: empty password", file=sys.stderr)
        return 2
    print(f"{user}:{hash_password(password)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.hash_password is not None:
        return hash_password_line(args.hash_password)
    try:
        import aiohttp  # noqa: F401
        import jinja2  # noqa: F401
    except ImportError as exc:
        print(MISSING_EXTRA.format(exc), file=sys.stderr)
        return 1
    endpoints = args.endpoint or [DEFAULT_ENDPOINT]
    for endpoint in endpoints:
        problem = endpoint_problem(endpoint)
        if problem:
            print(f"circushttpd: --endpoint {endpoint}: {problem}", file=sys.stderr)
            return 2
    from circus.logs import configure

    try:
        configure(args.loglevel, args.logoutput, program="circushttpd")
    except (ValueError, OSError) as exc:
        print(f"circushttpd: --log-output: {exc}", file=sys.stderr)
        return 2
    from circus.web.app import Settings, allowed_hosts, is_loopback, serve
    from circus.web.auth import (
        Auth,
        AuthConfigError,
        new_token,
        read_password_file,
        read_token_file,
    )

    try:
        token = read_token_file(args.token_file) if args.token_file else new_token()
        users = read_password_file(args.password_file) if args.password_file else {}
    except AuthConfigError as exc:
        print(f"circushttpd: {exc}", file=sys.stderr)
        return 2
    from circus.curve import client_keys, internal_keys

    try:
        keys = client_keys(args.curve_key, args.server_key) or internal_keys()
    except ValueError as exc:
        print(f"circushttpd: {exc}", file=sys.stderr)
        return 2
    settings = Settings(endpoints=endpoints, auth=Auth(token, users), host=args.host,
                        port=args.port, allowed_hosts=allowed_hosts(args.host,
                                                                    args.allowed_host),
                        readonly=args.readonly, timeout=args.timeout,
                        client_options={"keys": keys} if keys is not None else {})
    if not is_loopback(args.host):
        log.warning("listening on %s, reachable from other hosts over plain HTTP: log-ins "
                    "and the token travel unencrypted unless a TLS proxy is in front "
                    "(docs/web.md)", args.host)
    if args.exit_with_parent:
        from circus.cli.plugin import exit_with_parent

        exit_with_parent()

    def ready(port: int) -> None:
        where = "the token in " + args.token_file if args.token_file else "a new token"
        log.info("serving %s on port %d (%s%s)", ", ".join(endpoints), port, where,
                 ", read-only" if args.readonly else "")
        print(f"circushttpd: log in at {login_url(args.host, port, token)}", flush=True)

    try:
        asyncio.run(serve(settings, ready))
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", args.host, args.port, exc.strerror or exc)
        return 1
    except KeyboardInterrupt:
        pass
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
