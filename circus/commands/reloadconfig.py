"""``reloadconfig``: apply the configuration file again, as a difference."""

from __future__ import annotations

from typing import TYPE_CHECKING

from circus.commands.base import WAITING, Command, Props, Reply, Scope
from circus.errors import CommandError
from circus.tiers import Tier

if TYPE_CHECKING:
    from circus.types import ArbiterAPI


class ReloadConfig(Command):
    """\
    Reload the configuration file
    =============================

    Reads the configuration file again and applies the difference with what runs:
    unchanged watchers are not touched; a watcher whose only change is
    ``numprocesses`` is resized in place; other changed watchers are reloaded
    gracefully, highest ``priority`` first; new watchers are created (and started unless
    ``autostart = false``); watchers no longer in the file are stopped and removed. A file
    that cannot be used is refused whole, and nothing changes. With ``waiting`` the
    reply is sent once everything is applied and lists the watchers by change.

    ZMQ Message
    -----------

    ::

        {"command": "reloadconfig", "properties": {"waiting": false}}

    Response: ``{"status": "ok"}``; with ``waiting``
    ``{"status": "ok", "changes": {"added": [...], "removed": [...], "changed": [...],
    "resized": [...]}}``.

    Command line
    ------------

    ::

        $ circusctl reloadconfig [--waiting]
    """

    name = "reloadconfig"
    tier = Tier.ADMIN
    usage = "reloadconfig [--waiting]"
    flags = (WAITING,)
    waitable = True

    def validate(self, arbiter: ArbiterAPI, props: Props) -> None:
        super().validate(arbiter, props)
        self.bool_prop(props, "waiting")
        path = getattr(arbiter, "config_file", None)
        if not path:
            raise CommandError("circusd was not started from a configuration file")
        from circus.config import load_config

        load_config(path)  # a ConfigError here refuses the command before anything runs

    def scope(self, arbiter: ArbiterAPI, props: Props) -> Scope:
        return Scope.all()

    def rewrites(self, arbiter: ArbiterAPI, props: Props) -> bool:
        return True  # numprocesses from the file

    async def execute(self, arbiter: ArbiterAPI, props: Props) -> Reply:
        return {"changes": await arbiter.reload_config()}
