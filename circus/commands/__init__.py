"""The commands circusd understands; one module per command.

``COMMANDS`` is the explicit registry: a command exists when its class is listed here.
"""

from __future__ import annotations

from circus.commands.base import Command
from circus.commands.decrproc import DecrProc
from circus.commands.incrproc import IncrProc
from circus.commands.list import List
from circus.commands.listpids import ListPids
from circus.commands.numprocesses import NumProcesses
from circus.commands.numwatchers import NumWatchers
from circus.commands.quit import Quit
from circus.commands.reload import Reload
from circus.commands.restart import Restart
from circus.commands.start import Start
from circus.commands.status import Status
from circus.commands.stop import Stop

COMMANDS: tuple[type[Command], ...] = (
    DecrProc,
    IncrProc,
    List,
    ListPids,
    NumProcesses,
    NumWatchers,
    Quit,
    Reload,
    Restart,
    Start,
    Status,
    Stop,
)


def get_commands() -> dict[str, Command]:
    """One instance of each command, by name."""
    return {cls.name: cls() for cls in COMMANDS}
