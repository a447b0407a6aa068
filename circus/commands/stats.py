"""``stats``: CPU, memory and age of the processes of a watcher, or of all."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TextIO

from circus.commands.base import Command, Flag, Props, Reply, make_message
from circus.errors import ArgumentError, NotFoundError
from circus.tiers import Tier

if TYPE_CHECKING:
    import asyncio

    from circus.types import ArbiterAPI, ProcessAPI, WatcherAPI


def _collect(processes: Iterable[ProcessAPI]) -> dict[str, Any]:
    return {str(p.pid): p.info() for p in processes}


STATS_HEADER = ("PID", "CMD", "USER", "NICE", "RSS", "VMS", "CPU%", "MEM%", "TIME")


def _row(info: Mapping[str, Any], indent: str) -> tuple[str, ...]:
    return (f"{indent}{info.get('pid')}", str(info.get("cmdline")), str(info.get("username")),
            str(info.get("nice")), str(info.get("mem_info1")), str(info.get("mem_info2")),
            str(info.get("cpu")), str(info.get("mem")), str(info.get("ctime")))


def format_procinfo(info: Any, indent: str = "") -> list[tuple[str, ...] | str]:
    """One row per process (its children indented below it); a process that is gone is
    the message that says so."""
    if not isinstance(info, Mapping):
        return [f"{indent}{info}"]
    rows: list[tuple[str, ...] | str] = [_row(info, indent)]
    for child in info.get("children") or []:
        rows.extend(format_procinfo(child, indent + "  "))
    return rows


def stats_table(infos: Iterable[Any], indent: str = "") -> list[str]:
    """Processes as circusctl prints them: a header, then aligned columns."""
    rows: list[tuple[str, ...] | str] = [STATS_HEADER]
    for info in infos:
        rows.extend(format_procinfo(info))
    if len(rows) == 1:
        return []  # no process: no header either
    cells = [r for r in rows if isinstance(r, tuple)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(STATS_HEADER))]
    return [indent + (r if isinstance(r, str) else
                      "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
            for r in rows]


def _by_pid(infos: Mapping[str, Any]) -> list[Any]:
    return [info for _, info in sorted(infos.items(), key=lambda kv: int(kv[0]))]


class Stats(Command):
    """\
    Get process infos
    =================

    CPU (``cpu``, percent; the first reading of a process may be 0.0), memory (``mem``,
    percent of RAM; ``mem_info1`` resident and ``mem_info2`` virtual size), CPU time
    (``ctime``), ``username``, ``nice``, ``cmdline``, ``create_time``, ``age`` and
    ``started`` (seconds), ``wid`` and the direct ``children`` of each process: for all
    watchers, for one watcher, or for one of its processes (``process`` is an OS pid).
    ``extended`` also runs the watcher's ``extended_stats`` hook, which may add to them.
    A value that cannot be read is ``"N/A"``.

    ZMQ Message
    -----------

    ::

        {"command": "stats",
         "properties": {"name": "<name>", "process": <pid>, "extended": false}}

    Response: ``{"status": "ok", "infos": {"<watcher>": {"<pid>": {...}}}}`` for all
    watchers, ``{"status": "ok", "name": "<name>", "info": {"<pid>": {...}}}`` for one,
    ``{"status": "ok", "process": <pid>, "info": {...}}`` for one process.

    Command line
    ------------

    ::

        $ circusctl stats [--extended] [--watch] [<name> [<pid>]]

    Each watcher's processes are a table under a ``PID  CMD  USER  NICE  RSS  VMS  CPU%
    MEM%  TIME`` header. ``--watch`` (or ``-w``) asks again every second and prints the
    table anew until Ctrl-C or SIGTERM (exit status 0): on a terminal the screen is
    cleared first, as ``watch`` does; otherwise each table follows the previous one under
    a line with the time. With ``--json`` it prints one reply per line. For a live view
    with sorting, health and keys, see ``circus-top``.
    """

    name = "stats"
    tier = Tier.READER
    usage = "stats [--extended] [--watch] [<name> [<pid>]]"
    flags = (Flag("extended", "also run the extended_stats hook"),
             Flag("watch", "print the figures again every second until Ctrl-C; also -w"))

    def __init__(self) -> None:
        # One collection at a time: each process keeps one psutil object, and its CPU
        # percentage is measured between two reads of it.
        self._collecting: asyncio.Lock | None = None

    async def collect(self, processes: Iterable[ProcessAPI]) -> dict[str, Any]:
        """``{pid as str: procinfo}`` for *processes*.

        psutil reads /proc, which takes a while for a thousand processes, so this runs
        in a worker thread while the loop keeps serving.
        """
        import asyncio  # daemon side only

        snapshot = list(processes)
        if self._collecting is None:
            self._collecting = asyncio.Lock()
        async with self._collecting:
            return await asyncio.to_thread(_collect, snapshot)

    def message(self, *args: str, **opts: Any) -> Props:
        if "-w" in args:
            args = tuple(a for a in args if a != "-w")
            opts["watch"] = True
        if len(args) > 2:
            raise ArgumentError(f"usage: {self.usage}")
        props: dict[str, Any] = dict(opts)
        if not props.get("watch"):
            props.pop("watch", None)  # circusctl's business: never sent
        if args:
            props["name"] = args[0]
        if len(args) == 2:
            try:
                props["process"] = int(args[1])
            except ValueError:
                raise ArgumentError(f"a pid is a number, got {args[1]!r}") from None
        return make_message(self.name, **props)

    def validate(self, arbiter: ArbiterAPI, props: Props) -> None:
        super().validate(arbiter, props)
        self.bool_prop(props, "extended")
        if "name" in props:
            watcher = self.watcher(arbiter, props)
            if "process" in props:
                self._process(watcher, props)
        elif "process" in props:
            self.int_prop(props, "process")

    def _process(self, watcher: WatcherAPI, props: Props) -> ProcessAPI:
        pid = self.int_prop(props, "process")
        process = watcher.get_process(pid)
        if process is None:
            raise NotFoundError(f"process {pid} not found in {watcher.name!r}")
        return process

    async def _extend(self, watcher: WatcherAPI, infos: Mapping[str, Any]) -> None:
        if not watcher.has_hook("extended_stats"):
            return
        for pid, info in infos.items():
            if isinstance(info, dict):
                await watcher.call_hook("extended_stats", pid=int(pid), stats=info)

    async def execute(self, arbiter: ArbiterAPI, props: Props) -> Reply:
        extended = self.bool_prop(props, "extended")
        if "name" in props:
            watcher = self.watcher(arbiter, props)
            if "process" in props:
                process = self._process(watcher, props)
                infos = await self.collect([process])
                if extended:
                    await self._extend(watcher, infos)
                return {"process": process.pid, "info": infos[str(process.pid)]}
            infos = await self.collect(watcher.processes.values())
            if extended:
                await self._extend(watcher, infos)
            return {"name": watcher.name, "info": infos}
        result: dict[str, Any] = {}
        for watcher in list(arbiter.watchers):
            result[watcher.name] = await self.collect(watcher.processes.values())
            if extended:
                await self._extend(watcher, result[watcher.name])
        return {"infos": result}

    def console_msg(self, reply: Reply) -> str:
        if reply.get("status") == "error":
            return super().console_msg(reply)
        lines: list[str] = []
        if "infos" in reply:
            for name, infos in sorted(reply["infos"].items()):
                lines.append(f"{name}:")
                lines.extend(stats_table(_by_pid(infos), "  "))
        elif "process" in reply:
            lines.extend(stats_table([reply.get("info")]))
        else:
            lines.append(f"{reply.get('name')}:")
            lines.extend(stats_table(_by_pid(reply.get("info") or {}), "  "))
        return "\n".join(lines)


def watch(message: Props, call: Callable[[Props], Reply], out: TextIO, *,
          as_json: bool = False, interval: float = 1.0,
          clear: bool | None = None) -> Reply | None:
    """``circusctl stats --watch``: *message* sent every *interval* seconds and its reply
    printed, until Ctrl-C or SIGTERM (then None) or an error reply (returned). *call*'s
    own errors (no daemon, time-out) propagate."""
    import json
    import os
    import time

    from circus.commands.tail import Stopped, on_sigterm

    if clear is None:
        clear = out.isatty() and not as_json
    command = Stats()
    restore = on_sigterm()
    try:
        while True:
            started = time.monotonic()
            reply = call(dict(message, id=os.urandom(16).hex()))  # a late reply matches none
            if reply.get("status") == "error":
                return reply
            if as_json:
                out.write(json.dumps(reply) + "\n")
            else:
                stamp = time.strftime("%Y-%m-%d %H:%M:%S")
                head = f"Every {interval:g}s: circusctl stats" + (
                    f" {message['properties']['name']}" if "name" in message.get(
                        "properties", {}) else "")
                out.write(("\x1b[H\x1b[2J" if clear else "")
                          + f"{head}    {stamp}\n\n{command.console_msg(reply)}\n"
                          + ("" if clear else "\n"))
            out.flush()
            time.sleep(max(0.0, interval - (time.monotonic() - started)))
    except (KeyboardInterrupt, Stopped):
        return None
    finally:
        restore()


def stream(command: str, message: Props, call: Callable[[Props], Reply], out: TextIO, *,
           as_json: bool = False) -> Reply | None:
    """What circusctl runs for ``tail -f`` and ``stats --watch``: until Ctrl-C or
    SIGTERM (then None), or an error reply (returned)."""
    from circus.commands.tail import Follow

    if command == "tail":
        return Follow(message["properties"], out, as_json=as_json).run(call)
    return watch(message, call, out, as_json=as_json)
