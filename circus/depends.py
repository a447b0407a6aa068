"""Start order that waits: ``depends_on = db, cache:started, migrate:completed``.

A watcher's processes are spawned only once each watcher it names meets its condition:

=============  ==============================================================================
``ready``      (the default) it is active and every one of its processes is ready
``started``    it is active: all its processes were spawned
``completed``  it ran and ended on its own with status 0 (``respawn = false``: a migration,
               a one-shot set-up)
=============  ==============================================================================

The relation is systemd's ``Requires=`` plus ``After=``: starting a watcher starts what it
depends on first; stopping a watcher stops what depends on it first; circusd stops
dependents before their dependencies. It gates starting only: a dependency whose readiness
drops later stops nothing. A dependency that can no longer meet its condition (stopped by
a user, ``fatal``, completed with another status) leaves the dependent stopped, with the
reason in the log. Unknown names and cycles are refused when the configuration is read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import groupby
from typing import Any, NamedTuple, TypeVar

W = TypeVar("W")

CONDITIONS = ("ready", "started", "completed")


class Dependency(NamedTuple):
    name: str  # as written (watcher names compare without case)
    condition: str

    def __str__(self) -> str:
        return self.name if self.condition == "ready" else f"{self.name}:{self.condition}"


def parse(text: str) -> list[Dependency]:
    """``"db, cache:started"`` -> the dependencies; ValueError naming what is wrong."""
    found: list[Dependency] = []
    seen: set[str] = set()
    for item in text.replace("\n", ",").split(","):
        item = item.strip()
        if not item:
            continue
        name, _, condition = item.partition(":")
        name, condition = name.strip(), (condition.strip().lower() or "ready")
        if not name or any(c.isspace() for c in name):
            raise ValueError(f"{item!r} is not a watcher name (the form is NAME[:CONDITION], "
                             "comma-separated)")
        if condition not in CONDITIONS:
            raise ValueError(f"{item!r}: the condition is one of {', '.join(CONDITIONS)}, "
                             f"got {condition!r}")
        if name.lower() in seen:
            raise ValueError(f"{name!r} is named twice")
        seen.add(name.lower())
        found.append(Dependency(name, condition))
    return found


def normalize(text: str) -> str:
    """The option's value as stored: parsed and written back (``db, cache:started``)."""
    return ", ".join(str(d) for d in parse(text))


def graph(deps: Mapping[str, str]) -> dict[str, list[Dependency]]:
    """``{watcher (lower-case): its dependencies}`` from each watcher's ``depends_on``."""
    return {name.lower(): parse(text or "") for name, text in deps.items()}


def problems(deps: Mapping[str, str]) -> dict[str, str]:
    """``{watcher: what is wrong}``: an unknown name, depending on itself, or a cycle (the
    cycle spelled out: ``a -> b -> a``)."""
    edges = graph(deps)
    names = {name.lower(): name for name in deps}
    found: dict[str, str] = {}
    for name, wanted in edges.items():
        for dep in wanted:
            if dep.name.lower() == name:
                found[names[name]] = f"{names[name]} cannot depend on itself"
            elif dep.name.lower() not in edges:
                found[names[name]] = f"no watcher is named {dep.name!r}"
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in edges[node]:
            nxt = dep.name.lower()
            if nxt not in edges or nxt == node:
                continue  # reported above
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in edges:
        if node not in state and (cycle := visit(node)) is not None:
            found.setdefault(names[cycle[0]], "a dependency cycle: " + " -> ".join(
                names[n] for n in cycle))
            break
    return found


def levels(deps: Mapping[str, str]) -> dict[str, int]:
    """Each watcher's depth (lower-case name -> 0 for a watcher that depends on nothing,
    else one more than its deepest dependency). Assumes no cycle."""
    edges = graph(deps)
    depth: dict[str, int] = {}

    def of(node: str) -> int:
        if node not in depth:
            depth[node] = 0  # a cycle cannot loop forever
            depth[node] = 1 + max((of(d.name.lower()) for d in edges.get(node, ())
                                   if d.name.lower() in edges), default=-1)
        return depth[node]

    for node in edges:
        of(node)
    return depth


def dependents(deps: Mapping[str, str], name: str) -> list[str]:
    """The watchers that name *name*, directly or not (lower-case)."""
    edges = graph(deps)
    wanted = {name.lower()}
    changed = True
    while changed:
        changed = False
        for node, its in edges.items():
            if node not in wanted and any(d.name.lower() in wanted for d in its):
                wanted.add(node)
                changed = True
    wanted.discard(name.lower())
    return sorted(wanted)


def met(watcher: Any, condition: str) -> bool | str:
    """True when *watcher* meets *condition*; a reason when it never will as things are;
    False while it may still."""
    state = watcher.state.value
    if condition == "completed":
        code = getattr(watcher, "ended_with", None)
        if state == "stopped" and code is not None:
            return True if code == 0 else f"{watcher.name} ended with status {code}"
        if state == "stopped" and watcher.vitals.fatal:
            return f"{watcher.name} is fatal: {watcher.vitals.fatal}"
        return False
    if state == "active":
        if condition == "started":
            return True
        processes = list(watcher.processes.values())
        return len(processes) >= watcher.numprocesses and all(p.ready for p in processes)
    if state == "stopped" and watcher.vitals.fatal:
        return f"{watcher.name} is fatal: {watcher.vitals.fatal}"
    return False


def order(names: Iterable[str], deps: Mapping[str, str]) -> Sequence[str]:
    """*names* with every dependency before its dependents (stable otherwise)."""
    depth = levels(deps)
    ranked = list(names)
    return sorted(ranked, key=lambda n: depth.get(n.lower(), 0))


# -- on running watchers (anything with ``name``, ``depends_on``, ``priority``) ------------


def of(watchers: Iterable[Any]) -> dict[str, str]:
    """The ``depends_on`` of each of *watchers*, by name."""
    return {w.name: getattr(w, "depends_on", "") or "" for w in watchers}


def dependencies(deps: Mapping[str, str], name: str) -> list[str]:
    """What *name* needs, directly or not (lower-case), each before what needs it."""
    edges = graph(deps)
    found: list[str] = []

    def visit(node: str) -> None:
        for dep in edges.get(node, ()):
            nxt = dep.name.lower()
            if nxt not in found and nxt != name.lower():
                found.append(nxt)  # marked first: a cycle cannot loop forever
                visit(nxt)

    visit(name.lower())
    return list(order(found, deps))


def direct_dependents(deps: Mapping[str, str], name: str) -> list[str]:
    """The watchers that name *name* in their own ``depends_on`` (as written)."""
    wanted = name.lower()
    return sorted(n for n, text in deps.items()
                  if any(d.name.lower() == wanted for d in parse(text or "")))


def problem_with(deps: Mapping[str, str], name: str, text: str) -> str | None:
    """What would be wrong if *name* (new, or already in *deps*) had ``depends_on = text``:
    an unknown name, itself, or a cycle. None when nothing is."""
    changed = {name: text}  # first: a cycle through it is spelled from it
    changed.update((k, v) for k, v in deps.items() if k.lower() != name.lower())
    found = problems(changed)
    if name in found:
        return found[name]
    cycles = [p for p in found.values() if p.startswith("a dependency cycle")]
    return cycles[0] if cycles else None


def stop_groups(watchers: Sequence[W], by_priority: bool = True) -> list[list[W]]:
    """*watchers* in the order to stop them: dependents before their dependencies (deepest
    first), then (*by_priority*) lowest priority first; a group stops together."""
    depth = levels(of(watchers))

    def key(w: Any) -> tuple[int, int]:
        return -depth.get(w.name.lower(), 0), int(w.priority) if by_priority else 0

    ranked = sorted(watchers, key=key)
    return [list(group) for _, group in groupby(ranked, key=key)]


__all__ = ["CONDITIONS", "Dependency", "dependencies", "dependents", "direct_dependents",
           "levels", "met", "normalize", "of", "order", "parse", "problem_with", "problems",
           "stop_groups"]
