"""``dstats``: CPU and memory of circusd itself."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from circus.commands.base import Command, Props, Reply
from circus.commands.stats import stats_table
from circus.tiers import Tier

if TYPE_CHECKING:
    import psutil

    from circus.types import ArbiterAPI


class Dstats(Command):
    """\
    Get circusd stats
    =================

    The same figures as ``stats`` gives for a process, for the circusd process itself.

    ZMQ Message
    -----------

    ::

        {"command": "dstats"}

    Response: ``{"status": "ok", "info": {"pid": <pid>, "cpu": ..., "mem": ..., ...}}``.

    Command line
    ------------

    ::

        $ circusctl dstats
    """

    name = "dstats"
    tier = Tier.READER
    usage = "dstats"

    def __init__(self) -> None:
        # one psutil object, so that the CPU percentage is measured between two calls
        self._me: psutil.Process | None = None

    def _info(self) -> dict[str, Any]:
        import psutil  # daemon side only: circusctl never pays for it

        from circus.process import process_info

        if self._me is None or self._me.pid != os.getpid():
            self._me = psutil.Process(os.getpid())
        return process_info(self._me, with_children=False)

    async def execute(self, arbiter: ArbiterAPI, props: Props) -> Reply:
        import asyncio

        return {"info": await asyncio.to_thread(self._info)}

    def console_msg(self, reply: Reply) -> str:
        if reply.get("status") == "error":
            return super().console_msg(reply)
        return "\n".join(["Main Process:", *stats_table([reply.get("info")], "  ")])
