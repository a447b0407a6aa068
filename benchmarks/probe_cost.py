"""What liveness probes cost circusd: N ``tcp:`` pollers, each checking once a second.

A helper process listens on N loopback ports (and accepts and closes whatever connects);
this process runs N :class:`circus.probes.Poller` objects against them, spread over the
interval as circusd would spread them, and measures its own CPU time (user + system,
``getrusage``) over a window after a warm-up. The kernel's work for each connection on
loopback is mostly done in the connecting process, so it is counted here too.

    python -m benchmarks.probe_cost [-n 1000] [--interval 1] [--seconds 10] [--warmup 2]

Not part of ``benchmarks.run``: it measures a component, not a supervisor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import time

from circus.probes import Poller, parse_health

# The listening side, run with this interpreter: N sockets, their ports on stdout (one
# JSON line), then accept-and-close until stdin ends (its parent went away).
HELPER = r"""
import json, os, resource, selectors, socket, sys
n = int(sys.argv[1])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
sel = selectors.DefaultSelector()
ports = []
for _ in range(n):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(128)
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ)
    ports.append(s.getsockname()[1])
sel.register(sys.stdin, selectors.EVENT_READ)
print(json.dumps(ports), flush=True)
while True:
    for key, _ in sel.select():
        if key.fileobj is sys.stdin:
            if not os.read(0, 4096):
                sys.exit(0)
            continue
        while True:
            try:
                conn, _ = key.fileobj.accept()
            except BlockingIOError:
                break
            conn.close()
"""


def cpu_seconds() -> tuple[float, float]:
    """This process's user and system CPU time so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def start_helper(n: int) -> tuple[subprocess.Popen[bytes], list[int]]:
    helper = subprocess.Popen([sys.executable, "-c", HELPER, str(n)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, start_new_session=True)
    assert helper.stdout is not None
    line = helper.stdout.readline()
    if not line:
        stop_helper(helper)
        raise SystemExit("the listening helper did not start")
    return helper, json.loads(line)


def stop_helper(helper: subprocess.Popen[bytes]) -> None:
    """End the helper by its own pid (then its group), never by name."""
    if helper.stdin is not None:
        helper.stdin.close()  # it exits at the end of its stdin
    try:
        helper.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(helper.pid, signal.SIGKILL)
        helper.wait(timeout=5)
    if helper.stdout is not None:
        helper.stdout.close()


async def measure(ports: list[int], interval: float, seconds: float, warmup: float
                  ) -> dict[str, float]:
    results = {"pass": 0, "fail": 0}
    reasons: dict[str, int] = {}

    def on_result(reason: str | None) -> None:
        if reason is None:
            results["pass"] += 1
        else:
            results["fail"] += 1
            reasons[reason] = reasons.get(reason, 0) + 1

    pollers = [Poller(parse_health(f"tcp:127.0.0.1:{port}"), interval=interval, timeout=1.0,
                      on_result=on_result, delay=random.uniform(0, interval))
               for port in ports]
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(p.run(), name=f"probe-{i}") for i, p in enumerate(pollers)]
        await asyncio.sleep(warmup)  # paces the run: every poller has started by now
        results["pass"] = results["fail"] = 0
        cpu0, wall0 = cpu_seconds(), time.monotonic()
        await asyncio.sleep(seconds)  # the measured window
        cpu1, wall1 = cpu_seconds(), time.monotonic()
        checks = results["pass"] + results["fail"]
        for task in tasks:
            task.cancel()
    user, system = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
    cpu, wall = user + system, wall1 - wall0
    if reasons:
        print("failures:", ", ".join(f"{r} ×{c}" for r, c in sorted(reasons.items())))
    return {"cpu_s": cpu, "user_s": user, "system_s": system, "wall_s": wall,
            "checks": checks, "fails": results["fail"], "core_pct": 100 * cpu / wall,
            "us_per_check": 1e6 * cpu / max(checks, 1)}


def floor(ports: list[int], rounds: int = 3) -> float:
    """CPU seconds of one bare connection (socket, connect, close) to these ports, in a
    plain loop: what the kernel asks of any connecting check, without asyncio."""
    start = cpu_seconds()
    for _ in range(rounds):
        for port in ports:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.connect(("127.0.0.1", port))
    end = cpu_seconds()
    return (end[0] - start[0] + end[1] - start[1]) / (rounds * len(ports))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000, help="processes probed (1000)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between checks")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before it")
    args = parser.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    helper, ports = start_helper(args.n)
    try:
        figures = asyncio.run(measure(ports, args.interval, args.seconds, args.warmup))
        bare = floor(ports)
    finally:
        stop_helper(helper)
    print(f"{args.n} tcp pollers, one check every {args.interval:g}s each, "
          f"{figures['wall_s']:.1f}s measured: {figures['checks']:.0f} checks "
          f"({figures['fails']:.0f} failed), CPU {figures['cpu_s']:.3f}s "
          f"(user {figures['user_s']:.3f}s, system {figures['system_s']:.3f}s) = "
          f"{figures['core_pct']:.2f}% of a core, {figures['us_per_check']:.1f} µs per check")
    rate = args.n / args.interval
    print(f"floor: a bare connect and close in a plain loop costs {bare * 1e6:.1f} µs of CPU "
          f"here, {100 * bare * rate:.2f}% of a core at {rate:.0f} connections a second")
    return 0


if __name__ == "__main__":
    sys.exit(main())
