"""ResourceWatcher: restart a watcher whose processes use too much (or too little) CPU or
memory for too long.

Every ``loop_rate`` seconds the plugin reads the ``stats`` of ``watcher`` and takes, over
its processes, the highest CPU percentage and the highest memory use. Each limit has a
counter of consecutive readings past it:

* ``max_cpu`` (percent, default 90) and ``min_cpu`` (unset by default);
* ``max_mem`` and ``min_mem``: a plain number is a percentage of the machine's memory
  (``max_mem`` defaults to 90), a size such as ``200M`` or ``1G`` is resident bytes;
* ``health_threshold`` (percent, default 75): the mean of CPU and memory percentages.

When a counter goes past ``max_count`` (default 3) the watcher gets the ``restart`` command
and every counter starts again. With ``process_children = true`` the direct children of the
processes are judged instead, each on its own counters, and an offending child gets
``child_signal`` (default SIGTERM) rather than a restart of the watcher.

Each reading past a limit is also counted in statsd as
``circus.<application_name>.<watcher>.<over_cpu|over_mem|under_cpu|under_mem|over_health>``.
"""

from __future__ import annotations

import logging
import re
import signal
from collections.abc import Mapping
from typing import Any, ClassVar, NamedTuple

from circus.errors import CallError, OptionError
from circus.plugins.base import (
    REQUIRED,
    CircusPlugin,
    PluginOption,
    optional,
    positive_seconds,
)
from circus.plugins.statsd import make_statsd, metric, number, rss_bytes, statsd_options
from circus.util.convert import to_bool, to_float, to_int, to_signum, to_size

log = logging.getLogger(__name__)

_PERCENT = re.compile(r"^\s*\d+(?:\.\d+)?\s*%?\s*$")


class Limit(NamedTuple):
    """A memory limit: a percentage of the machine's memory, or resident bytes."""

    value: float
    percent: bool

    def __str__(self) -> str:
        return f"{self.value:g}%" if self.percent else f"{int(self.value)} bytes"


def memory_limit(value: Any) -> Limit:
    """``90`` or ``90%`` (percent), ``200M`` / ``1G`` / ``1048576B`` (bytes)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Limit(float(value), True)
    text = str(value)
    if _PERCENT.match(text):
        return Limit(float(text.strip().rstrip("%")), True)
    return Limit(float(to_size(text)), False)


def _count(value: Any) -> int:
    n = to_int(value)
    if n < 0:
        raise ValueError(f"max_count is 0 or more, got {n}")
    return n


class Reading(NamedTuple):
    cpu: float | None
    mem_pct: float | None
    mem_bytes: int | None


CHECKS = ("over_cpu", "over_mem", "under_cpu", "under_mem", "over_health")


class ResourceWatcher(CircusPlugin):
    """Restarts a watcher past its resource limits; see the module docstring."""

    name = "resource_watcher"
    topics: ClassVar[tuple[bytes, ...]] = (b"watcher.",)
    options: ClassVar[Mapping[str, PluginOption]] = {
        **CircusPlugin.options,
        "watcher": PluginOption(REQUIRED, str, "The watcher to look after."),
        "max_cpu": PluginOption(90.0, optional(to_float), "Highest CPU percentage."),
        "max_mem": PluginOption(Limit(90.0, True), optional(memory_limit),
                                "Highest memory: percent, or a size (200M)."),
        "min_cpu": PluginOption(None, optional(to_float), "Lowest CPU percentage."),
        "min_mem": PluginOption(None, optional(memory_limit),
                                "Lowest memory: percent, or a size."),
        "health_threshold": PluginOption(75.0, optional(to_float),
                                         "Highest mean of CPU and memory percentages."),
        "max_count": PluginOption(3, _count, "Readings past a limit before acting."),
        "process_children": PluginOption(False, to_bool,
                                         "Judge the children of the processes instead."),
        "child_signal": PluginOption(int(signal.SIGTERM), to_signum,
                                     "Signal for an offending child."),
        "loop_rate": PluginOption(60.0, positive_seconds, "Seconds between two readings."),
        **statsd_options("resource_watcher"),
    }

    @classmethod
    def check_config(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        if config.get("watcher") in (None, "") and config.get("service") not in (None, ""):
            # `service` is the old name of `watcher`
            config = {**config, "watcher": config["service"]}
        if config.get("watcher") in (None, ""):
            raise OptionError("watcher", "this option is required: the watcher to look after")
        return super().check_config(config)

    def __init__(self, *args: Any, **config: Any) -> None:
        super().__init__(*args, **config)
        self.watcher: str = self.settings["watcher"]
        self.statsd = make_statsd(self.settings)
        self.counters: dict[str, int] = dict.fromkeys(CHECKS, 0)
        self.child_counters: dict[int, dict[str, int]] = {}
        self.every(self.settings["loop_rate"], self.look)

    def handle_recv(self, data: tuple[bytes, bytes]) -> None:
        """Events are not needed: the plugin only reads stats."""

    def handle_stop(self) -> None:
        self.statsd.close()

    # -- judging --------------------------------------------------------------------------

    def failures(self, reading: Reading) -> list[str]:
        """The checks that *reading* fails."""
        s = self.settings
        failed: list[str] = []
        if s["max_cpu"] is not None and reading.cpu is not None and reading.cpu > s["max_cpu"]:
            failed.append("over_cpu")
        if s["min_cpu"] is not None and reading.cpu is not None and reading.cpu < s["min_cpu"]:
            failed.append("under_cpu")
        if s["max_mem"] is not None and _past(reading, s["max_mem"], above=True):
            failed.append("over_mem")
        if s["min_mem"] is not None and _past(reading, s["min_mem"], above=False):
            failed.append("under_mem")
        if (s["health_threshold"] is not None and reading.cpu is not None
                and reading.mem_pct is not None
                and (reading.cpu + reading.mem_pct) / 2 > s["health_threshold"]):
            failed.append("over_health")
        return failed

    def count(self, counters: dict[str, int], failed: list[str]) -> list[str]:
        """Update *counters* with one reading's *failed* checks; the ones now past max_count."""
        for check in CHECKS:
            counters[check] = counters[check] + 1 if check in failed else 0
        return [c for c in CHECKS if counters[c] > self.settings["max_count"]]

    # -- the loop -------------------------------------------------------------------------

    async def look(self) -> None:
        try:
            reply = await self.async_call("stats", name=self.watcher)
        except CallError as exc:
            log.warning("%s: stats of %s: %s", self.label, self.watcher, exc)
            return
        if reply.get("status") == "error":
            log.warning("%s: stats of %s: %s", self.label, self.watcher, reply.get("reason"))
            return
        infos = [i for i in (reply.get("info") or {}).values() if isinstance(i, Mapping)]
        if self.settings["process_children"]:
            await self.look_at_children(infos)
            return
        if not infos:
            return
        reading = aggregate(infos)
        failed = self.failures(reading)
        for check in failed:
            self.statsd.incr(metric(self.watcher, check))
        past = self.count(self.counters, failed)
        if past:
            log.warning("%s: %s is past its limits (%s) for %d readings: restarting it",
                        self.label, self.watcher, ", ".join(past), self.counters[past[0]])
            self.counters = dict.fromkeys(CHECKS, 0)
            try:
                await self.async_call("restart", name=self.watcher)
            except CallError as exc:
                log.error("%s: restart %s: %s", self.label, self.watcher, exc)

    async def look_at_children(self, infos: list[Mapping[str, Any]]) -> None:
        seen: set[int] = set()
        for info in infos:
            parent = info.get("pid")
            for child in info.get("children") or []:
                if not isinstance(child, Mapping) or not isinstance(child.get("pid"), int):
                    continue
                pid = child["pid"]
                seen.add(pid)
                counters = self.child_counters.setdefault(pid, dict.fromkeys(CHECKS, 0))
                failed = self.failures(aggregate([child]))
                past = self.count(counters, failed)
                if not past:
                    continue
                log.warning("%s: %s: child %d of pid %s is past its limits (%s): signalling it",
                            self.label, self.watcher, pid, parent, ", ".join(past))
                self.child_counters.pop(pid, None)
                try:
                    await self.async_call("signal", name=self.watcher, pid=parent,
                                          childpid=pid, signum=self.settings["child_signal"])
                except CallError as exc:
                    log.error("%s: signal %d: %s", self.label, pid, exc)
        for gone in set(self.child_counters) - seen:
            del self.child_counters[gone]


def _past(reading: Reading, limit: Limit, *, above: bool) -> bool:
    value = reading.mem_pct if limit.percent else reading.mem_bytes
    if value is None:
        return False
    return value > limit.value if above else value < limit.value


def aggregate(infos: list[Mapping[str, Any]]) -> Reading:
    """The highest CPU and memory of *infos* (``stats`` entries); None where unreadable."""
    cpus = [c for i in infos if (c := number(i.get("cpu"))) is not None]
    pcts = [m for i in infos if (m := number(i.get("mem"))) is not None]
    rss = [b for i in infos if (b := rss_bytes(i)) is not None]
    return Reading(max(cpus, default=None), max(pcts, default=None), max(rss, default=None))
