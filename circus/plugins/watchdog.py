"""WatchDog: processes send UDP heartbeats; one that falls silent is killed (and, since its
watcher stays active, replaced).

A heartbeat is one datagram to ``ip:port`` matching ``msg_regex``, by default
``<pid>;<timestamp>`` (the timestamp is not used: the plugin times the arrival). Every
``loop_rate`` seconds, each process of the watchers whose name ``watchers_regex`` matches
that has not been heard from for ``loop_rate * max_count`` seconds (counted from its spawn
when it never sent one) gets the ``kill`` command, with ``watchers_stop_signal`` and
``watchers_graceful_timeout`` when set. Plugin watchers and ``circusd-stats`` are never
watched.
"""

from __future__ import annotations

import logging
import re
import socket
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from circus.errors import CallError
from circus.plugins.base import CircusPlugin, PluginOption, optional, port_number, positive_seconds
from circus.plugins.launch import is_plugin_watcher
from circus.util.convert import to_float, to_int, to_signum

log = logging.getLogger(__name__)

MAX_DATAGRAM = 4096


def _regex(value: Any) -> re.Pattern[str]:
    try:
        return re.compile(str(value))
    except re.error as exc:
        raise ValueError(f"invalid regular expression {value!r}: {exc}") from None


def _msg_regex(value: Any) -> re.Pattern[str]:
    pattern = _regex(value)
    if "pid" not in pattern.groupindex:
        raise ValueError("msg_regex needs a (?P<pid>...) group")
    return pattern


def _count(value: Any) -> int:
    n = to_int(value)
    if n < 1:
        raise ValueError(f"max_count is at least 1, got {n}")
    return n


class WatchDog(CircusPlugin):
    """Kills processes whose heartbeats stop; see the module docstring."""

    name = "watchdog"
    topics: ClassVar[tuple[bytes, ...]] = (b"watcher.",)
    options: ClassVar[Mapping[str, PluginOption]] = {
        **CircusPlugin.options,
        "loop_rate": PluginOption(60.0, positive_seconds, "Seconds between two checks."),
        "watchers_regex": PluginOption(_regex(".*"), _regex,
                                       "Watchers to watch (re.match on the name)."),
        "msg_regex": PluginOption(_regex(r"^(?P<pid>.*);(?P<timestamp>.*)$"), _msg_regex,
                                  "Form of a heartbeat, with a pid group."),
        "max_count": PluginOption(3, _count, "Silent periods before a kill."),
        "ip": PluginOption("127.0.0.1", str, "Address heartbeats are received on."),
        "port": PluginOption(1664, port_number, "UDP port heartbeats are received on."),
        "watchers_stop_signal": PluginOption(None, optional(to_signum),
                                             "Signal for the kill (default: stop_signal)."),
        "watchers_graceful_timeout": PluginOption(None, optional(to_float),
                                                  "graceful_timeout for the kill."),
    }

    def __init__(self, *args: Any, **config: Any) -> None:
        super().__init__(*args, **config)
        self.loop_rate: float = self.settings["loop_rate"]
        self.watchers_regex: re.Pattern[str] = self.settings["watchers_regex"]
        self.msg_regex: re.Pattern[str] = self.settings["msg_regex"]
        self.max_count: int = self.settings["max_count"]
        # pid -> (watcher, last time heard from or spawned, monotonic)
        self.pids: dict[int, tuple[str, float]] = {}
        self.killing: set[int] = set()
        self.sock: socket.socket | None = None
        self.every(self.loop_rate, self.look)

    def watched(self, watcher: str) -> bool:
        if is_plugin_watcher(watcher) or watcher == "circusd-stats":
            return False
        return self.watchers_regex.match(watcher) is not None

    # -- heartbeats -----------------------------------------------------------------------

    async def handle_init(self) -> None:
        family = socket.AF_INET6 if ":" in self.settings["ip"] else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.bind((self.settings["ip"], self.settings["port"]))
        assert self.loop is not None
        self.loop.add_reader(self.sock.fileno(), self._read_heartbeats)
        log.info("%s: listening for heartbeats on udp %s:%d", self.label,
                 self.settings["ip"], self.sock.getsockname()[1])
        self.spawn(self.discover(), name="discover")

    def _read_heartbeats(self) -> None:
        assert self.sock is not None
        while True:
            try:
                data = self.sock.recv(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("%s: reading heartbeats: %s", self.label, exc)
                return
            self.heartbeat(data)

    def heartbeat(self, data: bytes) -> None:
        match = self.msg_regex.match(data.decode("utf-8", "replace").strip())
        if match is None:
            log.debug("%s: not a heartbeat: %r", self.label, data[:100])
            return
        try:
            pid = int(match.group("pid"))
        except ValueError:
            return
        known = self.pids.get(pid)
        if known is not None:
            self.pids[pid] = (known[0], time.monotonic())

    def handle_stop(self) -> None:
        if self.sock is not None:
            if self.loop is not None:
                self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None

    # -- which processes -------------------------------------------------------------------

    async def discover(self) -> None:
        """Learn the processes that were running before the plugin subscribed."""
        try:
            reply = await self.async_call("list")
            for watcher in reply.get("watchers") or []:
                if not self.watched(watcher):
                    continue
                pids = (await self.async_call("list", name=watcher)).get("pids") or []
                now = time.monotonic()
                for pid in pids:
                    self.pids.setdefault(int(pid), (watcher, now))
        except CallError as exc:
            log.warning("%s: cannot list the processes: %s", self.label, exc)

    def handle_recv(self, data: tuple[bytes, bytes]) -> None:
        watcher, event, msg = self.split_data(data)
        if event not in ("spawn", "reap") or not self.watched(watcher):
            return
        try:
            pid = int(self.load_message(msg)["process_pid"])
        except (ValueError, KeyError, TypeError):
            return
        if event == "spawn":
            self.pids[pid] = (watcher, time.monotonic())
        else:
            self.pids.pop(pid, None)
            self.killing.discard(pid)

    # -- the check ------------------------------------------------------------------------

    async def look(self) -> None:
        limit = self.loop_rate * self.max_count
        now = time.monotonic()
        for pid, (watcher, last) in list(self.pids.items()):
            if pid in self.killing or now - last <= limit:
                continue
            self.killing.add(pid)
            log.warning("%s: %s: pid %d sent no heartbeat for %.1fs, killing it",
                        self.label, watcher, pid, now - last)
            self.spawn(self.kill(watcher, pid), name=f"kill-{pid}")

    async def kill(self, watcher: str, pid: int) -> None:
        props: dict[str, Any] = {"name": watcher, "pid": pid}
        if self.settings["watchers_stop_signal"] is not None:
            props["signum"] = self.settings["watchers_stop_signal"]
        if self.settings["watchers_graceful_timeout"] is not None:
            props["graceful_timeout"] = self.settings["watchers_graceful_timeout"]
        try:
            reply = await self.async_call("kill", **props)
        except CallError as exc:
            log.error("%s: kill %s %d: %s", self.label, watcher, pid, exc)
            self.killing.discard(pid)
            return
        if reply.get("status") == "error":
            # most likely gone already; forget it
            log.info("%s: kill %s %d: %s", self.label, watcher, pid, reply.get("reason"))
            self.pids.pop(pid, None)
            self.killing.discard(pid)


__all__ = ["WatchDog"]
