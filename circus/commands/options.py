"""``options``: every option of a watcher."""

from __future__ import annotations

from typing import TYPE_CHECKING

from circus.commands.base import Props, Reply, WatcherQuery, format_options
from circus.commands.get import wire_options
from circus.tiers import Tier

if TYPE_CHECKING:
    from circus.types import ArbiterAPI


class Options(WatcherQuery):
    """\
    Get the options of a watcher
    ============================

    Every option of the watcher with its current value, including the free-form keys of
    its configuration section (``flapping.attempts`` ...).

    ZMQ Message
    -----------

    ::

        {"command": "options", "properties": {"name": "<name>"}}

    Response: ``{"status": "ok", "options": {"<key>": <value>, ...}}``.

    Command line
    ------------

    ::

        $ circusctl options <name>
    """

    name = "options"
    tier = Tier.READER
    usage = "options <name>"
    def answer(self, arbiter: ArbiterAPI, props: Props) -> Reply:
        return {"options": wire_options(self.watcher(arbiter, props).options())}

    def console_msg(self, reply: Reply) -> str:
        if reply.get("status") == "error":
            return super().console_msg(reply)
        return format_options(reply.get("options", {}))
