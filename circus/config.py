"""The configuration loader: turns a circusd configuration file into plain dicts.

:mod:`circus.ini` reads the file and its includes into sections whose every key keeps
its file and line (the dialect is described there); the builder here turns those
sections into the ``[circus]`` settings, the environment, and the watcher, socket and
plugin mappings, converting and checking every value.

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

import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from circus.configcheck import close_to, command_problems, no_watchers, notice, unknown_watcher_key
from circus.errors import ConfigError
from circus.ini import Entry, Ini, Location, read_ini
from circus.keys import CUSTOM, ENV, STREAMS, group, key_for, together
from circus.limits import Budget, Need, shortfall
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

# [circus] keys read by the loader itself and not passed on.
_LOADER_KEYS = ("include", "include_dir", "stream_backend")

# Watcher keys that would clash with the dict built here (or with Watcher arguments).
_RESERVED_WATCHER_KEYS = frozenset(
    {"stdout_stream", "stderr_stream", "hooks", "rlimits", "loop", "prereload_fn", "publish"}
)

_LOG_LEVELS = ("critical", "error", "warning", "info", "debug")

_DOTTED = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*[.:][A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*$")
_MULTICAST = re.compile(r"^udp://(?P<host>[0-9.]+):(?P<port>\d+)$")


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


# --------------------------------------------------------------------------- loading


def load_config(
    path: str | os.PathLike[str],
    *,
    environ: Mapping[str, str] | None = None,
    problems: list[ConfigError] | None = None,
) -> Config:
    """Read the configuration file *path* and the files it includes.

    *environ* stands for circusd's environment (``os.environ`` by default): it feeds
    ``$(circus.env.X)``, the ``$VAR`` pass over watcher environments and the ``PATH`` a
    command is looked up on when its environment has none.

    With a *problems* list (``circusd --check``), an error that leaves the rest readable
    (a bad key, a section that cannot be used) is appended there and loading goes on
    without it, so that every error of the file is found; what is returned then is not a
    configuration to run. Warnings are logged (:mod:`circus.configcheck`).

    Raises:
        ConfigError: the files cannot be read or the configuration cannot be used.
    """
    environ = dict(os.environ if environ is None else environ)
    main = os.path.abspath(os.fspath(path))
    ini, files = read_ini(main, environ)
    return _Builder(ini, main, files, environ, problems).build()



class _Builder:
    """Turns the merged sections into a :class:`Config`."""

    def __init__(self, ini: Ini, main: str, files: list[str], environ: dict[str, str],
                 problems: list[ConfigError] | None = None):
        self.ini = ini
        self.main = main
        self.files = files
        self.environ = environ
        self.sources: dict[tuple[str, str], Location] = {}
        self.problems = problems

    def report(self, error: ConfigError) -> None:
        """Raise *error*, or only record it when every problem is being collected."""
        if self.problems is None:
            raise error
        self.problems.append(error)

    def each(self, names: list[str], build: Any) -> list[dict[str, Any]]:
        """``build(name)`` for every section in *names*, leaving out one that had errors
        (each reported)."""
        built = []
        for name in names:
            before = len(self.problems or ())
            try:
                item = build(name)
            except ConfigError as exc:
                self.report(exc)
                continue
            if len(self.problems or ()) == before:  # a section with errors is left out
                built.append(item)
        return built

    # ------------------------------------------------------------------ helpers

    def error(self, message: str, section: str, key: str | None = None) -> ConfigError:
        path, line = self.ini.headers.get(section, (self.main, 0))
        entry = self._entry(section, key) if key is not None else None
        if entry is not None:
            path, line = entry.path, entry.line
        return ConfigError(message, path=path, line=line, section=section, option=key)

    def _entry(self, section: str, key: str) -> Entry | None:
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
                guess = close_to(kind, (*kinds, "circus")) if kind not in kinds else None
                hint = f"; did you mean [{guess}{sep}{_name}]?" if guess else ""
                notice(logging.WARNING, f"section [{name}] is not a circus section and is "
                       f"ignored (section names are case-sensitive){hint}",
                       path=path, line=line)

        env = self.build_env()
        circus_values = env_values(self.environ) | env_values(env)
        circus = self.build_circus(circus_values)
        sockets = self.each(kinds["socket"], lambda name: self.build_socket(name, circus_values))
        self.check_unique(sockets, "socket")
        socket_names = {s["name"] for s in sockets}
        env_sections = [
            (name, [p.strip() for p in name[4:].split(",") if p.strip()]) for name in kinds["env"]
        ]
        watchers = self.each(
            kinds["watcher"],
            lambda name: self.build_watcher(name, env, env_sections, socket_names))
        sections = {w["name"]: w["_section"] for w in watchers}
        self.check_unique(watchers, "watcher")
        watchers.sort(key=lambda w: w["name"])
        plugins = self.each(kinds["plugin"], lambda name: self.build_plugin(name, circus_values))
        self.check_unique(plugins, "plugin")
        try:
            self.check_limits(circus, watchers, sections, len(plugins))
        except ConfigError as exc:
            self.report(exc)
        self.check_depends(watchers, sections)
        if not kinds["watcher"]:
            no_watchers(self.main, empty=not self.ini.headers)
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

    def check_depends(self, watchers: list[dict[str, Any]], sections: dict[str, str]
                      ) -> None:
        """``depends_on``: every name known, no watcher depending on itself, no cycle."""
        deps = {w["name"]: w.get("depends_on") or "" for w in watchers}
        if not any(deps.values()):
            return
        from circus.depends import problems

        for name, problem in problems(deps).items():
            self.report(self.error(problem, sections[name], "depends_on"))

    def check_unique(self, items: list[dict[str, Any]], kind: str) -> None:
        seen: dict[str, str] = {}
        for item in items:
            folded = item["name"].lower()
            section = item["_section"]
            if folded in seen:
                self.report(self.error(
                    f"{kind} name {item['name']!r} is already used by [{seen[folded]}] "
                    "(names are compared without regard to case)",
                    section,
                    "name" if self._entry(section, "name") is not None else None,
                ))
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
                notice(logging.INFO, "ignored: output is read on the event loop",
                       path=entry.path, line=entry.line, section=section, option=key)
                continue
            option = CIRCUS_OPTIONS.get(key)
            if option is None:
                if not inherited:
                    self.unknown(key, entry, section, "circus", CIRCUS_OPTIONS)
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
        from circus.peers import parse_accounts
        from circus.util.accounts import user_id

        for key in ("allow_users", "allow_groups", "endpoint_owner"):
            try:  # who may connect is known before anything starts
                if key == "endpoint_owner":
                    if result[key]:
                        user_id(result[key])
                else:
                    parse_accounts(*((result[key], None) if key == "allow_users"
                                     else (None, result[key])))
            except ValueError as exc:
                raise self.error(str(exc), section, key) from None
        from circus.curve import SERVER_OPTIONS, check_server_options
        from circus.endpoints import check_local

        for key in SERVER_OPTIONS:  # relative to the directory of the file that sets it
            where = self._entry(section, key)
            if result.get(key) and where is not None:
                base = os.path.dirname(os.path.abspath(where.path))
                result[key] = os.path.join(base, os.path.expanduser(result[key]))
        problem = check_server_options(result)
        if problem is not None:
            key, _, reason = problem.partition("\t")
            raise self.error(reason, section, key)
        remote = result["allow_unauthenticated_remote"] or bool(result.get("curve_secret_key"))
        for key in ("endpoint", "pubsub_endpoint", "stats_endpoint"):
            if result.get(key):
                try:
                    check_local(result[key], key, remote)
                except ValueError as exc:
                    raise self.error(str(exc), section, key) from None
        return result

    def check_limits(self, circus: dict[str, Any], watchers: list[dict[str, Any]],
                     sections: dict[str, str], plugins: int) -> None:
        """Every watcher's numprocesses together (and one per plugin) within
        ``[circus] max_processes``; the largest watcher is blamed (circus/limits.py)."""
        budget = Budget.of(circus.get("max_processes"))
        default = WATCHER_OPTIONS["numprocesses"].default
        targets = [(w["name"], int(w.get("numprocesses", default))) for w in watchers]
        total = sum(n for _, n in targets) + plugins
        if total <= budget.processes or not targets:
            return
        name, n = max(targets, key=lambda t: t[1])
        reason = shortfall(Need(name, n, total - n), budget)
        if reason is not None:
            raise self.error(reason, sections[name], "numprocesses")

    @staticmethod
    def unknown(key: str, entry: Entry, section: str, kind: str, known: Mapping[str, Any]
                ) -> None:
        guess = close_to(key, known)
        hint = f"; did you mean '{guess}'?" if guess else ""
        notice(logging.WARNING, f"[{section}] {key} is not a {kind} option and is "
               f"ignored{hint}", path=entry.path, line=entry.line)

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
                    self.unknown(key, entry, section, "socket", SOCKET_OPTIONS)
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
        for key, entry, inherited in items:
            if key == "name":
                continue
            if key in _RESERVED_WATCHER_KEYS:
                self.report(self.error(
                    f"{key!r} is reserved; use the dotted form ({key}.<option> or rlimit_<name>)",
                    section,
                    key,
                ))
                continue
            family = key_for(key)
            if family is None or family is CUSTOM:
                if not inherited:
                    unknown_watcher_key(key, entry, section)
                family = CUSTOM
            raw = expand(entry.value, values) if family.expand else entry.value
            try:
                value = family.from_text(key, raw)
            except (ValueError, TypeError) as exc:
                self.report(self.error(str(exc), section, key))
                continue
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
                self.report(self.error(f"{stream} needs a class or a filename", section,
                                       keys[0]))
                for key in keys:
                    del flat[key]
        watcher.update(group(flat))
        self.check_watcher(watcher, section, socket_names)
        return watcher

    def warn(self, message: str, section: str, key: str | None = None) -> None:
        where = self.error(message, section, key)
        notice(logging.WARNING, message, path=where.path or self.main, line=where.line,
               section=section, option=key)

    def check_watcher(self, w: dict[str, Any], section: str, sockets: set[str]) -> None:
        if not str(w.get("cmd", "")).strip():
            raise self.error(
                "cmd is required (the program to run)",
                section,
                "cmd" if "cmd" in w else None,
            )
        table = {k: w.get(k, opt.default) for k, opt in WATCHER_OPTIONS.items()}
        if table["numprocesses"] == 0 and "numprocesses" in w:
            self.warn("numprocesses = 0: the watcher will not run any process",
                      section, "numprocesses")
        broken = together(table)
        if broken is not None:
            key, message = broken  # always a key of the section: defaults break no rule
            self.report(self.error(message, section, key))
        error, warning = command_problems(w, self.environ)
        if error is not None:
            self.report(self.error(error[1], section, error[0]))
        if warning is not None:
            self.warn(warning[1], section, warning[0])
        for key, lookup in (("uid", user_id), ("gid", group_id)):
            value = w.get(key)
            if value is not None:
                try:
                    lookup(value)
                except ValueError as exc:
                    self.report(self.error(str(exc), section, key))
        stdin_socket = w.get("stdin_socket")
        if stdin_socket is not None:
            folded = stdin_socket.strip().lower()
            if folded not in sockets:
                known = ", ".join(sorted(sockets)) or "none defined"
                self.report(self.error(
                    f"no [socket:{stdin_socket}] section (sockets: {known})",
                    section,
                    "stdin_socket",
                ))
            w["stdin_socket"] = folded
        if w.get("shell_args") is not None and not w.get("shell"):
            self.warn("ignored without shell = true", section, "shell_args")
