"""``circusd --check FILE``: would circusd start on this file, and run what it asks for?

The file is loaded as circusd loads it, every watcher and plugin is built, and nothing is
started. Every problem is printed on a line of its own with its location
(``file:line: [section] option: message``), errors and warnings alike, in file order; a
section that cannot be used does not hide the problems of the others. Then, when the file
would be accepted, what it needs (processes, descriptors) beside the limits circusd would
run under, and how to raise a limit that is short.

Exit status: 0 when nothing is wrong; 1 when circusd would start but something deserves
a look (a warning: a key that looks misspelt, a program not found on PATH, a file with no
watcher, descriptors too short for every process to keep its pid, ...); 78 when circusd
would refuse the file.
"""

from __future__ import annotations

import logging
import os
import resource
from typing import Any

from circus import descriptors, limits
from circus.errors import ConfigError, OptionError

# descriptors circusd uses whatever it runs: its sockets, log, the loop, /proc reads
BASE_FDS = 48

EX_CONFIG = 78


class _Problems(logging.Handler):
    """What the loader logs while the file is checked (infos and up)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def main(path: str) -> int:
    """Check the configuration file *path*; print the problems and the verdict.

    Returns the exit status (see the module docstring).
    """
    from circus.config import load_config

    problems = _Problems()
    logger = logging.getLogger("circus")
    level, propagate = logger.level, logger.propagate
    logger.addHandler(problems)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    errors: list[ConfigError] = []
    arbiter = None
    try:
        try:
            config = load_config(path, problems=errors)
        except ConfigError as exc:  # the file cannot be read or parsed at all
            errors.append(exc)
        else:
            errors.extend(build_errors(config))
            if not errors:
                arbiter = _arbiter(config, errors)
    finally:
        logger.removeHandler(problems)
        logger.setLevel(level)
        logger.propagate = propagate
    found = [(e.path or path, e.line or 0, "error", str(e)) for e in errors]
    for record in problems.records:
        where = getattr(record, "where", (path, 0))
        kind = "info" if record.levelno < logging.WARNING else (
            "error" if record.levelno >= logging.ERROR else "warning")
        found.append((where[0], where[1], kind, record.getMessage()))
    main_file = os.path.abspath(path)
    found.sort(key=lambda p: (os.path.abspath(p[0]) != main_file, p[0], p[1]))
    for _, _, kind, text in found:
        print(f"{kind}: {text}")
    counts = {kind: sum(1 for p in found if p[2] == kind) for kind in ("error", "warning")}
    if arbiter is None or counts["error"]:
        print(f"{path}: circusd would refuse this file: {_count(counts['error'], 'error')}, "
              f"{_count(counts['warning'], 'warning')}")
        return EX_CONFIG
    lines, short = report(arbiter, path)
    print("\n".join(lines))
    warnings = counts["warning"] + short
    if warnings:
        print(f"{path}: circusd would start, with {_count(warnings, 'warning')}")
        return 1
    print(f"{path}: no problem found")
    return 0


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def build_errors(config: Any) -> list[ConfigError]:
    """Build every watcher and check every plugin of *config* as circusd would, each on
    its own: the errors, with their locations."""
    from circus.arbiter import watcher_from_config
    from circus.plugins.launch import check_plugin

    errors: list[ConfigError] = []
    for kind, items, build in (("watcher", config.watchers, watcher_from_config),
                               ("plugin", config.plugins, check_plugin)):
        for item in items:
            section = f"{kind}:{item['name']}"
            try:
                build(item)
            except OptionError as exc:
                at = config.location(section, exc.option) or (config.path, None)
                errors.append(ConfigError(exc.reason, path=at[0], line=at[1],
                                          section=section, option=exc.option))
            except (ValueError, ImportError, OSError, TypeError) as exc:
                at = config.location(section) or (config.path, None)
                errors.append(ConfigError(str(exc), path=at[0], line=at[1], section=section))
    return errors


def _arbiter(config: Any, errors: list[ConfigError]) -> Any:
    from circus.cli.circusd import build_arbiter

    try:
        return build_arbiter(config)
    except ConfigError as exc:
        errors.append(exc)
        return None


def _streams(watcher: Any) -> int:
    """Captured streams per process (stdout and stderr unless sent to /dev/null)."""
    return int(not watcher.close_child_stdout) + int(not watcher.close_child_stderr)


def _shown(value: int) -> str:
    return "unlimited" if value == resource.RLIM_INFINITY else f"{value:,}"


def report(arbiter: Any, path: str) -> tuple[list[str], int]:
    """What ``--check`` prints about the limits, and how many of its lines are warnings
    (descriptors too short for every process to keep its pid, processes that do not
    fit)."""
    watchers = list(arbiter.watchers)
    processes = sum(w.numprocesses for w in watchers)
    per_pid = sum(w.numprocesses * _streams(w) for w in watchers)
    sockets = len(getattr(arbiter, "sockets", None) or ())
    floor = descriptors.RESERVE + BASE_FDS + sockets + 4 * len(watchers)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    minfds = int((getattr(arbiter, "options", None) or {}).get("minfds") or 0)
    usable = max(hard, minfds) if hard != resource.RLIM_INFINITY else descriptors.limit()
    lines = [f"{path}: valid; {len(watchers)} watcher(s), {processes:,} process(es)"]
    need = floor + per_pid
    nofile = (f"open files: {need:,} for each process's output to keep its pid, {floor:,} at "
              f"least; RLIMIT_NOFILE {_shown(soft)} (hard {_shown(hard)}), circusd raises "
              f"the soft limit to {_shown(usable)}")
    short = 0
    if need <= usable:
        lines.append(nofile + ": fits")
    else:
        short += 1
        own = max(usable - floor, 0) // 2
        lines.append("warning: " + nofile + f": about {own:,} process(es) get pipes of their "
                     "own, the others share one per stream and watcher, without pids "
                     f"(docs/output.md); to avoid it, {descriptors.how_to_raise()}")
    budget = limits.budget_of(arbiter)
    fits = processes <= budget.processes
    short += not fits
    lines.append(f"{'' if fits else 'warning: '}processes: {processes:,} of at most "
                 f"{budget.processes:,} ({budget.source}): "
                 f"{'fits' if fits else 'does not fit'}")
    return lines, short
