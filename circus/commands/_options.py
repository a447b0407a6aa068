"""Watcher options as ``add`` and ``set`` receive them, and as ``circusctl set`` types them.

The key families of :mod:`circus.keys` type and check every value; this module adds the
checks that need the system (a user that does not exist, a hook that cannot be imported, a
stream class that cannot be built, a directory that is not there) and turns every refusal
into a :class:`~circus.errors.MessageError` naming the key, before anything is applied.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from circus.errors import ArgumentError, MessageError, OptionError
from circus.keys import (
    STREAMS,
    HookKey,
    HooksKey,
    StreamKey,
    key_for,
    text_value,
    together,
)
from circus.options import WATCHER_OPTIONS
from circus.util.accounts import group_id, user_id

if TYPE_CHECKING:
    from circus.types import WatcherAPI


def check_options(options: Mapping[str, Any], watcher: WatcherAPI | None = None) -> dict[str, Any]:
    """Check every key of *options*, then the keys together; nothing is applied.

    With no *watcher* (``add``) the keys are checked against the defaults.
    """
    try:
        checked = watcher.check_options(options) if watcher is not None else _check_new(options)
    except OptionError as exc:
        raise MessageError(_reason(exc)) from None
    for key, value in checked.items():
        _check_system(key, value)
    for which in STREAMS:
        if which in checked or any(k.startswith(which + ".") for k in checked):
            _check_stream(which, merged_stream(which, checked, watcher))
    return checked


def _reason(exc: OptionError) -> str:
    message = str(exc).removeprefix(f"{exc.option}: ")
    if message == "not a watcher option":
        return f"unknown key {exc.option!r}: not a watcher option"
    return f"invalid value for {exc.option!r}: {message}"


def _check_new(options: Mapping[str, Any]) -> dict[str, Any]:
    checked: dict[str, Any] = {}
    for key, value in options.items():
        family = key_for(key) if isinstance(key, str) else None
        if family is None:
            raise OptionError(str(key), "not a watcher option")
        try:
            checked[key] = family.from_wire(key, value)
        except (ValueError, TypeError) as exc:
            raise OptionError(key, str(exc)) from None
    table = {k: checked.get(k, opt.default) for k, opt in WATCHER_OPTIONS.items()}
    broken = together(table)
    if broken is not None:
        raise OptionError(*broken)
    return checked


def _check_system(key: str, value: Any) -> None:
    """What only the running system can tell: accounts, directories, importable hooks."""
    if key in ("uid", "gid") and value is not None:
        try:
            (user_id if key == "uid" else group_id)(value)
        except ValueError as exc:
            raise MessageError(f"invalid value for {key!r}: {exc}") from None
    if key == "working_dir" and value is not None and not os.path.isdir(value):
        raise MessageError(f"invalid value for 'working_dir': no directory {value!r}")
    family = key_for(key)
    if isinstance(family, HookKey):
        _check_hook(key[len("hooks."):], value)
    elif isinstance(family, HooksKey):
        for name, spec in value.items():
            _check_hook(name, spec)


def merged_stream(which: str, checked: Mapping[str, Any], watcher: WatcherAPI | None
                  ) -> dict[str, Any]:
    """The stream configuration *which* would have once *checked* is applied."""
    current = getattr(watcher, which + "_conf", None) if watcher is not None else None
    conf = dict(checked[which] or {}) if which in checked else dict(current or {})
    prefix = which + "."
    for key, value in checked.items():
        if key.startswith(prefix):
            conf[key[len(prefix):]] = value
    return conf


def _check_stream(which: str, conf: Mapping[str, Any]) -> None:
    """Build the stream once (and close it) so a bad class or option is refused now."""
    if not conf:
        return
    from circus.streams import build_stream

    if "class" not in conf and "filename" not in conf:
        raise MessageError(f"invalid value for {which!r}: needs a 'class' or a 'filename'")
    try:
        stream = build_stream(conf)
    except (ValueError, TypeError, ImportError, OSError) as exc:
        raise MessageError(f"invalid value for {which!r}: {exc}") from None
    # a user's stream class: closing our probe must not fail the command
    with contextlib.suppress(Exception):
        stream.close()


def _check_hook(name: str, spec: Any) -> None:
    from circus.hooks import Hook

    try:
        Hook.build(name, spec)
    except (ImportError, ValueError, AttributeError, TypeError) as exc:
        raise MessageError(f"invalid value for 'hooks.{name}': {exc}") from None


# -- circusctl side ------------------------------------------------------------------------


def cli_value(key: str, text: str) -> Any:
    """Type a ``circusctl set`` value by its key, with the INI reader's own parser."""
    try:
        value = text_value(key, text)
    except KeyError:
        raise ArgumentError(f"unknown key {key!r}") from None
    except ValueError as exc:
        raise ArgumentError(f"invalid value for {key!r}: {exc}") from None
    family = key_for(key)
    # hooks travel as the text they were written in, which circusd (and Circus 0.19) reads
    if isinstance(family, HookKey):
        return text.strip()
    if isinstance(family, HooksKey):
        return {name: path for name, (path, _flag) in value.items()}
    return value


def cli_known_key(key: str) -> bool:
    return not isinstance(key_for(key), StreamKey | type(None))
