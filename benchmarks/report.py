"""Turn a results file into markdown tables: absolute figures, then ratios to the floor and
to each anchor (Circus 0.19, supervisord 4.3).

``python -m benchmarks.report results.json`` prints the report of an earlier run. The report
of a ``--scale`` run is one section between :data:`SCALE_BEGIN` and :data:`SCALE_END`, and
that of the readiness benchmark one between :data:`READINESS_BEGIN` and
:data:`READINESS_END`, that of circusd-stats one of its own (benchmarks/stats.py);
:func:`update_markdown` writes a run's report into an existing file,
replacing only the sections the run measured.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from benchmarks import stats

ORDER = ("ours", "circus019", "supervisord", "floor")
LABELS = {
    "ours": "ours",
    "circus019": "Circus 0.19",
    "supervisord": "supervisord 4.3",
    "floor": "floor",
}
REFERENCES = ("floor", "circus019", "supervisord")
NOTIFIER_TOPIC = "notifier"  # the readiness benchmark's watcher (benchmarks.targets.NOTIFIER)
SCALE_BEGIN = "<!-- scale:begin -->"
SCALE_END = "<!-- scale:end -->"
READINESS_BEGIN = "<!-- readiness:begin -->"
READINESS_END = "<!-- readiness:end -->"
WEB_BEGIN = "<!-- web:begin -->"  # benchmarks/web.py's section, kept by every other run
WEB_END = "<!-- web:end -->"
#: What a markdown file holds before its first scale section is written into it.
SCALE_FILE_HEAD = "# Benchmarks\n"
#: The kinds of session of the readiness benchmark (reported in its own section only).
READINESS_KINDS = ("ready", "health", "nohealth", "connfloor", "listener")

Sessions = list[dict[str, Any]]

HEADER = """\
# Benchmarks

Our `circusd` side by side with Circus 0.19.0, supervisord 4.3.0 and a *floor*: a bare Python
loop over `os.posix_spawn` with one pidfd per child in an epoll loop (`benchmarks/floor.py`),
about the best any Python supervisor can do. `make bench` runs the quick set, `make bench-full`
everything (it rewrites this file but for the N = 10,000 section at its end, which
`make bench-scale` writes; `--only readiness` rewrites section 8 alone);
`python -m benchmarks.run --help` has the options.

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
    """The whole report as markdown (for a scale run, or a run of the readiness benchmark
    alone, its section)."""
    plan = results["plan"]
    if plan["mode"] == "scale":
        return render_scale(results)
    if readiness_only(plan):
        return render_readiness(results)
    if stats.stats_only(plan):
        return stats.render(results, LABELS)
    text = render_main(results)
    if "readiness" in plan["only"]:
        text += "\n" + render_readiness(results)
    if "stats" in plan["only"]:
        text += "\n" + stats.render(results, LABELS)
    return text


def readiness_only(plan: dict[str, Any]) -> bool:
    """Whether the run measured the readiness benchmark and nothing else."""
    return plan["mode"] != "scale" and list(plan["only"]) == ["readiness"]


def update_markdown(old: str, results: dict[str, Any]) -> str:
    """The markdown file *old* with the report of *results* written into it.

    A scale run, or a run of the readiness benchmark alone, replaces its own section (or
    adds it) and leaves the rest as it was. Any other run rewrites the file: its report,
    then the readiness section (this run's if it measured it, else the file's), then the
    file's web console section (benchmarks/web.py), then its scale section.
    """
    plan = results["plan"]
    if plan["mode"] == "scale":
        return splice_scale(old or SCALE_FILE_HEAD, render_scale(results))
    if readiness_only(plan):
        return splice_section(
            old or SCALE_FILE_HEAD,
            READINESS_BEGIN,
            READINESS_END,
            render_readiness(results),
            before=stats.STATS_BEGIN if stats.STATS_BEGIN in old else SCALE_BEGIN,
        )
    if stats.stats_only(plan):
        return splice_section(
            old or SCALE_FILE_HEAD,
            stats.STATS_BEGIN,
            stats.STATS_END,
            stats.render(results, LABELS),
            before=WEB_BEGIN if WEB_BEGIN in old else SCALE_BEGIN,
        )
    if "readiness" in plan["only"]:
        ready = render_readiness(results).strip("\n")
    else:
        ready = marked_section(old, READINESS_BEGIN, READINESS_END)
    if "stats" in plan["only"]:
        kept_stats = stats.render(results, LABELS).strip("\n")
    else:
        kept_stats = marked_section(old, stats.STATS_BEGIN, stats.STATS_END)
    text = render_main(results)
    for kept in (ready, kept_stats, marked_section(old, WEB_BEGIN, WEB_END),
                 scale_section(old)):
        if kept:
            text += "\n" + kept + "\n"
    return text


def render_main(results: dict[str, Any]) -> str:
    """The report of a quick or full run, but for the readiness section."""
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
    problems = _errors(
        {"sessions": [s for s in results["sessions"]
                      if s["kind"] not in READINESS_KINDS + stats.KINDS]}
    )
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
        settle = plan.get("idle_settle", 1.0)
        section(
            "The daemon with N running",
            f"Its resident memory, and its own CPU time (user + system, all threads) over "
            f"{plan['idle_seconds']:g} s of nothing happening, as a percentage of one core. "
            f"The idle window starts {settle:g} s after the last control call; the CPU time "
            "of those seconds is shown as well (settling), because one-off work after a start "
            "of N lands there: ours runs one full garbage collection once births have stopped "
            "for a second (circus/quietgc.py), the collection Python would otherwise run in "
            "the middle of the next burst.",
            _table(
                results,
                "scale",
                ns,
                [
                    Figure("RSS", _median_of(lambda s: s["idle"]["rss_bytes"]), fmt_mib),
                    Figure("idle CPU", _median_of(_idle_percent), fmt_percent, _percent_resolution),
                    Figure("CPU time", _median_of(_idle_cpu), fmt_seconds, _tick),
                    Figure(
                        "settling CPU time",
                        _median_of(lambda s: s["idle"]["settle_cpu_seconds"]),
                        fmt_seconds,
                        _tick,
                    ),
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


#: The goal for circusd's CPU with health_n processes checked once a second, % of a core.
HEALTH_GOAL_PERCENT = 2.0


def readiness_figures(results: dict[str, Any]) -> dict[str, float]:
    """The readiness benchmark's figures, by name; a figure that was not measured is left
    out.

    ``ready_*``: seconds from ``READY=1`` to the event, pooled over every round (``p50``,
    ``p99``, ``max``, and the ``count`` of samples). For each CPU window kind (``health``,
    ``nohealth``, ``connfloor``): ``<kind>_percent`` of a core, ``<kind>_cpu`` seconds and
    ``<kind>_rate`` connections a second, each the median over rounds. Then what the checks
    alone cost (``checks_percent``: with the check minus without, and ``check_cpu``: CPU
    seconds per check) and the ratios of ``health`` and of the checks alone to the floor.
    """
    figures: dict[str, float] = {}
    latencies: list[float] = []
    for s in results["sessions"]:
        if s["kind"] == "ready" and s.get("ready"):
            latencies.extend(s["ready"])
    if latencies:
        figures["ready_count"] = float(len(latencies))
        figures["ready_p50"] = percentile(latencies, 50)
        figures["ready_p99"] = percentile(latencies, 99)
        figures["ready_max"] = max(latencies)
    for kind in ("health", "nohealth", "connfloor"):
        windows = [s["cpu"] for s in results["sessions"] if s["kind"] == kind and "cpu" in s]
        if windows:
            figures[f"{kind}_percent"] = statistics.median(w["cpu_percent"] for w in windows)
            figures[f"{kind}_cpu"] = statistics.median(w["cpu_seconds"] for w in windows)
            figures[f"{kind}_seconds"] = statistics.median(w["seconds"] for w in windows)
            figures[f"{kind}_rate"] = statistics.median(w["per_second"] for w in windows)
    if "health_percent" in figures and "nohealth_percent" in figures:
        alone = max(figures["health_percent"] - figures["nohealth_percent"], 0.0)
        figures["checks_percent"] = alone
        if figures["health_rate"] > 0:
            figures["check_cpu"] = alone / 100.0 / figures["health_rate"]
    floor = figures.get("connfloor_percent")
    if floor and figures["connfloor_rate"] > 0:
        figures["connection_cpu"] = floor / 100.0 / figures["connfloor_rate"]
    if floor:
        if "health_percent" in figures:
            figures["health_vs_floor"] = figures["health_percent"] / floor
        if "checks_percent" in figures:
            figures["checks_vs_floor"] = figures["checks_percent"] / floor
    return figures


def _cpu_resolution(sessions: Sessions) -> float | None:
    bounds = [100 * s["cpu"]["tick"] / s["cpu"]["seconds"] for s in sessions if "cpu" in s]
    return max(bounds) if bounds else None


def render_readiness(results: dict[str, Any]) -> str:
    """The readiness section (section 8), markers included."""
    plan = results["plan"]
    machine = results["machine"]
    figures = readiness_figures(results)
    n = plan.get("health_n", 1000)
    interval = plan.get("health_interval", 1.0)
    out: list[str] = [READINESS_BEGIN, "", "### 8. Readiness and health checks", ""]
    out.append(
        "Ours only: Circus 0.19 and supervisord have no readiness or health checks (a "
        "process counts as up once spawned, or once it has run `startsecs`), so there is "
        "nothing of theirs to set beside these figures. Written by `python -m "
        "benchmarks.run --full --only readiness`, which replaces only this section; "
        "`make bench-full` measures it with everything else, and the runs that do not "
        "measure it keep it."
    )
    out.append("")
    out.append(
        f"Run on {results['started']} in {results['duration'] / 60:.1f} min, "
        f"{plan['repeats']} round(s); {machine.get('cpu', '?')}, "
        f"{machine.get('nproc', '?')} cores, {machine.get('kernel', '?')}, "
        f"{machine.get('python', '?')}; load {machine.get('load', '?')}"
        + (f", {machine['load_end']} at the end." if "load_end" in machine else ".")
        + f" Ours: {results['versions'].get('ours', '?')}."
    )
    out.extend(["", "#### From `READY=1` to the `ready` event", ""])
    out.append(
        f"A watcher with `ready = notify` runs {plan.get('ready_batch', '?')} copies of "
        "`benchmarks/notify_worker.py` (every other option at its default). Each waits for "
        "SIGUSR1 from the runner, then reads CLOCK_MONOTONIC and at once sends `READY=1` "
        "to `$NOTIFY_SOCKET` with `socket.sendto`. The runner, subscribed to "
        f"`watcher.{NOTIFIER_TOPIC}.ready` on circusd's events endpoint (a ZeroMQ SUB over "
        "ipc://), reads the same clock as soon as the event can be read: the figure takes "
        "in the datagram's way into circusd, circusd finding the process by the sender's "
        "pid and publishing, and ZeroMQ's delivery. One worker at a time, 20 to 100 ms "
        "after the previous event; once every worker of a batch has sent, all are killed "
        "(each after 1 s of life, so no death counts as a failed start) and circusd's "
        "replacements are the next batch. Percentiles pool every round's samples and "
        "interpolate between the closest ones."
    )
    out.append("")
    out.append("| samples | p50 | p99 | max |")
    out.append("|---|---|---|---|")
    if "ready_count" in figures:
        out.append(
            f"| {figures['ready_count']:.0f} | {fmt_seconds(figures['ready_p50'])} | "
            f"{fmt_seconds(figures['ready_p99'])} | {fmt_seconds(figures['ready_max'])} |"
        )
    else:
        out.append("| failed | — | — | — |")
    out.extend(["", f"#### circusd's CPU with {n:,} processes checked by `tcp:`", ""])
    out.append(
        f"{n:,} `{plan['sleep_cmd']}` children with `health = tcp:127.0.0.1:PORT` and "
        f"`health_interval = {interval:g}` (every other option at its default), all "
        "checking one listening process of the runner's (`benchmarks/listener.py`: "
        "backlog 4096, accepts and closes). circusd's own CPU time (user + system, all "
        f"threads, from `/proc/PID/stat`) over {plan.get('health_seconds', 0):g} s, "
        f"{plan.get('health_settle', 0):g} s after all {n:,} run; the same daemon and "
        "children without `health`; and the floor, `benchmarks/connect_floor.py`: a plain "
        f"Python loop opening and closing {round(n / interval * 0.1):,} blocking "
        "connections to the same listener every 0.1 s and nothing else. Checks a second: "
        "the connections the listener accepted over the window. The three take turns in "
        "each round; figures are medians over rounds. As % of one core."
    )
    out.append("")
    out.append("| | CPU | CPU time | checks a second | vs floor |")
    out.append("|---|---|---|---|---|")
    rows = (
        ("health", f"ours, `health = tcp:` every {interval:g} s"),
        ("nohealth", "ours, no health check"),
        ("connfloor", f"floor: {round(n / interval):,} connect + close a second"),
    )
    floor = figures.get("connfloor_percent")
    for kind, label in rows:
        chosen = [s for s in results["sessions"] if s["kind"] == kind]
        if f"{kind}_percent" not in figures:
            failed = "failed" if any(s.get("error") for s in chosen) else "—"
            out.append(f"| {label} | {failed} | | | |")
            continue
        # CPU time is counted in clock ticks: a window with less than one reads as 0
        value = figures[f"{kind}_percent"]
        bound = _cpu_resolution(chosen) if value == 0 else None
        cell = f"< {fmt_percent(bound)}" if bound is not None else fmt_percent(value)
        ratio = ""
        if kind != "connfloor" and floor:
            ratio = f"< {fmt_ratio(bound / floor)}" if bound else fmt_ratio(value / floor)
        cpu = figures[f"{kind}_cpu"]
        tick = max((s["cpu"]["tick"] for s in chosen if "cpu" in s), default=0.01)
        cpu_cell = f"< {fmt_seconds(tick)}" if cpu == 0 else fmt_seconds(cpu)
        out.append(
            f"| {label} | {cell} | {cpu_cell} | "
            f"{figures[f'{kind}_rate']:,.0f} | {ratio} |"
        )
    if "checks_percent" in figures:
        out.append("")
        text = (
            f"The checks alone (with minus without): {fmt_percent(figures['checks_percent'])}"
            f" of a core"
        )
        if "check_cpu" in figures:
            text += f", {fmt_seconds(figures['check_cpu'])} of CPU per check"
        if "checks_vs_floor" in figures:
            text += f", {fmt_ratio(figures['checks_vs_floor'])} the floor"
        if "connection_cpu" in figures:
            text += f" ({fmt_seconds(figures['connection_cpu'])} per bare connection)"
        out.append(text + ".")
    replaced = sum(
        s["cpu"].get("replaced", 0) for s in results["sessions"]
        if s["kind"] == "health" and "cpu" in s
    )
    failed = sum(
        s["cpu"].get("failed", 0) for s in results["sessions"]
        if s["kind"] == "connfloor" and "cpu" in s
    )
    if failed:
        out.append("")
        out.append(f"{failed:.0f} of the floor's connections failed (counted, not retried).")
    if replaced:
        out.append("")
        out.append(
            f"{replaced:.0f} of the checked processes were replaced during the windows "
            "(failed checks restart a process): the figures include those restarts."
        )
    if "health_percent" in figures:
        value = figures["health_percent"]
        verdict = "met" if value < HEALTH_GOAL_PERCENT else "not met"
        out.append("")
        text = (
            f"Goal: circusd under {HEALTH_GOAL_PERCENT:g} % of a core with {n:,} processes "
            f"checked every {interval:g} s: **{verdict}** ({fmt_percent(value)})."
        )
        if floor is not None and floor >= HEALTH_GOAL_PERCENT:
            text += (
                f" The floor alone, a plain Python loop making the same connections, takes "
                f"{fmt_percent(floor)}: more than the goal on this machine."
            )
        out.append(text)
    problems = _errors(
        {"sessions": [s for s in results["sessions"] if s["kind"] in READINESS_KINDS]}
    )
    if problems:
        out.extend(["", "Failures:", "", *problems])
    out.extend(["", READINESS_END])
    return "\n".join(out) + "\n"


def _fmt_count(value: float) -> str:
    return f"{value:,.0f}"


def marked_section(text: str, begin: str, end: str) -> str:
    """The section of *text* from the marker *begin* to the marker *end*, both included,
    or "" if it has none."""
    start = text.find(begin)
    stop = text.find(end, start)
    if start < 0 or stop < 0:
        return ""
    return text[start : stop + len(end)]


def splice_section(
    text: str, begin: str, end: str, section: str, before: str | None = None
) -> str:
    """*text* with its section between *begin* and *end* replaced by *section*; without
    one, *section* goes in front of the marker *before* if *text* has it, else at the end."""
    section = section.strip("\n")
    old = marked_section(text, begin, end)
    if old:
        return text.replace(old, section, 1)
    at = text.find(before) if before else -1
    if at >= 0:
        return text[:at] + section + "\n\n" + text[at:]
    return text.rstrip("\n") + "\n\n" + section + "\n"


def scale_section(text: str) -> str:
    """The scale section of a markdown file, markers included, or "" if it has none."""
    return marked_section(text, SCALE_BEGIN, SCALE_END)


def splice_scale(text: str, section: str) -> str:
    """*text* with its scale section replaced by *section*, or *section* appended to it."""
    return splice_section(text, SCALE_BEGIN, SCALE_END, section)


def main(argv: list[str] | None = None) -> int:
    """Print the report of a results file; with ``--markdown FILE``, also write it into
    FILE as the run itself would have (:func:`update_markdown`)."""
    args = sys.argv[1:] if argv is None else argv
    markdown = None
    if len(args) == 3 and args[1] == "--markdown":
        args, markdown = args[:1], args[2]
    if len(args) != 1:
        print("usage: python -m benchmarks.report RESULTS.json [--markdown FILE]",
              file=sys.stderr)
        return 2
    with open(args[0]) as fh:
        results = json.load(fh)
    if markdown is not None:
        try:
            with open(markdown) as fh:
                old = fh.read()
        except FileNotFoundError:
            old = ""
        with open(markdown, "w") as fh:
            fh.write(update_markdown(old, results))
    print(render(results), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
