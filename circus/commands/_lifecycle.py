"""Shared client side of start, stop and restart: ``[name] [--waiting] [--match MODE]``."""

from __future__ import annotations

from typing import Any

from circus.commands.base import MATCH, WAITING, Command, Props, make_message
from circus.errors import ArgumentError


class LifecycleCommand(Command):
    flags = (WAITING, MATCH)
    waitable = True

    def message(self, *args: str, **opts: Any) -> Props:
        if len(args) > 1:
            raise ArgumentError(f"usage: {self.name} [<name>] [--waiting] [--match MODE]")
        props: dict[str, Any] = dict(opts)
        if args:
            props["name"] = args[0]
        return make_message(self.name, **props)
