"""``numwatchers``: how many watchers there are."""

from __future__ import annotations

from typing import TYPE_CHECKING

from circus.commands.base import Command, Props, Reply
from circus.tiers import Tier

if TYPE_CHECKING:
    from circus.types import ArbiterAPI


class NumWatchers(Command):
    """\
    Get the number of watchers
    ==========================

    ZMQ Message
    -----------

    ::

        {"command": "numwatchers"}

    Response: ``{"status": "ok", "numwatchers": <n>}``.

    Command line
    ------------

    ::

        $ circusctl numwatchers
    """

    name = "numwatchers"
    tier = Tier.READER
    usage = "numwatchers"

    inline = True  # reads state only: answered without a task

    def answer(self, arbiter: ArbiterAPI, props: Props) -> Reply:
        return {"numwatchers": arbiter.numwatchers()}

    def console_msg(self, reply: Reply) -> str:
        if reply.get("status") == "error":
            return super().console_msg(reply)
        return str(reply.get("numwatchers"))
