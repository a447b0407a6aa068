"""``wait``: reply once a watcher is ready, or say why it will not be."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from circus.commands.base import Command, Flag, Props, Reply, make_message
from circus.errors import ArgumentError, MessageError
from circus.tiers import Tier

if TYPE_CHECKING:
    from circus.types import ArbiterAPI, WatcherAPI


def seconds(text: str) -> float:
    """``--timeout``'s value (circusctl's shell; on the command line circusctl takes it as
    its own ``--timeout``, which comes to the same)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 1e6:
        raise ArgumentError(f"--timeout takes a number of seconds above 0, got {text!r}")
    return value


TIMEOUT = Flag("timeout", "give up after this many seconds", True, None, None, seconds)


def timeout_prop(props: Props) -> float | None:
    """The ``timeout`` property: seconds above 0, or None (no limit)."""
    limit = Command.float_prop(props, "timeout")
    if limit is not None and not 0 < limit < 1e9:
        raise MessageError(f"'timeout' should be a number of seconds above 0, got {limit!r}")
    return limit


async def wait_ready(arbiter: ArbiterAPI, watchers: Sequence[WatcherAPI],
                     limit: float | None) -> float:
    """Wait until each of *watchers* is ready (circus/startorder.py); the seconds waited.
    One WaitError naming every watcher that will not be, or not in time."""
    import asyncio

    from circus.startorder import WaitError, of

    order = of(arbiter)
    outcomes = await asyncio.gather(*(order.wait_ready(w, limit) for w in watchers),
                                    return_exceptions=True)
    reasons = []
    for outcome in outcomes:
        if isinstance(outcome, WaitError):
            reasons.append(str(outcome))
        elif isinstance(outcome, BaseException):
            raise outcome
    if reasons:
        raise WaitError("; ".join(reasons))
    return max((o for o in outcomes if isinstance(o, float)), default=0.0)


class Wait(Command):
    """\
    Wait until a watcher is ready
    =============================

    Replies once the watcher ``<name>`` is active with every one of its processes ready
    (its ``ready`` check passed: at once with ``ready = spawned``), or with an error
    saying why not: it is ``fatal`` (with the reason), it is stopped (one left stopped
    because what it depends on failed says what), it was removed, circusd is quitting,
    or ``timeout`` seconds passed (the reason then says how far it got). A stopped
    watcher that a start is about to start (a ``start`` sent before the ``wait``, or a
    start waiting for its ``depends_on``) is waited for. A ``respawn = false`` watcher
    that has ended on its own with status 0 counts as ready.

    Without ``timeout`` the wait has no limit of its own. circusctl sends its
    ``--timeout`` (given before or after the command; 60 seconds when not given) and
    waits that long, plus 5 seconds, for the reply.

    ZMQ Message
    -----------

    ::

        {"command": "wait", "properties": {"name": "<name>", "timeout": <seconds>}}

    Response: ``{"status": "ok", "waited": <seconds>}``; otherwise an error reply whose
    ``reason`` says why.

    Command line
    ------------

    ::

        $ circusctl wait <name> [--timeout <seconds>]

    Exit status 0 once the watcher is ready; 3, with the reason on stderr, when it will
    not be or not in time.
    """

    name = "wait"
    tier = Tier.READER
    usage = "wait <name> [--timeout <seconds>]"
    required = ("name",)
    flags = (TIMEOUT,)

    def message(self, *args: str, **opts: Any) -> Props:
        if len(args) != 1:
            raise ArgumentError(f"usage: {self.usage}")
        return make_message(self.name, name=args[0], **opts)

    def validate(self, arbiter: ArbiterAPI, props: Props) -> None:
        super().validate(arbiter, props)
        self.watcher(arbiter, props)
        timeout_prop(props)

    async def execute(self, arbiter: ArbiterAPI, props: Props) -> Reply:
        watcher = self.watcher(arbiter, props)
        waited = await wait_ready(arbiter, [watcher], timeout_prop(props))
        return {"waited": round(waited, 3)}
