"""Runtime changes that survive a restart (``[circus] state_file = PATH``, off by default).

``add``, ``rm``, ``set`` and ``incr``/``decr`` made over the control socket are recorded
in PATH, as the difference they make to the configuration file:

- ``added``: watchers created at runtime (their command and the options they were given);
- ``removed``: watchers of the file removed at runtime;
- ``options``: per watcher, the last value of each key changed at runtime (``set``;
  ``incr``/``decr`` record the resulting ``numprocesses``).

When circusd starts again on a configuration, the file is read first, then these changes
are applied to it before anything is started: removals, then additions, then options. A
recorded change wins over the file for the keys it names; a watcher added at runtime that
the file now defines itself is taken from the file. A change that no longer applies (the
watcher is gone, a value is refused) is dropped with a warning.

``reloadconfig`` (and ``restart``, which reads the file again) makes the running watchers
match the file, so they also make the file the truth again: the recorded changes are
forgotten. Start and stop are not recorded: after a restart every watcher starts as its
``autostart`` says, watchers added at runtime included.

The file is JSON, written atomically after each change.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from circus.errors import CircusError, OptionError

if TYPE_CHECKING:
    from circus.arbiter import Arbiter
    from circus.watcher import Watcher

log = logging.getLogger(__name__)


class StateFileError(OSError):
    """The state file exists but cannot be used."""


class ChangeLog:
    """The runtime changes recorded in one state file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.added: dict[str, dict[str, Any]] = {}  # lower-cased name -> name, cmd, options
        self.removed: dict[str, str] = {}  # lower-cased name -> name
        self.options: dict[str, dict[str, Any]] = {}  # lower-cased name -> {key: value}
        self.muted = False  # while the recorded changes are applied again

    # -- the file -------------------------------------------------------------------------

    def load(self) -> None:
        """Read the file; a missing file is an empty one. Raises StateFileError."""
        try:
            with open(self.path) as fh:
                data = json.load(fh)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            raise StateFileError(f"state file {self.path}: {exc}; fix or remove it") from None
        try:
            if not isinstance(data, dict) or data.get("version") != 1:
                raise TypeError("not a circus state file of version 1")
            added = {str(k): dict(v) for k, v in data.get("added", {}).items()}
            for entry in added.values():
                str(entry["name"]), str(entry["cmd"]), dict(entry["options"])
            removed = {str(k): str(v) for k, v in data.get("removed", {}).items()}
            options = {str(k): dict(v) for k, v in data.get("options", {}).items()}
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise StateFileError(f"state file {self.path}: {exc}; fix or remove it") from None
        self.added, self.removed, self.options = added, removed, options

    def save(self) -> None:
        from circus.state import write_atomic

        data = {"version": 1, "added": self.added, "removed": self.removed,
                "options": self.options}
        try:
            directory = os.path.dirname(self.path)
            if directory:
                os.makedirs(directory, exist_ok=True)
            write_atomic(self.path, data)
        except OSError as exc:
            log.error("cannot write the state file %s: %s", self.path, exc)

    # -- recording ------------------------------------------------------------------------

    @staticmethod
    def _values(watcher: Watcher, keys: Iterable[str]) -> dict[str, Any]:
        values = {}
        for key in keys:
            try:
                value = watcher.get_option(key)
                json.dumps(value)
            except (KeyError, TypeError, ValueError):
                log.warning("%s: %s cannot be recorded in the state file", watcher.name, key)
                continue
            values[key] = value
        return values

    def watcher_added(self, watcher: Watcher, keys: Iterable[str]) -> None:
        if self.muted:
            return
        key = watcher.name.lower()
        # a removal stays recorded: a watcher of the file removed, then added again under
        # its name, is the new one after a restart
        self.options.pop(key, None)
        self.added[key] = {"name": watcher.name, "cmd": watcher.cmd,
                           "options": self._values(watcher, keys)}
        self.save()

    def watcher_removed(self, name: str) -> None:
        if self.muted:
            return
        key = name.lower()
        self.options.pop(key, None)
        if self.added.pop(key, None) is None:
            self.removed[key] = name
        self.save()

    def options_changed(self, watcher: Watcher, keys: Iterable[str]) -> None:
        if self.muted:
            return
        values = self._values(watcher, keys)
        if values:
            self.options.setdefault(watcher.name.lower(), {}).update(values)
            self.save()

    def forget(self) -> None:
        """The configuration file was applied again: it is the truth."""
        if self.added or self.removed or self.options:
            log.info("state file %s: recorded runtime changes forgotten (the configuration "
                     "file was applied)", self.path)
        self.added, self.removed, self.options = {}, {}, {}
        self.save()

    # -- applying them again --------------------------------------------------------------

    async def replay(self, arbiter: Arbiter) -> None:
        """Apply the recorded changes to the watchers of the configuration just read."""
        self.muted = True
        try:
            await self._replay(arbiter)
        finally:
            self.muted = False
        self.save()

    async def _replay(self, arbiter: Arbiter) -> None:
        present = {w.name.lower() for w in arbiter.watchers}
        for key, name in list(self.removed.items()):
            if key in present:
                await arbiter.rm_watcher(name)
                log.info("state file: watcher %s removed (a recorded rm)", name)
            else:
                del self.removed[key]
        present = {w.name.lower() for w in arbiter.watchers}
        for key, entry in list(self.added.items()):
            if key in present:
                log.warning("state file: watcher %s was added at runtime and is now in the "
                            "configuration file: the file's definition is used", entry["name"])
                del self.added[key]
                self.options.pop(key, None)
                continue
            try:
                watcher = await arbiter.add_watcher(entry["name"], entry["cmd"])
                await watcher.set_options(entry["options"], reload="never")
            except (CircusError, OptionError, ValueError, TypeError, OSError) as exc:
                log.warning("state file: watcher %s cannot be added again (%s); dropped",
                            entry["name"], exc)
                del self.added[key]
                self.options.pop(key, None)
                if key in {w.name.lower() for w in arbiter.watchers}:
                    await arbiter.rm_watcher(entry["name"])
                continue
            log.info("state file: watcher %s added (a recorded add)", entry["name"])
        names = {w.name.lower(): w for w in arbiter.watchers}
        for key, values in list(self.options.items()):
            target = names.get(key)
            if target is None:
                del self.options[key]
                continue
            try:
                await target.set_options(values, reload="never")
            except (CircusError, OptionError, ValueError, TypeError) as exc:
                log.warning("state file: options %s of %s cannot be applied again (%s); "
                            "dropped", sorted(values), target.name, exc)
                del self.options[key]
                continue
            log.info("state file: %s: %s (recorded changes)", target.name,
                     ", ".join(f"{k} = {v!r}" for k, v in values.items()))
