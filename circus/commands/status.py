"""``status``: the state of one watcher, or of all."""

from __future__ import annotations

from typing import TYPE_CHECKING

from circus.commands.base import OptionalWatcherQuery, Props, Reply

if TYPE_CHECKING:
    from circus.types import ArbiterAPI


class Status(OptionalWatcherQuery):
    """\
    Get the status of a watcher or all watchers
    ===========================================

    A state is one of ``active``, ``stopped``, ``starting``, ``stopping``. For one watcher
    the state replaces ``"ok"`` in the reply's ``status`` field, as in Circus.

    ZMQ Message
    -----------

    ::

        {"command": "status", "properties": {"name": "<name>"}}

    Response: ``{"status": "active"}`` for one watcher,
    ``{"status": "ok", "statuses": {"<name>": "<state>", ...}}`` for all.

    Command line
    ------------

    ::

        $ circusctl status [<name>]
    """

    name = "status"
    usage = "status [<name>]"

    def answer(self, arbiter: ArbiterAPI, props: Props) -> Reply:
        if "name" in props:
            return {"status": self.watcher(arbiter, props).status}
        return {"statuses": {w.name: w.status for w in arbiter.watchers}}

    def console_msg(self, reply: Reply) -> str:
        if reply.get("status") == "error":
            return super().console_msg(reply)
        if "statuses" in reply:
            return "\n".join(f"{n}: {s}" for n, s in sorted(reply["statuses"].items()))
        return str(reply.get("status"))
