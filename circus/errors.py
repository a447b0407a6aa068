"""Errors Circus raises on purpose.

::

    CircusError
    ├── CommandError            a command failed; becomes an error reply      errno 5
    │   ├── MessageError        bad, missing or wrongly typed property         errno 3
    │   │   └── NotFoundError   no such watcher / process / socket             errno 3
    │   ├── UnknownCommandError                                                errno 2
    │   └── AlreadyExistsError  add with a name that is taken                  errno 5
    ├── ConfigError             a config file or value cannot be used (file:line)
    ├── CallError               client side: the daemon did not answer, or answered an error
    └── ArgumentError           circusctl: bad arguments for a command

The controller is the only place where a ``CommandError`` becomes an error reply.
"""

from __future__ import annotations

from enum import IntEnum
from typing import ClassVar


class Errno(IntEnum):
    """The ``errno`` values of Circus error replies; clients depend on them."""

    NOT_SPECIFIED = 0
    INVALID_JSON = 1
    UNKNOWN_COMMAND = 2
    MESSAGE_ERROR = 3
    OS_ERROR = 4
    COMMAND_ERROR = 5
    BAD_MSG_DATA_ERROR = 6


class CircusError(Exception):
    """Base class of every error Circus raises on purpose."""


class CommandError(CircusError):
    """A command failed in a way the client should be told about."""

    errno: ClassVar[Errno] = Errno.COMMAND_ERROR


class MessageError(CommandError):
    """A property is missing, has the wrong type or an unusable value."""

    errno = Errno.MESSAGE_ERROR


class NotFoundError(MessageError):
    """The named watcher, process or socket does not exist."""


class UnknownCommandError(CommandError):
    errno = Errno.UNKNOWN_COMMAND


class AlreadyExistsError(CommandError):
    """A watcher with that name already exists."""


class ConfigError(CircusError):
    """A configuration file or value cannot be used.

    The message names the file, line, section and option when they are known, so an
    operator can go straight to the mistake.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        section: str | None = None,
        option: str | None = None,
    ) -> None:
        self.message = message
        self.path = path
        self.line = line
        self.section = section
        self.option = option
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path if self.line is None else f"{self.path}:{self.line}"
        parts = []
        if self.section is not None:
            parts.append(f"[{self.section}]")
        if self.option is not None:
            parts.append(self.option)
        ctx = " ".join(parts)
        prefix = ": ".join(p for p in (where, ctx) if p)
        return f"{prefix}: {self.message}" if prefix else self.message


class OptionError(ValueError):
    """A watcher option has a value that cannot be used; ``option`` names it."""

    def __init__(self, option: str, message: str) -> None:
        self.option = option
        self.reason = message
        super().__init__(f"{option}: {message}")


class CallError(CircusError):
    """A client call failed: timeout, unreachable daemon, or an error reply."""


class ArgumentError(CircusError):
    """Bad command-line arguments for a circusctl command."""
