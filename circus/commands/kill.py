"""``kill``: stop processes of a watcher gracefully, leaving the watcher active."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from circus.commands.base import WAITING, Command, Flag, Props, Reply, make_message
from circus.errors import ArgumentError, MessageError, NotFoundError
from circus.tiers import Tier
from circus.util.convert import to_float, to_signum

if TYPE_CHECKING:
    from circus.types import ArbiterAPI


class Kill(Command):
    """\
    Kill processes
    ==============

    Stops the process ``<pid>`` of the watcher, or all its processes, the way ``stop``
    does: ``signum`` (default: the watcher's ``stop_signal``), then SIGKILL after
    ``graceful_timeout`` seconds (default: the watcher's). The watcher stays active, so
    the processes are replaced. With ``waiting`` the reply is sent once they have exited.

    ZMQ Message
    -----------

    ::

        {"command": "kill",
         "properties": {"name": "<name>", "pid": <pid>, "signum": <signum>,
                        "graceful_timeout": <seconds>, "waiting": false}}

    Response: ``{"status": "ok"}``.

    Command line
    ------------

    ::

        $ circusctl kill <name> [<pid>] [--signum <signum>] [--graceful_timeout <seconds>]
              [--waiting]
    """

    name = "kill"
    tier = Tier.OPERATOR
    usage = "kill <name> [<pid>] [--signum <signum>] [--graceful_timeout <seconds>] [--waiting]"
    required = ("name",)
    flags = (
        Flag("signum", "the signal that asks the processes to stop", True),
        Flag("graceful_timeout", "seconds before SIGKILL", True, convert=to_float),
        WAITING,
    )
    waitable = True

    def message(self, *args: str, **opts: Any) -> Props:
        if len(args) not in (1, 2):
            raise ArgumentError(f"usage: {self.usage}")
        if "signum" in opts:
            try:
                opts["signum"] = to_signum(opts["signum"])
            except ValueError as exc:
                raise ArgumentError(str(exc)) from None
        props: dict[str, Any] = {"name": args[0], **opts}
        if len(args) == 2:
            try:
                props["pid"] = int(args[1])
            except ValueError:
                raise ArgumentError(f"a pid is a number, got {args[1]!r}") from None
        return make_message(self.name, **props)

    def validate(self, arbiter: ArbiterAPI, props: Props) -> None:
        super().validate(arbiter, props)
        watcher = self.watcher(arbiter, props)
        if "pid" in props:
            pid = self.int_prop(props, "pid")
            if watcher.get_process(pid) is None:
                raise NotFoundError(f"process {pid} not found in {watcher.name!r}")
        if props.get("signum") is not None:
            self.signal_prop(props)
        timeout = self.float_prop(props, "graceful_timeout")
        if timeout is not None and timeout < 0:
            raise MessageError(f"'graceful_timeout' must not be negative, got {timeout}")
        self.bool_prop(props, "waiting")

    async def execute(self, arbiter: ArbiterAPI, props: Props) -> Reply | None:
        watcher = self.watcher(arbiter, props)
        pid = self.int_prop(props, "pid") if "pid" in props else None
        signum = self.signal_prop(props) if props.get("signum") is not None else None
        try:
            await watcher.kill(pid, signum, self.float_prop(props, "graceful_timeout"))
        except KeyError:
            raise NotFoundError(f"process {pid} not found in {watcher.name!r}") from None
        return None
