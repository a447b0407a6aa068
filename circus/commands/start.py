"""``start``: start one watcher, the watchers a pattern matches, or all."""

from __future__ import annotations

from typing import TYPE_CHECKING

from circus.commands._lifecycle import LifecycleCommand
from circus.commands.base import Props, Reply

if TYPE_CHECKING:
    from circus.types import ArbiterAPI


class Start(LifecycleCommand):
    """\
    Start the arbiter or a watcher
    ==============================

    Without a name every watcher starts, highest ``priority`` first. With a name, the
    watchers it matches start (``--match`` glob by default, or simple or regex). On an
    active watcher only missing processes are spawned.

    ZMQ Message
    -----------

    ::

        {"command": "start",
         "properties": {"name": "<name>", "waiting": false, "match": "glob"}}

    Response: ``{"status": "ok"}``; with ``waiting`` and one watcher,
    ``{"status": "ok", "info": {"started": [pids], "kept": [pids]}}``.

    Command line
    ------------

    ::

        $ circusctl start [<name>] [--waiting] [--match simple|glob|regex]
    """

    name = "start"
    usage = "start [<name>] [--waiting] [--match simple|glob|regex]"

    async def execute(self, arbiter: ArbiterAPI, props: Props) -> Reply | None:
        if "name" not in props:
            await arbiter.start_watchers()
            return None
        watchers = self.match_watchers(arbiter, props)
        results = [await w.start() for w in watchers]
        return {"info": results[0]} if len(watchers) == 1 else None
