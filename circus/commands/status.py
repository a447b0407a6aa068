"""``status``: the state of one watcher, or of all; with ``details``, their health."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from circus.commands.base import Flag, OptionalWatcherQuery, Props, Reply, make_message
from circus.errors import ArgumentError
from circus.tiers import Tier
from circus.util.convert import duration

if TYPE_CHECKING:
    from circus.types import ArbiterAPI, WatcherAPI


class Status(OptionalWatcherQuery):
    """\
    Get the status of a watcher or all watchers
    ===========================================

    A state is one of ``active``, ``stopped``, ``starting``, ``stopping``. For one watcher
    the state replaces ``"ok"`` in the reply's ``status`` field, as in Circus.

    With ``details`` the reply also has a ``details`` object, keyed by watcher name, that
    tells each watcher's health: ``health`` (``running``, ``starting``, ``backoff``,
    ``stopping``, ``stopped`` or ``fatal``), ``reason`` (why it is in backoff or fatal),
    ``restarts`` (processes started in place of one that exited on its own, since the
    watcher was started), ``failures`` (failed starts in a row), ``last_exit``
    (``{"code", "signal", "time"}`` of the last process that exited on its own, or null),
    ``next_spawn_in`` (seconds, while a spawn waits; else null), ``numprocesses``, and
    ``processes``: ``pid``, ``wid``, ``uptime`` (seconds), ``restarts`` and ``health``
    of each. ``stats`` adds each process's ``cpu`` (percent) and ``mem_info1`` (resident
    memory), read as the ``stats`` command reads them.

    ZMQ Message
    -----------

    ::

        {"command": "status",
         "properties": {"name": "<name>", "details": false, "stats": false}}

    Response: ``{"status": "active"}`` for one watcher,
    ``{"status": "ok", "statuses": {"<name>": "<state>", ...}}`` for all, and
    ``"details": {"<name>": {...}}`` beside them when asked.

    Command line
    ------------

    ::

        $ circusctl status [--details | -l] [<name>]

    ``--details`` (or ``-l``) prints a table: one row per watcher with its health,
    processes running/wanted, restarts and last exit, then one row per process with its
    pid, uptime, restarts, CPU and memory. Colours show the health on a terminal (not when
    the output is piped or ``NO_COLOR`` is set).
    """

    name = "status"
    tier = Tier.READER
    usage = "status [--details | -l] [<name>]"
    flags = (Flag("details", "health, restarts, last exit, and one row per process"),)

    def message(self, *args: str, **opts: Any) -> Props:
        words = [a for a in args if a != "-l"]
        details = bool(opts.pop("details", False)) or len(words) < len(args)
        if len(words) > 1:
            raise ArgumentError(f"usage: {self.usage}")
        props: dict[str, Any] = {"name": words[0]} if words else {}
        if details:
            props.update(details=True, stats=True)
        return make_message(self.name, **props)

    def validate(self, arbiter: ArbiterAPI, props: Props) -> None:
        super().validate(arbiter, props)
        self.bool_prop(props, "details")
        self.bool_prop(props, "stats")

    def runs_inline(self, props: Props) -> bool:
        # reading CPU and memory of every process takes a while: a task, off the loop
        return not (props.get("details") and props.get("stats"))

    def _watchers(self, arbiter: ArbiterAPI, props: Props) -> list[WatcherAPI]:
        if "name" in props:
            return [self.watcher(arbiter, props)]
        return list(arbiter.watchers)

    def answer(self, arbiter: ArbiterAPI, props: Props) -> Reply:
        reply: dict[str, Any]
        if "name" in props:
            reply = {"status": self.watcher(arbiter, props).status}
        else:
            reply = {"statuses": {w.name: w.status for w in arbiter.watchers}}
        if self.bool_prop(props, "details"):
            reply["details"] = {w.name: w.details() for w in self._watchers(arbiter, props)}
        return reply

    async def execute(self, arbiter: ArbiterAPI, props: Props) -> Reply:
        import asyncio  # daemon side only

        reply = self.answer(arbiter, props)
        if not self.bool_prop(props, "stats"):
            return reply
        watchers = {w.name: w for w in self._watchers(arbiter, props)}
        wanted = [
            (entry, watchers[name].get_process(entry["pid"]))
            for name, detail in reply["details"].items() if name in watchers
            for entry in detail["processes"]
        ]

        def read() -> None:
            for entry, process in wanted:
                info = process.info() if process is not None else None
                if isinstance(info, Mapping):
                    entry["cpu"] = info.get("cpu")
                    entry["mem_info1"] = info.get("mem_info1")

        await asyncio.to_thread(read)
        return reply

    def console_msg(self, reply: Reply) -> str:
        if reply.get("status") == "error":
            return super().console_msg(reply)
        if isinstance(reply.get("details"), Mapping):
            return render_table(reply["details"], colour=_colour_wanted())
        if "statuses" in reply:
            return "\n".join(f"{n}: {s}" for n, s in sorted(reply["statuses"].items()))
        return str(reply.get("status"))


# -- the operator's table ---------------------------------------------------------------

_COLOURS = {"running": "32", "starting": "33", "backoff": "33", "stopping": "33",
            "fatal": "1;31", "stopped": "2"}
_HEADER = ("NAME", "HEALTH", "PROCS", "PID", "UPTIME", "RESTARTS", "LAST EXIT", "CPU",
           "MEM")


def _colour_wanted() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def describe_last_exit(last: Any) -> str:
    if not isinstance(last, Mapping):
        return "-"
    from circus.health import LastExit

    when = last.get("time")
    ago = f" ({duration(time.time() - when)} ago)" if isinstance(when, int | float) else ""
    return LastExit(last.get("code"), last.get("signal"), 0.0, last.get("reason")
                    ).describe() + ago


def _health_cell(detail: Mapping[str, Any]) -> str:
    word = str(detail.get("health", "?"))
    wait = detail.get("next_spawn_in")
    if word == "backoff" and isinstance(wait, int | float):
        return f"{word} {wait:.1f}s"
    return word


def _cpu(value: Any) -> str:
    return f"{value:.1f}%" if isinstance(value, int | float) else "-"


def table_rows(details: Mapping[str, Any]) -> tuple[list[tuple[str, ...]], list[str]]:
    """The rows of the table (watchers, each followed by its processes) and the notes
    printed under it (why a watcher is in backoff or fatal)."""
    rows: list[tuple[str, ...]] = []
    notes: list[str] = []
    for name in sorted(details):
        detail = details[name]
        if not isinstance(detail, Mapping):
            continue
        processes = [p for p in detail.get("processes", []) if isinstance(p, Mapping)]
        rows.append((name, _health_cell(detail),
                     f"{len(processes)}/{detail.get('numprocesses', '?')}", "", "",
                     str(detail.get("restarts", 0)),
                     describe_last_exit(detail.get("last_exit")), "", ""))
        for p in sorted(processes, key=lambda p: p.get("wid") or 0):
            rows.append((f"  {name}.{p.get('wid')}", str(p.get("health", "?")), "",
                         str(p.get("pid")), duration(p.get("uptime")),
                         str(p.get("restarts", 0)), "", _cpu(p.get("cpu")),
                         str(p.get("mem_info1") or "-")))
        if detail.get("reason"):
            notes.append(f"{name}: {detail['reason']}")
    return rows, notes


def render_table(details: Mapping[str, Any], colour: bool = False) -> str:
    """``status --details`` as circusctl prints it."""
    rows, notes = table_rows(details)
    widths = [max(len(r[i]) for r in [_HEADER, *rows]) for i in range(len(_HEADER))]

    def line(cells: tuple[str, ...], header: bool = False) -> str:
        out = []
        for i, cell in enumerate(cells):
            text = cell.ljust(widths[i])
            if colour and header:
                text = f"\x1b[1m{text}\x1b[0m"
            elif colour and i == 1 and cell:
                code = _COLOURS.get(cell.split()[0])
                if code:
                    text = f"\x1b[{code}m{text}\x1b[0m"
            out.append(text)
        return "  ".join(out).rstrip()

    return "\n".join([line(_HEADER, header=True), *(line(r) for r in rows), *notes])
