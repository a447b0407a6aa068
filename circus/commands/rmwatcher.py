"""``rm``: remove a watcher."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from circus.commands.base import WAITING, Command, Flag, Props, Reply, Scope, make_message
from circus.errors import ArgumentError, CommandError
from circus.tiers import Tier

if TYPE_CHECKING:
    from circus.types import ArbiterAPI, WatcherAPI


class RmWatcher(Command):
    """\
    Remove a watcher
    ================

    Removes the watcher and stops its processes gracefully (``stop_signal``, then SIGKILL
    after ``graceful_timeout``). With ``nostop`` the processes are left running and
    forgotten. With ``waiting`` the reply is sent once the processes have stopped.

    A watcher that others name in their ``depends_on`` is not removed: the error names
    them (remove them first, or ``set`` their ``depends_on``).

    ZMQ Message
    -----------

    ::

        {"command": "rm",
         "properties": {"name": "<name>", "nostop": false, "waiting": false}}

    Response: ``{"status": "ok"}``.

    Command line
    ------------

    ::

        $ circusctl rm <name> [--nostop] [--waiting]
    """

    name = "rm"
    tier = Tier.ADMIN
    usage = "rm <name> [--nostop] [--waiting]"
    required = ("name",)
    flags = (Flag("nostop", "leave the processes running"), WAITING)
    waitable = True

    def message(self, *args: str, **opts: Any) -> Props:
        if len(args) != 1:
            raise ArgumentError(f"usage: {self.usage}")
        return make_message(self.name, name=args[0], **opts)

    def validate(self, arbiter: ArbiterAPI, props: Props) -> None:
        super().validate(arbiter, props)
        self._refuse_if_needed(arbiter, self.watcher(arbiter, props))
        self.bool_prop(props, "nostop")
        self.bool_prop(props, "waiting")

    @staticmethod
    def _refuse_if_needed(arbiter: ArbiterAPI, watcher: WatcherAPI) -> None:
        """CommandError if another watcher depends on *watcher*."""
        from circus import depends

        needing = depends.direct_dependents(depends.of(arbiter.watchers), watcher.name)
        if needing:
            one = len(needing) == 1
            raise CommandError(
                f"cannot remove {watcher.name}: {', '.join(needing)} "
                f"{'depends' if one else 'depend'} on it (depends_on); remove "
                f"{'it' if one else 'them'} first or change {'its' if one else 'their'} "
                "depends_on")

    def scope(self, arbiter: ArbiterAPI, props: Props) -> Scope:
        return Scope.of([self.watcher(arbiter, props).name])

    def preempt(self, arbiter: ArbiterAPI, props: Props, targets: bool) -> WatcherAPI:
        """The watcher spawns nothing more from now on, even while ``rm`` waits its turn,
        and a start of it waiting for its ``depends_on`` gives up."""
        from circus.startorder import of

        watcher = self.watcher(arbiter, props)
        watcher.halt_spawning()
        of(arbiter).halt([watcher.name])
        return watcher

    async def resume(self, arbiter: ArbiterAPI, props: Props, token: WatcherAPI
                     ) -> Reply | None:
        from circus.startorder import of

        try:
            return await self.execute(arbiter, props)
        finally:
            token.resume_spawning()
            of(arbiter).resume([token.name])

    async def execute(self, arbiter: ArbiterAPI, props: Props) -> Reply | None:
        watcher = self.watcher(arbiter, props)
        self._refuse_if_needed(arbiter, watcher)  # a set may have come in between
        await arbiter.rm_watcher(watcher.name, nostop=self.bool_prop(props, "nostop"))
        return None
