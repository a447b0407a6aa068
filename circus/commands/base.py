"""The command base class and the reply envelopes.

A command is one class holding both halves: the client side turns ``circusctl`` arguments
into a message and a reply into text; the daemon side validates the properties and runs.
The class docstring is the user documentation, printed by ``circusctl help NAME``.
"""

from __future__ import annotations

import json
import os
import textwrap
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from circus.errors import ArgumentError, Errno, MessageError, NotFoundError
from circus.tiers import Tier
from circus.util.convert import to_signum

if TYPE_CHECKING:
    from circus.types import ArbiterAPI, WatcherAPI

Props = dict[str, Any]
Reply = dict[str, Any]


def ok_reply(fields: Mapping[str, Any] | None = None, msg_id: Any = None) -> Reply:
    reply: Reply = {"status": "ok"}
    if fields:
        reply.update(fields)
    reply["time"] = time.time()
    reply["id"] = msg_id
    return reply


def error_reply(reason: str, errno: int = Errno.NOT_SPECIFIED, msg_id: Any = None) -> Reply:
    return {
        "status": "error",
        "reason": reason,
        "tb": None,
        "time": time.time(),
        "errno": int(errno),
        "id": msg_id,
    }


def make_message(command: str, **props: Any) -> Props:
    return {"id": os.urandom(16).hex(), "command": command, "properties": props}


def cast_message(command: str, **props: Any) -> Props:
    msg = make_message(command, **props)
    msg["msg_type"] = "cast"
    return msg


class Flag(NamedTuple):
    """A circusctl option of a command: ``--waiting``, ``--match glob`` …"""

    name: str
    help: str
    takes_value: bool = False
    default: Any = None
    choices: tuple[str, ...] | None = None
    convert: Any = None


class Scope(NamedTuple):
    """What a command changes: every watcher, or the watchers named (lower-cased).

    Commands whose scopes overlap run one after the other, in the order they arrived.
    """

    everything: bool
    names: frozenset[str]

    @classmethod
    def all(cls) -> Scope:
        return cls(True, frozenset())

    @classmethod
    def of(cls, names: Iterable[str]) -> Scope:
        return cls(False, frozenset(n.lower() for n in names))

    def overlaps(self, other: Scope) -> bool:
        return self.everything or other.everything or bool(self.names & other.names)


WAITING = Flag("waiting", "reply once the operation has finished")
MATCH = Flag("match", "how NAME selects watchers", True, "glob", ("simple", "glob", "regex"))


class Command:
    """Base class of every command."""

    name: ClassVar[str] = ""
    # who may run it (circus/tiers.py); every command class names its own, and a command
    # that forgets is admin-only
    tier: ClassVar[Tier] = Tier.ADMIN
    required: ClassVar[tuple[str, ...]] = ()
    flags: ClassVar[tuple[Flag, ...]] = ()
    waitable: ClassVar[bool] = False  # without `waiting`, reply at once and run in background
    # inline: the command only reads state; the controller calls answer() right where the
    # request is read, without a task (the quickest round trip)
    inline: ClassVar[bool] = False
    usage: ClassVar[str] = ""  # circusctl synopsis, for errors and completion
    free_words: ClassVar[bool] = False  # circusctl: unknown --words are arguments
    desc: ClassVar[str] = ""
    short: ClassVar[str] = ""

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        doc = textwrap.dedent(cls.__doc__ or "").strip("\n")
        cls.desc = doc
        lines = [line for line in doc.splitlines() if line.strip()]
        cls.short = lines[0].strip() if lines else ""

    # -- client side -------------------------------------------------------------------

    def message(self, *args: str, **opts: Any) -> Props:
        """circusctl arguments -> message. The default takes no positional argument."""
        if args:
            raise ArgumentError(f"{self.name} takes no argument")
        return make_message(self.name, **opts)

    def console_msg(self, reply: Reply) -> str:
        """Reply -> the text circusctl prints."""
        if reply.get("status") == "error":
            return f"error: {reply.get('reason', 'unknown error')}"
        return "ok"

    # -- daemon side -------------------------------------------------------------------

    def validate(self, arbiter: ArbiterAPI, props: Props) -> None:
        for key in self.required:
            if key not in props:
                raise MessageError(f"message invalid {key!r} is missing")

    def scope(self, arbiter: ArbiterAPI, props: Props) -> Scope | None:
        """The watchers this command changes (None: it changes nothing and is not queued).

        Called after :meth:`validate`, in arrival order.
        """
        return None

    def admitted(self, arbiter: ArbiterAPI, props: Props) -> Reply | None:
        """Called once the command is validated and queued, before it runs.

        A waitable command sent without ``waiting`` is answered at once with these fields.
        """
        return None

    def preempt(self, arbiter: ArbiterAPI, props: Props, targets: bool) -> Any:
        """Called at admission, before :meth:`admitted`: do now what must not wait for the
        queue (a new target for a spawn burst in progress, a stop request).

        *targets* is False when a command ahead in the queue writes targets at its turn
        (:meth:`rewrites`): a new target must then wait its turn too, or it would be
        overwritten out of order. What this returns (None: nothing was done) goes to
        :meth:`resume`, which then runs at the command's turn instead of :meth:`execute`.
        """
        return None

    def rewrites(self, arbiter: ArbiterAPI, props: Props) -> bool:
        """True if this command, not pre-empted, writes targets (numprocesses) at its turn."""
        return False

    async def resume(self, arbiter: ArbiterAPI, props: Props, token: Any) -> Reply | None:
        """The command's turn after :meth:`preempt` did something (*token*)."""
        return await self.execute(arbiter, props)

    async def execute(self, arbiter: ArbiterAPI, props: Props) -> Reply | None:
        if self.inline:
            return self.answer(arbiter, props)
        raise NotImplementedError

    def runs_inline(self, props: Props) -> bool:
        """True: :meth:`answer` replies right where the request is read (see ``inline``)."""
        return self.inline

    def answer(self, arbiter: ArbiterAPI, props: Props) -> Reply | None:
        """The reply of an inline command (validated already); it must not block."""
        raise NotImplementedError

    # -- property helpers --------------------------------------------------------------

    @staticmethod
    def watcher(arbiter: ArbiterAPI, props: Props) -> WatcherAPI:
        name = props.get("name")
        if not isinstance(name, str):
            raise MessageError(f"'name' should be a string, got {name!r}")
        return arbiter.get_watcher(name)

    @staticmethod
    def str_prop(props: Props, key: str, default: str | None = None) -> str | None:
        """A string property (None when absent and no default)."""
        value = props.get(key, default)
        if value is None:
            return None
        if not isinstance(value, str):
            raise MessageError(f"{key!r} should be a string, got {value!r}")
        return value

    @staticmethod
    def int_prop(props: Props, key: str, default: int | None = None, minimum: int | None = None
                 ) -> int:
        value = props.get(key, default)
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise MessageError(f"{key!r} should be an integer, got {value!r}")
        if minimum is not None and value < minimum:
            raise MessageError(f"{key!r} should be at least {minimum}, got {value}")
        return value

    @staticmethod
    def float_prop(props: Props, key: str, default: float | None = None) -> float | None:
        value = props.get(key, default)
        if value is None:
            return None
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise MessageError(f"{key!r} should be a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise MessageError(f"{key!r} should be a number, got {value!r}")
        return float(value)

    @staticmethod
    def bool_prop(props: Props, key: str, default: bool = False) -> bool:
        value = props.get(key, default)
        if isinstance(value, bool):
            return value
        if value is None:
            return default
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise MessageError(f"{key!r} should be true or false, got {value!r}")

    @staticmethod
    def signal_prop(props: Props, key: str = "signum", default: Any = None) -> int:
        value = props.get(key, default)
        if (value == 0 and not isinstance(value, bool)) or value == "0":
            return 0  # kill(pid, 0): only checks that the process exists
        try:
            return to_signum(value)
        except ValueError as exc:
            raise MessageError(f"signal invalid: {exc}") from None

    @staticmethod
    def match_watchers(arbiter: ArbiterAPI, props: Props) -> list[WatcherAPI]:
        """The watchers that ``name`` selects under ``match`` (glob by default)."""
        name = props.get("name")
        if not isinstance(name, str):
            raise MessageError(f"'name' should be a string, got {name!r}")
        mode = props.get("match", "glob")
        if mode not in ("simple", "glob", "regex"):
            raise MessageError(f"unknown match mode {mode!r} (simple, glob or regex)")
        found = list(arbiter.match_watchers(name, mode))
        if not found:
            raise NotFoundError(f"program {name} not found")
        return found


def parse_flags(flags: Sequence[Flag], argv: Sequence[str], free_words: bool = False
                ) -> tuple[list[str], dict[str, Any]]:
    """Split circusctl arguments into positionals and ``--flag [value]`` options.

    ``--`` ends the options. With *free_words* (``add``, ``set``: their words may be a
    command line) an unknown ``--word`` is a positional word rather than an error.
    """
    positional: list[str] = []
    opts: dict[str, Any] = {}
    by_name = {f.name: f for f in flags}
    items = list(argv)
    i = 0
    while i < len(items):
        arg = items[i]
        if arg == "--":
            positional.extend(items[i + 1:])
            break
        if arg.startswith("--") and len(arg) > 2:
            key, eq, value = arg[2:].partition("=")
            key = key.replace("-", "_")
            flag = by_name.get(key)
            if flag is None and free_words:
                positional.append(arg)
                i += 1
                continue
            if flag is None:
                raise ArgumentError(f"unknown option --{key}")
            if flag.takes_value:
                if not eq:
                    i += 1
                    if i >= len(items):
                        raise ArgumentError(f"--{key} needs a value")
                    value = items[i]
                if flag.choices and value not in flag.choices:
                    raise ArgumentError(
                        f"--{key} must be one of {', '.join(flag.choices)}, got {value!r}"
                    )
                opts[key] = flag.convert(value) if flag.convert else value
            else:
                opts[key] = True
        else:
            positional.append(arg)
        i += 1
    return positional, opts


def format_value(value: Any) -> str:
    """A option value as circusctl prints it: ``None`` empty, mappings as ``K=V,K2=V2``."""
    if value is None:
        return ""
    if isinstance(value, Mapping):
        return ",".join(f"{k}={format_value(v)}" for k, v in sorted(value.items()))
    if isinstance(value, list | tuple):
        return " ".join(str(v) for v in value)
    return str(value)


def format_options(options: Mapping[str, Any]) -> str:
    """``key: value`` lines, sorted by key."""
    return "\n".join(f"{key}: {format_value(value)}" for key, value in sorted(options.items()))


def dumps(reply: Reply) -> str:
    return json.dumps(reply)


class OptionalWatcherQuery(Command):
    """A read-only command on one watcher or on all of them: ``<command> [<name>]``."""

    inline = True  # reads state only: answered without a task

    def message(self, *args: str, **opts: Any) -> Props:
        if len(args) > 1:
            raise ArgumentError(f"usage: {self.usage}")
        props = {"name": args[0]} if args else {}
        return make_message(self.name, **props)

    def validate(self, arbiter: ArbiterAPI, props: Props) -> None:
        super().validate(arbiter, props)
        if "name" in props:
            self.watcher(arbiter, props)


class WatcherQuery(Command):
    """A read-only command on one watcher: ``<command> <name>``."""

    required = ("name",)
    inline = True  # reads state only: answered without a task

    def message(self, *args: str, **opts: Any) -> Props:
        if len(args) != 1:
            raise ArgumentError(f"usage: {self.usage}")
        return make_message(self.name, name=args[0])

    def validate(self, arbiter: ArbiterAPI, props: Props) -> None:
        super().validate(arbiter, props)
        self.watcher(arbiter, props)
