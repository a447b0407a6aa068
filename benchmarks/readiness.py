"""The readiness measurements (ours only: Circus 0.19 and supervisord have no such checks).

* :func:`measure_ready`: from a worker's ``READY=1`` datagram to circusd's ``ready`` event.
  Workers (``notify_worker.py``) under ``ready = notify`` wait for SIGUSR1; each, when
  signalled, reads CLOCK_MONOTONIC just before its ``sendto`` and writes it to a file; the
  runner, subscribed to ``watcher.<name>.ready``, reads the same clock when the event
  arrives. One worker at a time; each batch is then killed and replaced by circusd.
* :func:`measure_health_cpu`: circusd's own CPU time with N processes, each checked by
  ``health = tcp:`` against one :class:`Listener` of the runner's (or with no check).
* :func:`measure_connect_floor`: the CPU time of ``connect_floor.py``, a plain loop making
  the same connections at the same rate: the bare cost of the checks.
"""

from __future__ import annotations

import contextlib
import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from benchmarks import measure, procfs
from benchmarks.clients import EventSubscriber
from benchmarks.targets import NOTIFIER, Target, TargetFailed, ZmqTarget

HERE = Path(__file__).resolve().parent
WORKER = HERE / "notify_worker.py"
LISTENER = HERE / "listener.py"
CONNECT_FLOOR = HERE / "connect_floor.py"
# The runner signals one worker at a time, GAP_MIN to GAP_MAX seconds after the previous
# event (uniformly: the samples fall at every phase of circusd's own timers).
GAP_MIN = 0.02
GAP_MAX = 0.1
# A worker is killed once it has run this long: circusd counts a younger death as a failed
# start (min_uptime, 1 s) and would back off before replacing it.
MIN_AGE = 1.0
POLL = 0.005  # s between looks at the stamps directory while waiting
#: The CPU windows of a round, taken in turns: circusd with health = tcp:, without it, and
#: the bare connections.
CPU_KINDS = ("health", "nohealth", "connfloor")


def worker_argv(stamps: Path) -> list[str]:
    """The command line of a notify worker writing into *stamps* (``-I -S``: it needs
    nothing but the standard library, and starts faster without ``site``)."""
    return [sys.executable, "-I", "-S", str(WORKER), str(stamps)]


def armed_pids(stamps: Path) -> set[int]:
    """The pids that have said they wait for the signal (``armed-PID`` files)."""
    found = set()
    for name in os.listdir(stamps):
        prefix, _, pid = name.partition("-")
        if prefix == "armed" and pid.isdigit():
            found.add(int(pid))
    return found


def read_stamp(stamps: Path, pid: int, timeout: float) -> float:
    """The CLOCK_MONOTONIC time worker *pid* read just before sending ``READY=1``."""
    path = stamps / f"stamp-{pid}"
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(FileNotFoundError):
            return float(path.read_text())
        if time.monotonic() > deadline:
            raise TargetFailed(f"ready: worker {pid} wrote no stamp within {timeout:.0f}s")
        time.sleep(POLL)


def wait_armed(target: Target, stamps: Path, count: int, timeout: float) -> list[int]:
    """Wait until *count* children of the daemon run the worker and are waiting; their
    pids, in pid order."""
    assert target.tracker is not None
    deadline = time.monotonic() + timeout
    while True:
        running = target.tracker.poll()
        ready = sorted(armed_pids(stamps) & running)
        if len(ready) >= count:
            return ready[:count]
        target.check_alive()
        if time.monotonic() > deadline:
            raise TargetFailed(
                f"ready: {len(ready)} of {count} workers waiting after {timeout:.0f}s; "
                f"daemon log: {target.log_errors()}"
            )
        time.sleep(POLL)


def measure_ready(
    target: ZmqTarget, stamps: Path, samples: int, batch: int, rng: random.Random,
    timeout: float,
) -> list[float]:
    """Seconds from each worker's ``sendto`` of ``READY=1`` to the ``ready`` event's arrival.

    The daemon runs *batch* workers. Each is signalled in turn (GAP_MIN to GAP_MAX s after
    the previous event), and the runner waits for its event before the next; then every
    worker of the batch is killed (once it has run MIN_AGE) and the daemon's replacements
    are the next batch, until *samples* events have been timed.
    """
    assert target.workdir is not None and target.client is not None
    assert target.tracker is not None
    events = EventSubscriber(f"ipc://{target.workdir}/pub", [f"watcher.{NOTIFIER}.ready"])
    try:
        events.sync(target.client, NOTIFIER, timeout)
        latencies: list[float] = []
        while len(latencies) < samples:
            workers = wait_armed(target, stamps, batch, timeout)
            rng.shuffle(workers)
            for pid in workers[: samples - len(latencies)]:
                time.sleep(rng.uniform(GAP_MIN, GAP_MAX))
                os.kill(pid, signal.SIGUSR1)
                got = events.receive(timeout)
                if got is None:
                    target.check_alive()
                    raise TargetFailed(f"ready: no ready event for worker {pid} in {timeout:.0f}s")
                arrived, topic, payload = got
                if payload.get("process_pid") != pid:
                    raise TargetFailed(f"ready: {topic} {payload} while waiting for pid {pid}")
                latencies.append(arrived - read_stamp(stamps, pid, timeout))
            if len(latencies) < samples:
                replace_batch(target, stamps, workers, timeout)
        return latencies
    finally:
        events.close()


def replace_batch(target: Target, stamps: Path, workers: list[int], timeout: float) -> None:
    """Kill every worker of a batch (each once it has run MIN_AGE), forgetting its files."""
    assert target.tracker is not None
    deadline = time.monotonic() + timeout
    while len(procfs.old_enough(workers, MIN_AGE)) < len(workers):
        if time.monotonic() > deadline:
            raise TargetFailed("ready: workers of the batch gone before they were killed")
        time.sleep(0.05)
    for pid in workers:
        # files first: a recycled pid must not look armed
        for name in (f"armed-{pid}", f"stamp-{pid}"):
            with contextlib.suppress(FileNotFoundError):
                (stamps / name).unlink()
        target.tracker.forget(pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class Listener:
    """``listener.py`` in its own session: one loopback port that accepts and closes."""

    def __init__(self, timeout: float = 10.0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(LISTENER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        self.timeout = timeout
        try:
            self.port = int(self._line())
        except BaseException:
            self.stop()
            raise

    def _line(self) -> str:
        stdout = self.proc.stdout
        assert stdout is not None
        if not select.select([stdout], [], [], self.timeout)[0]:
            raise TargetFailed(f"the listener did not answer within {self.timeout:.0f}s")
        line = stdout.readline()
        if not line:
            raise TargetFailed(f"the listener exited with status {self.proc.wait()}")
        return line.decode().strip()

    def accepted(self) -> int:
        """How many connections it has accepted so far."""
        stdin = self.proc.stdin
        assert stdin is not None
        stdin.write(b"\n")
        stdin.flush()
        return int(self._line())

    def stop(self) -> None:
        """End it by its pid (end of its stdin, then SIGKILL to its group)."""
        _end(self.proc)


def _end(proc: subprocess.Popen[bytes]) -> None:
    streams: list[IO[bytes] | None] = [proc.stdin, proc.stdout]
    with contextlib.suppress(OSError):
        if proc.stdin is not None:
            proc.stdin.close()  # it exits at the end of its stdin
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
    for stream in streams:
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def cpu_window(
    pid: int, listener: Listener, seconds: float, settle: float, alive: Any = None
) -> dict[str, float]:
    """*pid*'s CPU time and the connections *listener* accepted over *seconds*, after
    *settle* seconds; *alive* (if given) is called before and after to check the process."""
    time.sleep(settle)
    if alive is not None:
        alive()
    cpu0, accepted0, t0 = procfs.cpu_seconds(pid), listener.accepted(), time.monotonic()
    time.sleep(seconds)
    cpu1, accepted1, t1 = procfs.cpu_seconds(pid), listener.accepted(), time.monotonic()
    if alive is not None:
        alive()
    return window_figures(cpu1 - cpu0, accepted1 - accepted0, t1 - t0)


def window_figures(cpu: float, accepted: int, seconds: float) -> dict[str, float]:
    """The figures of one measured window: CPU seconds, as % of a core, connections a
    second, and the clock tick (the CPU time's resolution)."""
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "cpu_percent": 100.0 * cpu / seconds,
        "tick": 1.0 / procfs.CLOCK_TICKS,
        "accepted": float(accepted),
        "per_second": accepted / seconds,
    }


def measure_health_cpu(
    target: Target, n: int, listener: Listener, seconds: float, settle: float
) -> dict[str, float]:
    """The daemon's CPU time over *seconds* with its *n* children running, *settle* seconds
    after they all run, and the connections the listener saw meanwhile; ``replaced``: how
    many of the children running at the start were gone at the end (a failing check
    restarts its process)."""
    assert target.tracker is not None
    before = measure.wait_running(target, n, timeout=60.0)
    figures = cpu_window(target.pid, listener, seconds, settle, target.check_alive)
    figures["replaced"] = float(len(before - target.tracker.poll()))
    return figures


def measure_connect_floor(
    listener: Listener, rate: int, seconds: float, settle: float
) -> dict[str, float]:
    """``connect_floor.py``'s CPU time over *seconds*, making *rate* connections a second
    to *listener*, after *settle* seconds."""
    proc = subprocess.Popen(
        [sys.executable, str(CONNECT_FLOOR), str(listener.port), "--rate", str(rate)],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )

    def alive() -> None:
        if proc.poll() is not None:
            raise TargetFailed(f"connect_floor.py exited with status {proc.returncode}")

    try:
        figures = cpu_window(proc.pid, listener, seconds, settle, alive)
    finally:
        _end(proc)
        assert proc.stderr is not None
        said = proc.stderr.read().decode(errors="replace").strip()
        proc.stderr.close()
    count = said.split(" ", 1)[0]
    if not said.endswith(" failed connections") or not count.isdigit():
        raise TargetFailed(f"connect_floor.py: {said or 'no count of failed connections'}")
    figures["failed"] = float(count)  # over its whole run, settle time included
    return figures
