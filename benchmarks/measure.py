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


def measure_spawn(target: Target, n: int, timeout: float) -> dict[str, float]:
    """Seconds from the daemon's launch until the first and until all *n* children run."""
    assert target.tracker is not None
    deadline = target.launched_at + timeout
    first: float | None = None
    while True:
        running = target.tracker.poll()
        now = time.perf_counter()
        if running and first is None:
            first = now - target.launched_at
        if len(running) >= n:
            return {
                "first": first if first is not None else now - target.launched_at,
                "all": now - target.launched_at,
            }
        target.check_alive()
        if now > deadline:
            raise TargetFailed(
                f"spawn: {len(running)} of {n} children running after {timeout:.0f}s"
            )
        time.sleep(SPAWN_POLL)


def measure_respawn(
    target: Target, n: int, samples: int, rng: random.Random, timeout: float
) -> list[float]:
    """Kill -9 a random child *samples* times; return the seconds until each replacement runs.

    Before each kill the benchmark waits a random time in ``[0, target.period)`` so kills land
    at random phases of any timer the daemon polls on (circus's ``check_delay``).
    """
    tracker = target.tracker
    assert tracker is not None
    latencies: list[float] = []
    for _ in range(samples):
        time.sleep(0.05 + rng.uniform(0.0, target.period))
        before = wait_running(target, n, timeout)
        victim = rng.choice(sorted(before))
        # Forget the victim: should its pid be recycled for the replacement, it is found again.
        tracker.confirmed.discard(victim)
        before.discard(victim)
        killed_at = time.perf_counter()
        os.kill(victim, signal.SIGKILL)
        while True:
            if tracker.poll() - before:
                latencies.append(time.perf_counter() - killed_at)
                break
            if time.perf_counter() - killed_at > timeout:
                target.check_alive()
                raise TargetFailed(f"respawn: no replacement for pid {victim} in {timeout:.0f}s")
            time.sleep(RESPAWN_POLL)
    return latencies


def measure_rtt(
    target: Target, calls: int, budget: float, warmup: int = 5
) -> dict[str, list[float]]:
    """Time up to *calls* round trips of each control call the target offers, one at a time.

    A call type stops early once *budget* seconds have gone into it (supervisord's
    ``getAllProcessInfo`` with 1,000 processes takes most of a second), after at least 20 calls.
    """
    samples: dict[str, list[float]] = {}
    for name, call in target.rtt_calls().items():
        for _ in range(warmup):
            call()
        timings: list[float] = []
        spent = 0.0
        while len(timings) < calls and (spent < budget or len(timings) < 20):
            started = time.perf_counter()
            call()
            timings.append(time.perf_counter() - started)
            spent += timings[-1]
        samples[name] = timings
    return samples


def measure_idle(target: Target, seconds: float, settle: float = 1.0) -> dict[str, float]:
    """The daemon's CPU time over *seconds* of doing nothing, and its resident memory."""
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
        "rss_bytes": float(procfs.rss_bytes(target.pid)),
    }


def measure_stop(target: Target, timeout: float) -> float:
    """Seconds from the stop request until every child has exited and been reaped.

    Done means: none of the children running before the request is still listed by the kernel
    (zombies are listed until reaped) and no replacement is running.
    """
    tracker = target.tracker
    assert tracker is not None
    original = tracker.poll()
    started = time.perf_counter()
    target.request_stop()
    while True:
        remaining = original.intersection(procfs.children_of(target.pid))
        if not remaining and not tracker.poll():
            return time.perf_counter() - started
        if time.perf_counter() - started > timeout:
            target.check_alive()
            raise TargetFailed(f"stop: {len(remaining)} children still there after {timeout:.0f}s")
        time.sleep(STOP_POLL)


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
