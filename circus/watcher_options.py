"""A watcher's option store: every value it was configured with, read and changed by key.

:class:`OptionStore` holds the table options (typed once, in
:class:`~circus.options.WatcherSettings`), ``env``, the resource limits, the hooks, the two
stream configurations and the custom keys plugins read. Every read and every change goes
through the key families of :mod:`circus.keys`, so a value means the same whether it came
from a file, ``circusctl set`` or JSON. :class:`~circus.watcher.Watcher` inherits the store
and adds what a change does to running processes (a live update or a graceful reload).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from circus.errors import OptionError
from circus.hooks import Hook
from circus.keys import UNSET, CustomKey, StreamSubKey, check_changes, key_for
from circus.options import WATCHER_OPTIONS, WatcherSettings
from circus.util.command import words_problem


class OptionStore(WatcherSettings):
    """The option values of one watcher (see the module docstring)."""

    name: str

    def _init_options(
        self,
        given: Mapping[str, Any],
        *,
        env: Mapping[str, str] | None,
        rlimits: Mapping[str, int | None] | None,
        hooks: Mapping[str, Any] | None,
        stdout_stream: Mapping[str, Any] | None,
        stderr_stream: Mapping[str, Any] | None,
    ) -> None:
        """Take the constructor's values: table options are typed and checked, other keys
        are kept as custom keys. Raises OptionError naming the key."""
        self.custom_options: dict[str, Any] = {}
        for key, value in given.items():
            option = WATCHER_OPTIONS.get(key)
            if option is None:
                self.custom_options[key] = value
                continue
            if value != option.default:
                try:
                    value = option.wire(value)
                except (ValueError, TypeError) as exc:
                    raise OptionError(key, str(exc)) from None
            setattr(self, key, value)
        words = words_problem({key: getattr(self, key)
                               for key in ("cmd", "args", "shell", "shell_args")})
        if words is not None:
            raise OptionError(*words)
        if self.singleton and self.numprocesses > 1:
            raise ValueError(
                f"watcher {self.name!r} is a singleton: numprocesses must be 0 or 1")
        self.env: dict[str, str] = dict(env or {})
        self.rlimits: dict[str, int | None] = dict(rlimits or {})
        self.stdout_stream_conf: dict[str, Any] | None = (
            dict(stdout_stream) if stdout_stream else None)
        self.stderr_stream_conf: dict[str, Any] | None = (
            dict(stderr_stream) if stderr_stream else None)
        self.hooks: dict[str, Hook] = {
            name: _build_hook(name, spec) for name, spec in (hooks or {}).items()}

    def options(self) -> dict[str, Any]:
        """Every option and its value, as the ``options`` command shows them."""
        result: dict[str, Any] = {}
        for key, opt in WATCHER_OPTIONS.items():
            if opt.listed:
                result[key] = getattr(self, key)
        result["env"] = dict(self.env)
        result["rlimits"] = dict(self.rlimits)
        result["stdout_stream_conf"] = _stream_conf_public(self.stdout_stream_conf)
        result["stderr_stream_conf"] = _stream_conf_public(self.stderr_stream_conf)
        result["hooks"] = {name: hook.path for name, hook in self.hooks.items()}
        for key, value in self.custom_options.items():
            result.setdefault(key, value)
        return dict(sorted(result.items()))

    def get_option(self, key: str) -> Any:
        """The value of *key* as ``get`` shows it; KeyError if the watcher has none."""
        if key == "rlimits":
            return dict(self.rlimits)
        if key in ("stdout_stream_conf", "stderr_stream_conf"):
            return _stream_conf_public(getattr(self, key))
        family = key_for(key, self.custom_options)
        if family is None:
            raise KeyError(key)
        value = family.read(self, key)
        if value is None and isinstance(family, StreamSubKey | CustomKey):
            raise KeyError(key)  # a stream or custom key the watcher does not have
        return family.public(value)

    def has_hook(self, name: str) -> bool:
        return name in self.hooks

    def hook_specs(self) -> dict[str, tuple[str, bool]]:
        """``{hook: (path, ignore_failure)}``."""
        return {name: (hook.path, hook.ignore_failure) for name, hook in self.hooks.items()}

    def set_hook(self, name: str, spec: Any) -> None:
        """Install the hook *name* (a spec of :meth:`Hook.build`), or remove it (None)."""
        if spec is None:
            self.hooks.pop(name, None)
        else:
            self.hooks[name] = _build_hook(name, spec)

    def check_options(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """*changes* typed and checked as a whole; nothing is applied.

        Raises:
            OptionError: naming the key that is unknown or whose value cannot be used.
        """
        return check_changes(changes, functools.partial(getattr, self), self.custom_options)

    def write_options(self, checked: Mapping[str, Any]) -> tuple[bool, set[str]]:
        """Store *checked* values (from :meth:`check_options`).

        Returns whether a key needs new processes, and the streams whose configuration
        changed.
        """
        needs_reload = False
        streams: set[str] = set()
        for key, value in checked.items():
            family = key_for(key, self.custom_options)
            assert family is not None  # checked by check_options
            if value is UNSET:
                family.unset(self, key)
            else:
                family.write(self, key, value)
            needs_reload = needs_reload or family.reload
            if family.stream is not None:
                streams.add(family.stream)
        return needs_reload, streams


def _build_hook(name: str, spec: Any) -> Hook:
    try:
        return Hook.build(name, spec)
    except (ImportError, ValueError) as exc:
        raise OptionError(f"hooks.{name}", str(exc)) from exc


def _stream_conf_public(conf: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if conf is None:
        return None
    return {k: v for k, v in conf.items() if isinstance(v, str | int | float | bool)}
