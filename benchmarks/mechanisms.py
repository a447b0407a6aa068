"""What each way of watching children costs: descriptors, death-detection latency, output.

circusd spends descriptors per process on two things: seeing a death (a pidfd each) and
capturing output (a pipe each for stdout and stderr). Under an ordinary descriptor limit
(1,024) that caps it at about 330 processes. This script measures the alternatives in one
asyncio process, on the same machine and run, so the choice can be made by the figures:

death detection
    ``pidfd``   one pidfd per child registered with the loop; ``waitpid(pid)`` when readable
    ``sigchld`` no descriptor per child: SIGCHLD through the loop's signal handler, then
                ``waitid(P_ALL, WEXITED | WNOHANG)`` until nothing is left to collect
output
    ``pipes``   two pipes per child (stdout, stderr): each chunk knows its process and stream
    ``shared``  one pipe for a whole group: children write whole lines (at most PIPE_BUF
                bytes each, so a line is never torn), the process of a line is not known

    python -m benchmarks.mechanisms [-n 1000] [--kills 50] [--lines 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import statistics
import sys
import time
from collections.abc import Callable

SLEEP = ["sleep", "86399"]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def spawn(argv: list[str], stdout: int | None = None, stderr: int | None = None) -> int:
    actions: list[tuple[int | str, ...]] = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)
    ]
    for fd, target in ((1, stdout), (2, stderr)):
        if target is not None:
            actions.append((os.POSIX_SPAWN_DUP2, target, fd))
    path = argv[0] if os.sep in argv[0] else _which(argv[0])
    return os.posix_spawn(path, argv, {}, file_actions=actions, setsid=True)


def _which(name: str) -> str:
    for directory in os.get_exec_path():
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError(name)


async def deaths(mechanism: str, n: int, kills: int) -> dict[str, float]:
    """Latency from kill -9 of a random child to the moment its status is collected."""
    loop = asyncio.get_running_loop()
    base = open_fds()
    collected: dict[int, asyncio.Future[int]] = {}
    pids: list[int] = []
    pidfds: dict[int, int] = {}

    def reaped(pid: int, status: int) -> None:
        fut = collected.pop(pid, None)
        if fut is not None and not fut.done():
            fut.set_result(status)

    def on_pidfd(pid: int) -> None:
        fd = pidfds.pop(pid)
        loop.remove_reader(fd)
        os.close(fd)
        reaped(pid, os.waitpid(pid, 0)[1])

    def on_sigchld() -> None:
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG)
            except ChildProcessError:
                return
            if info is None:
                return
            reaped(info.si_pid, info.si_status)

    if mechanism == "sigchld":
        loop.add_signal_handler(signal.SIGCHLD, on_sigchld)
    for _ in range(n):
        pid = spawn(SLEEP)
        pids.append(pid)
        collected[pid] = loop.create_future()
        if mechanism == "pidfd":
            fd = os.pidfd_open(pid)
            pidfds[pid] = fd
            loop.add_reader(fd, on_pidfd, pid)
    per_child = (open_fds() - base) / n
    latencies: list[float] = []
    for victim in random.sample(pids, kills):
        started = time.perf_counter()
        os.kill(victim, signal.SIGKILL)
        await asyncio.wait_for(collected[victim], 5)
        latencies.append(time.perf_counter() - started)
        pids.remove(victim)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    await asyncio.wait_for(asyncio.gather(*collected.values()), 30)
    if mechanism == "sigchld":
        loop.remove_signal_handler(signal.SIGCHLD)
    latencies.sort()
    return {"fds_per_child": per_child, "median_ms": statistics.median(latencies) * 1e3,
            "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1e3,
            "max_ms": latencies[-1] * 1e3}


WRITER = ("import sys\nline = ('x' * 70 + '\\n')\nfor _ in range({count}):\n"
          "    sys.stdout.write(line)\nsys.stdout.flush()\n")


async def output(mechanism: str, children: int, lines: int) -> dict[str, float]:
    """Throughput of *children* writers of *lines* lines in all, read by the loop."""
    loop = asyncio.get_running_loop()
    base = open_fds()
    code = WRITER.format(count=lines // children)
    argv = [sys.executable, "-c", code]
    total = 0
    done = loop.create_future()
    open_ends: set[int] = set()

    def reader(fd: int) -> Callable[[], None]:
        def read() -> None:
            nonlocal total
            data = os.read(fd, 65536)
            if data:
                total += len(data)
                return
            loop.remove_reader(fd)
            os.close(fd)
            open_ends.discard(fd)
            if not open_ends and not done.done():
                done.set_result(None)
        return read

    started = time.perf_counter()
    pids = []
    if mechanism == "pipes":
        for _ in range(children):
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            pids.append(spawn(argv, out_w, err_w))
            os.close(out_w)
            os.close(err_w)
            for fd in (out_r, err_r):
                os.set_blocking(fd, False)
                open_ends.add(fd)
                loop.add_reader(fd, reader(fd))
        per_child = (open_fds() - base) / children
    else:
        shared_r, shared_w = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(shared_r, False)
        for _ in range(children):
            pids.append(spawn(argv, shared_w, shared_w))
        per_child = (open_fds() - base) / children
        os.close(shared_w)
        open_ends.add(shared_r)
        loop.add_reader(shared_r, reader(shared_r))
    await asyncio.wait_for(done, 120)
    elapsed = time.perf_counter() - started
    for pid in pids:  # they closed their output: each is exiting
        await asyncio.to_thread(os.waitpid, pid, 0)
    return {"fds_per_child": per_child, "MB_per_s": total / elapsed / 1e6}


async def main(args: argparse.Namespace) -> None:
    print(f"# death detection: N={args.n} children, {args.kills} kill -9 samples each")
    print("| mechanism | fds per child | median | p99 | max |\n|---|---|---|---|---|")
    for round_ in range(args.rounds):
        for mechanism in ("pidfd", "sigchld"):
            r = await deaths(mechanism, args.n, args.kills)
            print(f"| {mechanism} (round {round_ + 1}) | {r['fds_per_child']:.2f} | "
                  f"{r['median_ms']:.2f} ms | {r['p99_ms']:.2f} ms | {r['max_ms']:.2f} ms |")
    print(f"\n# output: {args.writers} writers, {args.lines} lines of 71 bytes in all")
    print("| mechanism | fds per child | throughput |\n|---|---|---|")
    for round_ in range(args.rounds):
        for mechanism in ("pipes", "shared"):
            r = await output(mechanism, args.writers, args.lines)
            print(f"| {mechanism} (round {round_ + 1}) | {r['fds_per_child']:.2f} | "
                  f"{r['MB_per_s']:.0f} MB/s |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=1000)
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--writers", type=int, default=20)
    parser.add_argument("--lines", type=int, default=400_000)
    parser.add_argument("--rounds", type=int, default=2)
    asyncio.run(main(parser.parse_args()))
