"""``listen``: print the events circusd publishes (a circusctl command only)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from circus.commands.base import Command, Props, Reply, make_message
from circus.errors import MessageError

if TYPE_CHECKING:
    from circus.types import ArbiterAPI


class Listen(Command):
    """\
    Subscribe to a watcher event
    ============================

    Prints the events circusd publishes, one line each as they come,
    ``<topic>: <payload>``, e.g. ``watcher.web.spawn: {"process_pid": 4242, "time":
    ...}`` (with ``--json``, one JSON object ``{"topic": ..., "payload": ...}`` per line).
    Topics are prefixes: ``watcher.web.`` gives every event of ``web``; no topic gives
    everything. Stop with Ctrl-C.

    circusctl finds the events endpoint by asking the daemon at ``--endpoint``
    (``globaloptions``); when ``--endpoint`` does not answer commands it is taken to be
    the events endpoint itself, as in Circus.

    ZMQ Message
    -----------

    Not a command of the control socket (errno 3): subscribe a ZeroMQ SUB socket to the
    ``pubsub_endpoint``; each event is two frames, the topic and a JSON object.

    Command line
    ------------

    ::

        $ circusctl listen [<topic> ...]
    """

    name = "listen"
    usage = "listen [<topic> ...]"

    def message(self, *args: str, **opts: Any) -> Props:
        return make_message(self.name, topics=list(args))

    def validate(self, arbiter: ArbiterAPI, props: Props) -> None:
        raise MessageError("invalid message. use a pub/sub socket")

    async def execute(self, arbiter: ArbiterAPI, props: Props) -> Reply | None:
        raise MessageError("invalid message. use a pub/sub socket")
