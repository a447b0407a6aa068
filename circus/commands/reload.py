"""``reload``: replace the processes of one watcher, or of all, without downtime."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from circus.commands.base import WAITING, Command, Flag, Props, Reply, Scope, make_message
from circus.errors import ArgumentError
from circus.tiers import Tier

if TYPE_CHECKING:
    from circus.types import ArbiterAPI


class Reload(Command):
    """\
    Reload the arbiter or a watcher
    ===============================

    A graceful reload starts ``numprocesses`` new processes first and then stops the old
    ones, so the service never goes down; with ``--sequential`` the processes are
    replaced one at a time; a watcher with ``send_hup`` gets SIGHUP instead. With
    ``--terminate`` (``graceful: false``) it is a restart. A stopped watcher is started.
    Without a name every watcher reloads, highest ``priority`` first.

    ZMQ Message
    -----------

    ::

        {"command": "reload",
         "properties": {"name": "<name>", "graceful": true, "sequential": false,
                        "waiting": false}}

    Response: ``{"status": "ok"}``; with ``waiting`` and a name,
    ``{"status": "ok", "info": {"stopped": [...], "started": [...], "kept": [...]}}``.

    Command line
    ------------

    ::

        $ circusctl reload [<name>] [--terminate] [--waiting] [--sequential]
    """

    name = "reload"
    tier = Tier.OPERATOR
    usage = "reload [<name>] [--terminate] [--waiting] [--sequential]"
    flags = (
        WAITING,
        Flag("terminate", "stop the processes at once (a restart)"),
        Flag("sequential", "replace the processes one at a time"),
    )
    waitable = True

    def message(self, *args: str, **opts: Any) -> Props:
        if len(args) > 1:
            raise ArgumentError(f"usage: {self.usage}")
        props: dict[str, Any] = {}
        if args:
            props["name"] = args[0]
        if opts.pop("terminate", False):
            props["graceful"] = False
        props.update(opts)
        return make_message(self.name, **props)

    def validate(self, arbiter: ArbiterAPI, props: Props) -> None:
        super().validate(arbiter, props)
        if "name" in props:
            self.watcher(arbiter, props)
        self.bool_prop(props, "graceful", True)
        self.bool_prop(props, "sequential", False)
        self.bool_prop(props, "waiting")

    def scope(self, arbiter: ArbiterAPI, props: Props) -> Scope:
        if "name" not in props:
            return Scope.all()
        return Scope.of([self.watcher(arbiter, props).name])

    async def execute(self, arbiter: ArbiterAPI, props: Props) -> Reply | None:
        graceful = self.bool_prop(props, "graceful", True)
        sequential = self.bool_prop(props, "sequential", False)
        if "name" in props:
            watcher = self.watcher(arbiter, props)
            return {"info": await watcher.reload(graceful=graceful, sequential=sequential)}
        await arbiter.reload(graceful=graceful, sequential=sequential)
        return None
