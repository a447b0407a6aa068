"""``incr``: add processes to a watcher."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from circus.commands.base import WAITING, Command, Props, Reply, Scope, make_message
from circus.errors import ArgumentError
from circus.limits import require_target
from circus.tiers import Tier

if TYPE_CHECKING:
    from circus.types import ArbiterAPI, WatcherAPI

# incr/decr admitted but not pre-empted (a command ahead writes the target at its turn),
# per watcher: their target is what the reply reports when the command is answered before
# it runs (no `waiting`).
_PENDING: weakref.WeakKeyDictionary[WatcherAPI, list[int]] = weakref.WeakKeyDictionary()


class IncrProc(Command):
    """\
    Increment the number of processes in a watcher
    ==============================================

    Adds ``<nb>`` processes (default 1) to the watcher. A singleton watcher is left
    unchanged. The reply always carries the new target, also without ``--waiting``;
    with ``--waiting`` it is sent once the processes have started. A target over the
    watcher's ``max_processes`` or ``[circus] max_processes`` is refused with an error
    naming the limit, and nothing is spawned. The new target reaches a spawn burst in
    progress at once.

    ZMQ Message
    -----------

    ::

        {"command": "incr", "properties": {"name": "<name>", "nb": <nb>, "waiting": false}}

    Response: ``{"status": "ok", "numprocesses": <n>}``; for a singleton watcher
    ``{"status": "ok", "numprocesses": <n>, "singleton": true}``.

    Command line
    ------------

    ::

        $ circusctl incr <name> [<nb>] [--waiting]
    """

    name = "incr"
    tier = Tier.OPERATOR
    usage = "incr <name> [<nb>] [--waiting]"
    required = ("name",)
    flags = (WAITING,)
    waitable = True
    sign = 1

    def message(self, *args: str, **opts: Any) -> Props:
        if len(args) not in (1, 2):
            raise ArgumentError(f"usage: {self.usage}")
        props: dict[str, Any] = {"name": args[0], **opts}
        if len(args) == 2:
            try:
                props["nb"] = int(args[1])
            except ValueError:
                raise ArgumentError(f"<nb> must be an integer, got {args[1]!r}") from None
        return make_message(self.name, **props)

    def validate(self, arbiter: ArbiterAPI, props: Props) -> None:
        super().validate(arbiter, props)
        self.watcher(arbiter, props)
        self.int_prop(props, "nb", default=1, minimum=0)
        self.bool_prop(props, "waiting")

    def scope(self, arbiter: ArbiterAPI, props: Props) -> Scope:
        return Scope.of([self.watcher(arbiter, props).name])

    def _delta(self, props: Props) -> int:
        return self.sign * self.int_prop(props, "nb", default=1, minimum=0)

    def preempt(self, arbiter: ArbiterAPI, props: Props, targets: bool) -> int | None:
        """The new target, checked against the limits, is the watcher's target at once,
        so a spawn burst in progress stops at it (or a lower one). With a command ahead
        that writes the target at its turn, the change waits its own turn (None)."""
        watcher = self.watcher(arbiter, props)
        if watcher.singleton:
            return None
        current, delta = self._target(watcher), self._delta(props)
        target = max(current + delta, 0)
        require_target(arbiter, watcher.name, target, watcher.max_processes, current)
        if not targets:
            _PENDING.setdefault(watcher, []).append(delta)
            return None
        watcher.numprocesses = target
        return target

    def rewrites(self, arbiter: ArbiterAPI, props: Props) -> bool:
        return not self.watcher(arbiter, props).singleton

    @staticmethod
    def _target(watcher: WatcherAPI) -> int:
        """The target once every incr/decr admitted before has run."""
        target = watcher.numprocesses
        for delta in _PENDING.get(watcher, ()):
            target = max(target + delta, 0)
        return target

    def admitted(self, arbiter: ArbiterAPI, props: Props) -> Reply:
        watcher = self.watcher(arbiter, props)
        if watcher.singleton:
            return {"numprocesses": watcher.numprocesses, "singleton": True}
        return {"numprocesses": self._target(watcher)}

    async def resume(self, arbiter: ArbiterAPI, props: Props, token: int) -> Reply:
        """The target was set at admission: bring the processes to the target now."""
        watcher = self.watcher(arbiter, props)
        return {"numprocesses": await watcher.set_numprocesses(watcher.numprocesses)}

    async def execute(self, arbiter: ArbiterAPI, props: Props) -> Reply:
        watcher = self.watcher(arbiter, props)
        if watcher.singleton:
            return {"numprocesses": watcher.numprocesses, "singleton": True}
        delta = self._delta(props)
        pending = _PENDING.get(watcher)
        if pending and delta in pending:
            pending.remove(delta)
        target = max(watcher.numprocesses + delta, 0)
        return {"numprocesses": await watcher.set_numprocesses(target)}

    def console_msg(self, reply: Reply) -> str:
        if reply.get("status") == "error":
            return super().console_msg(reply)
        if reply.get("singleton"):
            return "This watcher is a Singleton - not changing the number of processes"
        return str(reply.get("numprocesses", "ok"))
