"""circusctl: drive a running circusd.

Exit status: 0 ok; 2 usage error; 3 the daemon answered with an error; 69 the daemon
cannot be reached; 75 the daemon did not answer in time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from circus import __version__

EX_OK = 0
EX_USAGE = 2
EX_ERROR_REPLY = 3
EX_UNAVAILABLE = 69
EX_TEMPFAIL = 75


def _commands() -> dict[str, Any]:
    from circus.commands import get_commands

    return get_commands()


def usage() -> str:
    lines = ["usage: circusctl [--endpoint URL] [--timeout S] [--json] COMMAND [ARGS]", "",
             "commands:"]
    for name, cmd in sorted(_commands().items()):
        lines.append(f"  {name:<14} {cmd.short}")
    lines.append("")
    lines.append("circusctl help COMMAND shows the documentation of a command.")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="circusctl", add_help=False)
    p.add_argument("--endpoint", default=os.environ.get("CIRCUSCTL_ENDPOINT",
                                                        "tcp://127.0.0.1:5555"))
    p.add_argument("--timeout", type=float, default=5.0)
    p.add_argument("--json", action="store_true")
    p.add_argument("--prettify", action="store_true")
    p.add_argument("--help", "-h", action="store_true")
    p.add_argument("--version", action="store_true")
    p.add_argument("command", nargs="?")
    p.add_argument("args", nargs=argparse.REMAINDER)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.version:
        print(__version__)
        return EX_OK
    if args.help or args.command is None:
        print(usage())
        return EX_OK if args.help else EX_USAGE
    commands = _commands()
    if args.command == "help":
        if not args.args:
            print(usage())
            return EX_OK
        cmd = commands.get(args.args[0])
        if cmd is None:
            print(f"circusctl: unknown command {args.args[0]!r}", file=sys.stderr)
            return EX_USAGE
        print(cmd.desc)
        return EX_OK
    cmd = commands.get(args.command)
    if cmd is None:
        print(f"circusctl: unknown command {args.command!r}\n\n{usage()}", file=sys.stderr)
        return EX_USAGE
    from circus.client import CircusClient, TimedOut, Unreachable
    from circus.commands.base import parse_flags
    from circus.errors import ArgumentError, CallError

    try:
        positional, opts = parse_flags(cmd.flags, args.args)
        message = cmd.message(*positional, **opts)
    except ArgumentError as exc:
        print(f"circusctl {args.command}: {exc}", file=sys.stderr)
        return EX_USAGE
    client = CircusClient(endpoint=args.endpoint, timeout=args.timeout)
    try:
        reply = client.call(message)
    except Unreachable as exc:
        print(f"circusctl: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    except TimedOut as exc:
        print(f"circusctl: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    except CallError as exc:
        print(f"circusctl: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    finally:
        client.stop()
    if args.json or args.prettify:
        print(json.dumps(reply, indent=2 if args.prettify else None,
                         sort_keys=bool(args.prettify)))
        return EX_OK
    if reply.get("status") == "error":
        print(cmd.console_msg(reply), file=sys.stderr)
        return EX_ERROR_REPLY
    print(cmd.console_msg(reply))
    return EX_OK


if __name__ == "__main__":
    sys.exit(main())
