"""``circusctl keygen NAME [--dir DIR]``: write a CURVE key pair for circusd or a client.

Two files, in the format ``zmq.auth`` writes: ``NAME.key`` (the public key: copy it to
where it is needed) and ``NAME.key_secret`` (the pair, mode 0600: it stays with its owner).
Without ``--dir`` they go to ``$XDG_CONFIG_HOME/circus/`` (``~/.config/circus/``), where
circusctl looks for ``client.key_secret`` and ``server.key`` when no key is given.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from circus.curve import ClientKeys

USAGE = "usage: circusctl keygen NAME [--dir DIR]"


def main(argv: Sequence[str]) -> int:
    from circus.curve import config_dir, keygen

    if any(a in ("-h", "--help") for a in argv):
        from circus.cli.helptext import CLIENT_HELP, plain

        print(f"{USAGE}\n\n{plain(CLIENT_HELP['keygen'][1])}")
        return 0
    parser = argparse.ArgumentParser(prog="circusctl keygen", add_help=False)
    parser.add_argument("name", nargs="?")
    parser.add_argument("--dir", default=None)
    args, extra = parser.parse_known_args(list(argv))
    if extra or not args.name:
        problem = f"unexpected {' '.join(extra)}" if extra else "NAME is missing"
        print(f"circusctl keygen: {problem}\n{USAGE}", file=sys.stderr)
        return 2
    directory = args.dir or str(config_dir())
    try:
        public, secret = keygen(args.name, directory)
    except (ValueError, OSError) as exc:
        print(f"circusctl keygen: {exc}", file=sys.stderr)
        return 1
    print(f"public key: {public}\nsecret key: {secret} (mode 0600; keep it private)")
    return 0


def client_keys(curve_key: str | None, server_key: str | None
                ) -> tuple[ClientKeys | None, str | None]:
    """circusctl's keys (options, environment, per-user default) and the error text."""
    from circus.curve import cli_keys

    try:
        keys = cli_keys(curve_key, server_key)
    except ValueError as exc:
        return None, f"circusctl: {exc}"
    return keys, None
