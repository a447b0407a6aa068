"""The INI dialect of circusd configuration files, read line by line.

The dialect is the one Circus 0.19 reads (see ``reference/OPTIONS.md`` §0), parsed by a
small line parser of our own so that every key keeps the file and line it came from:

* ``#`` or ``;`` in column 0, or a line starting with the word ``rem``, is a comment;
  inside a value only a ``;`` that follows whitespace starts a comment.
* ``key = value`` or ``key: value``; keys and section names are case-sensitive; a value
  of exactly ``""`` is the empty string; an indented line continues the previous value.
* A section header seen twice is one section; a key set twice keeps its first value
  (and the continuation lines of the ignored copy are ignored too).
* ``[DEFAULT]`` keys appear in every section.
* ``include`` (files) and ``include_dir`` (directories whose ``*.ini`` files are read)
  in the main file's ``[circus]`` section name more files: globs relative to the main
  file, read in sorted order, their sections merged with the ones read before. A file
  reached twice is read once; the includes of an included file are not followed; an
  ``include`` that matches no file, or an ``include_dir`` that matches no directory, is
  an error.

A file that cannot be read or parsed raises :class:`ConfigError` naming the file and
line. :func:`read_ini` returns the merged sections as :class:`Ini`; turning them into a
configuration is :mod:`circus.config`'s work.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from circus.errors import ConfigError
from circus.util.template import env_values, expand

__all__ = ["Entry", "Ini", "Location", "read_ini"]

log = logging.getLogger(__name__)

Location = tuple[str, int]

_HEADER = re.compile(r"^\[(?P<name>.*?)\]\s*(?:[;#].*)?$")
_INLINE_COMMENT = re.compile(r"\s;")
_GLOB_CHARS = re.compile(r"[*?\[]")


def read_ini(main: str, environ: Mapping[str, str]) -> tuple[Ini, list[str]]:
    """Read the file *main* and the files it includes.

    *main* is an absolute path; *environ* feeds ``$(circus.env.X)`` in the include
    patterns. Returns the merged sections and the files read, *main* first.
    """
    ini = Ini()
    ini.read(main, _read_text(main, None, None, None))
    return ini, _read_includes(ini, main, environ)


# --------------------------------------------------------------------------- line parser


@dataclass(slots=True)
class Entry:
    """One key as read: its value lines and where the key was written."""

    parts: list[str]
    path: str
    line: int

    @property
    def value(self) -> str:
        return "\n".join(self.parts).strip()


class _Ignored:
    """Marks that continuation lines belong to an ignored duplicate key."""


_IGNORED = _Ignored()


class Ini:
    """Sections of every file read so far, merged; the first value of a key wins."""

    def __init__(self) -> None:
        self.sections: dict[str, dict[str, Entry]] = {}
        self.headers: dict[str, Location] = {}

    def read(self, path: str, text: str) -> list[tuple[str, str, int]]:
        """Parse one file into the merged sections; returns its (section, key, line)s."""
        seen: list[tuple[str, str, int]] = []
        section_name = ""
        section: dict[str, Entry] | None = None
        current: Entry | _Ignored | None = None
        for lineno, raw in enumerate(text.splitlines(), 1):
            line = raw.rstrip()
            if not line.strip():
                continue
            first = line[0]
            if first in "#;" or (first in "rR" and line.split(None, 1)[0].lower() == "rem"):
                continue
            if first.isspace():
                if isinstance(current, _Ignored):
                    continue
                if current is None:
                    if line.lstrip()[0] in "#;":
                        continue
                    raise ConfigError(
                        "indented line with no key before it (keys start in column 0)",
                        path=path,
                        line=lineno,
                    )
                value = _strip_comment(line)
                if value:
                    current.parts.append(value)
                continue
            if first == "[":
                match = _HEADER.match(line)
                name = match.group("name").strip() if match else ""
                if not name:
                    raise ConfigError(
                        f"bad section header {line!r} (expected [name])", path=path, line=lineno
                    )
                section_name = name
                section = self.sections.setdefault(name, {})
                self.headers.setdefault(name, (path, lineno))
                current = None
                continue
            if section is None:
                raise ConfigError("text before the first [section] header", path=path, line=lineno)
            current, key = self._key_line(section, path, lineno, line)
            seen.append((section_name, key, lineno))
        return seen

    @staticmethod
    def _key_line(
        section: dict[str, Entry], path: str, lineno: int, line: str
    ) -> tuple[Entry | _Ignored, str]:
        positions = [pos for pos in (line.find("="), line.find(":")) if pos >= 0]
        if not positions:
            raise ConfigError(
                f"expected 'key = value', a [section] header or a comment, got {line!r}",
                path=path,
                line=lineno,
            )
        pos = min(positions)
        key = line[:pos].strip()
        if not key:
            raise ConfigError(f"no key name before {line[pos]!r}", path=path, line=lineno)
        value = _strip_comment(line[pos + 1 :])
        if value == '""':
            value = ""
        previous = section.get(key)
        if previous is not None:
            if previous.path == path:
                log.warning(
                    "%s:%d: %r is already set at line %d; this value is ignored",
                    path,
                    lineno,
                    key,
                    previous.line,
                    extra={"where": (path, lineno)},  # for circusd --check
                )
            return _IGNORED, key
        entry = Entry([value], path, lineno)
        section[key] = entry
        return entry, key

    def items(self, name: str) -> Iterator[tuple[str, Entry, bool]]:
        """(key, entry, inherited from [DEFAULT]) for a section, its own keys first."""
        own = self.sections.get(name, {})
        for key, entry in own.items():
            yield key, entry, False
        if name != "DEFAULT":
            for key, entry in self.sections.get("DEFAULT", {}).items():
                if key not in own:
                    yield key, entry, True


def _strip_comment(text: str) -> str:
    match = _INLINE_COMMENT.search(text)
    if match is not None:
        text = text[: match.start()]
    return text.strip()


def _read_text(path: str, origin: Entry | None, section: str | None, key: str | None) -> str:
    """The text of *path*; a ConfigError names *origin* (an include option) if given."""
    where: dict[str, Any] = {"path": path}
    if origin is not None:
        where = {"path": origin.path, "line": origin.line, "section": section, "option": key}
    try:
        with open(path, "rb") as stream:
            data = stream.read()
    except FileNotFoundError:
        message = "no such file" if origin is None else f"{path}: no such file"
        raise ConfigError(message, **where) from None
    except IsADirectoryError:
        message = "is a directory" if origin is None else f"{path}: is a directory"
        raise ConfigError(message, **where) from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        message = f"cannot read: {reason}" if origin is None else f"cannot read {path}: {reason}"
        raise ConfigError(message, **where) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError("not valid UTF-8 text", path=path, line=line) from None


# --------------------------------------------------------------------------- includes


def _read_includes(ini: Ini, main: str, environ: Mapping[str, str]) -> list[str]:
    files = [main]
    seen = {os.path.realpath(main)}
    own = ini.sections.get("circus", {})
    options = [(key, own[key]) for key in ("include", "include_dir") if key in own]
    base = os.path.dirname(main)
    values = env_values(environ)
    for key, entry in options:
        for pattern in expand(entry.value, values).split():
            for found in _include_matches(key, pattern, base, entry):
                real = os.path.realpath(found)
                if real in seen:
                    continue
                seen.add(real)
                files.append(os.path.abspath(found))
                for section, name, line in ini.read(
                    files[-1], _read_text(files[-1], entry, "circus", key)
                ):
                    if section == "circus" and name in ("include", "include_dir"):
                        log.warning(
                            "%s:%d: %s in an included file is not followed "
                            "(only the main file's is)",
                            files[-1],
                            line,
                            name,
                            extra={"where": (files[-1], line)},
                        )
    return files


def _include_matches(kind: str, pattern: str, base: str, entry: Entry) -> list[str]:
    full = os.path.join(base, os.path.expanduser(pattern))
    magic = _GLOB_CHARS.search(full) is not None

    def fail(message: str) -> ConfigError:
        return ConfigError(message, path=entry.path, line=entry.line, section="circus", option=kind)

    if kind == "include":
        if magic:
            matches = sorted(p for p in glob.glob(full) if os.path.isfile(p))
        else:
            matches = [full] if os.path.exists(full) else []
        if not matches:
            raise fail(f"{pattern!r} does not match any file ({full})")
        return matches
    directories = sorted(glob.glob(full)) if magic else [full]
    directories = [d for d in directories if os.path.isdir(d)]
    if not directories:
        raise fail(f"{pattern!r} is not a directory ({full})")
    matches = []
    for directory in directories:
        matches.extend(sorted(glob.glob(os.path.join(glob.escape(directory), "*.ini"))))
    return matches

