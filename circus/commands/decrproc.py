"""``decr``: remove processes from a watcher."""

from __future__ import annotations

from circus.commands.incrproc import IncrProc
from circus.tiers import Tier


class DecrProc(IncrProc):
    """\
    Decrement the number of processes in a watcher
    ==============================================

    Stops ``<nb>`` processes (default 1) of the watcher, the oldest first. A singleton
    watcher is left unchanged. The reply always carries the new target, also without
    ``--waiting``; with ``--waiting`` it is sent once the processes have stopped.

    ZMQ Message
    -----------

    ::

        {"command": "decr", "properties": {"name": "<name>", "nb": <nb>, "waiting": false}}

    Response: ``{"status": "ok", "numprocesses": <n>}``.

    Command line
    ------------

    ::

        $ circusctl decr <name> [<nb>] [--waiting]
    """

    name = "decr"
    tier = Tier.OPERATOR
    usage = "decr <name> [<nb>] [--waiting]"
    sign = -1
