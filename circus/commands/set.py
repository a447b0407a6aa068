"""``set``: change options of a watcher, live or through a graceful reload."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from circus.commands._options import check_depends, check_options, cli_known_key, cli_value
from circus.commands.base import WAITING, Command, Props, Reply, Scope, make_message
from circus.errors import ArgumentError, MessageError
from circus.limits import require_target
from circus.tiers import Tier

if TYPE_CHECKING:
    from circus.types import ArbiterAPI


class Set(Command):
    """\
    Set a watcher option
    ====================

    Changes one or more options of a watcher. Every key and value is checked before
    anything changes: an unknown key or a wrong type refuses the whole command, and so
    does a ``depends_on`` naming a watcher that does not exist, the watcher itself, or
    making a cycle. Then each key is applied and announced with a
    ``watcher.<name>.updated`` event.

    Options that only matter to circusd take effect at once: ``numprocesses`` (processes
    are started or the oldest stopped; over a ``max_processes`` it is refused, and a spawn
    burst in progress stops at it at once), ``warmup_delay``, ``graceful_timeout``,
    ``stop_signal``, ``stop_children``, ``send_hup``, ``respawn``, ``max_retry``,
    ``priority``, ``singleton``, ``autostart``, ``depends_on`` (it holds back the next
    start), ``hooks.<hook>``, and stream keys when the watcher already has that stream.
    Options that shape the processes themselves (``cmd``, ``args``, ``env``,
    ``working_dir``, ``uid``, ``gid``, ``shell``, ``copy_env``, ``rlimit_*``, ``max_age``
    ...) are applied with a graceful reload of a running watcher: new processes start
    with the new values, then the old ones stop.

    On the command line values are typed by key: numbers for numeric options, ``true``
    or ``false`` for switches, a name or number for ``stop_signal``, ``K=V,K2=V2`` for
    ``env``, ``NAME:PATH,...`` for ``hooks``, an empty value for an unlimited
    ``rlimit_*``. Over ZeroMQ send typed JSON values (``env`` as an object).

    ZMQ Message
    -----------

    ::

        {"command": "set",
         "properties": {"name": "<name>", "options": {"<key>": <value>, ...},
                        "waiting": false}}

    Response: ``{"status": "ok"}``, once applied with ``waiting``.

    Command line
    ------------

    ::

        $ circusctl set <name> <key> <value> [<key> <value> ...] [--waiting]
    """

    name = "set"
    tier = Tier.ADMIN
    usage = "set <name> <key> <value> [<key> <value> ...] [--waiting]"
    required = ("name",)
    free_words = True
    flags = (WAITING,)
    waitable = True

    def message(self, *args: str, **opts: Any) -> Props:
        if len(args) < 3 or len(args) % 2 != 1:
            raise ArgumentError(f"usage: {self.usage}")
        options: dict[str, Any] = {}
        for key, text in zip(args[1::2], args[2::2], strict=True):
            if not cli_known_key(key):
                raise ArgumentError(f"unknown key {key!r}")
            options[key] = cli_value(key, text)
        return make_message(self.name, name=args[0], options=options, **opts)

    def validate(self, arbiter: ArbiterAPI, props: Props) -> None:
        super().validate(arbiter, props)
        watcher = self.watcher(arbiter, props)
        if "options" not in props:
            raise MessageError("message invalid 'options' is missing")
        options = props["options"]
        if not isinstance(options, dict):
            raise MessageError("'options' property should be an object")
        check_depends(arbiter, watcher.name, check_options(options, watcher))
        self.bool_prop(props, "waiting")

    def scope(self, arbiter: ArbiterAPI, props: Props) -> Scope:
        return Scope.of([self.watcher(arbiter, props).name])

    def preempt(self, arbiter: ArbiterAPI, props: Props, targets: bool) -> int | None:
        """A new ``numprocesses``, checked against the limits, is the watcher's target at
        once (a spawn burst in progress stops at it); the other keys wait their turn. With
        a command ahead that writes the target at its turn, all of it waits (None)."""
        options = props["options"]  # checked by validate: numprocesses is an int if there
        target = options.get("numprocesses")
        if not isinstance(target, int):
            return None
        watcher = self.watcher(arbiter, props)
        watcher_max = options.get("max_processes", watcher.max_processes)
        require_target(arbiter, watcher.name, target,
                       watcher_max if isinstance(watcher_max, int) else None,
                       watcher.numprocesses)
        if not targets:
            return None
        watcher.numprocesses = target
        return target

    def rewrites(self, arbiter: ArbiterAPI, props: Props) -> bool:
        return "numprocesses" in props["options"]

    async def resume(self, arbiter: ArbiterAPI, props: Props, token: int) -> Reply | None:
        """``numprocesses`` was set at admission: the other keys, then the processes."""
        watcher = self.watcher(arbiter, props)
        rest = {k: v for k, v in props["options"].items() if k != "numprocesses"}
        check_depends(arbiter, watcher.name, rest)  # a watcher may have gone meanwhile
        if rest:
            await watcher.set_options(rest)  # typed and checked again against the watcher
        await watcher.set_numprocesses(watcher.numprocesses)
        return None

    async def execute(self, arbiter: ArbiterAPI, props: Props) -> Reply | None:
        if props["options"]:  # checked by validate; set_options types them again, against
            # the watcher as it is now (an earlier command may have changed it meanwhile)
            watcher = self.watcher(arbiter, props)
            check_depends(arbiter, watcher.name, props["options"])
            await watcher.set_options(props["options"])
        return None
