"""circusctl's global options: parsing them wherever they are written."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import NoReturn


class _Parser(argparse.ArgumentParser):
    """Raises instead of exiting, so that main() chooses the message and the status."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


class UsageError(Exception):
    pass


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 1e6:
        raise argparse.ArgumentTypeError(f"a number of seconds above 0, got {text!r}")
    return value


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="circusctl", add_help=False)
    p.add_argument("--endpoint", default=None)
    p.add_argument("--timeout", type=_seconds, default=None)
    p.add_argument("--json", action="store_true")
    p.add_argument("--prettify", action="store_true")
    p.add_argument("--help", "-h", action="store_true")
    p.add_argument("--version", action="store_true")
    p.add_argument("--curve-key", default=None)
    p.add_argument("--server-key", default=None)
    p.add_argument("--ssh", default=None)
    p.add_argument("--ssh_keyfile", default=None)
    p.add_argument("command", nargs="?")
    p.add_argument("args", nargs=argparse.REMAINDER)
    return p


_GLOBAL_VALUE = ("--endpoint", "--timeout", "--curve-key", "--server-key")
_GLOBAL_FLAGS = ("--json", "--prettify")


def split_globals(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Move global options written after the command to the front (``list --json``)."""
    front: list[str] = []
    rest: list[str] = []
    items = list(argv)
    i = 0
    while i < len(items):
        arg = items[i]
        if arg == "--":
            rest.extend(items[i:])  # the command's own arguments, -- included
            break
        name = arg.split("=", 1)[0]
        if name in _GLOBAL_FLAGS:
            front.append(arg)
        elif name in _GLOBAL_VALUE:
            front.append(arg)
            if "=" not in arg and i + 1 < len(items):
                front.append(items[i + 1])
                i += 1
        else:
            rest.append(arg)
        i += 1
    return front, rest
