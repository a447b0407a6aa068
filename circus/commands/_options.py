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
    check_changes,
    key_for,
)
from circus.options import WATCHER_OPTIONS
from circus.util.accounts import group_id, user_id

if TYPE_CHECKING:
    from circus.types import ArbiterAPI, WatcherAPI


def check_options(options: Mapping[str, Any], watcher: WatcherAPI | None = None) -> dict[str, Any]:
    """Check every key of *options*, then the keys together; nothing is applied.

    With no *watcher* (``add``) the keys are checked against the defaults.
    """
    try:
        checked = (watcher.check_options(options) if watcher is not None
                   else check_changes(options, lambda name: WATCHER_OPTIONS[name].default))
    except OptionError as exc:
        raise MessageError(_reason(exc)) from None
    for key, value in checked.items():
        _check_system(key, value)
    for which in STREAMS:
        if which in checked or any(k.startswith(which + ".") for k in checked):
            _check_stream(which, merged_stream(which, checked, watcher))
    return checked


def check_depends(arbiter: ArbiterAPI, name: str, checked: Mapping[str, Any]) -> None:
    """A ``depends_on`` among *checked* names watchers that exist, not *name* itself, and
    makes no cycle with the others' (MessageError naming the key otherwise)."""
    value = checked.get("depends_on")
    if not isinstance(value, str) or not value:
        return
    from circus import depends

    problem = depends.problem_with(depends.of(arbiter.watchers), name, value)
    if problem is not None:
        raise MessageError(f"invalid value for 'depends_on': {problem}")


def _reason(exc: OptionError) -> str:
    if exc.reason == "not a watcher option":
        return f"unknown key {exc.option!r}: not a watcher option"
    return f"invalid value for {exc.option!r}: {exc.reason}"


def _check_system(key: str, value: Any) -> None:
    """What only the running system can tell: accounts, directories (hooks are imported
    by :func:`circus.keys.check_changes`)."""
    if key in ("uid", "gid") and value is not None:
        try:
            (user_id if key == "uid" else group_id)(value)
        except ValueError as exc:
            raise MessageError(f"invalid value for {key!r}: {exc}") from None
    if key == "working_dir" and value is not None and not os.path.isdir(value):
        raise MessageError(f"invalid value for 'working_dir': no directory {value!r}")


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


# -- circusctl side ------------------------------------------------------------------------


def cli_value(key: str, text: str) -> Any:
    """Type a ``circusctl set`` value by its key, with the INI reader's own parser."""
    family = key_for(key)
    if family is None:
        raise ArgumentError(f"unknown key {key!r}")
    try:
        value = family.from_text(key, text)
    except ValueError as exc:
        raise ArgumentError(f"invalid value for {key!r}: {exc}") from None
    # hooks travel as the text they were written in, which circusd (and Circus 0.19) reads
    if isinstance(family, HookKey):
        return text.strip()
    if isinstance(family, HooksKey):
        return {name: path for name, (path, _flag) in value.items()}
    return value


def cli_known_key(key: str) -> bool:
    return not isinstance(key_for(key), StreamKey | type(None))
