"""``add``: create a watcher at runtime."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from circus.commands._options import check_depends, check_options
from circus.commands.base import WAITING, Command, Flag, Props, Reply, Scope, make_message
from circus.errors import AlreadyExistsError, ArgumentError, CommandError, MessageError
from circus.limits import require_target
from circus.options import WATCHER_OPTIONS
from circus.tiers import Tier
from circus.util.accounts import user_id

if TYPE_CHECKING:
    from circus.types import ArbiterAPI


class AddWatcher(Command):
    """\
    Add a watcher
    =============

    Creates the watcher ``<name>`` running ``<cmd>``. It is created stopped unless
    ``start`` is true. ``args`` is a list of arguments or a string (split like a shell).
    ``options`` takes any watcher option (``numprocesses``, ``env``, ``rlimit_nofile``,
    ``stdout_stream.class``, ``hooks.after_start`` ...); each is checked before the
    watcher is created, and a bad one refuses the whole command (a ``depends_on`` must
    name watchers that exist). With ``start`` and without ``waiting`` the reply is sent
    once the watcher exists, before its processes have started; with ``depends_on`` they
    start once what it names is there, as at circusd's start.

    ZMQ Message
    -----------

    ::

        {"command": "add",
         "properties": {"name": "<name>", "cmd": "<cmd>", "args": ["<arg>", ...],
                        "options": {"<key>": <value>, ...}, "start": false,
                        "waiting": false}}

    Response: ``{"status": "ok"}``; with ``start`` and ``waiting``,
    ``{"status": "ok", "started": [pids], "kept": []}``. A name already in use is refused
    (errno 5).

    Command line
    ------------

    ::

        $ circusctl add [--start] [--waiting] <name> <cmd> [<arg> ...]

    The words after ``<name>`` are joined with spaces into ``cmd``; quote them to keep
    an argument with spaces in one piece. Options of the command itself may follow
    (``add web python -m http.server --bind ::1``); after ``--`` every word belongs to the
    command (``add web -- prog --start``).
    """

    name = "add"
    tier = Tier.ADMIN
    usage = "add [--start] [--waiting] <name> <cmd> [<arg> ...]"
    required = ("name", "cmd")
    free_words = True
    flags = (Flag("start", "start the watcher at once"), WAITING)

    def message(self, *args: str, **opts: Any) -> Props:
        if len(args) < 2:
            raise ArgumentError(f"usage: {self.usage}")
        return make_message(self.name, name=args[0], cmd=" ".join(args[1:]), **opts)

    def validate(self, arbiter: ArbiterAPI, props: Props) -> None:
        super().validate(arbiter, props)
        name = self.str_prop(props, "name")
        if not name or not name.strip():
            raise MessageError("'name' should not be empty")
        if any(w.name.lower() == name.lower() for w in arbiter.watchers):
            raise AlreadyExistsError(f"a watcher named {name!r} already exists")
        cmd = self.str_prop(props, "cmd")
        if not cmd or not cmd.strip():
            raise MessageError("'cmd' should not be empty")
        args = props.get("args")
        if args is not None and not isinstance(args, str) and not (
            isinstance(args, list) and all(isinstance(a, str | int | float) for a in args)
        ):
            raise MessageError(f"'args' should be a string or a list of strings, got {args!r}")
        options = props.get("options", {})
        if options is None:
            options = {}
        if not isinstance(options, dict):
            raise MessageError("'options' property should be an object")
        checked = check_options(options)
        check_depends(arbiter, name, checked)
        self._check_owner(arbiter, checked)
        self._check_limits(arbiter, name, checked)
        self.bool_prop(props, "start")
        self.bool_prop(props, "waiting")

    @staticmethod
    def _check_limits(arbiter: ArbiterAPI, name: str, checked: dict[str, Any]) -> None:
        """The new watcher's numprocesses within its max_processes and [circus] max_processes."""
        default = WATCHER_OPTIONS["numprocesses"].default
        target = checked.get("numprocesses", default)
        watcher_max = checked.get("max_processes")
        require_target(arbiter, name, target if isinstance(target, int) else default,
                       watcher_max if isinstance(watcher_max, int) else None)

    @staticmethod
    def _check_owner(arbiter: ArbiterAPI, checked: dict[str, Any]) -> None:
        """With an ipc endpoint owned by a user, new watchers must run as that user."""
        owner = getattr(arbiter, "endpoint_owner", None)
        if owner is None or not str(arbiter.endpoint).startswith("ipc://"):
            return

        def uid_of(user: Any) -> int | None:
            if user is None:
                return None
            try:
                return user_id(user if isinstance(user, int) else str(user))
            except ValueError:
                return None

        wanted = uid_of(owner)
        given = uid_of(checked.get("uid"))
        if given is None and os.getuid() == wanted:
            return
        if given != wanted:
            raise MessageError(
                f"the control endpoint belongs to {owner!r}: 'options.uid' must be that user"
            )

    def scope(self, arbiter: ArbiterAPI, props: Props) -> Scope:
        names = [props["name"]]
        text = (props.get("options") or {}).get("depends_on")
        if self.bool_prop(props, "start") and isinstance(text, str) and text.strip():
            from circus import depends  # what it needs may be started along

            graph = {**depends.of(arbiter.watchers), props["name"]: text}
            names += depends.dependencies(graph, props["name"])
        return Scope.of(names)

    async def execute(self, arbiter: ArbiterAPI, props: Props) -> Reply | None:
        options = check_options(props.get("options") or {})
        self._check_limits(arbiter, props["name"], options)  # another add may have run
        from circus.keys import group

        kwargs = group(options)
        if props.get("args") is not None:
            kwargs["args"] = props["args"]
        try:
            watcher = await arbiter.add_watcher(props["name"], props["cmd"], start=False,
                                                **kwargs)
        except (ValueError, TypeError, ImportError) as exc:
            raise MessageError(f"cannot create watcher {props['name']!r}: {exc}") from None
        if self.bool_prop(props, "start"):
            from circus.startorder import of

            # after what it depends on, as any start (circus/startorder.py)
            start = of(arbiter).start([watcher])
            if self.bool_prop(props, "waiting"):
                run = await start
                if watcher.name.lower() in run.blocked:
                    raise CommandError(f"{watcher.name} was added but not started: "
                                       f"{run.blocked[watcher.name.lower()]}")
                return dict(run.results[watcher.name.lower()])  # {"started": [...], ...}
            arbiter.background(start, name=f"start-{watcher.name}")
        return None
