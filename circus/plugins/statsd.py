"""statsd plugins: :class:`StatsdEmitter` counts events, :class:`FullStats` also sends
CPU and memory gauges. Packets go over UDP through the ``statsd`` client library.

Metric names are ``circus.<application_name>.<path>``; characters statsd gives a meaning
to (``:``, ``|``, ``@``, spaces …) are replaced by ``_``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any, ClassVar

from statsd import StatsClient  # type: ignore[import-untyped]

from circus.plugins.base import CircusPlugin, PluginOption, port_number, positive_seconds
from circus.plugins.launch import is_plugin_watcher
from circus.util.convert import to_float, to_size

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")


def metric(*parts: str) -> str:
    """A statsd metric name from *parts* (joined with dots, unsafe characters replaced)."""
    return ".".join(_UNSAFE.sub("_", p) for p in parts if p)


def _rate(value: Any) -> float:
    rate = to_float(value)
    if not 0 < rate <= 1:
        raise ValueError(f"a sample rate is in (0, 1], got {rate}")
    return rate


def statsd_options(application_name: str) -> dict[str, PluginOption]:
    """The options of a plugin that reports to statsd."""
    return {
        "host": PluginOption("localhost", str, "statsd host."),
        "port": PluginOption(8125, port_number, "statsd UDP port."),
        "sample_rate": PluginOption(1.0, _rate, "Fraction of the counters sent."),
        "application_name": PluginOption(application_name, str,
                                         "Second part of every metric name."),
    }


def make_statsd(settings: Mapping[str, Any]) -> StatsClient:
    """A statsd client for a plugin's statsd settings (prefix ``circus.<app>``)."""
    return StatsClient(
        host=settings["host"],
        port=settings["port"],
        prefix=metric("circus", settings["application_name"]),
    )


def number(value: Any) -> float | None:
    """A number from a stats value (``"N/A"`` and other text: None)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    return None


def rss_bytes(info: Mapping[str, Any]) -> int | None:
    """The resident memory of a ``stats`` process entry, in bytes."""
    value = info.get("mem_info1")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    try:
        return to_size(value)
    except ValueError:
        return None


class StatsdEmitter(CircusPlugin):
    """Sends a statsd counter ``circus.<app>.watcher.<watcher>.<event>`` for every event.

    Options: ``host`` (localhost), ``port`` (8125), ``sample_rate`` (1.0),
    ``application_name`` (app).
    """

    name = "statsd"
    topics: ClassVar[tuple[bytes, ...]] = (b"watcher.",)
    options: ClassVar[Mapping[str, PluginOption]] = {
        **CircusPlugin.options,
        **statsd_options("app"),
    }

    def __init__(self, *args: Any, **config: Any) -> None:
        super().__init__(*args, **config)
        self.statsd = make_statsd(self.settings)
        self.sample_rate: float = self.settings["sample_rate"]

    def handle_recv(self, data: tuple[bytes, bytes]) -> None:
        watcher, event, _ = self.split_data(data)
        if not watcher or not event:
            return
        self.statsd.incr(metric("watcher", watcher, event), rate=self.sample_rate)

    def handle_stop(self) -> None:
        self.statsd.close()


class FullStats(StatsdEmitter):
    """:class:`StatsdEmitter`, plus every ``loop_rate`` seconds gauges of each watcher's
    processes: ``_stats.<watcher>.{watchers_num, cpu_max, cpu_sum, mem_pct_max,
    mem_pct_sum, mem_max, mem_sum}`` (memory in bytes). Plugin watchers are left out.
    """

    name = "full_stats"
    options: ClassVar[Mapping[str, PluginOption]] = {
        **StatsdEmitter.options,
        "loop_rate": PluginOption(60.0, positive_seconds, "Seconds between two sets of gauges."),
    }

    def __init__(self, *args: Any, **config: Any) -> None:
        super().__init__(*args, **config)
        self.every(self.settings["loop_rate"], self.send_gauges)

    async def send_gauges(self) -> None:
        reply = await self.async_call("stats")
        if reply.get("status") == "error":
            log.warning("%s: stats failed: %s", self.label, reply.get("reason"))
            return
        infos = reply.get("infos") or {}
        with self.statsd.pipeline() as pipe:
            for watcher, processes in sorted(infos.items()):
                if is_plugin_watcher(watcher) or not isinstance(processes, Mapping):
                    continue
                for key, value in self.gauges(processes).items():
                    pipe.gauge(metric("_stats", watcher, key), value)

    @staticmethod
    def gauges(processes: Mapping[str, Any]) -> dict[str, float]:
        """The gauges of one watcher from its ``stats`` entries (N/A readings skipped)."""
        cpus: list[float] = []
        mem_pcts: list[float] = []
        mems: list[int] = []
        count = 0
        for info in processes.values():
            if not isinstance(info, Mapping):
                continue
            count += 1
            if (cpu := number(info.get("cpu"))) is not None:
                cpus.append(cpu)
            if (pct := number(info.get("mem"))) is not None:
                mem_pcts.append(pct)
            if (rss := rss_bytes(info)) is not None:
                mems.append(rss)
        return {
            "watchers_num": count,
            "cpu_max": max(cpus, default=0.0),
            "cpu_sum": sum(cpus),
            "mem_pct_max": max(mem_pcts, default=0.0),
            "mem_pct_sum": sum(mem_pcts),
            "mem_max": max(mems, default=0),
            "mem_sum": sum(mems),
        }
