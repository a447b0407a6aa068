"""circusd-stats: what publishing the figures of N processes costs, ours beside Circus 0.19,
and what it costs circusd.

``python -m benchmarks.run --full --only stats [--targets ours,circus019] [--ns 1000]``: for
each target and round, two daemons one after the other, each running N sleepers:

* ``stats-off``: without circusd-stats; circusd's CPU over the window (its idle cost);
* ``stats``: with ``statsd = true`` and an ipc:// ``stats_endpoint``. First circusd-stats'
  CPU over a short window while nobody subscribes; then a subscriber (this runner, on
  ``stat.``) waits until it has received figures for all N processes, and the CPU time of
  the circusd-stats process and of circusd are read from ``/proc`` over the window (30 s in
  --full), the subscriber reading every message all the while, as circus-top does;
  circusd-stats' resident memory at the end.

Its report is a section of the markdown file between :data:`STATS_BEGIN` and
:data:`STATS_END`; a run of it alone replaces only that section, and other runs keep it.
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

import zmq

from benchmarks import procfs
from benchmarks.targets import Target, TargetFailed

STATS_BEGIN = "<!-- stats:begin -->"
STATS_END = "<!-- stats:end -->"
STATS_TARGETS = ("ours", "circus019")
KINDS = ("stats", "stats-off")
N = 1000
SECONDS = {"quick": 10.0, "full": 30.0}
QUIET_SECONDS = {"quick": 5.0, "full": 10.0}  # circusd-stats with no subscriber
SETTLE = 2.0
GOAL = 1.0  # percent of a core, ours, with N = 1,000


def circus_options(workdir: str) -> dict[str, str]:
    """The ``[circus]`` lines that make circusd run circusd-stats."""
    return {"statsd": "true", "stats_endpoint": f"ipc://{workdir}/stats"}


def is_stats_process(argv: list[bytes]) -> bool:
    """circusd-stats as ours (``-m circus.cli.stats``) or Circus 0.19 (``stats.main()``)
    launch it."""
    return any(b"circus.cli.stats" in a or b"stats.main()" in a for a in argv)


def find_stats_pid(target: Target, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        target.check_alive()
        for pid in procfs.children_of(target.pid):
            argv = procfs.cmdline(pid)
            if argv and is_stats_process(argv):
                return pid
        time.sleep(0.1)
    raise TargetFailed(f"no circusd-stats child within {timeout:.0f}s: {target.log_tail()}")


def cpu_window(pids: list[int], seconds: float) -> list[float]:
    """The CPU of each of *pids* over *seconds*, in percent of a core."""
    before = [procfs.cpu_seconds(p) for p in pids]
    t0 = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - t0
    return [100.0 * (procfs.cpu_seconds(p) - b) / elapsed for p, b in zip(pids, before,
                                                                          strict=True)]


def measure_daemon(target: Target, seconds: float) -> dict[str, float]:
    """circusd's CPU over *seconds* with no circusd-stats (the ``stats-off`` session)."""
    time.sleep(SETTLE)
    target.check_alive()
    [cpu] = cpu_window([target.pid], seconds)
    return {"seconds": seconds, "daemon_cpu_percent": cpu}


def measure_stats(target: Target, endpoint: str, n: int, watcher: str, seconds: float,
                  quiet_seconds: float, timeout: float = 120.0) -> dict[str, Any]:
    """CPU of circusd-stats with nobody subscribed, then of circusd-stats and circusd over
    *seconds* while a subscriber reads everything."""
    stats_pid = find_stats_pid(target, timeout=30.0)
    time.sleep(SETTLE)
    [quiet] = cpu_window([stats_pid], quiet_seconds)
    ctx: zmq.Context[Any] = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.linger = 0
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"stat.")
    sub.connect(endpoint)
    prefix = f"stat.{watcher}.".encode()
    aggregate = f"stat.{watcher}".encode()
    messages = 0
    try:
        # 1. until one interval covered every sleeper: circusd-stats has learned the N pids
        seen: set[bytes] = set()
        deadline = time.monotonic() + timeout
        while len(seen) < n:
            if time.monotonic() > deadline:
                raise TargetFailed(f"circusd-stats published {len(seen)} of {n} processes "
                                   f"within {timeout:.0f}s: {target.log_tail()}")
            target.check_alive()
            if sub.poll(500):
                topic = sub.recv_multipart()[0]
                if topic.startswith(prefix):
                    seen.add(topic)
        # 2. the window
        stats0, daemon0 = procfs.cpu_seconds(stats_pid), procfs.cpu_seconds(target.pid)
        t0 = time.monotonic()
        in_aggregate: set[int] = set()
        while (left := t0 + seconds - time.monotonic()) > 0:
            if sub.poll(max(1, int(left * 1000))):
                while True:
                    try:
                        topic, body = sub.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    messages += 1
                    if topic == aggregate:
                        in_aggregate.update(json.loads(body)["pid"])
        elapsed = time.monotonic() - t0
        stats1, daemon1 = procfs.cpu_seconds(stats_pid), procfs.cpu_seconds(target.pid)
    finally:
        sub.close(linger=0)
        ctx.term()
    return {
        "seconds": elapsed,
        "quiet_cpu_percent": quiet,
        "stats_cpu_percent": 100.0 * (stats1 - stats0) / elapsed,
        "daemon_cpu_percent": 100.0 * (daemon1 - daemon0) / elapsed,
        "stats_rss_bytes": float(procfs.rss_bytes(stats_pid)),
        "messages_per_s": messages / elapsed,
        "pids_in_aggregate": len(in_aggregate),
    }


def stats_only(plan: dict[str, Any]) -> bool:
    """Whether the run measured circusd-stats and nothing else."""
    return plan["mode"] != "scale" and list(plan["only"]) == ["stats"]


def _median(sessions: list[dict[str, Any]], key: str) -> float | None:
    values = [s["stats"][key] for s in sessions if "stats" in s and key in s["stats"]]
    return statistics.median(values) if values else None


def _cell(value: float | None, text: str) -> str:
    return "—" if value is None else text.format(value)


def render(results: dict[str, Any], labels: dict[str, str]) -> str:
    """The stats section, markers included."""
    plan = results["plan"]
    sessions = [s for s in results["sessions"] if s.get("kind") in KINDS]
    n = plan.get("stats_n", N)
    seconds = plan.get("stats_seconds", SECONDS["full"])
    quiet = plan.get("stats_quiet_seconds", QUIET_SECONDS["full"])
    machine = results["machine"]
    out = [STATS_BEGIN, "", f"### 9. circusd-stats with N = {n:,}", ""]
    out.append(
        f"Written by `python -m benchmarks.run --{plan['mode']} --only stats`, which "
        "replaces only this section. For each target and round, circusd runs N sleepers "
        f"twice: once without circusd-stats (circusd's CPU over {seconds:.0f} s: its idle "
        "cost), once with `statsd = true`. There circusd-stats' CPU is read first over "
        f"{quiet:.0f} s while nobody subscribes; then a subscriber to `stat.` waits for the "
        "figures of all N and reads every message while the CPU time of circusd-stats and "
        f"of circusd are read from /proc over {seconds:.0f} s (interval 1 s for both "
        "targets); circusd-stats' RSS at the end. Medians over "
        f"{plan['repeats']} round(s). Run on {results['started']}; load "
        f"{machine.get('load', '?')}, {machine.get('load_end', '?')} at the end. "
        f"The goal for ours is under {GOAL:g} % of a core and circusd's CPU unchanged."
    )
    per_round = [f"{s['stats']['stats_cpu_percent']:.2f} %" for s in sorted(
        sessions, key=lambda s: s["round"]) if s["target"] == "ours" and s["kind"] == "stats"
        and "stats" in s]
    if per_round:
        out.append("")
        out.append(f"Ours, round by round: {', '.join(per_round)}.")
    out.append("")
    out.append("| target | circusd-stats CPU, subscribed (% of a core) | circusd-stats CPU, "
               "no subscriber | circusd-stats RSS | circusd CPU with stats | circusd CPU "
               "without | messages/s received | pids in the aggregate |")
    out.append("|---|---|---|---|---|---|---|---|")
    errors: list[str] = []
    for key in STATS_TARGETS:
        mine = [s for s in sessions if s["target"] == key]
        if not mine:
            continue
        errors += [f"{labels.get(key, key)} ({s['kind']}, round {s['round'] + 1}): "
                   f"{s['error']}" for s in mine if "error" in s]
        on = [s for s in mine if s["kind"] == "stats"]
        off = [s for s in mine if s["kind"] == "stats-off"]
        cpu = _median(on, "stats_cpu_percent")
        rss = _median(on, "stats_rss_bytes")
        row = [
            labels.get(key, key),
            _cell(cpu, "{:.2f} %"),
            _cell(_median(on, "quiet_cpu_percent"), "{:.2f} %"),
            _cell(None if rss is None else rss / 2**20, "{:.1f} MiB"),
            _cell(_median(on, "daemon_cpu_percent"), "{:.2f} %"),
            _cell(_median(off, "daemon_cpu_percent"), "{:.2f} %"),
            _cell(_median(on, "messages_per_s"), "{:,.0f}"),
            _cell(_median(on, "pids_in_aggregate"), "{:,.0f}"),
        ]
        out.append("| " + " | ".join(row) + " |")
    if errors:
        out.append("")
        out.extend(f"- failed: {e}" for e in errors)
    out.extend(["", STATS_END])
    return "\n".join(out) + "\n"
