"""Turn a results file into markdown tables: absolute figures, then ratios to the floor and
to each anchor (Circus 0.19, supervisord 4.3).

``python -m benchmarks.report results.json`` prints the report of an earlier run.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

ORDER = ("ours", "circus019", "supervisord", "floor")
LABELS = {
    "ours": "ours",
    "circus019": "Circus 0.19",
    "supervisord": "supervisord 4.3",
    "floor": "floor",
}
REFERENCES = ("floor", "circus019", "supervisord")

Sessions = list[dict[str, Any]]

HEADER = """\
# Benchmarks

Our `circusd` side by side with Circus 0.19.0, supervisord 4.3.0 and a *floor*: a bare Python
loop over `os.posix_spawn` with one pidfd per child in an epoll loop (`benchmarks/floor.py`),
about the best any Python supervisor can do. `make bench` runs the quick set, `make bench-full`
everything (it rewrites this file); `python -m benchmarks.run --help` has the options.

Each measurement starts a fresh daemon in its own directory under /tmp (ipc:// endpoints), and
the targets take turns round-robin, so a busy neighbour on the machine slows all of them alike
and the ratios hold better than the absolute figures. Whether a child runs, has been replaced or
is gone is read from /proc (a child of the daemon with the expected command line; reaped means
no longer listed), never from the supervisor's own answer."""


def percentile(values: Sequence[float], pct: float) -> float:
    """The *pct* percentile of *values*, interpolating linearly between closest ranks."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * pct / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def fmt_seconds(value: float) -> str:
    if value < 1e-3:
        return f"{value * 1e6:.0f} µs"
    if value < 1.0:
        return f"{value * 1e3:.3g} ms"
    return f"{value:.3g} s"


def fmt_ratio(value: float) -> str:
    if not math.isfinite(value):
        return "—"
    if value >= 100:
        return f"×{value:,.0f}"
    return f"×{value:.3g}" if value >= 0.01 else f"×{value:.2g}"


def fmt_mib(value: float) -> str:
    return f"{value / 2**20:.1f} MiB"


def fmt_percent(value: float) -> str:
    return f"{value:.2f} %"


def fmt_mbps(value: float) -> str:
    return f"{value:.0f} MB/s" if value >= 10 else f"{value:.3g} MB/s"


class Figure:
    """One column of a table: how to pull a number per target out of the sessions."""

    def __init__(
        self,
        title: str,
        extract: Callable[[Sessions], float | None],
        fmt: Callable[[float], str],
        resolution: Callable[[Sessions], float | None] | None = None,
    ) -> None:
        self.title = title
        self.extract = extract
        self.fmt = fmt
        #: The smallest non-zero value the measurement can show: a 0 means "below this".
        self.resolution = resolution

    def cell(self, value: float, sessions: Sessions) -> str:
        bound = self.bound(value, sessions)
        return f"< {self.fmt(bound)}" if bound is not None else self.fmt(value)

    def bound(self, value: float, sessions: Sessions) -> float | None:
        """For a 0 below the resolution, the resolution (an upper bound); else None."""
        if value == 0 and self.resolution is not None:
            return self.resolution(sessions)
        return None


def _sessions(results: dict[str, Any], target: str, kind: str, n: int | None) -> Sessions:
    return [
        s
        for s in results["sessions"]
        if s["target"] == target and s["kind"] == kind and (n is None or s.get("n") == n)
    ]


def _median_of(key: Callable[[dict[str, Any]], float | None]) -> Callable[[Sessions], float | None]:
    def extract(sessions: Sessions) -> float | None:
        values = [v for s in sessions if (v := _safe(key, s)) is not None]
        return statistics.median(values) if values else None

    return extract


def _pooled(
    key: Callable[[dict[str, Any]], list[float] | None], reduce: Callable[[list[float]], float]
) -> Callable[[Sessions], float | None]:
    def extract(sessions: Sessions) -> float | None:
        values: list[float] = []
        for s in sessions:
            values.extend(_safe(key, s) or [])
        return reduce(values) if values else None

    return extract


def _rtt_of(call: str) -> Callable[[dict[str, Any]], list[float] | None]:
    def key(session: dict[str, Any]) -> list[float] | None:
        samples: list[float] | None = session["rtt"].get(call)
        return samples

    return key


def _idle_percent(session: dict[str, Any]) -> float:
    return float(session["idle"]["cpu_percent"])


def _idle_cpu(session: dict[str, Any]) -> float:
    return float(session["idle"]["cpu_seconds"])


def _tick(sessions: Sessions) -> float | None:
    """CPU time is counted in clock ticks: less than one reads as 0."""
    ticks = [s["idle"].get("tick", 0.01) for s in sessions if "idle" in s]
    return max(ticks) if ticks else None


def _percent_resolution(sessions: Sessions) -> float | None:
    bounds = [
        100 * s["idle"].get("tick", 0.01) / s["idle"]["seconds"] for s in sessions if "idle" in s
    ]
    return max(bounds) if bounds else None


def _safe(key: Callable[[dict[str, Any]], Any], session: dict[str, Any]) -> Any:
    try:
        return key(session)
    except (KeyError, TypeError):
        return None


def _table(
    results: dict[str, Any],
    kind: str,
    ns: Iterable[int | None],
    figures: list[Figure],
    lower_is_better: bool = True,
) -> list[str]:
    targets = [t for t in ORDER if t in results["plan"]["targets"]]
    ns = list(ns)
    head = ["N"] if ns != [None] else []
    head += ["target", *(f.title for f in figures)]
    head += [f"vs {LABELS[r]}" for r in REFERENCES if r in targets]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n in ns:
        chosen = {t: _sessions(results, t, kind, n) for t in targets}
        values = {t: [f.extract(chosen[t]) for f in figures] for t in targets}
        for t in targets:
            row = [str(n)] if n is not None else []
            row.append(LABELS[t])
            row += [
                f.cell(v, chosen[t]) if v is not None else _failure(results, t, kind, n)
                for f, v in zip(figures, values[t], strict=True)
            ]
            for ref in REFERENCES:
                if ref not in targets:
                    continue
                if ref == t:
                    row.append("")
                    continue
                ratios = []
                for f, mine, theirs in zip(figures, values[t], values[ref], strict=True):
                    if mine is None or theirs is None or theirs == 0:
                        ratios.append("—")
                    elif (bound := f.bound(mine, chosen[t])) is not None:
                        ratios.append("< " + fmt_ratio(bound / theirs))
                    else:
                        ratios.append(fmt_ratio(mine / theirs))
                row.append(" / ".join(ratios))
            lines.append("| " + " | ".join(row) + " |")
    if len(figures) > 1:
        lines.append("")
        lines.append(
            "Ratios are this row's figure divided by the reference's, in column order ("
            + ", ".join(f.title for f in figures)
            + ")."
        )
    if not lower_is_better:
        lines.append("")
        lines.append("Higher is better here: a ratio below 1 means slower than the reference.")
    return lines


def _failure(results: dict[str, Any], target: str, kind: str, n: int | None) -> str:
    for s in _sessions(results, target, kind, n):
        if s.get("error"):
            return "failed"
    for s in results["sessions"]:
        if s["target"] == target and s.get("error"):
            return "not run"
    return "—"


def _errors(results: dict[str, Any]) -> list[str]:
    seen: set[tuple[str, str]] = set()
    lines = []
    for s in results["sessions"]:
        if s.get("error"):
            key = (s["target"], s["error"])
            if key in seen:
                continue
            seen.add(key)
            where = f"{s['kind']}" + (f" N={s['n']}" if s.get("n") else "")
            lines.append(f"- **{LABELS[s['target']]}** ({where}): {s['error']}")
        if s.get("leftovers"):
            lines.append(
                f"- {LABELS[s['target']]} left {s['leftovers']} children behind "
                f"after quitting ({s['kind']} N={s.get('n')}); they were killed"
            )
    return lines


def render(results: dict[str, Any]) -> str:
    """The whole report as markdown."""
    plan = results["plan"]
    machine = results["machine"]
    main_n = plan["main_n"]
    ns = plan["ns"]
    out: list[str] = [HEADER, ""]
    out.append(
        f"Mode **{plan['mode']}**, run on {results['started']} in "
        f"{results['duration'] / 60:.1f} min; {plan['repeats']} round(s), targets "
        f"alternated round-robin ({', '.join(plan['targets'])})."
    )
    out.append("")
    out.append("| machine | |")
    out.append("|---|---|")
    for key in ("cpu", "nproc", "memory", "kernel", "python", "load"):
        out.append(f"| {key} | {machine.get(key, '?')} |")
    out.append("")
    out.append("| target | version | configuration |")
    out.append("|---|---|---|")
    for t in ORDER:
        if t in results["versions"]:
            out.append(f"| {LABELS[t]} | {results['versions'][t]} | {results['notes'][t]} |")
    out.append("")
    out.append(
        "Ratios: a row's figure divided by the reference's (×2 = twice the time). "
        "Medians over rounds unless said otherwise. Children are `" + plan["sleep_cmd"] + "`."
    )

    def section(title: str, body: list[str], note: str = "") -> None:
        out.extend(["", f"### {title}", ""])
        if note:
            out.extend([note, ""])
        out.extend(body)

    sel = set(plan["only"])
    if "spawn" in sel:
        section(
            "1. Spawn",
            _table(
                results,
                "sleepers",
                ns,
                [
                    Figure("until all run", _median_of(lambda s: s["spawn"]["all"]), fmt_seconds),
                    Figure(
                        "until the first runs",
                        _median_of(lambda s: s["spawn"]["first"]),
                        fmt_seconds,
                    ),
                ],
            ),
            "Time from launching the daemon until N children run the program "
            "(seen in /proc as its children with the right command line).",
        )
    if "respawn" in sel:
        samples = ", ".join(f"{LABELS[t]} {n}" for t, n in plan["respawn_samples"].items())
        section(
            "2. Respawn",
            _table(
                results,
                "sleepers",
                [main_n],
                [
                    Figure(
                        "median", _pooled(lambda s: s["respawn"], statistics.median), fmt_seconds
                    ),
                    Figure(
                        "p95",
                        _pooled(lambda s: s["respawn"], lambda v: percentile(v, 95)),
                        fmt_seconds,
                    ),
                    Figure("worst", _pooled(lambda s: s["respawn"], max), fmt_seconds),
                ],
            ),
            f"`kill -9` of a random child with {main_n} running, until its replacement runs. "
            f"Samples: {samples}. Before each kill the runner waits a random time up to the "
            "daemon's housekeeping period (circus: check_delay 5 s; supervisord: 1 s) so kills "
            "fall at random phases of its timer.",
        )
    if "rtt" in sel:
        calls = list(dict.fromkeys(c for s in results["sessions"] for c in s.get("rtt", {})))
        figures = []
        for call in calls:
            figures.append(
                Figure(f"{call} median", _pooled(_rtt_of(call), statistics.median), fmt_seconds)
            )
            figures.append(
                Figure(
                    f"{call} p99", _pooled(_rtt_of(call), lambda v: percentile(v, 99)), fmt_seconds
                )
            )
        counts = []
        for t in ORDER:
            per_call = [
                sum(
                    len(s["rtt"].get(c, []))
                    for s in _sessions(results, t, "sleepers", main_n)
                    if "rtt" in s
                )
                for c in calls
            ]
            if any(per_call):
                counts.append(f"{LABELS[t]} " + "/".join(map(str, per_call)))
        section(
            "3. Control round trip",
            _table(results, "sleepers", [main_n], figures),
            f"Up to {plan['rtt_calls']} calls of each per round, one at a time, with {main_n} "
            f"children, fewer (at least 20) where a call type used up {plan['rtt_budget']:g} s; "
            f"calls measured ({' / '.join(calls)}): {', '.join(counts)}. "
            "Circus daemons and the floor: one JSON frame over a ZeroMQ DEALER on ipc://. "
            "supervisord (XML-RPC on its unix socket): `status` is `supervisor.getState`, "
            "`list` is `supervisor.getAllProcessInfo`.",
        )
    if "idle" in sel:
        section(
            "4. Idle cost",
            _table(
                results,
                "sleepers",
                [main_n],
                [
                    Figure("CPU", _median_of(_idle_percent), fmt_percent, _percent_resolution),
                    Figure("CPU time", _median_of(_idle_cpu), fmt_seconds, _tick),
                    Figure("RSS", _median_of(lambda s: s["idle"]["rss_bytes"]), fmt_mib),
                ],
            ),
            f"The daemon's own CPU time (user + system, all threads) over "
            f"{plan['idle_seconds']:g} s with {main_n} children and nothing happening, as a "
            "percentage of one core, and its resident memory.",
        )
    if "stop" in sel:
        section(
            "5. Stop",
            _table(
                results,
                "sleepers",
                [main_n],
                [Figure("stop", _median_of(lambda s: s["stop"]), fmt_seconds)],
            ),
            f"From the stop request (circus `stop sleepers`; supervisord "
            f"`stopProcessGroup(wait=False)`; floor `stop`) until all {main_n} children "
            "have exited and been reaped.",
        )
    if "stream" in sel:
        section(
            "6. Stream throughput",
            _table(
                results,
                "stream",
                [None],
                [Figure("throughput", _median_of(lambda s: s["stream"]["mb_per_s"]), fmt_mbps)],
                lower_is_better=False,
            ),
            f"One child (`cat` of a text file) writing {plan['stream_mib']} MiB to stdout as fast "
            "as it can, into a file: circus `FileStream`, supervisord `stdout_logfile`, floor: "
            "the child's stdout is the file. MB = 10^6 bytes.",
        )
    if "scale" in sel:
        section(
            "7. Scale curve",
            _table(
                results,
                "sleepers",
                ns,
                [
                    Figure("spawn", _median_of(lambda s: s["spawn"]["all"]), fmt_seconds),
                    Figure("idle CPU", _median_of(_idle_percent), fmt_percent, _percent_resolution),
                    Figure("RSS", _median_of(lambda s: s["idle"]["rss_bytes"]), fmt_mib),
                    Figure("stop", _median_of(lambda s: s.get("stop")), fmt_seconds),
                ],
            ),
            f"Spawn, idle CPU over {plan['idle_seconds']:g} s, resident memory and stop time "
            "at each N.",
        )
    problems = _errors(results)
    if problems:
        section("Failures", problems)
    for note in plan.get("notes", []):
        out.extend(["", note])
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m benchmarks.report RESULTS.json", file=sys.stderr)
        return 2
    with open(args[0]) as fh:
        print(render(json.load(fh)), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
