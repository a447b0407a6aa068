"""CommandReloader: restart a watcher when the program it runs changes on disk.

Every ``loop_rate`` seconds (default 1) the plugin looks at the program of each watcher:
the first word of its ``cmd``, looked up on ``PATH`` when it has no ``/``, with symbolic
links resolved. When the resolved path or the file's modification time differs from the
last look, the watcher gets the ``restart`` command. The first look at a watcher only
records it; while the file is missing (being replaced) the last one seen is kept. Plugin
watchers and ``circusd-stats`` are left alone.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
from collections.abc import Mapping
from typing import Any, ClassVar, NamedTuple

from circus.errors import CallError
from circus.plugins.base import CircusPlugin, PluginOption, positive_seconds
from circus.plugins.launch import is_plugin_watcher

log = logging.getLogger(__name__)


class Program(NamedTuple):
    path: str
    mtime_ns: int


def program_of(cmd: str, environ: Mapping[str, str] | None = None) -> Program | None:
    """The file a watcher's *cmd* runs, with its modification time (None: not found)."""
    try:
        words = shlex.split(cmd)
    except ValueError:
        words = cmd.split()
    if not words:
        return None
    name = words[0]
    if os.sep not in name:
        found = shutil.which(name, path=(environ or os.environ).get("PATH"))
        if found is None:
            return None
        name = found
    path = os.path.realpath(name)
    try:
        return Program(path, os.stat(path).st_mtime_ns)
    except OSError:
        return None


class CommandReloader(CircusPlugin):
    """Restarts watchers whose program changed; see the module docstring."""

    name = "command_reloader"
    topics: ClassVar[tuple[bytes, ...]] = (b"watcher.",)
    options: ClassVar[Mapping[str, PluginOption]] = {
        **CircusPlugin.options,
        "loop_rate": PluginOption(1.0, positive_seconds, "Seconds between two looks."),
    }

    def __init__(self, *args: Any, **config: Any) -> None:
        super().__init__(*args, **config)
        self.programs: dict[str, Program] = {}
        self.every(self.settings["loop_rate"], self.look, first=0.0)

    def handle_recv(self, data: tuple[bytes, bytes]) -> None:
        watcher, event, _ = self.split_data(data)
        if event in ("remove", "updated"):
            # a new cmd is not a change of the program: look at it afresh
            self.programs.pop(watcher, None)

    async def look(self) -> None:
        try:
            names = (await self.async_call("list")).get("watchers") or []
        except CallError as exc:
            log.warning("%s: cannot list the watchers: %s", self.label, exc)
            return
        for name in names:
            if is_plugin_watcher(name) or name == "circusd-stats":
                continue
            try:
                reply = await self.async_call("get", name=name, keys=["cmd"])
            except CallError as exc:
                log.warning("%s: cannot read the cmd of %s: %s", self.label, name, exc)
                continue
            cmd = (reply.get("options") or {}).get("cmd")
            if not isinstance(cmd, str):
                continue
            program = program_of(cmd)
            if program is None:
                continue  # missing for now (being replaced?): compare when it is back
            before = self.programs.get(name)
            self.programs[name] = program
            if before is None or program == before:
                continue
            what = "was replaced" if program.path != before.path else "changed"
            log.info("%s: %s %s: restarting %s", self.label, program.path, what, name)
            try:
                await self.async_call("restart", name=name)
            except CallError as exc:
                log.error("%s: restart %s: %s", self.label, name, exc)
