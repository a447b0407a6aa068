"""``circusctl help COMMAND``: a command's docstring as plain text for a terminal.

The docstrings are written in reStructuredText for the reference (docs/commands.md). Here
the markup goes: the title's underline, ``::`` and ``.. code-block::`` (their literal
blocks stay indented), double backquotes, ``**strong**``, ``:role:`text```, links. Prose
paragraphs and list items are wrapped again to the terminal's width. The wire format (the
"ZMQ Message" section) is left out unless asked for, and the "Command line" section always
is: the usage line says it.
"""

from __future__ import annotations

import re
import shutil
import textwrap
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from circus.commands.base import Command

WIRE_SECTION = "ZMQ Message"
DROPPED_SECTIONS = ("Command line",)
WIDTH = 88  # at most; less on a narrower terminal

_DIRECTIVE = re.compile(r"^\s*\.\.\s+([\w-]+)::\s*(.*)$")
_BULLET = re.compile(r"^(\s*)([-*+]|\d+[.)])\s+")
_WORD = re.compile(r"[A-Za-z_][\w.*]*")


def _literal(match: re.Match[str]) -> str:
    """``lines`` reads 'lines', so that "the last ``lines`` lines" still makes sense;
    ``<name>``, ``--json``, ``{...}`` stand out by themselves."""
    text = match.group(1)
    return f"'{text}'" if _WORD.fullmatch(text) else text


_INLINE: tuple[tuple[re.Pattern[str], Any], ...] = (
    (re.compile(r"``(.+?)``"), _literal),
    (re.compile(r"\*\*(.+?)\*\*"), r"\1"),
    (re.compile(r":[\w-]+:`([^`<]+?)\s*(?:<[^>]*>)?`"), r"\1"),  # :ref:`text <target>`
    (re.compile(r"`([^`<]+?)\s*<([^>]+)>`__?"), r"\1 (\2)"),  # `text <url>`_
    (re.compile(r"`([^`]+)`_"), r"\1"),
)


def inline(text: str) -> str:
    """*text* without inline markup."""
    for pattern, repl in _INLINE:
        text = pattern.sub(repl, text)
    return text


def sections(doc: str) -> Iterator[tuple[str, list[str]]]:
    """(heading, body lines) of a docstring; the first heading is the title."""
    lines = doc.splitlines()
    heading = ""
    body: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        under = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if line.strip() and len(under) >= 3 and set(under) in ({"="}, {"-"}, {"~"}):
            if heading or any(b.strip() for b in body):
                yield heading, body
            heading, body = line.strip(), []
            i += 2
            continue
        body.append(line)
        i += 1
    yield heading, body


def _blocks(lines: Sequence[str]) -> Iterator[tuple[str, list[str]]]:
    """("text" | "literal", lines): paragraphs and list items, or literal blocks."""
    literal_next = False
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        indent = len(line) - len(line.lstrip())
        if literal_next and indent > 0:
            block = []
            while i < len(lines) and (not lines[i].strip() or
                                      len(lines[i]) - len(lines[i].lstrip()) >= indent):
                block.append(lines[i])
                i += 1
            while block and not block[-1].strip():
                block.pop()
            yield "literal", textwrap.dedent("\n".join(block)).splitlines()
            literal_next = False
            continue
        literal_next = False
        directive = _DIRECTIVE.match(line)
        if directive:
            kind, rest = directive.group(1).lower(), directive.group(2).strip()
            if kind in ("code-block", "code", "sourcecode"):
                literal_next = True
            elif rest:
                yield "text", [f"{kind.capitalize()}: {rest}"]
            i += 1
            continue
        if line.strip() == "::":
            literal_next = True
            i += 1
            continue
        block = [line]
        i += 1
        while (i < len(lines) and lines[i].strip() and not _BULLET.match(lines[i])
               and not _DIRECTIVE.match(lines[i])):
            block.append(lines[i])
            i += 1
        if block[-1].rstrip().endswith("::"):
            literal_next = True
            block[-1] = block[-1].rstrip()[:-1]  # "Example::" reads "Example:"
        yield "text", block


def render_body(lines: Sequence[str], width: int) -> list[str]:
    out: list[str] = []
    in_list = False
    for kind, block in _blocks(lines):
        bullet = _BULLET.match(block[0]) if kind == "text" else None
        if out and not (in_list and bullet):
            out.append("")  # items of one list stay together
        in_list = bullet is not None
        if kind == "literal":
            out.extend(("    " + line).rstrip() for line in block)
            continue
        text = inline(" ".join(line.strip() for line in block))  # markup may span lines
        indent = " " * (len(bullet.group(0)) if bullet else 0)
        out.extend(textwrap.wrap(text, width, subsequent_indent=indent,
                                 break_on_hyphens=False) or [""])
    return out


def plain(doc: str, *, wire: bool = False, width: int | None = None) -> str:
    """The docstring *doc* as plain text; with *wire*, its "ZMQ Message" section too."""
    if width is None:
        width = min(WIDTH, shutil.get_terminal_size((WIDTH, 24)).columns - 1)
    out: list[str] = []
    for n, (heading, body) in enumerate(sections(textwrap.dedent(doc).strip("\n"))):
        if heading in DROPPED_SECTIONS or (heading == WIRE_SECTION and not wire):
            continue
        if out:
            out.append("")
        if heading:
            out.extend([inline(heading) if n == 0 else f"{inline(heading)}:", ""])
        out.extend(render_body(body, width))
    while out and not out[-1]:
        out.pop()
    return "\n".join(out)


# circusctl's own commands, which are not commands of the daemon: (synopsis, docstring)
CLIENT_HELP = {
    "help": ("help [--wire] [<command>]", """\
Show the documentation of a command
===================================

Without a command, the options and the list of commands. With ``--wire``, also the
ZeroMQ message the command sends and the reply it gets (docs/commands.md has them all).
"""),
    "completion": ("completion bash|zsh", """\
Print a shell completion script
===============================

Prints a script that completes circusctl's command names, options, and watcher names
(asked of the daemon at the endpoint typed, else ``$CIRCUSCTL_ENDPOINT``, else the
default, when it can be reached). Load it with ``source <(circusctl completion bash)``
in ``~/.bashrc``, or ``source <(circusctl completion zsh)`` after ``compinit`` in
``~/.zshrc``.
"""),
    "keygen": ("keygen NAME [--dir DIR]", """Write a CURVE key pair
======================

Writes ``NAME.key`` (the public key: copy it where it is needed) and ``NAME.key_secret``
(the pair, mode 0600: it stays with its owner), in the format ``zmq.auth`` writes, in
``DIR`` (default ``$XDG_CONFIG_HOME/circus``, else ``~/.config/circus``, where circusctl
looks for ``client.key_secret`` and ``server.key`` when it is given no key). An existing
key is never overwritten.

For circusd: ``circusctl keygen server --dir /etc/circus/curve``, then
``curve_secret_key = /etc/circus/curve/server.key_secret`` in ``[circus]``. For a
client: ``circusctl keygen client``, copy ``client.key`` into one of circusd's
``curve_admin_keys``, ``curve_operator_keys`` or ``curve_reader_keys`` directories and
circusd's ``server.key`` next to ``client.key_secret``. See "Securing circusd" in
docs/deployment.md.
"""),
}


def command_help(command: Command, wire: bool = False) -> str:
    """``circusctl help NAME``: the usage line, the docstring as text, the options."""
    lines = [f"usage: circusctl {command.usage}", "", plain(command.desc, wire=wire)]
    if command.flags:
        lines += ["", "options:"]
        for flag in command.flags:
            value = f" {'|'.join(flag.choices)}" if flag.choices else (
                " VALUE" if flag.takes_value else "")
            name = f"--{flag.name}{value}"
            lines.append(f"  {name:<26} {flag.help}" if len(name) < 27
                         else f"  {name}\n  {'':<26} {flag.help}")
    if not wire:
        lines += ["", f"(circusctl help --wire {command.name} also shows its ZeroMQ message)"]
    return "\n".join(lines)
