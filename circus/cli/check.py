"""``circusd --check FILE``: is the file valid, and can this machine run what it asks for?

Prints what the configuration needs (processes, descriptors) beside the limits circusd
would run under, and how to raise a limit that is short. The file's own errors are
reported as circusd reports them at start (exit 78).
"""

from __future__ import annotations

import resource
from typing import Any

from circus import descriptors, limits

# descriptors circusd uses whatever it runs: its sockets, log, the loop, /proc reads
BASE_FDS = 48


def _streams(watcher: Any) -> int:
    """Captured streams per process (stdout and stderr unless sent to /dev/null)."""
    return int(not watcher.close_child_stdout) + int(not watcher.close_child_stderr)


def _shown(value: int) -> str:
    return "unlimited" if value == resource.RLIM_INFINITY else f"{value:,}"


def report(arbiter: Any, path: str) -> str:
    """What :func:`main` prints for ``--check``."""
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
    if need <= usable:
        lines.append(nofile + ": fits")
    else:
        own = max(usable - floor, 0) // 2
        lines.append(nofile + f": about {own:,} process(es) get pipes of their own, the "
                     "others share one per stream and watcher, without pids "
                     f"(docs/output.md); to avoid it, {descriptors.how_to_raise()}")
    budget = limits.budget_of(arbiter)
    verdict = "fits" if processes <= budget.processes else "does not fit"
    lines.append(f"processes: {processes:,} of at most {budget.processes:,} "
                 f"({budget.source}): {verdict}")
    return "\n".join(lines)
