"""Flapping: stop a watcher whose processes keep dying, try it again later, give up after a
number of tries.

For each watcher the plugin keeps the times of its last ``attempts`` unexpected exits
(``reap`` events). When they all fall within ``window`` seconds, the watcher is flapping:
the plugin stops it and starts it again ``retry_in`` seconds later. After ``max_retry``
such rounds (-1: no limit) it stops the watcher and leaves it stopped. Exits that circusd
caused itself (a stop, a kill, a decr, max_age: each announced by a ``kill`` event before
the ``reap``) are not counted.

The round count goes back to zero when the last ``attempts`` exits span more than
``window`` (the processes die, but not in a burst), and after the plugin gives up, so a
watcher started again by hand gets the full number of rounds.

A watcher overrides any of these with its own ``flapping.<key>`` options (``flapping.attempts
= 5``, ``flapping.active = false`` …), read through the ``options`` command and read again
after each ``updated`` event for that watcher.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from circus.errors import CallError
from circus.plugins.base import CircusPlugin, PluginOption
from circus.util.convert import to_bool, to_float, to_int

log = logging.getLogger(__name__)

KEYS = ("attempts", "window", "retry_in", "max_retry", "active")


def _attempts(value: Any) -> int:
    n = to_int(value)
    if n < 1:
        raise ValueError(f"attempts is at least 1, got {n}")
    return n


def _seconds(value: Any) -> float:
    seconds = to_float(value)
    if seconds < 0:
        raise ValueError(f"expected seconds (0 or more), got {seconds}")
    return seconds


def _max_retry(value: Any) -> int:
    n = to_int(value)
    if n < -1:
        raise ValueError(f"max_retry is -1 (no limit) or more, got {n}")
    return n


@dataclass
class _Track:
    """What the plugin knows of one watcher."""

    deaths: deque[float] = field(default_factory=deque)
    killed: set[int] = field(default_factory=set)
    tries: int = 0
    conf: dict[str, Any] | None = None
    retry: asyncio.Task[Any] | None = None


class Flapping(CircusPlugin):
    """Stops flapping watchers; see the module docstring."""

    name = "flapping"
    topics: ClassVar[tuple[bytes, ...]] = (b"watcher.",)
    options: ClassVar[Mapping[str, PluginOption]] = {
        "attempts": PluginOption(2, _attempts, "Exits that make a burst."),
        "window": PluginOption(1.0, _seconds, "Seconds the exits of a burst fall within."),
        "retry_in": PluginOption(7.0, _seconds, "Seconds before a stopped watcher is retried."),
        "max_retry": PluginOption(5, _max_retry, "Rounds before giving up (-1: never)."),
        "active": PluginOption(True, to_bool, "false: the plugin does not run."),
    }

    def __init__(self, *args: Any, **config: Any) -> None:
        super().__init__(*args, **config)
        self.tracks: dict[str, _Track] = {}

    # -- per-watcher settings -------------------------------------------------------------

    def watcher_settings(self, name: str, options: Mapping[str, Any]) -> dict[str, Any]:
        """The plugin's settings, overridden by the watcher's ``flapping.*`` *options*."""
        conf = {key: self.settings[key] for key in KEYS}
        for key in KEYS:
            raw = options.get(f"flapping.{key}")
            if raw is None or raw == "":
                continue
            try:
                conf[key] = self.options[key].convert(raw)
            except (ValueError, TypeError) as exc:
                log.warning("%s: %s: ignoring flapping.%s = %r (%s)", self.label, name, key,
                            raw, exc)
        return conf

    async def settings_of(self, name: str, track: _Track) -> dict[str, Any]:
        if track.conf is None:
            try:
                reply = await self.async_call("options", name=name)
            except CallError as exc:
                log.warning("%s: %s: cannot read its options: %s", self.label, name, exc)
                return self.watcher_settings(name, {})
            options = reply.get("options") if reply.get("status") != "error" else None
            track.conf = self.watcher_settings(name, options or {})
        return track.conf

    # -- events ---------------------------------------------------------------------------

    async def handle_recv(self, data: tuple[bytes, bytes]) -> None:
        name, event, msg = self.split_data(data)
        if not name:
            return
        if event == "remove":
            track = self.tracks.pop(name, None)
            if track is not None and track.retry is not None:
                track.retry.cancel()
            return
        track = self.tracks.setdefault(name, _Track())
        if event in ("updated", "add"):
            track.conf = None
        elif event == "stop":
            # every process of the watcher is gone: a later start begins afresh
            track.deaths.clear()
            track.killed.clear()
        elif event in ("kill", "reap"):
            try:
                payload = self.load_message(msg)
                pid = int(payload["process_pid"])
            except (ValueError, KeyError, TypeError):
                return
            if event == "kill":
                track.killed.add(pid)
            elif pid in track.killed:
                track.killed.discard(pid)  # circusd stopped it: not a death
            else:
                when = payload.get("time")
                track.deaths.append(float(when) if isinstance(when, int | float) else time.time())
                await self.check(name, track)

    def is_flapping(self, track: _Track, conf: Mapping[str, Any]) -> bool | None:
        """True: a burst; False: a full timeline, spread out; None: too few exits yet."""
        attempts = conf["attempts"]
        while len(track.deaths) > attempts:
            track.deaths.popleft()
        if len(track.deaths) < attempts:
            return None
        return bool(track.deaths[-1] - track.deaths[0] <= conf["window"])

    async def check(self, name: str, track: _Track) -> None:
        conf = await self.settings_of(name, track)
        if not conf["active"]:
            track.deaths.clear()
            return
        verdict = self.is_flapping(track, conf)
        if verdict is None:
            return
        if not verdict:
            track.tries = 0
            return
        track.deaths.clear()
        max_retry = conf["max_retry"]
        if max_retry == -1 or track.tries < max_retry:
            track.tries += 1
            log.warning(
                "%s: %s is flapping (%d exits within %.1fs): stopping it, retry %d%s in %.1fs",
                self.label, name, conf["attempts"], conf["window"], track.tries,
                "" if max_retry == -1 else f"/{max_retry}", conf["retry_in"],
            )
            await self.command("stop", name)
            if track.retry is not None:
                track.retry.cancel()
            track.retry = self.spawn(self._retry(name, track, conf["retry_in"]),
                                     name=f"retry-{name}")
        else:
            log.error("%s: %s is still flapping after %d retries: stopping it for good",
                      self.label, name, track.tries)
            track.tries = 0
            await self.command("stop", name)

    async def _retry(self, name: str, track: _Track, delay: float) -> None:
        await asyncio.sleep(delay)
        track.retry = None
        if self.tracks.get(name) is track:
            log.info("%s: starting %s again", self.label, name)
            await self.command("start", name)

    async def command(self, command: str, name: str) -> None:
        try:
            reply = await self.async_call(command, name=name)
        except CallError as exc:
            log.error("%s: %s %s: %s", self.label, command, name, exc)
            return
        if reply.get("status") == "error":
            log.error("%s: %s %s: %s", self.label, command, name, reply.get("reason"))

