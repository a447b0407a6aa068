"""Every command is documented the same way, and docs/commands.md says what they say."""

from __future__ import annotations

from pathlib import Path

import pytest

from circus.commands import COMMANDS, get_commands, reference
from circus.commands.base import Command

DOCS = Path(__file__).resolve().parents[3] / "docs" / "commands.md"

# Every command of Circus 0.19, plus the seed's listpids, our tail (issue 4) and wait.
CIRCUS_019 = {"add", "decr", "dstats", "get", "globaloptions", "incr", "ipython", "kill",
              "list", "listen", "listsockets", "numprocesses", "numwatchers", "options",
              "quit", "reload", "reloadconfig", "restart", "rm", "set", "signal", "start",
              "stats", "status", "stop"}


def test_every_circus_command_exists() -> None:
    assert set(get_commands()) == CIRCUS_019 | {"listpids", "tail", "wait"}
    assert len({cls.name for cls in COMMANDS}) == len(COMMANDS)


@pytest.mark.parametrize("cls", COMMANDS, ids=lambda c: c.name)
def test_docstring_is_the_user_documentation(cls: type[Command]) -> None:
    doc = cls.desc
    lines = doc.splitlines()
    assert set(lines[1]) == {"="} and len(lines[1]) == len(lines[0])
    assert "ZMQ Message\n-----------" in doc
    assert "Command line\n------------" in doc
    assert f'"command": "{cls.name}"' in doc or cls.name == "listen"
    assert f"$ circusctl {cls.name}" in doc
    assert cls.usage.split()[0] == cls.name
    assert cls.short == lines[0]


def test_docs_page_is_up_to_date() -> None:
    text = DOCS.read_text()
    assert text.endswith(reference()), (
        "docs/commands.md is out of date: regenerate its reference part with\n"
        ".venv/bin/python -c \"from circus.commands import reference; "
        "print(reference(), end='')\"")
