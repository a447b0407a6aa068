"""What circus-top shows, kept apart from how it is drawn (no Textual here).

Two sources feed one :class:`TopModel`:

* the stats channel of circusd-stats (``stat.<watcher>.<pid>`` and ``stat.<watcher>``,
  docs/stats.md): CPU, memory, age and command line of each process, every interval;
* circusd's ``status`` with ``details``: the watchers, their health and wanted count, and
  each process's wid, restarts and health.

A process seen only on the stats channel is dropped once no figure for it has come for
``process_timeout`` seconds (as Circus 0.19's circus-top does); one that ``status`` lists
stays while it lists it.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from circus.util.convert import duration

#: The columns of a process row: (key, title). Every one sorts by its value, numerically
#: where it is a number.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("pid", "PID"),
    ("wid", "WID"),
    ("cpu", "CPU%"),
    ("rss", "MEM"),
    ("mem", "MEM%"),
    ("age", "AGE"),
    ("restarts", "RESTARTS"),
    ("health", "HEALTH"),
    ("cmdline", "COMMAND"),
)
COLUMN_KEYS = tuple(key for key, _ in COLUMNS)
HISTORY = 60  # points kept for each watcher's sparklines
#: Topics of the stats channel that are not watchers.
NOT_WATCHERS = ("sockets",)
#: Watchers of circusd whose processes the stats channel shows under "circus" instead.
CIRCUS_WATCHERS = ("circusd-stats", "circushttpd")
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_SIZE = re.compile(r"^\s*([0-9.]+)\s*([KMGTP]?)B?\s*$")


def parse_size(text: Any) -> int | None:
    """``"3.45M"`` (as circusd-stats writes memory) in bytes; None when it is not a size."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return int(text)
    if not isinstance(text, str):
        return None
    match = _SIZE.match(text)
    if not match:
        return None
    try:
        return int(float(match.group(1)) * _UNITS[match.group(2)])
    except ValueError:
        return None


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def human_size(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "K", "M", "G", "T"):
        if size < 1024 or unit == "T":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    return f"{size:.1f}T"  # pragma: no cover


@dataclass
class ProcessRow:
    """One process as the view shows it."""

    watcher: str
    pid: int
    wid: int | None = None
    cpu: float | None = None
    rss: int | None = None
    mem: float | None = None
    age: float | None = None
    restarts: int | None = None
    health: str | None = None
    cmdline: str | None = None
    name: str | None = None  # circusd, circusd-stats... under the pseudo-watcher "circus"
    seen: float = 0.0  # monotonic time of its last figures (0: none yet)
    listed: bool = False  # in circusd's last status

    def value(self, key: str) -> Any:
        return getattr(self, key)

    def cells(self) -> tuple[str, ...]:
        """The row's text, in :data:`COLUMNS` order."""
        cpu = "-" if self.cpu is None else f"{self.cpu:.1f}"
        mem = "-" if self.mem is None else f"{self.mem:.1f}"
        command = self.name or self.cmdline or "-"
        return (str(self.pid), "-" if self.wid is None else str(self.wid), cpu,
                human_size(self.rss), mem, duration(self.age),
                "-" if self.restarts is None else str(self.restarts),
                self.health or "-", command)

    def matches(self, needle: str) -> bool:
        """Whether the filter text *needle* (lower case) is in the watcher's name, the
        pid, the command or the health."""
        hay = (self.watcher, str(self.pid), self.cmdline or "", self.name or "",
               self.health or "")
        return any(needle in part.lower() for part in hay)


@dataclass
class WatcherInfo:
    """One watcher: what ``status`` says of it and the history of its figures."""

    name: str
    state: str | None = None
    health: str | None = None
    wanted: int | None = None
    restarts: int | None = None
    reason: str | None = None
    cpu_history: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY))
    rss_history: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY))


def sort_key(key: str) -> Any:
    """A key for :func:`sorted` by column *key*: numbers compare as numbers, text as
    text, and a missing value comes last whichever the direction (see :func:`order`)."""
    if key not in COLUMN_KEYS:
        raise ValueError(f"unknown column {key!r}")

    def of(row: ProcessRow) -> Any:
        value = row.value(key)
        if value is None:
            return (1, 0.0, "")
        if isinstance(value, int | float):
            return (0, float(value), "")
        return (0, 0.0, str(value).lower())

    return of


def order(rows: Iterable[ProcessRow], key: str, reverse: bool) -> list[ProcessRow]:
    """*rows* sorted by column *key* (descending when *reverse*), missing values last,
    ties by pid."""
    rows = sorted(rows, key=lambda r: r.pid)
    present = [r for r in rows if r.value(key) is not None]
    missing = [r for r in rows if r.value(key) is None]
    return sorted(present, key=sort_key(key), reverse=reverse) + missing


class TopModel:
    """The watchers and processes circus-top knows of."""

    def __init__(self, process_timeout: float = 3.0) -> None:
        self.process_timeout = process_timeout
        self.watchers: dict[str, WatcherInfo] = {}
        self.rows: dict[str, dict[int, ProcessRow]] = {}  # watcher -> pid -> row
        self.control_error: str | None = None  # why status could not be had, if it failed
        self.stats_seen = False

    def watcher(self, name: str) -> WatcherInfo:
        info = self.watchers.get(name)
        if info is None:
            info = self.watchers[name] = WatcherInfo(name)
            self.rows.setdefault(name, {})
        return info

    def row(self, watcher: str, pid: int) -> ProcessRow:
        rows = self.rows.setdefault(watcher, {})
        row = rows.get(pid)
        if row is None:
            self.watcher(watcher)
            row = rows[pid] = ProcessRow(watcher, pid)
        return row

    # -- the stats channel ----------------------------------------------------------------

    def on_stat(self, topic: str, payload: Any, now: float | None = None) -> None:
        """One message of the stats channel (its topic and decoded JSON body)."""
        if not topic.startswith("stat.") or not isinstance(payload, Mapping):
            return
        now = time.monotonic() if now is None else now
        rest = topic[len("stat."):]
        head, _, tail = rest.rpartition(".")
        if head and tail.isdigit() and head not in NOT_WATCHERS:
            self.stats_seen = True
            row = self.row(head, int(tail))
            row.cpu = _number(payload.get("cpu"))
            row.mem = _number(payload.get("mem"))
            row.rss = parse_size(payload.get("mem_info1"))
            row.age = _number(payload.get("age"))
            if isinstance(payload.get("cmdline"), str):
                row.cmdline = payload["cmdline"]
            if isinstance(payload.get("name"), str):
                row.name = payload["name"]
            row.seen = now
        elif rest and "." not in rest and rest not in NOT_WATCHERS:
            self.stats_seen = True
            self.on_aggregate(rest, payload, now)

    def on_aggregate(self, name: str, payload: Mapping[str, Any], now: float) -> None:
        """``stat.<watcher>``: the moment to add a point to the watcher's history (the
        sum of its processes' CPU and resident memory)."""
        info = self.watcher(name)
        pids = payload.get("pid")
        live = self.rows.get(name, {})
        chosen = [live[p] for p in pids if p in live] if isinstance(pids, list) else []
        info.cpu_history.append(sum(r.cpu or 0.0 for r in chosen))
        info.rss_history.append(float(sum(r.rss or 0 for r in chosen)))

    # -- circusd's status -----------------------------------------------------------------

    def on_status(self, reply: Mapping[str, Any]) -> None:
        """A reply of ``status`` with ``details``."""
        if reply.get("status") == "error":
            self.control_error = str(reply.get("reason", "error"))
            return
        self.control_error = None
        statuses = reply.get("statuses")
        details = reply.get("details")
        if not isinstance(details, Mapping):
            return
        names = set(details) | (set(statuses) if isinstance(statuses, Mapping) else set())
        names -= set(CIRCUS_WATCHERS)
        for name in list(self.watchers):
            if name not in names and not any(r.seen for r in self.rows.get(name, {}).values()):
                self.watchers.pop(name)
                self.rows.pop(name, None)
        for name in names:
            info = self.watcher(name)
            if isinstance(statuses, Mapping):
                info.state = str(statuses.get(name)) if name in statuses else None
            detail = details.get(name)
            if not isinstance(detail, Mapping):
                continue
            info.health = detail.get("health")
            info.wanted = detail.get("numprocesses")
            info.restarts = detail.get("restarts")
            info.reason = detail.get("reason")
            rows = self.rows.setdefault(name, {})
            listed: set[int] = set()
            for entry in detail.get("processes") or []:
                if not isinstance(entry, Mapping) or not isinstance(entry.get("pid"), int):
                    continue
                row = self.row(name, entry["pid"])
                listed.add(row.pid)
                row.listed = True
                row.wid = entry.get("wid") if isinstance(entry.get("wid"), int) else None
                row.restarts = entry.get("restarts")
                row.health = entry.get("health")
                if row.age is None:
                    row.age = _number(entry.get("uptime"))
            for pid, row in list(rows.items()):
                if pid not in listed:
                    row.listed = False
                    row.wid = row.restarts = row.health = None
                    if not row.seen:
                        del rows[pid]

    def connection_lost(self, error: str) -> None:
        self.control_error = error

    # -- what is shown --------------------------------------------------------------------

    def expire(self, now: float | None = None) -> None:
        """Drop the processes whose figures stopped coming and that status no longer
        lists."""
        now = time.monotonic() if now is None else now
        for rows in self.rows.values():
            for pid, row in list(rows.items()):
                if not row.listed and row.seen and now - row.seen > self.process_timeout:
                    del rows[pid]

    def sections(self, needle: str = "", key: str = "cpu", reverse: bool = True
                 ) -> list[tuple[WatcherInfo, list[ProcessRow]]]:
        """Each watcher (by name) with its processes that pass the filter, sorted. A
        watcher whose name matches shows all its processes."""
        needle = needle.strip().lower()
        out = []
        for name in sorted(self.watchers):
            info = self.watchers[name]
            rows = list(self.rows.get(name, {}).values())
            if needle and needle not in name.lower():
                rows = [r for r in rows if r.matches(needle)]
                if not rows:
                    continue
            out.append((info, order(rows, key, reverse)))
        return out

    def find(self, pid: int) -> ProcessRow | None:
        for rows in self.rows.values():
            if pid in rows:
                return rows[pid]
        return None


def summary(info: WatcherInfo, rows: list[ProcessRow]) -> str:
    """The line above a watcher's processes."""
    running = sum(1 for r in rows if r.listed or r.seen)
    parts = [info.name]
    if info.health or info.state:
        parts.append(str(info.health or info.state))
    parts.append(f"{running}/{info.wanted if info.wanted is not None else '?'} processes")
    if info.restarts is not None:
        parts.append(f"{info.restarts} restarts")
    cpu = sum(r.cpu or 0.0 for r in rows)
    rss = sum(r.rss or 0 for r in rows)
    parts.append(f"CPU {cpu:.1f}%")
    parts.append(f"MEM {human_size(rss)}")
    text = "  ".join(parts)
    if info.reason:
        text += f"  ({info.reason})"
    return text


def render_text(model: TopModel, needle: str = "", key: str = "cpu",
                reverse: bool = True) -> str:
    """The whole view as plain text (``circus-top --once``)."""
    lines: list[str] = []
    if model.control_error:
        lines.append(f"(no status from circusd: {model.control_error})")
    titles = tuple(title for _, title in COLUMNS)
    for info, rows in model.sections(needle, key, reverse):
        if lines:
            lines.append("")
        lines.append(summary(info, rows))
        cells = [r.cells() for r in rows]
        if not cells:
            lines.append("  (no process)")
            continue
        widths = [max(len(c[i]) for c in [titles, *cells]) for i in range(len(titles))]
        for row in [titles, *cells]:
            lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths,
                                                                     strict=True)).rstrip())
    if not lines:
        lines.append("no watcher reported (is circusd-stats running?)")
    return "\n".join(lines)
