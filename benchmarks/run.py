"""Run the benchmarks: ours, Circus 0.19, supervisord 4.3 and the floor, side by side.

    python -m benchmarks.run [--quick | --full | --scale]
                             [--targets ours,circus019,supervisord,floor]
                             [--only spawn,respawn,rtt,idle,stop,stream,scale,readiness,stats]
                             [--ns N,...] [--repeats K] [--json out.json] [--markdown out.md]

``--scale`` runs N = 10,000 children (``--ns`` to change it) under one daemon per target and
round, and measures on that daemon, in this order: spawn, the control round trips, idle CPU and
memory, descriptors, respawn after ``kill -9``, stop. Its report is one section of the markdown
file, between ``<!-- scale:begin -->`` and ``<!-- scale:end -->``: writing it replaces only that
section, and the other modes keep it when they rewrite the file.

``--only readiness`` (ours only; part of ``--quick`` and ``--full``) times ``READY=1`` to the
``ready`` event and measures circusd's CPU with 1,000 processes checked by ``tcp:`` once a
second. Its report sits between ``<!-- readiness:begin -->`` and ``<!-- readiness:end -->``: a
run of it alone replaces only that section, and runs that do not measure it keep it.

``--only stats`` (ours and Circus 0.19; only when named) measures circusd-stats' CPU and RSS
with 1,000 processes, and circusd's CPU with and without it (benchmarks/stats.py). Its
section sits between ``<!-- stats:begin -->`` and ``<!-- stats:end -->``, kept the same way.

Targets are alternated round-robin within each measurement (the first target rotates from one
round to the next), so a noisy neighbour on the machine hits every target alike and the ratios
hold. Every daemon runs in its own temporary directory under /tmp with ipc:// endpoints, and is
stopped by its recorded pid (then process group) whatever happens; leftover children are killed
by pid after their command line has been checked.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import platform
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import envs, measure, procfs, readiness, report, stats
from benchmarks.targets import (
    TARGETS,
    Target,
    TargetFailed,
    Workload,
    ZmqTarget,
    ensure_bytecode,
    raise_soft_limits,
)

METRICS = ("spawn", "respawn", "rtt", "idle", "stop", "stream", "scale", "readiness", "stats",
           "fds")
#: Measured only when --only names them.
ON_REQUEST = ("stats",)
SCALE_METRICS = ("spawn", "rtt", "idle", "fds", "respawn", "stop")
ALIASES = {"throughput": "stream", "roundtrip": "rtt", "round-trip": "rtt", "ready": "readiness"}
MAIN_N = 1000
RESPAWN_NS = [100, 1000]  # quick and full modes
# Circus 0.19 replaces a death only at its next check_delay (5 s), and the next kill waits for
# that, then for a random part of the period: about 5 s a sample. Fewer samples keep each mode
# within its time; its distribution is bounded by check_delay whatever the count.
CIRCUS019_SAMPLES = {"quick": 10, "full": 40, "scale": 50}
SCALE_N = 10_000
SCALE_TARGETS = ["ours", "circus019", "floor"]  # supervisord takes minutes at this size
PID_HEADROOM = 1000  # pids left for everything else on the machine during a session
CHUNK = 1 << 20  # the writer's source file: 1 MiB of text, read again and again


@dataclass
class Plan:
    """What one run measures; stored with the results so the report can say so."""

    mode: str
    targets: list[str]
    only: list[str]
    ns: list[int]
    repeats: int
    respawn_samples: dict[str, int]  # per target, over all rounds
    rtt_calls: int  # per call and round
    rtt_budget: float  # seconds per call type and round, whatever the count
    idle_seconds: float
    stream_mib: int
    # seconds between the last command and the idle window; their CPU time is reported too
    idle_settle: float = 1.0
    main_n: int = MAIN_N
    respawn_ns: list[int] = field(default_factory=lambda: list(RESPAWN_NS))
    rtt_warmup: int = 5  # untimed calls of each type first
    rtt_least: int = 20  # calls of each type measured even past the budget
    ready_samples: int = 100  # READY=1 to the ready event, over all rounds
    ready_batch: int = 20  # workers per daemon, killed and replaced after each batch
    health_n: int = MAIN_N  # processes checked by tcp:, each every health_interval
    health_interval: float = 1.0
    health_seconds: float = 15.0  # each CPU window
    health_settle: float = 3.0  # after all run: the first checks come one interval late
    stats_n: int = stats.N  # sleepers while circusd-stats is measured
    stats_seconds: float = stats.SECONDS["full"]  # each CPU window, subscribed
    stats_quiet_seconds: float = stats.QUIET_SECONDS["full"]  # with no subscriber
    sleep_cmd: str = ""
    limits: dict[str, list[int]] = field(default_factory=dict)  # the runner's, (soft, hard)
    notes: list[str] = field(default_factory=list)

    def sleeper_ns(self) -> list[int]:
        """The numbers of sleepers to run sessions with, smallest first."""
        if self.mode == "scale":
            return sorted(set(self.ns))
        ns = set(self.ns) if {"spawn", "scale"} & set(self.only) else set()
        if {"rtt", "idle", "stop"} & set(self.only):
            ns.add(self.main_n)
        if "respawn" in self.only:
            ns.update(self.respawn_ns)
        return sorted(ns)

    def wants(self, metric: str, n: int) -> bool:
        """Whether a session with *n* children measures *metric*."""
        if self.mode == "scale":
            # the descriptors with 0 running are counted after the stop
            return metric in self.only or (metric == "stop" and "fds" in self.only)
        if metric in ("idle", "stop") and "scale" in self.only:
            return True
        if metric == "respawn":
            return metric in self.only and n in self.respawn_ns
        return metric in self.only and n == self.main_n


def make_plan(
    mode: str, targets: list[str], only: list[str], repeats: int | None, ns: list[int] | None
) -> Plan:
    if mode == "quick":
        plan = Plan(
            mode,
            targets,
            only,
            ns=[100, 1000],
            repeats=repeats or 1,
            respawn_samples={t: 30 for t in targets},
            rtt_calls=200,
            rtt_budget=10.0,
            idle_seconds=5.0,
            stream_mib=50,
            ready_samples=50,
            health_seconds=10.0,
            health_settle=2.0,
        )
    elif mode == "scale":
        plan = Plan(
            mode,
            targets,
            only,
            ns=[SCALE_N],
            repeats=repeats or 1,
            respawn_samples={t: 100 for t in targets},
            rtt_calls=20,
            rtt_budget=10.0,
            idle_seconds=10.0,
            # after starting 10,000, circusd runs one full garbage collection once births
            # have stopped for a second (circus/quietgc.py): shown apart, not as idle
            idle_settle=5.0,
            stream_mib=0,
            main_n=SCALE_N,
            respawn_ns=[SCALE_N],
            rtt_warmup=2,
            rtt_least=5,
        )
    else:
        plan = Plan(
            mode,
            targets,
            only,
            ns=[100, 1000, 5000],
            repeats=repeats or 3,
            respawn_samples={t: 100 for t in targets},
            rtt_calls=1000,
            rtt_budget=30.0,
            idle_seconds=30.0,
            stream_mib=200,
        )
    if "circus019" in targets and "respawn" in only:
        count = CIRCUS019_SAMPLES[mode]
        plan.respawn_samples["circus019"] = count
        others = sorted({v for k, v in plan.respawn_samples.items() if k != "circus019"})
        plan.notes.append(
            f"Circus 0.19 respawn is sampled {count} times at each N"
            + (f" (the others {others[0]})" if len(others) == 1 else "")
            + ": it replaces a death only at its next check_delay (5 s), and the next kill "
            "waits for that, so each sample takes about 5 s."
        )
    if mode in stats.SECONDS:
        plan.stats_seconds = stats.SECONDS[mode]
        plan.stats_quiet_seconds = stats.QUIET_SECONDS[mode]
    if ns:
        plan.ns = ns
        plan.stats_n = max(ns)
        if mode == "scale":
            plan.respawn_ns = list(ns)
            plan.main_n = max(ns)
        plan.notes.append(f"Numbers of processes chosen by hand: {', '.join(map(str, ns))}.")
    return plan


def split(total: int, parts: int) -> list[int]:
    """Split *total* samples over *parts* rounds as evenly as possible."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def rotated(items: list[str], by: int) -> list[str]:
    k = by % len(items) if items else 0
    return items[k:] + items[:k]


class Runner:
    """Executes a :class:`Plan`, one daemon at a time, and collects the sessions."""

    def __init__(self, plan: Plan, rundir: Path, seed: int) -> None:
        self.plan = plan
        self.rundir = rundir
        self.rng = random.Random(seed)
        self.sessions: list[dict[str, Any]] = []
        self.broken: dict[str, str] = {}  # target -> why it is skipped from now on
        self.counter = 0
        self.t0 = time.monotonic()
        token = str(86400 + self.rng.randrange(1000, 10000))
        self.sleep_argv = ["sleep", token]
        plan.sleep_cmd = " ".join(self.sleep_argv)

    def log(self, message: str) -> None:
        print(f"[{time.monotonic() - self.t0:7.1f}s] {message}", file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def recorded(
        self, key: str, kind: str, n: int, rnd: int
    ) -> Iterator[tuple[dict[str, Any], Path]]:
        """A fresh directory and a record of what happens in it; the record is kept (with
        the error, if any: the run goes on) and the directory removed whatever happens."""
        self.counter += 1
        workdir = self.rundir / f"s{self.counter:03d}"
        workdir.mkdir()
        record: dict[str, Any] = {"target": key, "kind": kind, "n": n, "round": rnd}
        began = time.monotonic()
        try:
            yield record, workdir
        except Exception as exc:  # recorded in the results; the run goes on
            stage = record.get("_stage", "start")
            record["error"] = f"{stage}: {type(exc).__name__}: {exc}"
            if "spawn" not in record and kind in ("sleepers", "scale"):
                self.broken[key] = record["error"]
        finally:
            record.pop("_stage", None)
            shutil.rmtree(workdir, ignore_errors=True)
            record["seconds"] = round(time.monotonic() - began, 1)
            self.sessions.append(record)
            self.log(f"{key} {kind} N={n} round {rnd + 1}: {summarize(record)}")

    @contextlib.contextmanager
    def session(
        self, key: str, kind: str, n: int, rnd: int
    ) -> Iterator[tuple[Target, dict[str, Any], Path]]:
        """A fresh target in a fresh directory; always shut down and recorded."""
        with self.recorded(key, kind, n, rnd) as (record, workdir):
            target = TARGETS[key]()
            try:
                yield target, record, workdir
            finally:
                if kind == "scale" and "limits" not in record and target.proc is not None:
                    record["limits"] = procfs.limits(target.pid)  # what it failed under
                leftovers = target.shutdown()
                if leftovers:
                    record["leftovers"] = len(leftovers)

    def run_sleepers(self, key: str, n: int, rnd: int) -> None:
        plan = self.plan
        with self.session(key, "sleepers", n, rnd) as (target, record, workdir):
            record["_stage"] = "spawn"
            target.start(Workload("sleepers", n, self.sleep_argv), workdir)
            record["spawn"] = measure.measure_spawn(target, n, timeout=30 + 0.05 * n)
            needs_control = plan.wants("rtt", n) or plan.wants("stop", n)
            if needs_control:
                record["_stage"] = "connect"
                target.connect(timeout=60 + 0.02 * n)
            if plan.wants("respawn", n):
                record["_stage"] = "respawn"
                samples = split(plan.respawn_samples[key], plan.repeats)[rnd]
                record["respawn"] = measure.measure_respawn(
                    target, n, samples, self.rng, timeout=30.0
                )
            if plan.wants("rtt", n):
                record["_stage"] = "rtt"
                record["rtt"] = measure.measure_rtt(target, plan.rtt_calls, plan.rtt_budget)
            if plan.wants("idle", n):
                record["_stage"] = "idle"
                measure.wait_running(target, n, timeout=30.0)
                record["idle"] = measure.measure_idle(target, plan.idle_seconds, plan.idle_settle)
            if plan.wants("stop", n):
                record["_stage"] = "stop"
                record["stop"] = measure.measure_stop(target, timeout=120.0)

    def run_scale(self, key: str, n: int, rnd: int) -> None:
        """Every scale measurement on one daemon running *n* children."""
        plan = self.plan
        with self.session(key, "scale", n, rnd) as (target, record, workdir):
            record["_stage"] = "start"
            check_pids(n)
            target.start(Workload("sleepers", n, self.sleep_argv), workdir)
            record["_stage"] = "spawn"
            record["spawn"] = measure.measure_spawn(target, n, timeout=60 + 0.06 * n)
            record["limits"] = procfs.limits(target.pid)
            record["_stage"] = "connect"
            target.connect(timeout=60 + 0.02 * n)
            if plan.wants("rtt", n):
                record["_stage"] = "rtt"
                record["rtt"] = measure.measure_rtt(
                    target, plan.rtt_calls, plan.rtt_budget, plan.rtt_warmup, plan.rtt_least
                )
            if plan.wants("idle", n):
                record["_stage"] = "idle"
                measure.wait_running(target, n, timeout=30.0)
                record["idle"] = measure.measure_idle(target, plan.idle_seconds, plan.idle_settle)
            fds: dict[str, int] = {}
            if plan.wants("fds", n):
                record["_stage"] = "fds"
                measure.wait_running(target, n, timeout=30.0)
                fds["running"] = measure.count_fds(target)
            if plan.wants("respawn", n):
                record["_stage"] = "respawn"
                samples = split(plan.respawn_samples[key], plan.repeats)[rnd]
                record["respawn"] = measure.measure_respawn(
                    target, n, samples, self.rng, timeout=30.0
                )
                if fds:
                    fds["after_respawn"] = measure.count_fds(target)
            if plan.wants("stop", n):
                record["_stage"] = "stop"
                record["stop"] = measure.measure_stop(target, timeout=120.0 + 0.01 * n)
                if fds:
                    fds["stopped"] = measure.count_fds(target)
                    record["fds"] = fds

    def run_stream(self, key: str, rnd: int, chunk: Path) -> None:
        total = self.plan.stream_mib * CHUNK
        with self.session(key, "stream", 1, rnd) as (target, record, workdir):
            output = workdir / "out.log"
            record["_stage"] = "stream"
            argv = ["cat", *([str(chunk)] * self.plan.stream_mib)]
            target.start(Workload("writer", 1, argv, output=output), workdir)
            record["stream"] = measure.measure_stream(target, output, total, timeout=300.0)
            time.sleep(0.2)
            size = output.stat().st_size
            if size != total:
                raise TargetFailed(f"stream: the file holds {size} bytes, {total} expected")

    def run_ready(self, rnd: int) -> None:
        """READY=1 to the ready event, on one daemon running a batch of notify workers."""
        plan = self.plan
        samples = split(plan.ready_samples, plan.repeats)[rnd]
        with self.session("ours", "ready", plan.ready_batch, rnd) as (target, record, workdir):
            assert isinstance(target, ZmqTarget)
            stamps = workdir / "stamps"
            stamps.mkdir()
            record["_stage"] = "spawn"
            argv = readiness.worker_argv(stamps)
            target.start(Workload("notify", plan.ready_batch, argv), workdir)
            measure.wait_running(target, plan.ready_batch, timeout=60.0)
            record["_stage"] = "connect"
            target.connect(timeout=60.0)
            record["_stage"] = "ready"
            record["ready"] = readiness.measure_ready(
                target, stamps, samples, plan.ready_batch, self.rng, timeout=30.0
            )

    def run_health(self, kind: str, listener: readiness.Listener, rnd: int) -> None:
        """circusd's CPU with health_n sleepers, checked by tcp: (kind "health") or not."""
        plan = self.plan
        n = plan.health_n
        options = {}
        if kind == "health":
            options = {
                "health": f"tcp:127.0.0.1:{listener.port}",
                "health_interval": f"{plan.health_interval:g}",
            }
        with self.session("ours", kind, n, rnd) as (target, record, workdir):
            record["_stage"] = "spawn"
            check_pids(n)
            target.start(Workload("sleepers", n, self.sleep_argv, options=options), workdir)
            record["_stage"] = "cpu"
            record["cpu"] = readiness.measure_health_cpu(
                target, n, listener, plan.health_seconds, plan.health_settle
            )

    def run_connect_floor(self, listener: readiness.Listener, rnd: int) -> None:
        plan = self.plan
        rate = round(plan.health_n / plan.health_interval)
        with self.recorded("floor", "connfloor", plan.health_n, rnd) as (record, _):
            record["_stage"] = "cpu"
            record["cpu"] = readiness.measure_connect_floor(
                listener, rate, plan.health_seconds, plan.health_settle
            )

    def run_stats(self, key: str, kind: str, rnd: int) -> None:
        """circusd's CPU with stats_n sleepers and, for kind "stats", circusd-stats' too."""
        plan = self.plan
        n = plan.stats_n
        with self.session(key, kind, n, rnd) as (target, record, workdir):
            record["_stage"] = "spawn"
            check_pids(n)
            extra = stats.circus_options(str(workdir)) if kind == "stats" else {}
            target.start(Workload("sleepers", n, self.sleep_argv, circus=extra), workdir)
            record["spawn"] = measure.measure_spawn(target, n, timeout=60 + 0.1 * n)
            record["_stage"] = kind
            if kind == "stats":
                record["stats"] = stats.measure_stats(
                    target, extra["stats_endpoint"], n, Workload("sleepers", 0, []).name,
                    plan.stats_seconds, plan.stats_quiet_seconds)
            else:
                record["stats"] = stats.measure_daemon(target, plan.stats_seconds)

    def run_readiness(self) -> None:
        """Every round: the ready latency, then the three CPU windows in rotating order,
        all against one listener of the round's."""
        for rnd in range(self.plan.repeats):
            self.run_ready(rnd)
            try:
                listener = readiness.Listener()
            except (OSError, TargetFailed) as exc:
                error = f"listener: {type(exc).__name__}: {exc}"
                self.sessions.append(
                    {"target": "ours", "kind": "listener", "n": 0, "round": rnd, "error": error}
                )
                self.log(f"round {rnd + 1}: {error}")
                continue
            try:
                for kind in rotated(list(readiness.CPU_KINDS), rnd):
                    if kind == "connfloor":
                        self.run_connect_floor(listener, rnd)
                    else:
                        self.run_health(kind, listener, rnd)
            finally:
                listener.stop()

    def run(self) -> None:
        plan = self.plan
        for n in plan.sleeper_ns():
            for rnd in range(plan.repeats):
                for key in rotated(plan.targets, rnd):
                    if key in self.broken:
                        continue
                    if plan.mode == "scale":
                        self.run_scale(key, n, rnd)
                    else:
                        self.run_sleepers(key, n, rnd)
        if plan.mode == "scale":
            return
        if "stream" in plan.only:
            chunk = self.rundir / "chunk.txt"
            line = b"the quick brown fox jumps over the lazy dog 0123456789 " * 2
            line = line[:99] + b"\n"
            chunk.write_bytes((line * (CHUNK // len(line) + 1))[:CHUNK])
            for rnd in range(plan.repeats):
                for key in rotated(plan.targets, rnd):
                    if key not in self.broken:
                        self.run_stream(key, rnd, chunk)
        if "readiness" in plan.only and "ours" not in self.broken:
            self.run_readiness()
        if "stats" in plan.only:
            keys = [t for t in plan.targets if t in stats.STATS_TARGETS]
            for rnd in range(plan.repeats):
                for key in rotated(keys, rnd):
                    for kind in rotated(list(stats.KINDS), rnd):
                        if key not in self.broken:
                            self.run_stats(key, kind, rnd)


def check_pids(n: int) -> None:
    """Fail with the figures if the machine has too few pids left for *n* more children."""
    pid_max, tasks = procfs.pid_max(), procfs.task_count()
    if pid_max - tasks < n + PID_HEADROOM:
        raise TargetFailed(
            f"{n} children need {n + PID_HEADROOM} free pids (with {PID_HEADROOM} to spare): "
            f"kernel.pid_max is {pid_max} and {tasks} tasks run already"
        )


def summarize(record: dict[str, Any]) -> str:
    parts = []
    if "spawn" in record:
        parts.append(f"spawn {record['spawn']['all']:.3f}s")
    if record.get("respawn"):
        samples = record["respawn"]
        parts.append(
            f"respawn median {statistics.median(samples):.4f}s "
            f"p99 {report.percentile(samples, 99):.4f}s worst {max(samples):.4f}s"
        )
    for call, samples in record.get("rtt", {}).items():
        parts.append(f"{call} {statistics.median(samples) * 1e3:.3f}ms")
    if "idle" in record:
        parts.append(
            f"idle {record['idle']['cpu_percent']:.2f}% "
            f"{record['idle']['rss_bytes'] / 2**20:.1f}MiB"
        )
    if "fds" in record:
        fds = record["fds"]
        parts.append(f"fds {fds['running']} running, {fds['stopped']} stopped")
    if "stop" in record:
        stop = record["stop"]
        parts.append(f"stop answered {stop['reply']:.3f}s, done {stop['done']:.3f}s")
    if "stream" in record:
        parts.append(f"stream {record['stream']['mb_per_s']:.1f}MB/s")
    if record.get("ready"):
        samples = record["ready"]
        parts.append(
            f"READY=1 to event: median {statistics.median(samples) * 1e6:.0f}µs "
            f"p99 {report.percentile(samples, 99) * 1e6:.0f}µs "
            f"max {max(samples) * 1e6:.0f}µs ({len(samples)} samples)"
        )
    if "cpu" in record:
        cpu = record["cpu"]
        parts.append(
            f"CPU {cpu['cpu_percent']:.2f}% over {cpu['seconds']:.1f}s, "
            f"{cpu['per_second']:.0f} connections/s"
            + (f", {cpu['replaced']:.0f} replaced" if cpu.get("replaced") else "")
            + (f", {cpu['failed']:.0f} failed" if cpu.get("failed") else "")
        )
    if "stats" in record:
        st = record["stats"]
        if "stats_cpu_percent" in st:
            parts.append(f"circusd-stats {st['stats_cpu_percent']:.2f}% "
                         f"({st['quiet_cpu_percent']:.2f}% unsubscribed) "
                         f"{st['stats_rss_bytes'] / 2**20:.1f}MiB, "
                         f"{st['pids_in_aggregate']} pids")
        parts.append(f"circusd {st['daemon_cpu_percent']:.2f}%")
    if "error" in record:
        parts.append(f"ERROR {record['error']}")
    return ", ".join(parts) or "nothing measured"


def choose(
    mode: str, only: list[str] | None, targets: list[str] | None
) -> tuple[list[str], list[str]]:
    """The metrics and the targets of a run, from ``--only`` and ``--targets`` (None when
    not given). Raises ValueError for a choice that cannot be measured."""
    allowed = SCALE_METRICS if mode == "scale" else METRICS[:-1]
    chosen = list(only or [m for m in allowed if m not in ON_REQUEST])
    if wrong := [m for m in chosen if m not in allowed]:
        raise ValueError(
            f"--only {','.join(wrong)}: not measured in {mode} mode "
            f"(choose from {', '.join(allowed)})"
        )
    if chosen == ["readiness"]:
        targets = targets or ["ours"]  # the others have nothing to measure here
    elif chosen == ["stats"]:
        targets = targets or list(stats.STATS_TARGETS)
    else:
        targets = targets or (SCALE_TARGETS if mode == "scale" else list(TARGETS))
    if "readiness" in chosen and "ours" not in targets:
        if only:
            raise ValueError("--only readiness measures ours only: add ours to --targets")
        chosen.remove("readiness")  # the mode's default, with nothing to measure it on
    if "stats" in chosen and not set(targets) & set(stats.STATS_TARGETS):
        raise ValueError("--only stats measures ours and circus019: add one to --targets")
    if mode == "scale" and "spawn" not in chosen:
        chosen.insert(0, "spawn")  # the children have to run before anything else
    return chosen, list(targets)


def write_markdown(path: Path, results: dict[str, Any]) -> None:
    """Write the report of *results* into *path*, keeping the sections of the file that
    this run did not measure (:func:`benchmarks.report.update_markdown`)."""
    old = path.read_text() if path.exists() else ""
    path.write_text(report.update_markdown(old, results))


def positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number above 0")
    return number


def numbers(value: str) -> list[int]:
    return [positive(v.strip()) for v in value.split(",") if v.strip()]


def parse_list(value: str, allowed: tuple[str, ...], aliases: dict[str, str]) -> list[str]:
    items = [aliases.get(v.strip(), v.strip()) for v in value.split(",") if v.strip()]
    unknown = [v for v in items if v not in allowed]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown: {', '.join(unknown)} (choose from {', '.join(allowed)})"
        )
    return list(dict.fromkeys(items))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument(
        "--quick",
        dest="mode",
        action="store_const",
        const="quick",
        help="the short version (default), a few minutes",
    )
    modes.add_argument(
        "--full",
        dest="mode",
        action="store_const",
        const="full",
        help="everything: N up to 5,000, 3 rounds, 30 s idle, 200 MiB",
    )
    modes.add_argument(
        "--scale",
        dest="mode",
        action="store_const",
        const="scale",
        help="N = 10,000 under one daemon per target: spawn, round trips, idle, "
        "descriptors, respawn, stop; ours, circus019 and floor unless --targets says",
    )
    parser.add_argument(
        "--targets",
        type=lambda v: parse_list(v, tuple(TARGETS), {}),
        help=f"default: all ({', '.join(TARGETS)}); --scale: {', '.join(SCALE_TARGETS)}",
    )
    parser.add_argument(
        "--only",
        type=lambda v: parse_list(v, METRICS, ALIASES),
        help=f"default: all of {', '.join(m for m in METRICS[:-1] if m not in ON_REQUEST)}; "
        f"--scale: {', '.join(SCALE_METRICS)}. readiness measures ours only; stats (ours "
        "and circus019) only when named",
    )
    parser.add_argument("--repeats", type=positive, help="rounds (quick: 1, full: 3, scale: 1)")
    parser.add_argument(
        "--ns",
        type=numbers,
        help="numbers of processes instead of the mode's: for spawn and the scale curve "
        "(respawn uses 100 and 1,000, the round trip, idle and stop 1,000), or for --scale",
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", type=Path, help="write the raw results here")
    parser.add_argument("--markdown", type=Path, help="write the report here as well")
    args = parser.parse_args(argv)
    mode = args.mode or "quick"
    try:
        only, targets = choose(mode, args.only, args.targets)
    except ValueError as exc:
        parser.error(str(exc))
    limits = raise_soft_limits()
    if mode == "scale":
        try:
            check_pids(max(args.ns or [SCALE_N]))
        except TargetFailed as exc:
            parser.exit(2, f"{parser.prog}: error: {exc}\n")
    ensure_bytecode()

    plan = make_plan(mode, targets, only, args.repeats, args.ns)
    plan.limits = {name: list(pair) for name, pair in limits.items()}
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    started = datetime.datetime.now(datetime.UTC)

    # SIGTERM becomes KeyboardInterrupt so every daemon is shut down on the way out.
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)

    versions: dict[str, str] = {}
    notes: dict[str, str] = {}
    unavailable: dict[str, str] = {}
    for key in plan.targets:
        if key in envs.ANCHORS:
            try:
                envs.ANCHORS[key].ensure()
            except (OSError, RuntimeError) as exc:  # CalledProcessError is a RuntimeError
                unavailable[key] = f"could not build its venv: {exc}"
                continue
        target = TARGETS[key]()
        reason = target.unavailable()
        if reason:
            unavailable[key] = reason
            continue
        versions[key] = target.version()
        notes[key] = target.config_note()

    machine = procfs.machine_info()
    rundir = Path(tempfile.mkdtemp(prefix="cbench-", dir="/tmp"))
    runner = Runner(plan, rundir, seed)
    for key, reason in unavailable.items():
        runner.broken[key] = reason
        runner.sessions.append(
            {
                "target": key,
                "kind": "setup",
                "n": None,
                "round": 0,
                "error": f"unavailable: {reason}",
            }
        )
        runner.log(f"{key}: unavailable: {reason}")
        versions.setdefault(key, "—")
        notes.setdefault(key, "")
    interrupted = False
    try:
        runner.run()
    except KeyboardInterrupt:
        interrupted = True
        runner.log("interrupted: reporting what was measured")
    finally:
        shutil.rmtree(rundir, ignore_errors=True)

    machine["python"] = f"{platform.python_implementation()} {platform.python_version()}"
    machine["load_end"] = procfs.load_average()
    results = {
        "started": started.strftime("%Y-%m-%d %H:%M UTC"),
        "duration": time.monotonic() - runner.t0,
        "seed": seed,
        "interrupted": interrupted,
        "machine": machine,
        "versions": versions,
        "notes": notes,
        "plan": asdict(plan),
        "sessions": runner.sessions,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    if args.markdown:
        write_markdown(args.markdown, results)
    print(report.render(results), end="")
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
