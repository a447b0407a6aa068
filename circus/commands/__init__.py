"""The commands circusd understands; one module per command.

``REGISTRY`` is the explicit list: a command exists when it is named there. A test checks
that each name matches its class and that every module in this package is registered.
"""

from __future__ import annotations

import builtins
import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from circus.commands.base import Command

# name -> (module in circus.commands, class). Modules are imported when a command is
# needed, so a one-shot `circusctl status` loads one small module, not all of them.
REGISTRY: dict[str, tuple[str, str]] = {
    "add": ("addwatcher", "AddWatcher"),
    "decr": ("decrproc", "DecrProc"),
    "dstats": ("dstats", "Dstats"),
    "get": ("get", "Get"),
    "globaloptions": ("globaloptions", "GlobalOptions"),
    "incr": ("incrproc", "IncrProc"),
    "ipython": ("ipythonshell", "IPythonShell"),
    "kill": ("kill", "Kill"),
    "list": ("list", "List"),
    "listen": ("listen", "Listen"),
    "listpids": ("listpids", "ListPids"),
    "listsockets": ("listsockets", "ListSockets"),
    "numprocesses": ("numprocesses", "NumProcesses"),
    "numwatchers": ("numwatchers", "NumWatchers"),
    "options": ("options", "Options"),
    "quit": ("quit", "Quit"),
    "reload": ("reload", "Reload"),
    "reloadconfig": ("reloadconfig", "ReloadConfig"),
    "restart": ("restart", "Restart"),
    "rm": ("rmwatcher", "RmWatcher"),
    "set": ("set", "Set"),
    "signal": ("sendsignal", "Signal"),
    "start": ("start", "Start"),
    "stats": ("stats", "Stats"),
    "status": ("status", "Status"),
    "stop": ("stop", "Stop"),
    "tail": ("tail", "Tail"),
    "wait": ("wait", "Wait"),
}


def command_class(name: str) -> type[Command] | None:
    """The class of the command *name*, importing only its module; None if unknown."""
    entry = REGISTRY.get(name)
    if entry is None:
        return None
    module = importlib.import_module(f"circus.commands.{entry[0]}")
    cls: type[Command] = getattr(module, entry[1])
    return cls


def get_command(name: str) -> Command | None:
    cls = command_class(name)
    return cls() if cls is not None else None


def get_commands() -> dict[str, Command]:
    """One instance of each command, by name."""
    return {cls.name: cls() for cls in __getattr__("COMMANDS")}


def __getattr__(attr: str) -> Any:
    if attr == "COMMANDS":  # every command class, imported on first use
        classes = tuple(command_class(name) for name in sorted(REGISTRY))
        globals()["COMMANDS"] = classes
        return classes
    raise AttributeError(f"module 'circus.commands' has no attribute {attr!r}")


def reference() -> str:
    """The Markdown reference of every command, from the docstrings (docs/commands.md)."""
    parts = []
    for name, command in sorted(get_commands().items()):
        parts.append(_markdown(name, command.usage, command.desc, str(command.tier)))
    return "\n".join(parts)


def _markdown(name: str, usage: str, doc: str, tier: str = "admin") -> str:
    """One command's docstring (reStructuredText-like) as a Markdown section."""
    # `set` and `list` here are the submodules circus.commands.set / .list, not builtins
    underline = builtins.set
    lines = doc.splitlines()
    out = [f"## `{name}`: {lines[0].strip()}", "", f"`circusctl {usage}`", "",
           f"Tier: `{tier}` (with CURVE keys: see 'Securing circusd' in deployment.md).", ""]
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
