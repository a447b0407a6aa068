"""circusd-stats: what publishing the figures of N processes costs, ours beside Circus 0.19.

``python -m benchmarks.run --only stats [--targets ours,circus019] [--ns 1000]``: each target's
circusd runs N sleepers with ``statsd = true`` and an ipc:// ``stats_endpoint``. Once a
subscriber (this runner, ``stat.``) receives figures for all N processes, the CPU time of the
circusd-stats process and of circusd itself are read from ``/proc`` over the window (30 s),
and circusd-stats' resident memory at its end. The subscriber keeps reading all the while, so
both publish as they do for ``circus-top``.

Its report is a section of the markdown file between ``<!-- stats:begin -->`` and
``<!-- stats:end -->``; writing it replaces only that section.
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
SECONDS = 30.0
N = 1000


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


def measure_stats(target: Target, endpoint: str, n: int, seconds: float = SECONDS,
                  timeout: float = 120.0) -> dict[str, Any]:
    """CPU of circusd-stats and circusd over *seconds* while a subscriber reads everything."""
    stats_pid = find_stats_pid(target, timeout=30.0)
    ctx: zmq.Context[Any] = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.linger = 0
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"stat.")
    sub.connect(endpoint)
    messages = 0
    try:
        # 1. until one interval covered every sleeper: both have learned the N pids
        seen: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(seen) < n:
            if time.monotonic() > deadline:
                raise TargetFailed(f"circusd-stats published {len(seen)} of {n} processes "
                                   f"within {timeout:.0f}s: {target.log_tail()}")
            target.check_alive()
            if sub.poll(500):
                topic, body = sub.recv_multipart()
                parts = topic.split(b".")
                if len(parts) == 3 and parts[1] == b"sleepers":
                    seen.add(int(parts[2]))
        # 2. the window
        stats0, daemon0 = procfs.cpu_seconds(stats_pid), procfs.cpu_seconds(target.pid)
        t0 = time.monotonic()
        sleepers: set[int] = set()
        while (left := t0 + seconds - time.monotonic()) > 0:
            if sub.poll(max(1, int(left * 1000))):
                while True:
                    try:
                        topic, body = sub.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    messages += 1
                    if topic == b"stat.sleepers":
                        sleepers.update(json.loads(body)["pid"])
        t1 = time.monotonic()
        stats1, daemon1 = procfs.cpu_seconds(stats_pid), procfs.cpu_seconds(target.pid)
    finally:
        sub.close(linger=0)
        ctx.term()
    elapsed = t1 - t0
    return {
        "seconds": elapsed,
        "stats_cpu_percent": 100.0 * (stats1 - stats0) / elapsed,
        "daemon_cpu_percent": 100.0 * (daemon1 - daemon0) / elapsed,
        "stats_rss_bytes": float(procfs.rss_bytes(stats_pid)),
        "messages_per_s": messages / elapsed,
        "pids_in_aggregate": len(sleepers),
    }


def _median(sessions: list[dict[str, Any]], key: str) -> float | None:
    values = [s["stats"][key] for s in sessions if "stats" in s]
    return statistics.median(values) if values else None


def render(results: dict[str, Any], labels: dict[str, str]) -> str:
    """The stats section, markers included."""
    plan = results["plan"]
    sessions = [s for s in results["sessions"] if s.get("kind") == "stats"]
    n = plan.get("stats_n", N)
    out = [STATS_BEGIN, "", f"## circusd-stats with N = {n:,}", ""]
    out.append(
        "Written by `python -m benchmarks.run --only stats`, which replaces only this "
        f"section. Each target's circusd runs N sleepers with `statsd = true`; once a "
        f"subscriber to `stat.` has received the figures of all N, the CPU time of the "
        f"circusd-stats process and of circusd are read from /proc over "
        f"{plan.get('stats_seconds', SECONDS):.0f} s (interval 1 s, both), with the "
        "subscriber reading every message; RSS at the end. Run on "
        f"{results['started']}, {plan['repeats']} round(s), load "
        f"{results['machine'].get('load', '?')}. The goal for ours is under 1 % of a core."
    )
    out.append("")
    out.append("| target | circusd-stats CPU (% of a core) | circusd-stats RSS | circusd CPU "
               "while stats run | messages/s received | pids in `stat.sleepers` |")
    out.append("|---|---|---|---|---|---|")
    for key in STATS_TARGETS:
        mine = [s for s in sessions if s["target"] == key]
        if not mine:
            continue
        errors = [s["error"] for s in mine if "error" in s]
        if not any("stats" in s for s in mine):
            out.append(f"| {labels.get(key, key)} | failed: {errors[0] if errors else '?'} "
                       "| | | | |")
            continue
        cpu = _median(mine, "stats_cpu_percent")
        rss = _median(mine, "stats_rss_bytes")
        daemon = _median(mine, "daemon_cpu_percent")
        rate = _median(mine, "messages_per_s")
        pids = _median(mine, "pids_in_aggregate")
        assert cpu is not None and rss is not None and daemon is not None
        out.append(f"| {labels.get(key, key)} | {cpu:.2f} % | {rss / 2**20:.1f} MiB | "
                   f"{daemon:.2f} % | {rate:,.0f} | {pids:,.0f} |")
    out.append("")
    out.append(STATS_END)
    return "\n".join(out) + "\n"


def section(text: str) -> str:
    """The stats section of a markdown file, markers included, or "" if it has none."""
    begin = text.find(STATS_BEGIN)
    end = text.find(STATS_END, begin)
    if begin < 0 or end < 0:
        return ""
    return text[begin:end + len(STATS_END)]


def splice(text: str, new: str) -> str:
    """*text* with its stats section replaced by *new*, or *new* appended."""
    new = new.strip("\n")
    old = section(text)
    if old:
        return text.replace(old, new, 1)
    return text.rstrip("\n") + "\n\n" + new + "\n"
