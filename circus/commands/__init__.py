"""The commands circusd understands; one module per command.

``COMMANDS`` is the explicit registry: a command exists when its class is listed here.
"""

from __future__ import annotations

import builtins

from circus.commands.addwatcher import AddWatcher
from circus.commands.base import Command
from circus.commands.decrproc import DecrProc
from circus.commands.dstats import Dstats
from circus.commands.get import Get
from circus.commands.globaloptions import GlobalOptions
from circus.commands.incrproc import IncrProc
from circus.commands.ipythonshell import IPythonShell
from circus.commands.kill import Kill
from circus.commands.list import List
from circus.commands.listen import Listen
from circus.commands.listpids import ListPids
from circus.commands.listsockets import ListSockets
from circus.commands.numprocesses import NumProcesses
from circus.commands.numwatchers import NumWatchers
from circus.commands.options import Options
from circus.commands.quit import Quit
from circus.commands.reload import Reload
from circus.commands.reloadconfig import ReloadConfig
from circus.commands.restart import Restart
from circus.commands.rmwatcher import RmWatcher
from circus.commands.sendsignal import Signal
from circus.commands.set import Set
from circus.commands.start import Start
from circus.commands.stats import Stats
from circus.commands.status import Status
from circus.commands.stop import Stop

COMMANDS: tuple[type[Command], ...] = (
    AddWatcher,
    DecrProc,
    Dstats,
    Get,
    GlobalOptions,
    IncrProc,
    IPythonShell,
    Kill,
    List,
    Listen,
    ListPids,
    ListSockets,
    NumProcesses,
    NumWatchers,
    Options,
    Quit,
    Reload,
    ReloadConfig,
    Restart,
    RmWatcher,
    Set,
    Signal,
    Start,
    Stats,
    Status,
    Stop,
)


def get_commands() -> dict[str, Command]:
    """One instance of each command, by name."""
    return {cls.name: cls() for cls in COMMANDS}


def reference() -> str:
    """The Markdown reference of every command, from the docstrings (docs/commands.md)."""
    parts = []
    for name, command in sorted(get_commands().items()):
        parts.append(_markdown(name, command.usage, command.desc))
    return "\n".join(parts)


def _markdown(name: str, usage: str, doc: str) -> str:
    """One command's docstring (reStructuredText-like) as a Markdown section."""
    # `set` and `list` here are the submodules circus.commands.set / .list, not builtins
    underline = builtins.set
    lines = doc.splitlines()
    out = [f"## `{name}`: {lines[0].strip()}", "", f"`circusctl {usage}`", ""]
    i = 2 if len(lines) > 1 and underline(lines[1].strip()) == {"="} else 1
    in_code = False

    def close_code() -> None:
        while out and not out[-1].strip():
            out.pop()
        out.extend(["```", ""])

    while i < len(lines):
        line = lines[i]
        following = lines[i + 1] if i + 1 < len(lines) else ""
        if line.strip() and following.strip() and underline(following.strip()) == {"-"}:
            if in_code:
                close_code()
                in_code = False
            out.append(f"### {line.strip()}")
            i += 2
            continue
        if line.strip() == "::":
            out.append("```")
            in_code = True
            i += 1
            while i < len(lines) and not lines[i].strip():
                i += 1
            continue
        if in_code and line.strip() and not line.startswith("    "):
            close_code()
            in_code = False
        out.append(line[4:] if in_code else line.replace("``", "`"))
        i += 1
    if in_code:
        close_code()
    text = "\n".join(out)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text.rstrip() + "\n"
