"""Turn a results file into markdown tables: absolute figures, then ratios to the floor and
to each anchor (Circus 0.19, supervisord 4.3).

``python -m benchmarks.report results.json`` prints the report of an earlier run. The report
of a ``--scale`` run is one section between :data:`SCALE_BEGIN` and :data:`SCALE_END`, which
:func:`splice_scale` puts in place of the same section of an existing file.
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
SCALE_BEGIN = "<!-- scale:begin -->"
SCALE_END = "<!-- scale:end -->"
#: What a markdown file holds before its first scale section is written into it.
SCALE_FILE_HEAD = "# Benchmarks\n"

Sessions = list[dict[str, Any]]

HEADER = """\
# Benchmarks

Our `circusd` side by side with Circus 0.19.0, supervisord 4.3.0 and a *floor*: a bare Python
loop over `os.posix_spawn` with one pidfd per child in an epoll loop (`benchmarks/floor.py`),
about the best any Python supervisor can do. `make bench` runs the quick set, `make bench-full`
everything (it rewrites this file but for the N = 10,000 section at its end, which
`make bench-scale` writes); `python -m benchmarks.run --help` has the options.

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


def _stop_done(session: dict[str, Any]) -> float:
    """Seconds until every child was gone (older results hold that figure alone)."""
    stop = session["stop"]
    return float(stop["done"] if isinstance(stop, dict) else stop)


def _fds_per_process(session: dict[str, Any]) -> float:
    fds = session["fds"]
    return float(fds["running"] - fds["stopped"]) / float(session["n"])


def _respawn_figures() -> list[Figure]:
    def pooled(reduce: Callable[[list[float]], float]) -> Callable[[Sessions], float | None]:
        return _pooled(lambda s: s["respawn"], reduce)

    return [
        Figure("p50", pooled(statistics.median), fmt_seconds),
        Figure("p95", pooled(lambda v: percentile(v, 95)), fmt_seconds),
        Figure("p99", pooled(lambda v: percentile(v, 99)), fmt_seconds),
        Figure("max", pooled(max), fmt_seconds),
    ]


RESPAWN_METHOD = (
    "One death at a time: each kill waits for the previous replacement. After a replacement "
    "within 0.1 s, the next kill comes 0.1 s plus an exponential time (mean 0.25 s, or "
    "longer so that the kills span three of the daemon's housekeeping periods) after the "
    "previous kill; after a slower one, 0.1 s plus a uniform time up to that period (circus: "
    "check_delay 5 s; supervisord: 1 s) after the replacement. So kills fall at every phase "
    "of the daemon's timers. The victim is a child that has run at least 1 s: a younger "
    "one's death may count as a failed start, which ours and supervisord answer with a "
    "backoff (min_uptime, startsecs). Percentiles interpolate between the closest samples."
)


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
    with_ratios: bool = True,
) -> list[str]:
    targets = [t for t in ORDER if t in results["plan"]["targets"]]
    ns = list(ns)
    head = ["N"] if ns != [None] else []
    head += ["target", *(f.title for f in figures)]
    references = [r for r in REFERENCES if r in targets] if with_ratios else []
    head += [f"vs {LABELS[r]}" for r in references]
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
            for ref in references:
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
    if len(figures) > 1 and references:
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
    """The whole report as markdown (for a scale run, its section)."""
    plan = results["plan"]
    if plan["mode"] == "scale":
        return render_scale(results)
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
        respawn_ns = plan.get("respawn_ns") or [main_n]
        samples = ", ".join(f"{LABELS[t]} {n}" for t, n in plan["respawn_samples"].items())
        section(
            "2. Respawn",
            _table(results, "sleepers", respawn_ns, _respawn_figures()),
            f"`kill -9` of a random child with N running, until its replacement runs. "
            f"Samples at each N, over all rounds: {samples}. " + RESPAWN_METHOD,
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
                [Figure("stop", _median_of(_stop_done), fmt_seconds)],
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
                    Figure("stop", _median_of(_stop_done), fmt_seconds),
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


def _limit_cell(sessions: Sessions, name: str) -> str:
    seen = sorted({"/".join(s["limits"][name]) for s in sessions if name in s.get("limits", {})})
    return ", ".join(seen) or "—"


def render_scale(results: dict[str, Any]) -> str:
    """The scale section, markers included."""
    plan = results["plan"]
    machine = results["machine"]
    ns = sorted(set(plan["ns"]))
    shown = " and ".join(f"{n:,}" for n in ns)
    targets = [t for t in ORDER if t in plan["targets"]]
    out: list[str] = [SCALE_BEGIN, "", f"## At N = {shown}", ""]
    out.append(
        "Written by `make bench-scale` (`python -m benchmarks.run --scale`), which replaces "
        "only this section; `make bench-full` keeps it. One daemon per target and round runs "
        "N children (`" + plan["sleep_cmd"] + "`) and every figure below is taken on it, in "
        "this order: spawn, control round trips, idle CPU and memory, descriptors, respawn "
        "after `kill -9`, stop. Targets take turns round-robin; ratios are a row's figure "
        "divided by the reference's, as in the tables above."
    )
    out.append("")
    out.append(
        f"Run on {results['started']} in {results['duration'] / 60:.1f} min, "
        f"{plan['repeats']} round(s), targets {', '.join(plan['targets'])}; "
        f"{machine.get('cpu', '?')}, {machine.get('nproc', '?')} cores, "
        f"{machine.get('memory', '?')}, {machine.get('kernel', '?')}, "
        f"{machine.get('python', '?')}; load {machine.get('load', '?')}"
        + (f", {machine['load_end']} at the end." if "load_end" in machine else ".")
    )
    out.append("")
    out.append("| target | version | open files (soft/hard) | processes (soft/hard) |")
    out.append("|---|---|---|---|")
    for t in targets:
        chosen = _sessions(results, t, "scale", None)
        out.append(
            f"| {LABELS[t]} | {results['versions'].get(t, '?')} | "
            f"{_limit_cell(chosen, 'nofile')} | {_limit_cell(chosen, 'nproc')} |"
        )
    runner = plan.get("limits", {})
    if runner:
        out.append("")
        out.append(
            "Limits as `/proc/PID/limits` showed them for each daemon once its children ran "
            "(or when it failed). "
            "The runner raises its soft RLIMIT_NOFILE and RLIMIT_NPROC to the hard ones "
            f"(here {'/'.join(map(str, runner.get('nofile', [])))} and "
            f"{'/'.join(map(str, runner.get('nproc', [])))}) before launching any daemon, "
            "which inherits them."
        )

    def section(title: str, note: str, body: list[str]) -> None:
        out.extend(["", f"### {title}", "", note, "", *body])

    sel = set(plan["only"])
    spawn_stop = [Figure("spawn", _median_of(lambda s: s["spawn"]["all"]), fmt_seconds)]
    if "stop" in sel or "fds" in sel:
        spawn_stop += [
            Figure("stop answered", _median_of(lambda s: s["stop"]["reply"]), fmt_seconds),
            Figure("stop, none left", _median_of(_stop_done), fmt_seconds),
        ]
    section(
        "Spawn and stop",
        "Spawn: from launching the daemon until N children run the program (in /proc, "
        "children of the daemon with the expected command line). Stop: from the request "
        "(circus `stop sleepers`, supervisord `stopProcessGroup(wait=False)`, floor `stop`) "
        "until the daemon answers, and until none of the children is left in /proc (reaped).",
        _table(results, "scale", ns, spawn_stop),
    )
    if "rtt" in sel:
        calls = list(
            dict.fromkeys(
                c for s in results["sessions"] if s["kind"] == "scale" for c in s.get("rtt", {})
            )
        )
        figures = [
            Figure(f"{call} median", _pooled(_rtt_of(call), statistics.median), fmt_seconds)
            for call in calls
        ]
        counts = []
        for t in targets:
            chosen = [s for s in _sessions(results, t, "scale", None) if "rtt" in s]
            if chosen:
                per_call = [sum(len(s["rtt"].get(c, [])) for s in chosen) for c in calls]
                counts.append(f"{LABELS[t]} " + "/".join(map(str, per_call)))
        section(
            "Control round trip with N running",
            f"One call at a time after {plan['rtt_warmup']} untimed ones: up to "
            f"{plan['rtt_calls']} of each, fewer (at least {plan['rtt_least']}) once one type "
            f"has taken {plan['rtt_budget']:g} s; calls timed ({' / '.join(calls)}): "
            f"{', '.join(counts)}. `list sleepers` answers with N pids.",
            _table(results, "scale", ns, figures),
        )
    if "idle" in sel:
        section(
            "The daemon with N running",
            f"Its resident memory, and its own CPU time (user + system, all threads) over "
            f"{plan['idle_seconds']:g} s of nothing happening, as a percentage of one core.",
            _table(
                results,
                "scale",
                ns,
                [
                    Figure("RSS", _median_of(lambda s: s["idle"]["rss_bytes"]), fmt_mib),
                    Figure("idle CPU", _median_of(_idle_percent), fmt_percent, _percent_resolution),
                    Figure("CPU time", _median_of(_idle_cpu), fmt_seconds, _tick),
                ],
            ),
        )
    if "fds" in sel:
        section(
            "Descriptors per process",
            "The daemon's open descriptors (`/proc/PID/fd`) with N running and after the stop "
            "with none running, on the same daemon and with the same control connection open; "
            "per process is their difference divided by N. After respawns: the count once "
            "every killed child was replaced (equal to the first when nothing leaks).",
            _table(
                results,
                "scale",
                ns,
                [
                    Figure("N running", _median_of(lambda s: s["fds"]["running"]), _fmt_count),
                    Figure(
                        "after respawns",
                        _median_of(lambda s: s["fds"]["after_respawn"]),
                        _fmt_count,
                    ),
                    Figure("none running", _median_of(lambda s: s["fds"]["stopped"]), _fmt_count),
                    Figure("per process", _median_of(_fds_per_process), lambda v: f"{v:.2f}"),
                ],
                with_ratios=False,
            ),
        )
    if "respawn" in sel:
        samples = ", ".join(f"{LABELS[t]} {n}" for t, n in plan["respawn_samples"].items())
        section(
            "Respawn after kill -9",
            f"`kill -9` of a random child with N running, until its replacement runs. "
            f"Samples at each N, over all rounds: {samples}. " + RESPAWN_METHOD,
            _table(results, "scale", ns, _respawn_figures()),
        )
    problems = _errors({"sessions": [s for s in results["sessions"] if s["kind"] != "sleepers"]})
    if problems:
        out.extend(["", "Failures:", "", *problems])
    for note in plan.get("notes", []):
        out.extend(["", note])
    out.extend(["", SCALE_END])
    return "\n".join(out) + "\n"


def _fmt_count(value: float) -> str:
    return f"{value:,.0f}"


def scale_section(text: str) -> str:
    """The scale section of a markdown file, markers included, or "" if it has none."""
    begin = text.find(SCALE_BEGIN)
    end = text.find(SCALE_END, begin)
    if begin < 0 or end < 0:
        return ""
    return text[begin : end + len(SCALE_END)]


def splice_scale(text: str, section: str) -> str:
    """*text* with its scale section replaced by *section*, or *section* appended to it."""
    section = section.strip("\n")
    old = scale_section(text)
    if old:
        return text.replace(old, section, 1)
    return text.rstrip("\n") + "\n\n" + section + "\n"


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
