"""The commands circusd understands; one module per command.

``COMMANDS`` is the explicit registry: a command exists when its class is listed here.
"""

from __future__ import annotations

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
