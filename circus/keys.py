"""Every key a watcher accepts, described once.

A watcher key is one of these *families*; each says how its values are read from text (an
INI file, a ``circusctl set`` argument), how a JSON value from a client is checked, what the
value is when the key is absent, whether a change needs new processes (a graceful reload) or
applies live, and how a watcher's current value is read and written:

==========================  =====================================================  ========
key                         value                                                  change
==========================  =====================================================  ========
an option of the table      :data:`circus.options.WATCHER_OPTIONS`                 per key
``env``                     ``{"K": "V"}``; text ``K=V,K2=V2``                      reload
``rlimit_<resource>``       an integer, or null (text: nothing/unlimited) = none   reload
``hooks.<hook>``            ``[path, ignore_failure]``; text ``path[, flag]``      live
``hooks``                   ``{hook: spec}``; text ``hook:path,...`` (circusctl)   live
``stdout_stream``           ``{"class": ..., ...}`` (JSON only)                    live
``stdout_stream.<key>``     a scalar; sizes, counts and ``utc`` are typed          live
``<plugin>.<key>``          kept as given, for plugins (``flapping.attempts``)     live
==========================  =====================================================  ========

(``stderr_stream`` as ``stdout_stream``.) The INI reader, ``add``/``set``/``get``/``options``,
``reloadconfig``'s diff, :class:`~circus.watcher.Watcher`, ``circusctl``'s typing of ``set``
values and the docs all go through :func:`key_for`, so the three doors (a file, ``circusctl
set``, JSON over the socket) give the same value for the same key.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from typing import Any, Protocol

from circus.options import (
    HOOK_NAMES,
    HOOKS_IGNORED_BY_DEFAULT,
    WATCHER_OPTIONS,
    Option,
    rlimit_resource,
)
from circus.util.convert import to_bool, to_int, to_size

STREAMS = ("stdout_stream", "stderr_stream")

# Stream classes known by a bare name (any case); anything with a dot is a dotted path.
STREAM_CLASSES = (
    "FileStream",
    "WatchedFileStream",
    "TimedRotatingFileStream",
    "StdoutStream",
    "FancyStdoutStream",
    "QueueStream",
    "SyslogStream",
)

# Stream keys with a type: the same parser whichever door the value comes through.
_STREAM_TYPED = {
    "max_bytes": to_size,
    "backup_count": to_int,
    "rotate_interval": to_int,
    "interval": to_int,
    "utc": to_bool,
}


class _Unset:
    """The value of a key removed from a watcher's configuration (``reloadconfig``)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


class OptionHolder(Protocol):
    """What a family reads and writes on a watcher (:class:`~circus.watcher.Watcher`)."""

    env: dict[str, str]
    rlimits: dict[str, int | None]
    custom_options: dict[str, Any]
    stdout_stream_conf: dict[str, Any] | None
    stderr_stream_conf: dict[str, Any] | None

    def hook_specs(self) -> dict[str, tuple[str, bool]]: ...


class Family:
    """A kind of watcher key. Subclasses override what differs."""

    pattern = ""  # the key as the docs show it
    reload = False  # a change needs new processes
    expand = True  # the INI reader substitutes $(circus.env.X) in the value
    stream: str | None = None  # the stream whose configuration a change rebuilds

    def matches(self, key: str) -> bool:
        return key == self.pattern

    def from_text(self, key: str, raw: str) -> Any:
        """The value of *key* written as text (INI file, ``circusctl set``)."""
        return self.from_wire(key, raw)

    def from_wire(self, key: str, value: Any) -> Any:
        """The value of *key* sent as JSON. Raises ValueError (or TypeError)."""
        return value

    def default(self, key: str) -> Any:
        """The value a watcher has when *key* is not set."""
        return None

    def read(self, holder: Any, key: str) -> Any:
        """The watcher's current value, in the form the parsers return."""
        return getattr(holder, key)

    def write(self, holder: Any, key: str, value: Any) -> None:
        setattr(holder, key, value)

    def unset(self, holder: Any, key: str) -> None:
        """Take *key* back to its state when never set."""
        self.write(holder, key, self.default(key))

    def public(self, value: Any) -> Any:
        """The value as ``get`` shows it."""
        return value


class TableKey(Family):
    """An option of :data:`~circus.options.WATCHER_OPTIONS`."""

    def __init__(self, option: Option) -> None:
        self.option = option
        self.pattern = option.name
        self.reload = option.reload
        # a signal name such as SIGTERM never holds a $(circus.env.X) reference
        self.expand = option.kind != "signal"

    def from_text(self, key: str, raw: str) -> Any:
        return self.option.text(raw)

    def from_wire(self, key: str, value: Any) -> Any:
        return self.option.wire(value)

    def default(self, key: str) -> Any:
        return self.option.default


class EnvKey(Family):
    pattern = "env"
    reload = True

    def from_text(self, key: str, raw: str) -> dict[str, str]:
        result: dict[str, str] = {}
        for item in filter(None, (p.strip() for p in raw.split(","))):
            name, sep, value = item.partition("=")
            if not sep or not name.strip():
                raise ValueError(f"expected KEY=VALUE pairs separated by commas, got {item!r}")
            result[name.strip()] = value.strip()
        return result

    def from_wire(self, key: str, value: Any) -> dict[str, str]:
        if isinstance(value, str):
            return self.from_text(key, value)
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return {k: "" if v is None else str(v) for k, v in value.items()}
        raise ValueError(f"expected an object of strings, got {value!r}")

    def default(self, key: str) -> dict[str, str]:
        return {}

    def read(self, holder: OptionHolder, key: str) -> dict[str, str]:
        return dict(holder.env)

    def write(self, holder: OptionHolder, key: str, value: Any) -> None:
        holder.env = dict(value)


class RlimitKey(Family):
    pattern = "rlimit_<resource>"
    reload = True
    expand = False

    def matches(self, key: str) -> bool:
        return key.startswith("rlimit_")

    @staticmethod
    def resource(key: str) -> str:
        name = key[len("rlimit_"):]
        rlimit_resource(name)  # ValueError naming the known ones
        return name.lower()

    def from_text(self, key: str, raw: str) -> int | None:
        self.resource(key)
        if raw.strip().lower() in ("", "unlimited", "infinity"):
            return None
        try:
            return self._checked(to_int(raw))
        except ValueError as exc:
            raise ValueError(f"{exc} (or unlimited)") from None

    def from_wire(self, key: str, value: Any) -> int | None:
        if value is None:
            self.resource(key)
            return None
        if isinstance(value, str):
            return self.from_text(key, value)
        self.resource(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, null or \"unlimited\", got {value!r}")
        return self._checked(value)

    @staticmethod
    def _checked(value: int) -> int:
        if value < 0:
            raise ValueError(f"must not be negative, got {value}")
        return value

    def read(self, holder: OptionHolder, key: str) -> int | None:
        return holder.rlimits.get(self.resource(key))

    def write(self, holder: OptionHolder, key: str, value: Any) -> None:
        holder.rlimits[self.resource(key)] = value

    def unset(self, holder: OptionHolder, key: str) -> None:
        holder.rlimits.pop(self.resource(key), None)


def _hook_name(key: str) -> str:
    name = key[len("hooks."):]
    if name not in HOOK_NAMES:
        raise ValueError(f"unknown hook {name!r} (known: {', '.join(HOOK_NAMES)})")
    return name


def hook_spec(name: str, spec: Any) -> tuple[str, bool]:
    """``(dotted path, ignore_failure)`` from ``"path"``, ``"path, flag"`` or ``[path, flag]``.

    Without a flag, the hook's own default applies (the stop and signal hooks ignore
    failures). Raises ValueError.
    """
    if isinstance(spec, list | tuple) and 1 <= len(spec) <= 2:
        path, flag = spec[0], (spec[1] if len(spec) == 2 else None)
        if flag is not None and not isinstance(flag, bool):
            flag = _flag(flag)
    elif isinstance(spec, str):
        path, comma, text = spec.partition(",")
        flag = _flag(text) if comma else None
    else:
        raise ValueError(f"expected a dotted path, or [path, ignore_failure], got {spec!r}")
    path = path.strip() if isinstance(path, str) else path
    if not isinstance(path, str) or not _is_dotted(path):
        raise ValueError(
            f"expected package.module.function or package.module:function, got {path!r}"
        )
    return path, (name in HOOKS_IGNORED_BY_DEFAULT) if flag is None else flag


def _flag(value: object) -> bool:
    try:
        return to_bool(value)
    except ValueError as exc:
        raise ValueError(f"ignore_failure flag: {exc}") from None


def _is_dotted(path: str) -> bool:
    module, colon, attr = path.partition(":")
    parts = module.split(".") + (attr.split(".") if colon else [])
    return bool(colon or "." in path) and len(parts) > 1 and all(p.isidentifier() for p in parts)


class HookKey(Family):
    pattern = "hooks.<hook>"
    expand = False

    def matches(self, key: str) -> bool:
        return key.startswith("hooks.")

    def from_wire(self, key: str, value: Any) -> tuple[str, bool]:
        return hook_spec(_hook_name(key), value)

    def read(self, holder: OptionHolder, key: str) -> tuple[str, bool] | None:
        return holder.hook_specs().get(key[len("hooks."):])

    def write(self, holder: Any, key: str, value: Any) -> None:
        holder.set_hook(key[len("hooks."):], value)

    def unset(self, holder: Any, key: str) -> None:
        holder.set_hook(key[len("hooks."):], None)

    def public(self, value: Any) -> Any:
        return None if value is None else value[0]


class HooksKey(Family):
    """Every hook at once: ``{"after_start": "pkg.mod.fn", ...}``."""

    pattern = "hooks"
    expand = False

    def from_text(self, key: str, raw: str) -> dict[str, tuple[str, bool]]:
        hooks: dict[str, tuple[str, bool]] = {}
        for item in filter(None, (p.strip() for p in raw.split(","))):
            name, sep, path = item.partition(":")
            if not sep:
                raise ValueError(f"expected NAME:PATH pairs separated by commas, got {item!r}")
            hooks[name.strip()] = hook_spec(_hook_name("hooks." + name.strip()), path)
        return hooks

    def from_wire(self, key: str, value: Any) -> dict[str, tuple[str, bool]]:
        if not isinstance(value, dict):
            raise ValueError(f"expected an object keyed by hook names, got {value!r}")
        return {name: hook_spec(_hook_name("hooks." + name), spec)
                for name, spec in value.items()}

    def default(self, key: str) -> dict[str, tuple[str, bool]]:
        return {}

    def read(self, holder: OptionHolder, key: str) -> dict[str, tuple[str, bool]]:
        return holder.hook_specs()

    def write(self, holder: Any, key: str, value: Any) -> None:
        for name, spec in value.items():
            holder.set_hook(name, spec)

    def public(self, value: Any) -> Any:
        return {name: spec[0] for name, spec in value.items()}


def stream_class(name: str) -> str:
    """A stream class as configured: a built-in name in any case, or a dotted path."""
    name = name.strip()
    if "." in name or ":" in name:
        if not _is_dotted(name):
            raise ValueError(f"expected a dotted class path, got {name!r}")
        return name
    canonical = {c.lower(): c for c in STREAM_CLASSES}.get(name.lower())
    if canonical is None:
        raise ValueError(f"unknown stream class {name!r} (known: {', '.join(STREAM_CLASSES)}, "
                         "or a dotted path)")
    return canonical


def stream_conf(conf: Mapping[str, Any]) -> dict[str, Any]:
    """A whole stream configuration, each key typed; a ``filename`` alone is a FileStream."""
    if "class" not in conf and "filename" not in conf:
        raise ValueError("needs a 'class' or a 'filename'")
    result = {str(k): stream_value(str(k), v) for k, v in conf.items()}
    result.setdefault("class", "FileStream")
    return result


def stream_value(sub: str, value: Any) -> Any:
    """One key of a stream configuration, typed the same from text and from JSON."""
    if sub == "class":
        if not isinstance(value, str):
            raise ValueError(f"expected a class name, got {value!r}")
        return stream_class(value)
    parse = _STREAM_TYPED.get(sub)
    if parse is not None:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return parse(value)
    if sub == "stream" and callable(value):  # the library's {"stream": callable}
        return value
    if not isinstance(value, str | int | float | bool) or (
            isinstance(value, float) and not math.isfinite(value)):
        raise ValueError(f"expected a string or a number, got {value!r}")
    return value


class StreamKey(Family):
    """A whole stream: ``{"class": "FileStream", "filename": ...}``."""

    expand = False

    def __init__(self, which: str) -> None:
        self.pattern = which
        self.stream = which

    def from_text(self, key: str, raw: str) -> Any:
        raise ValueError(f"set its keys one by one ({key}.class, {key}.filename, ...)")

    def from_wire(self, key: str, value: Any) -> dict[str, Any] | None:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ValueError(f"expected an object with a 'class' key, got {value!r}")
        return stream_conf(value)

    def read(self, holder: Any, key: str) -> dict[str, Any] | None:
        conf = getattr(holder, key + "_conf")
        return None if conf is None else dict(conf)

    def write(self, holder: Any, key: str, value: Any) -> None:
        setattr(holder, key + "_conf", None if value is None else dict(value))

    def public(self, value: Any) -> Any:
        if value is None:
            return {}
        return {k: v for k, v in value.items() if isinstance(v, str | int | float | bool)}


class StreamSubKey(Family):
    """One key of a stream: ``stdout_stream.filename``."""

    def __init__(self, which: str) -> None:
        self.pattern = which + ".<key>"
        self.stream = which
        self.prefix = which + "."

    def matches(self, key: str) -> bool:
        return key.startswith(self.prefix)

    def sub(self, key: str) -> str:
        sub = key[len(self.prefix):]
        if not sub:
            raise ValueError(f"expected {self.prefix}<option>")
        return sub

    def from_wire(self, key: str, value: Any) -> Any:
        return stream_value(self.sub(key), value)

    def read(self, holder: Any, key: str) -> Any:
        conf = getattr(holder, self.prefix[:-1] + "_conf") or {}
        return conf.get(self.sub(key))

    def write(self, holder: Any, key: str, value: Any) -> None:
        attr = self.prefix[:-1] + "_conf"
        conf = dict(getattr(holder, attr) or {})
        conf[self.sub(key)] = value
        setattr(holder, attr, conf)


class CustomKey(Family):
    """A key no family knows, kept for plugins and hooks (``flapping.attempts``)."""

    pattern = "<plugin>.<key>"

    def matches(self, key: str) -> bool:
        return is_free_form(key)

    def read(self, holder: OptionHolder, key: str) -> Any:
        return holder.custom_options.get(key)

    def write(self, holder: OptionHolder, key: str, value: Any) -> None:
        holder.custom_options[key] = value

    def unset(self, holder: OptionHolder, key: str) -> None:
        holder.custom_options.pop(key, None)


def is_free_form(key: str) -> bool:
    """A namespaced extra key (``flapping.attempts``): kept, shown, read by plugins."""
    head, dot, tail = key.partition(".")
    return bool(dot and head and tail) and head not in (*STREAMS, "hooks")


TABLE_KEYS: dict[str, Family] = {name: TableKey(opt) for name, opt in WATCHER_OPTIONS.items()}
ENV = EnvKey()
CUSTOM = CustomKey()
FAMILIES: tuple[Family, ...] = (
    ENV,
    RlimitKey(),
    HooksKey(),
    HookKey(),
    *(StreamKey(which) for which in STREAMS),
    *(StreamSubKey(which) for which in STREAMS),
    CUSTOM,
)


def key_for(key: str, custom: Collection[str] = ()) -> Family | None:
    """The family of *key*, or None if a watcher does not take it.

    *custom* are the custom keys a watcher already has: they may be set again even when
    they are not dotted (an INI file keeps any unknown key, for plugins and hooks).
    """
    table = TABLE_KEYS.get(key)
    if table is not None:
        return table
    for family in FAMILIES:
        if family.matches(key):
            return family
    if key in custom:
        return CUSTOM
    return None


def text_value(key: str, raw: str) -> Any:
    """The value of *key* written as text. Raises KeyError (unknown key) or ValueError."""
    family = key_for(key)
    if family is None:
        raise KeyError(key)
    return family.from_text(key, raw)


def group(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Flat keys (``rlimit_nofile``, ``hooks.after_start``, ``stdout_stream.class``) to the
    grouped keyword arguments of :class:`~circus.watcher.Watcher`."""
    kwargs: dict[str, Any] = {}
    rlimits: dict[str, int | None] = {}
    hooks: dict[str, Any] = {}
    streams: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        family = key_for(key)
        if isinstance(family, RlimitKey):
            rlimits[family.resource(key)] = value
        elif isinstance(family, HooksKey):
            hooks.update(value)
        elif isinstance(family, HookKey):
            hooks[key[len("hooks."):]] = value
        elif isinstance(family, StreamKey):
            streams.setdefault(key, {}).update(value or {})
        elif isinstance(family, StreamSubKey):
            streams.setdefault(family.prefix[:-1], {})[family.sub(key)] = value
        else:
            kwargs[key] = value
    if rlimits:
        kwargs["rlimits"] = rlimits
    if hooks:
        kwargs["hooks"] = hooks
    for which, conf in streams.items():
        kwargs[which] = stream_conf(conf)
    return kwargs


def flatten(conf: Mapping[str, Any]) -> dict[str, Any]:
    """The grouped form of :func:`group` (and of the INI reader) back to flat keys."""
    flat: dict[str, Any] = {}
    for key, value in conf.items():
        if key == "rlimits":
            flat.update((f"rlimit_{name.lower()}", v) for name, v in (value or {}).items())
        elif key == "hooks":
            flat.update((f"hooks.{name}", hook_spec(name, spec) if not callable(spec) else spec)
                        for name, spec in (value or {}).items())
        elif key in STREAMS:
            flat[key] = stream_conf(value) if value else None
        else:
            flat[key] = value
    return flat


def current_keys(holder: OptionHolder) -> list[str]:
    """Every key *holder* has a value for (table options, env, limits, hooks, streams, custom)."""
    keys = [*WATCHER_OPTIONS, "env"]
    keys += [f"rlimit_{name}" for name in holder.rlimits]
    keys += [f"hooks.{name}" for name in holder.hook_specs()]
    keys += list(STREAMS)
    keys += list(holder.custom_options)
    return keys


def diff(holder: OptionHolder, flat: Mapping[str, Any]) -> dict[str, Any]:
    """The changes that make *holder* match the configuration *flat*.

    A key *holder* has and *flat* lacks goes back to its default (:data:`UNSET`).
    """
    changes: dict[str, Any] = {}
    for key, value in flat.items():
        family = key_for(key, holder.custom_options) or CUSTOM
        if family.read(holder, key) != value:
            changes[key] = value
    for key in current_keys(holder):
        if key in flat:
            continue
        family = key_for(key, holder.custom_options) or CUSTOM
        if isinstance(family, TableKey | EnvKey | StreamKey):
            if family.read(holder, key) != family.default(key):
                changes[key] = UNSET
        else:
            changes[key] = UNSET
    return changes


def together(values: Mapping[str, Any]) -> tuple[str, str] | None:
    """The first rule that *values* (every table option of a watcher) break together, as
    ``(key to blame, message)``; None if they hold."""
    numprocesses = values["numprocesses"]
    if values["singleton"] and numprocesses > 1:
        return ("numprocesses",
                f"a singleton runs at most one process, but numprocesses is {numprocesses}")
    for key in ("copy_path", "virtualenv"):
        if values[key] and not values["copy_env"]:
            return key, f"{key} needs copy_env = true (set copy_env = true as well)"
    return None


__all__ = [
    "FAMILIES",
    "STREAMS",
    "Family",
    "OptionHolder",
    "UNSET",
    "current_keys",
    "diff",
    "flatten",
    "group",
    "hook_spec",
    "is_free_form",
    "key_for",
    "stream_conf",
    "text_value",
    "together",
]
