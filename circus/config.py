"""The INI reader: turns a circusd configuration file into plain dicts.

The dialect is the one Circus 0.19 reads (see ``reference/OPTIONS.md`` §0), parsed by a
small line parser of our own so that every key keeps the file and line it came from:

* ``#`` or ``;`` in column 0, or a line starting with the word ``rem``, is a comment;
  inside a value only a ``;`` that follows whitespace starts a comment.
* ``key = value`` or ``key: value``; keys and section names are case-sensitive; a value
  of exactly ``""`` is the empty string; an indented line continues the previous value.
* A section header seen twice is one section; a key set twice keeps its first value
  (and the continuation lines of the ignored copy are ignored too).
* ``[DEFAULT]`` keys appear in every section.

Everything that would make the configuration unusable raises :class:`ConfigError`
naming the file, line, section and option, so ``circusd`` can refuse to start (and
``reloadconfig`` can refuse the new file) with one clear message.

Where 0.19 differs (OPTIONS.md §10), this reader keeps the promise rather than the bug:
floats for ``warmup_delay``, an octal socket ``umask``, a watcher's ``env = K=V,...``
line honoured, no ``__name__`` key, include globs read in sorted order, and an
``include`` that matches nothing, an unknown ``rlimit_*`` or a ``stdin_socket`` naming
no socket refused here instead of failing later in a child.
"""

from __future__ import annotations

import glob
import logging
import math
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from circus.errors import ConfigError
from circus.keys import CUSTOM, ENV, STREAMS, group, key_for, together
from circus.options import (
    CIRCUS_OPTIONS,
    SOCKET_OPTIONS,
    WATCHER_OPTIONS,
    Option,
)
from circus.util.accounts import group_id, user_id
from circus.util.convert import to_int
from circus.util.template import env_values, expand, expand_env_vars

__all__ = ["Config", "load_config", "watcher_defaults"]

log = logging.getLogger(__name__)

Location = tuple[str, int]

# [circus] keys read by the loader itself and not passed on.
_LOADER_KEYS = ("include", "include_dir", "stream_backend")

# Watcher keys that would clash with the dict built here (or with Watcher arguments).
_RESERVED_WATCHER_KEYS = frozenset(
    {"stdout_stream", "stderr_stream", "hooks", "rlimits", "loop", "prereload_fn"}
)

_LOG_LEVELS = ("critical", "error", "warning", "info", "debug")

_DOTTED = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*[.:][A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*$")
_HEADER = re.compile(r"^\[(?P<name>.*?)\]\s*(?:[;#].*)?$")
_INLINE_COMMENT = re.compile(r"\s;")
_MULTICAST = re.compile(r"^udp://(?P<host>[0-9.]+):(?P<port>\d+)$")
_GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass
class Config:
    """A loaded configuration; see :func:`load_config`."""

    path: str
    files: list[str]
    circus: dict[str, Any]
    env: dict[str, str]
    watchers: list[dict[str, Any]]
    sockets: list[dict[str, Any]]
    plugins: list[dict[str, Any]]
    sources: dict[tuple[str, str], Location]
    # Where each section header was first seen: section name -> (file, line).
    section_sources: dict[str, Location] = field(default_factory=dict)

    def location(self, section: str, key: str | None = None) -> Location | None:
        """(file, line) of a key, or of the section header when *key* is None or unknown."""
        if key is not None and (section, key) in self.sources:
            return self.sources[(section, key)]
        return self.section_sources.get(section)


def watcher_defaults() -> dict[str, Any]:
    """``{option name: default}`` for every watcher option."""
    return {name: option.default for name, option in WATCHER_OPTIONS.items()}


# --------------------------------------------------------------------------- line parser


@dataclass(slots=True)
class _Entry:
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


class _Ini:
    """Sections of every file read so far, merged; the first value of a key wins."""

    def __init__(self) -> None:
        self.sections: dict[str, dict[str, _Entry]] = {}
        self.headers: dict[str, Location] = {}

    def read(self, path: str, text: str) -> list[tuple[str, str, int]]:
        """Parse one file into the merged sections; returns its (section, key, line)s."""
        seen: list[tuple[str, str, int]] = []
        section_name = ""
        section: dict[str, _Entry] | None = None
        current: _Entry | _Ignored | None = None
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
        section: dict[str, _Entry], path: str, lineno: int, line: str
    ) -> tuple[_Entry | _Ignored, str]:
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
                )
            return _IGNORED, key
        entry = _Entry([value], path, lineno)
        section[key] = entry
        return entry, key

    def items(self, name: str) -> Iterator[tuple[str, _Entry, bool]]:
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


def _read_text(path: str, origin: _Entry | None, section: str | None, key: str | None) -> str:
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


# --------------------------------------------------------------------------- loading


def load_config(
    path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
) -> Config:
    """Read the configuration file *path* and the files it includes.

    *environ* stands for circusd's environment (``os.environ`` by default): it feeds
    ``$(circus.env.X)`` and the ``$VAR`` pass over watcher environments.

    Raises:
        ConfigError: the files cannot be read or the configuration cannot be used.
    """
    environ = dict(os.environ if environ is None else environ)
    main = os.path.abspath(os.fspath(path))
    ini = _Ini()
    ini.read(main, _read_text(main, None, None, None))
    files = _read_includes(ini, main, environ)
    return _Builder(ini, main, files, environ).build()


def _read_includes(ini: _Ini, main: str, environ: Mapping[str, str]) -> list[str]:
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
                        )
    return files


def _include_matches(kind: str, pattern: str, base: str, entry: _Entry) -> list[str]:
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


class _Builder:
    """Turns the merged sections into a :class:`Config`."""

    def __init__(self, ini: _Ini, main: str, files: list[str], environ: dict[str, str]):
        self.ini = ini
        self.main = main
        self.files = files
        self.environ = environ
        self.sources: dict[tuple[str, str], Location] = {}

    # ------------------------------------------------------------------ helpers

    def error(self, message: str, section: str, key: str | None = None) -> ConfigError:
        path, line = self.ini.headers.get(section, (self.main, 0))
        entry = self._entry(section, key) if key is not None else None
        if entry is not None:
            path, line = entry.path, entry.line
        return ConfigError(message, path=path, line=line, section=section, option=key)

    def _entry(self, section: str, key: str) -> _Entry | None:
        entry = self.ini.sections.get(section, {}).get(key)
        if entry is None:
            entry = self.ini.sections.get("DEFAULT", {}).get(key)
        return entry

    def convert(self, option: Option, raw: str, section: str, key: str) -> Any:
        try:
            return option.text(raw)
        except (ValueError, TypeError) as exc:
            raise self.error(str(exc), section, key) from None

    # ------------------------------------------------------------------ build

    def build(self) -> Config:
        kinds: dict[str, list[str]] = {"watcher": [], "socket": [], "plugin": [], "env": []}
        for name in self.ini.sections:
            for key, entry, _inherited in self.ini.items(name):
                self.sources[(name, key)] = (entry.path, entry.line)
            if name in ("circus", "env", "DEFAULT"):
                continue
            kind, sep, _name = name.partition(":")
            if sep and kind in kinds:
                kinds[kind].append(name)
            else:
                path, line = self.ini.headers[name]
                log.warning(
                    "%s:%d: section [%s] is not a circus section and is ignored "
                    "(section names are case-sensitive)",
                    path,
                    line,
                    name,
                )

        env = self.build_env()
        circus_values = env_values(self.environ) | env_values(env)
        circus = self.build_circus(circus_values)
        sockets = [self.build_socket(name, circus_values) for name in kinds["socket"]]
        self.check_unique(sockets, "socket")
        socket_names = {s["name"] for s in sockets}
        env_sections = [
            (name, [p.strip() for p in name[4:].split(",") if p.strip()]) for name in kinds["env"]
        ]
        watchers = [
            self.build_watcher(name, env, env_sections, socket_names) for name in kinds["watcher"]
        ]
        self.check_unique(watchers, "watcher")
        watchers.sort(key=lambda w: w["name"])
        plugins = [self.build_plugin(name, circus_values) for name in kinds["plugin"]]
        self.check_unique(plugins, "plugin")
        return Config(
            path=self.main,
            files=self.files,
            circus=circus,
            env=env,
            watchers=watchers,
            sockets=sockets,
            plugins=plugins,
            sources=self.sources,
            section_sources=dict(self.ini.headers),
        )

    def check_unique(self, items: list[dict[str, Any]], kind: str) -> None:
        seen: dict[str, str] = {}
        for item in items:
            folded = item["name"].lower()
            section = item["_section"]
            if folded in seen:
                raise self.error(
                    f"{kind} name {item['name']!r} is already used by [{seen[folded]}] "
                    "(names are compared without regard to case)",
                    section,
                    "name" if self._entry(section, "name") is not None else None,
                )
            seen[folded] = section
        for item in items:
            del item["_section"]

    # ------------------------------------------------------------------ [env]

    def build_env(self) -> dict[str, str]:
        values = env_values(self.environ)
        return {
            key: expand(entry.value, values) for key, entry, _inherited in self.ini.items("env")
        }

    # ------------------------------------------------------------------ [circus]

    def build_circus(self, values: Mapping[str, str]) -> dict[str, Any]:
        section = "circus"
        result = {
            name: option.default
            for name, option in CIRCUS_OPTIONS.items()
            if name not in _LOADER_KEYS
        }
        for key, entry, inherited in self.ini.items(section):
            if key in ("include", "include_dir"):
                continue
            if key == "stream_backend":
                log.info(
                    "%s:%d: stream_backend is ignored: output is read on the event loop",
                    entry.path,
                    entry.line,
                )
                continue
            option = CIRCUS_OPTIONS.get(key)
            if option is None:
                if not inherited:
                    log.warning(
                        "%s:%d: [circus] %s is not a circus option and is ignored",
                        entry.path,
                        entry.line,
                        key,
                    )
                continue
            result[key] = self.convert(option, expand(entry.value, values), section, key)

        delay = result.get("check_delay")
        if delay is not None and not math.isfinite(delay):
            # <= 0 is accepted: nothing is paced by it
            raise self.error(f"expected a finite number, got {delay}", section, "check_delay")
        self.check_number(result, section, "warmup_delay")
        port = result["httpd_port"]
        if not 0 <= port <= 65535:
            raise self.error(
                f"expected a port number (0..65535), got {port}", section, "httpd_port"
            )
        level = str(result["loglevel"]).strip().lower()
        if level not in _LOG_LEVELS:
            raise self.error(
                f"expected one of {', '.join(_LOG_LEVELS)}, got {result['loglevel']!r}",
                section,
                "loglevel",
            )
        result["loglevel"] = level
        multicast = result["multicast_endpoint"]
        if multicast is not None:
            self.check_multicast(multicast)
        from circus.endpoints import check_local

        for key in ("endpoint", "pubsub_endpoint", "stats_endpoint"):
            if result.get(key):
                try:
                    check_local(result[key], key, result["allow_unauthenticated_remote"])
                except ValueError as exc:
                    raise self.error(str(exc), section, key) from None
        return result

    def check_number(
        self, values: dict[str, Any], section: str, key: str, *, positive: bool = False
    ) -> None:
        value = values.get(key)
        if value is None:
            return
        if not math.isfinite(value):
            raise self.error(f"expected a finite number, got {value}", section, key)
        if positive and value <= 0:
            raise self.error(f"must be greater than 0, got {value}", section, key)
        if value < 0:
            raise self.error(f"must not be negative, got {value}", section, key)

    def check_multicast(self, value: str) -> None:
        match = _MULTICAST.match(value)
        octets = match.group("host").split(".") if match else []
        valid = (
            match is not None
            and len(octets) == 4
            and all(o.isdigit() and int(o) <= 255 for o in octets)
            and 224 <= int(octets[0]) <= 239
            and int(match.group("port")) <= 65535
        )
        if not valid:
            raise self.error(
                f"expected udp://ADDRESS:PORT with a multicast address "
                f"(224.0.0.0-239.255.255.255), got {value!r}",
                "circus",
                "multicast_endpoint",
            )

    # ------------------------------------------------------------------ [socket:NAME]

    def build_socket(self, section: str, values: Mapping[str, str]) -> dict[str, Any]:
        name = section[len("socket:") :].strip().lower()
        if not name:
            raise self.error("a socket needs a name: [socket:NAME]", section)
        result: dict[str, Any] = {"_section": section, "name": name}
        result.update((key, option.default) for key, option in SOCKET_OPTIONS.items())
        for key, entry, inherited in self.ini.items(section):
            option = SOCKET_OPTIONS.get(key)
            if option is None:
                if not inherited:
                    log.warning(
                        "%s:%d: [%s] %s is not a socket option and is ignored",
                        entry.path,
                        entry.line,
                        section,
                        key,
                    )
                continue
            value = self.convert(option, expand(entry.value, values), section, key)
            result[key] = option.default if value is None and key == "umask" else value
        if not 0 <= result["port"] <= 65535:
            raise self.error(
                f"expected a port number (0..65535), got {result['port']}", section, "port"
            )
        if result["backlog"] < 0:
            raise self.error(f"must not be negative, got {result['backlog']}", section, "backlog")
        family_unix = SOCKET_OPTIONS["family"].text("AF_UNIX")
        if result["path"] is not None:
            result["family"] = family_unix
        elif result["family"] == family_unix:
            raise self.error("an AF_UNIX socket needs a path", section, "family")
        return result

    # ------------------------------------------------------------------ [plugin:NAME]

    def build_plugin(self, section: str, values: Mapping[str, str]) -> dict[str, Any]:
        name = section[len("plugin:") :].strip()
        if not name:
            raise self.error("a plugin needs a name: [plugin:NAME]", section)
        result: dict[str, Any] = {"_section": section, "name": name, "priority": 1}
        for key, entry, _inherited in self.ini.items(section):
            if key == "name":
                continue
            value = expand(entry.value, values)
            if key == "priority":
                try:
                    result[key] = to_int(value)
                except ValueError as exc:
                    raise self.error(str(exc), section, key) from None
            else:
                result[key] = value
        use = result.get("use")
        if use is None:
            raise self.error("missing 'use' (the dotted path of the plugin class)", section)
        if not _DOTTED.match(use):
            raise self.error(
                f"expected a dotted path such as package.module.Class, got {use!r}",
                section,
                "use",
            )
        return result

    # ------------------------------------------------------------------ [watcher:NAME]

    def build_watcher(
        self,
        section: str,
        base_env: dict[str, str],
        env_sections: list[tuple[str, list[str]]],
        socket_names: set[str],
    ) -> dict[str, Any]:
        items = list(self.ini.items(section))
        name = section[len("watcher:") :].strip()
        name_entry = next((e for k, e, _ in items if k == "name"), None)
        if name_entry is not None:
            name = expand(name_entry.value, env_values(self.environ) | env_values(base_env))
            name = name.strip()
        if not name:
            raise self.error(
                "a watcher needs a name: [watcher:NAME]",
                section,
                "name" if name_entry is not None else None,
            )

        env = dict(base_env)
        for env_section, patterns in env_sections:
            if any(fnmatchcase(name, pattern) for pattern in patterns):
                env.update((k, e.value) for k, e, _ in self.ini.items(env_section))
        values = env_values(self.environ) | env_values(env)

        watcher: dict[str, Any] = {"_section": section, "name": name}
        flat: dict[str, Any] = {}
        own_env: dict[str, str] = {}
        for key, entry, _inherited in items:
            if key == "name":
                continue
            if key in _RESERVED_WATCHER_KEYS:
                raise self.error(
                    f"{key!r} is reserved; use the dotted form ({key}.<option> or rlimit_<name>)",
                    section,
                    key,
                )
            family = key_for(key) or CUSTOM
            if family is CUSTOM and key.lower() in WATCHER_OPTIONS and key.lower() != key:
                log.warning(
                    "%s:%d: [%s] %s is kept as a custom key (option names are "
                    "case-sensitive; did you mean %s?)",
                    entry.path, entry.line, section, key, key.lower(),
                )
            raw = expand(entry.value, values) if family.expand else entry.value
            try:
                value = family.from_text(key, raw)
            except (ValueError, TypeError) as exc:
                raise self.error(str(exc), section, key) from None
            if family is ENV:
                own_env = value
            else:
                flat[key] = value

        env.update(own_env)
        flat["env"] = {
            k.strip(): expand_env_vars(v, self.environ).strip() for k, v in env.items()
        }
        for stream in STREAMS:
            keys = [k for k in flat if k.startswith(stream + ".")]
            if keys and not any(k in (f"{stream}.class", f"{stream}.filename") for k in keys):
                raise self.error(f"{stream} needs a class or a filename", section, keys[0])
        watcher.update(group(flat))
        self.check_watcher(watcher, section, socket_names)
        return watcher

    def check_watcher(self, w: dict[str, Any], section: str, sockets: set[str]) -> None:
        if not str(w.get("cmd", "")).strip():
            raise self.error(
                "cmd is required (the program to run)",
                section,
                "cmd" if "cmd" in w else None,
            )
        table = {k: w.get(k, opt.default) for k, opt in WATCHER_OPTIONS.items()}
        if table["numprocesses"] == 0 and "numprocesses" in w:
            log.warning("[%s] numprocesses = 0: the watcher will not run any process", section)
        broken = together(table)
        if broken is not None:
            key, message = broken
            if key not in w:  # blame the key that is in the section
                key = "singleton" if key == "numprocesses" else "copy_env"
            raise self.error(message, section, key)
        for key, lookup in (("uid", user_id), ("gid", group_id)):
            value = w.get(key)
            if value is not None:
                try:
                    lookup(value)
                except ValueError as exc:
                    raise self.error(str(exc), section, key) from None
        stdin_socket = w.get("stdin_socket")
        if stdin_socket is not None:
            folded = stdin_socket.strip().lower()
            if folded not in sockets:
                known = ", ".join(sorted(sockets)) or "none defined"
                raise self.error(
                    f"no [socket:{stdin_socket}] section (sockets: {known})",
                    section,
                    "stdin_socket",
                )
            w["stdin_socket"] = folded
        if w.get("shell_args") is not None and not w.get("shell"):
            log.warning("[%s] shell_args is ignored without shell = true", section)
