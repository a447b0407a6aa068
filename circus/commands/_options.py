"""Watcher options as ``add`` and ``set`` receive them, and as ``circusctl set`` types them.

Every check happens before anything is applied, and each error names the key: the
option table (:mod:`circus.options`) checks the types, this module adds what needs the
other keys or the system (a singleton with two processes, a user that does not exist, a
hook that cannot be imported, a stream class that does not exist).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from circus.errors import ArgumentError, MessageError
from circus.options import (
    HOOK_NAMES,
    WATCHER_OPTIONS,
    check_watcher_option,
    rlimit_resource,
)
from circus.util.accounts import group_id, user_id
from circus.util.convert import to_bool

if TYPE_CHECKING:
    from circus.watcher import Watcher

STREAMS = ("stdout_stream", "stderr_stream")
# Stream keys whose values are numbers (circusctl types them as Circus's does).
_STREAM_INTS = frozenset({"max_bytes", "backup_count", "rotate_interval"})


def is_free_form(key: str) -> bool:
    """A namespaced extra key (``flapping.attempts``): kept, shown, read by plugins."""
    head, dot, tail = key.partition(".")
    return bool(dot and head and tail) and head not in (*STREAMS, "hooks")


def known_key(key: str, watcher: Watcher | None = None) -> bool:
    if key in WATCHER_OPTIONS or key in ("env", "hooks", *STREAMS):
        return True
    if key.startswith(("rlimit_", "hooks.", "stdout_stream.", "stderr_stream.")):
        return True
    if watcher is not None and key in watcher.custom_options:
        return True
    return is_free_form(key)


def check_option(key: str, value: Any, watcher: Watcher | None = None) -> Any:
    """The checked, converted *value* for *key*. Raises MessageError naming the key."""
    if not isinstance(key, str) or not key:
        raise MessageError(f"unknown key {key!r}")
    if not known_key(key, watcher):
        raise MessageError(f"unknown key {key!r}: not a watcher option")
    if key in WATCHER_OPTIONS or key == "env" or key.startswith(("rlimit_", "hooks")) \
            or key in STREAMS or key.startswith(("stdout_stream.", "stderr_stream.")):
        try:
            value = check_watcher_option(key, value)
        except (ValueError, TypeError) as exc:
            raise MessageError(f"invalid value for {key!r}: {exc}") from None
        except KeyError:
            raise MessageError(f"unknown key {key!r}: not a watcher option") from None
    if key in ("uid", "gid") and value is not None:
        _check_account(key, value)
    if key == "hooks":
        for name, spec in value.items():
            _check_hook(name, spec)
    elif key.startswith("hooks."):
        _check_hook(key[6:], value)
    if key in STREAMS and not ("class" in value or "filename" in value):
        raise MessageError(f"invalid value for {key!r}: needs a 'class' or a 'filename'")
    if key.startswith(("stdout_stream.", "stderr_stream.")) and not isinstance(
            value, str | int | float | bool):
        raise MessageError(f"invalid value for {key!r}: expected a string or a number")
    if key == "working_dir" and value is not None and not os.path.isdir(value):
        raise MessageError(f"invalid value for 'working_dir': no directory {value!r}")
    if key == "numprocesses" and value < 0:
        raise MessageError(f"invalid value for 'numprocesses': must not be negative, got {value}")
    return value


def check_options(options: Mapping[str, Any], watcher: Watcher | None = None) -> dict[str, Any]:
    """Check every key of *options*, then the keys together; nothing is applied."""
    checked = {key: check_option(key, value, watcher) for key, value in options.items()}
    singleton = checked.get("singleton", watcher.singleton if watcher else False)
    numprocesses = checked.get("numprocesses", watcher.numprocesses if watcher else 1)
    if singleton and numprocesses > 1:
        raise MessageError(
            f"a singleton watcher runs at most one process, numprocesses is {numprocesses}"
        )
    for which in STREAMS:
        if which in checked or any(k.startswith(which + ".") for k in checked):
            _check_stream(which, merged_stream(which, checked, watcher))
    return checked


def merged_stream(which: str, checked: Mapping[str, Any], watcher: Watcher | None
                  ) -> dict[str, Any]:
    """The stream configuration *which* would have once *checked* is applied."""
    current = getattr(watcher, which + "_conf", None) if watcher is not None else None
    conf = dict(checked[which]) if which in checked else dict(current or {})
    prefix = which + "."
    for key, value in checked.items():
        if key.startswith(prefix):
            conf[key[len(prefix):]] = value
    return conf


def _check_stream(which: str, conf: Mapping[str, Any]) -> None:
    """Build the stream once (and close it) so a bad class or option is refused now."""
    from circus.streams import build_stream

    try:
        stream = build_stream(conf)
    except (ValueError, TypeError, ImportError, OSError) as exc:
        raise MessageError(f"invalid value for {which!r}: {exc}") from None
    # a user's stream class: closing our probe must not fail the command
    with contextlib.suppress(Exception):
        stream.close()


def _check_account(key: str, value: int | str) -> None:
    try:
        (user_id if key == "uid" else group_id)(value)
    except ValueError as exc:
        raise MessageError(f"invalid value for {key!r}: {exc}") from None


def _check_hook(name: str, spec: Any) -> None:
    from circus.hooks import Hook

    if name not in HOOK_NAMES:
        raise MessageError(f"unknown hook {name!r} (known: {', '.join(HOOK_NAMES)})")
    try:
        Hook.build(name, spec)
    except (ImportError, ValueError, AttributeError, TypeError) as exc:
        raise MessageError(f"invalid value for 'hooks.{name}': {exc}") from None


def watcher_kwargs(checked: Mapping[str, Any]) -> dict[str, Any]:
    """Checked options -> keyword arguments of :class:`~circus.watcher.Watcher`."""
    kwargs: dict[str, Any] = {}
    rlimits: dict[str, int | None] = {}
    hooks: dict[str, Any] = {}
    streams: dict[str, dict[str, Any]] = {}
    for key, value in checked.items():
        if key.startswith("rlimit_"):
            rlimits[key[7:].lower()] = value
        elif key == "hooks":
            hooks.update(value)
        elif key.startswith("hooks."):
            hooks[key[6:]] = value
        elif key in STREAMS:
            streams.setdefault(key, {}).update(value)
        elif key.startswith(("stdout_stream.", "stderr_stream.")):
            which, _, sub = key.partition(".")
            streams.setdefault(which, {})[sub] = value
        else:
            kwargs[key] = value
    if rlimits:
        kwargs["rlimits"] = rlimits
    if hooks:
        kwargs["hooks"] = hooks
    kwargs.update(streams)
    return kwargs


# -- circusctl side ------------------------------------------------------------------------


def cli_value(key: str, text: str) -> Any:
    """Type a ``circusctl set`` value by its key, as the INI reader would read it."""
    try:
        if key in WATCHER_OPTIONS:
            return WATCHER_OPTIONS[key].text(text)
        if key == "env":
            return check_watcher_option("env", text)
        if key.startswith("rlimit_"):
            rlimit_resource(key[7:])
            return None if not text.strip() else int(text)
        if key == "hooks":
            hooks: dict[str, str] = {}
            for item in filter(None, (p.strip() for p in text.split(","))):
                name, sep, path = item.partition(":")
                if not sep:
                    raise ValueError(f"expected NAME:PATH pairs separated by commas, got {item!r}")
                hooks[name.strip()] = path.strip()
            return hooks
        if key.startswith(("stdout_stream.", "stderr_stream.")):
            sub = key.partition(".")[2]
            if sub in _STREAM_INTS:
                return int(text)
            if sub == "utc":
                return to_bool(text)
        return text
    except ValueError as exc:
        raise ArgumentError(f"invalid value for {key!r}: {exc}") from None


def cli_known_key(key: str) -> bool:
    return known_key(key) and key not in STREAMS
