"""``quit``: stop every watcher and exit circusd."""

from __future__ import annotations

from typing import TYPE_CHECKING

from circus.commands.base import WAITING, Command, Props, Reply
from circus.tiers import Tier

if TYPE_CHECKING:
    from circus.types import ArbiterAPI


class Quit(Command):
    """\
    Quit the arbiter immediately
    ============================

    Every watcher is stopped (``stop_signal``, then SIGKILL after ``graceful_timeout``),
    the sockets are closed, the pidfile removed, and circusd exits with status 0. With
    ``--waiting`` the reply is sent once everything has stopped.

    ZMQ Message
    -----------

    ::

        {"command": "quit", "properties": {"waiting": false}}

    Response: ``{"status": "ok"}``.

    Command line
    ------------

    ::

        $ circusctl quit [--waiting]
    """

    name = "quit"
    tier = Tier.ADMIN
    usage = "quit [--waiting]"
    flags = (WAITING,)

    def validate(self, arbiter: ArbiterAPI, props: Props) -> None:
        super().validate(arbiter, props)
        self.bool_prop(props, "waiting")

    def preempt(self, arbiter: ArbiterAPI, props: Props, targets: bool) -> bool:
        """The quit starts as the request is read: no watcher spawns from then on."""
        arbiter.request_quit()
        return True

    async def execute(self, arbiter: ArbiterAPI, props: Props) -> Reply | None:
        arbiter.request_quit()
        if self.bool_prop(props, "waiting"):
            await arbiter.wait_stopped()
        return None
