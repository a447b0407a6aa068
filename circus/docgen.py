"""The option tables of ``docs/configuration.md``, generated from :mod:`circus.options`.

``python -m circus.docgen`` rewrites the block between ``<!-- options:begin -->`` and
``<!-- options:end -->`` in ``docs/configuration.md``; ``tests/unit/test_docs.py`` fails when
the block and :func:`option_tables` disagree.
"""

from __future__ import annotations

import signal
import socket
import sys
from pathlib import Path
from typing import Any

from circus.options import CIRCUS_OPTIONS, SOCKET_OPTIONS, WATCHER_OPTIONS, Option

BEGIN = "<!-- options:begin -->"
END = "<!-- options:end -->"
DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"

# How each converter kind of the option table reads in the docs.
_TYPES = {
    "str": "string",
    "optstr": "string",
    "int": "integer",
    "optint": "integer",
    "float": "number",
    "bool": "boolean",
    "signal": "signal",
    "optsignal": "signal",
    "user": "name or number",
    "args": "string",
    "octal": "octal",
    "family": "family",
    "socktype": "socket type",
    "depends": "watcher list",
    "ready": "readiness check",
    "health": "liveness check",
}


def _default(option: Option) -> str:
    value: Any = option.default
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if option.kind == "signal":
        return f"`{signal.Signals(value).name}`"
    if option.kind == "family":
        return f"`{socket.AddressFamily(value).name}`"
    if option.kind == "socktype":
        return f"`{socket.SocketKind(value).name}`"
    if option.kind == "octal":
        return f"`{value:03o}`"
    if value == "":
        return '`""`'
    return f"`{value}`"


def _cell(text: str) -> str:
    """Help text as one table cell: a ``|`` would end the cell, a ``*`` could start emphasis."""
    return text.replace("|", "\\|").replace("*", "\\*")


def _table(options: dict[str, Option], *, set_column: bool = False) -> list[str]:
    head = "| option | type | default | meaning |"
    rule = "|---|---|---|---|"
    if set_column:
        head += " on `set` |"
        rule += "---|"
    lines = [head, rule]
    for option in options.values():
        row = (
            f"| `{option.name}` | {_TYPES.get(option.kind, option.kind)} | {_default(option)} "
            f"| {_cell(option.help)} |"
        )
        if set_column:
            row += " reload |" if option.reload else " live |"
        lines.append(row)
    return lines


def _family_table() -> list[str]:
    from circus.keys import FAMILIES

    lines = ["| key | value | on `set` |", "|---|---|---|"]
    for family in FAMILIES:
        change = "reload" if family.reload else "live"
        lines.append(f"| `{family.pattern}` | {_cell(family.help)} | {change} |")
    return lines


def option_tables() -> str:
    """The Markdown tables of the ``[circus]``, ``[watcher:NAME]`` and ``[socket:NAME]`` options."""
    lines = ["### `[circus]`", "", *_table(CIRCUS_OPTIONS), ""]
    lines += ["### `[watcher:NAME]`", "", *_table(WATCHER_OPTIONS, set_column=True), ""]
    lines += ["Besides the options above, a watcher takes these keys "
              "(the same in a file, with `circusctl set` and in JSON):", "",
              *_family_table(), ""]
    lines += ["### `[socket:NAME]`", "", *_table(SOCKET_OPTIONS)]
    return "\n".join(lines) + "\n"


def embedded(text: str) -> str | None:
    """The text between the markers in *text*, or None if a marker is missing."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        return None
    return text[start + len(BEGIN) : end].strip("\n") + "\n"


def refresh(path: Path = DOC) -> bool:
    """Rewrite the block between the markers of *path*; True if the file changed."""
    text = path.read_text(encoding="utf-8")
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"{path}: the markers {BEGIN} and {END} are missing")
    new = text[: start + len(BEGIN)] + "\n" + option_tables() + text[end:]
    if new == text:
        return False
    path.write_text(new, encoding="utf-8")
    return True


def main() -> int:
    changed = refresh()
    print(f"{DOC}: {'option tables refreshed' if changed else 'already up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
