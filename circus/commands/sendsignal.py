"""``signal``: send a signal to the processes of a watcher, or to their children."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from circus.commands.base import Command, Flag, Props, Reply, make_message
from circus.errors import ArgumentError, MessageError
from circus.tiers import Tier

if TYPE_CHECKING:
    from circus.types import ArbiterAPI


def _pid(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ArgumentError(f"a pid is a number, got {text!r}") from None


class Signal(Command):
    """\
    Send a signal
    =============

    Sends ``<signum>`` to every process of the watcher, or to the process ``<pid>`` only.
    A signal is a number or a name, with or without ``SIG``, in any case (``9``,
    ``KILL``, ``sighup``, ``SIGRTMIN+1``; ``0`` only checks that the processes exist).
    ``children`` sends it to the direct children of each target instead; ``childpid``
    to that one child of ``<pid>``; ``recursive`` to each target and all its
    descendants. A ``<pid>`` that is not a process of the watcher is ignored, as in
    Circus. The signal itself publishes no event; with a ``before_signal`` or
    ``after_signal`` hook, each hook run publishes ``hook_success`` or ``hook_failure``,
    and a process that dies of the signal is reaped as usual.

    ZMQ Message
    -----------

    ::

        {"command": "signal",
         "properties": {"name": "<name>", "signum": <signum>, "pid": <pid>,
                        "childpid": <childpid>, "children": false, "recursive": false}}

    Response: ``{"status": "ok"}``.

    Command line
    ------------

    ::

        $ circusctl signal <name> [<pid>] <signum> [--children] [--recursive]
              [--childpid <childpid>]
    """

    name = "signal"
    tier = Tier.OPERATOR
    usage = "signal <name> [<pid>] <signum> [--children] [--recursive] [--childpid <childpid>]"
    required = ("name", "signum")
    flags = (
        Flag("children", "signal the children of the processes instead"),
        Flag("recursive", "signal the processes and all their descendants"),
        Flag("childpid", "signal this child of <pid>", True, convert=_pid),
    )

    def message(self, *args: str, **opts: Any) -> Props:
        if len(args) == 2:
            return make_message(self.name, name=args[0], signum=args[1], **opts)
        if len(args) == 3:
            return make_message(self.name, name=args[0], pid=_pid(args[1]), signum=args[2],
                                **opts)
        raise ArgumentError(f"usage: {self.usage}")

    def validate(self, arbiter: ArbiterAPI, props: Props) -> None:
        super().validate(arbiter, props)
        self.watcher(arbiter, props)
        self.signal_prop(props)
        if "pid" in props:
            self.int_prop(props, "pid")
        if "childpid" in props:
            if "pid" not in props:
                raise MessageError("cannot specify childpid without pid")
            self.int_prop(props, "childpid")
        self.bool_prop(props, "children")
        self.bool_prop(props, "recursive")

    async def execute(self, arbiter: ArbiterAPI, props: Props) -> Reply | None:
        watcher = self.watcher(arbiter, props)
        pid = self.int_prop(props, "pid") if "pid" in props else None
        childpid = self.int_prop(props, "childpid") if "childpid" in props else None
        try:
            await watcher.signal_processes(
                self.signal_prop(props),
                pid=pid,
                childpid=childpid,
                children=self.bool_prop(props, "children"),
                recursive=self.bool_prop(props, "recursive"),
            )
        except ValueError as exc:
            raise MessageError(str(exc)) from None
        return None
