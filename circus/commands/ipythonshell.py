"""``ipython``: Circus's debugging shell inside circusd, which this circusd does not offer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from circus.commands.base import Command, Props, Reply
from circus.tiers import Tier

if TYPE_CHECKING:
    from circus.types import ArbiterAPI


class IPythonShell(Command):
    """\
    Create a shell into circusd
    ===========================

    Circus could start an IPython kernel inside circusd for debugging. This circusd does
    not: the reply says so with ``shell`` false, the answer Circus gives when IPython is
    not installed, and nothing is started.

    ZMQ Message
    -----------

    ::

        {"command": "ipython"}

    Response: ``{"status": "ok", "shell": false, "msg": "<why>"}``.

    Command line
    ------------

    ::

        $ circusctl ipython
    """

    name = "ipython"
    tier = Tier.ADMIN
    usage = "ipython"

    async def execute(self, arbiter: ArbiterAPI, props: Props) -> Reply:
        return {"shell": False,
                "msg": "this circusd does not start IPython kernels; use circusctl"}

    def console_msg(self, reply: Reply) -> str:
        if reply.get("status") == "error":
            return super().console_msg(reply)
        return str(reply.get("msg") or "ok")
