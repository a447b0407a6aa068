"""The measurements themselves, each against one running :class:`~benchmarks.targets.Target`.

Every wait polls the kernel (``/proc``, ``stat``) with a deadline; nothing trusts what the
supervisor says about itself except the control round trip, which is what it measures.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path
from typing import Any

from benchmarks import procfs
from benchmarks.targets import Target, TargetFailed

SPAWN_POLL = 0.005  # s between /proc scans while children are being spawned
RESPAWN_POLL = 0.001  # s between /proc scans after a kill
STOP_POLL = 0.002
STREAM_POLL = 0.001
FULL_POLL_EVERY = 1.0  # s between complete listings of the children while following births
# Kills for the respawn benchmark come at MIN_GAP plus an exponential gap of mean at least
# MEAN_GAP (see measure_respawn).
MIN_GAP = 0.1
MEAN_GAP = 0.25
# A victim has run at least this long (s): a daemon may count the death of a younger process
# as a failed start and wait before the next (ours: min_uptime; supervisord: startsecs,
# both 1 s). That is a crash-loop policy, not how fast a death is replaced.
MIN_AGE = 1.0
PERIODS_SPANNED = 3


def wait_running(target: Target, n: int, timeout: float, poll: float = SPAWN_POLL) -> set[int]:
    """Wait until *n* children of the daemon run the workload's program; return their pids."""
    assert target.tracker is not None
    deadline = time.perf_counter() + timeout
    while True:
        running = target.tracker.poll()
        if len(running) >= n:
            return running
        target.check_alive()
        if time.perf_counter() > deadline:
            raise TargetFailed(f"{len(running)} of {n} children running after {timeout:.0f}s")
        time.sleep(poll)


def measure_spawn(
    target: Target, n: int, timeout: float, stall: float = 60.0
) -> dict[str, float]:
    """Seconds from the daemon's launch until the first and until all *n* children run.

    Gives up after *timeout* seconds, or after *stall* seconds without one more child (a
    daemon out of descriptors or processes may keep trying for ever).

    Births are followed with :meth:`~benchmarks.procfs.ChildTracker.poll_new`, whose cost does
    not grow with N; the complete listing runs once a second as a safety net and once to check
    the count when the births say all *n* run (the figure is the time of that sighting).
    """
    tracker = target.tracker
    assert tracker is not None
    deadline = target.launched_at + timeout
    first: float | None = None
    next_full = 0.0
    count, grew = 0, time.perf_counter()
    while True:
        if time.perf_counter() >= next_full:
            tracker.poll()
            next_full = time.perf_counter() + FULL_POLL_EVERY
        else:
            tracker.poll_new()
        now = time.perf_counter()
        if tracker.confirmed and first is None:
            first = now - target.launched_at
        if len(tracker.confirmed) >= n and len(tracker.poll()) >= n:
            tracker.take_fresh()
            return {
                "first": first if first is not None else now - target.launched_at,
                "all": now - target.launched_at,
            }
        target.check_alive()
        if len(tracker.confirmed) > count:
            count, grew = len(tracker.confirmed), now
        if now > deadline or now - grew > stall:
            why = f"after {timeout:.0f}s" if now > deadline else f"and none more for {stall:.0f}s"
            raise TargetFailed(
                f"spawn: {count} of {n} children running {why}; daemon log: {target.log_errors()}"
            )
        time.sleep(SPAWN_POLL)


def measure_respawn(
    target: Target, n: int, samples: int, rng: random.Random, timeout: float
) -> list[float]:
    """Kill -9 a random child *samples* times; return the seconds until each replacement runs.

    One death at a time: the next kill waits for the replacement, so deaths never meet (a
    daemon woken by one death may handle another sooner than it would alone). The kills must
    still fall at every phase of the daemon's own timer (circus's ``check_delay``):

    * after a fast replacement (within ``MIN_GAP``: the daemon reacted to the death), the
      next kill comes ``MIN_GAP`` plus an exponential time after the previous kill, a clock
      of the runner's own; its mean is ``MEAN_GAP`` or more, so that the kills span
      ``PERIODS_SPANNED`` periods of the daemon's timer;
    * after a slow one (it may have waited for its timer, and then its timer fired just now),
      the next kill comes ``MIN_GAP`` plus a uniform time in ``[0, period)`` after it.

    A daemon that reacts at once thus takes about 0.35 s per sample; one that waits for its
    timer takes its period per sample on average.
    """
    tracker = target.tracker
    assert tracker is not None
    wait_running(target, n, timeout)
    tracker.take_fresh()
    mean_gap = max(MEAN_GAP, PERIODS_SPANNED * target.period / max(samples, 1))

    def gap() -> float:
        return MIN_GAP + rng.expovariate(1.0 / mean_gap)

    killed_at: float | None = None  # the death waiting for its replacement
    victims: dict[int, int | None] = {}  # pid -> start time: never counted as a replacement
    latencies: list[float] = []
    next_kill = time.perf_counter() + gap()
    next_full = 0.0
    while len(latencies) < samples:
        now = time.perf_counter()
        if killed_at is None and now >= next_kill:
            grown = procfs.old_enough(sorted(tracker.confirmed), MIN_AGE)
            if not grown:  # every child is younger than MIN_AGE: ask again shortly
                next_kill = now + 0.05
                time.sleep(0.05)
                continue
            victim = rng.choice(grown)
            # Forget the victim: should its pid be recycled for the replacement, it is found
            # again as a birth.
            tracker.forget(victim)
            victims[victim] = procfs.start_time(victim)
            killed_at = time.perf_counter()
            os.kill(victim, signal.SIGKILL)
            next_kill = killed_at + gap()
            next_full = killed_at + FULL_POLL_EVERY
        if killed_at is not None and now >= next_full:  # slow: check with the full list
            tracker.poll()
            next_full = now + FULL_POLL_EVERY
            found = tracker.take_fresh()
        else:
            found = tracker.poll_new()
        seen = time.perf_counter()
        for pid in found:
            if pid in victims and procfs.start_time(pid) in (victims[pid], None):
                tracker.forget(pid)  # seen by a full listing before it died
                continue
            if killed_at is not None:
                latencies.append(seen - killed_at)
                if seen - killed_at > MIN_GAP:
                    next_kill = seen + MIN_GAP + rng.uniform(0.0, target.period)
                killed_at = None
        if killed_at is not None:
            if seen - killed_at > timeout:
                target.check_alive()
                raise TargetFailed(f"respawn: a killed child not replaced in {timeout:.0f}s")
            time.sleep(RESPAWN_POLL)
        elif len(latencies) < samples:
            time.sleep(max(0.0, min(next_kill - time.perf_counter(), 0.1)))
    wait_running(target, n, timeout)
    return latencies


def measure_rtt(
    target: Target, calls: int, budget: float, warmup: int = 5, least: int = 20
) -> dict[str, list[float]]:
    """Time up to *calls* round trips of each control call the target offers, one at a time.

    A call type stops early once *budget* seconds have gone into it (supervisord's
    ``getAllProcessInfo`` with 1,000 processes takes most of a second), after at least *least*
    calls. *warmup* calls of each come first and are not timed.
    """
    samples: dict[str, list[float]] = {}
    for name, call in target.rtt_calls().items():
        for _ in range(warmup):
            call()
        timings: list[float] = []
        spent = 0.0
        while len(timings) < calls and (spent < budget or len(timings) < least):
            started = time.perf_counter()
            call()
            timings.append(time.perf_counter() - started)
            spent += timings[-1]
        samples[name] = timings
    return samples


def measure_idle(target: Target, seconds: float, settle: float = 1.0) -> dict[str, float]:
    """The daemon's CPU time over *seconds* of doing nothing, and its resident memory.

    The window starts *settle* seconds after the call; the CPU time of those seconds is
    returned as well (``settle_cpu_seconds``), so one-off work that follows a start of many
    processes is shown apart from what idling costs, not hidden.
    """
    cpu_settle = procfs.cpu_seconds(target.pid)
    time.sleep(settle)
    target.check_alive()
    cpu0, t0 = procfs.cpu_seconds(target.pid), time.monotonic()
    time.sleep(seconds)
    cpu1, t1 = procfs.cpu_seconds(target.pid), time.monotonic()
    return {
        "seconds": t1 - t0,
        "cpu_seconds": cpu1 - cpu0,
        "cpu_percent": 100.0 * (cpu1 - cpu0) / (t1 - t0),
        "tick": 1.0 / procfs.CLOCK_TICKS,  # CPU time resolution: less than this reads as 0
        "settle_cpu_seconds": cpu0 - cpu_settle,
        "rss_bytes": float(procfs.rss_bytes(target.pid)),
    }


def measure_stop(target: Target, timeout: float) -> dict[str, float]:
    """Seconds from the stop request until the daemon's answer and until every child is gone.

    Gone means: none of the children running before the request is still in ``/proc``
    (zombies are there until reaped; a recycled pid is told apart by its start time), and no
    child started since (a replacement) is left either. The children are checked one by one
    from the end of the list, each only until it is found gone, so the checks cost about one
    read per child over the whole stop whatever N.
    """
    tracker = target.tracker
    assert tracker is not None
    original = tracker.poll()
    tracker.take_fresh()
    remaining = list(procfs.snapshot(original).items())
    started = time.perf_counter()
    target.request_stop(timeout)
    replied = time.perf_counter() - started
    while True:
        for pid in tracker.poll_new():
            born = procfs.start_time(pid)
            if born is not None:
                remaining.append((pid, born))
        while remaining and procfs.start_time(remaining[-1][0]) != remaining[-1][1]:
            remaining.pop()
        now = time.perf_counter()
        if not remaining:
            left = tracker.poll()  # the complete list, to be sure: cheap once they are gone
            if not left:
                return {"reply": replied, "done": now - started}
            remaining = list(procfs.snapshot(left).items())
        if now - started > timeout:
            target.check_alive()
            raise TargetFailed(f"stop: {len(remaining)} children still there after {timeout:.0f}s")
        time.sleep(STOP_POLL)


def count_fds(target: Target, timeout: float = 5.0, still: float = 0.5) -> int:
    """The daemon's open descriptors, once the count has held still for *still* seconds."""
    deadline = time.monotonic() + timeout
    count = procfs.fd_count(target.pid)
    while True:
        time.sleep(still)
        again = procfs.fd_count(target.pid)
        if again == count or time.monotonic() > deadline:
            return again
        count = again


def measure_stream(target: Target, output: Path, total: int, timeout: float) -> dict[str, Any]:
    """Throughput of the writer's output into *output*, from its first byte to its last.

    The clock starts at the first poll that sees the writer running or the file non-empty
    (bytes already there are not counted) and stops when the file holds *total* bytes.
    """
    assert target.tracker is not None
    deadline = time.perf_counter() + timeout
    start: float | None = None
    start_size = 0
    while True:
        try:
            size = os.stat(output).st_size
        except FileNotFoundError:
            size = 0
        now = time.perf_counter()
        if start is None and (size > 0 or target.tracker.poll()):
            start, start_size = now, size
        if size >= total:
            break
        target.check_alive()
        if now > deadline:
            raise TargetFailed(f"stream: {size} of {total} bytes after {timeout:.0f}s")
        time.sleep(STREAM_POLL)
    assert start is not None
    elapsed = now - start
    counted = total - start_size
    return {
        "seconds": elapsed,
        "bytes": counted,
        "mb_per_s": counted / elapsed / 1e6 if elapsed > 0 else float("inf"),
        "start_size": start_size,
    }
