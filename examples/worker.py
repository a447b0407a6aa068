"""A small worker for the example config: it says hello, then ticks until told to stop."""

import os
import signal
import sys
import time

wid = sys.argv[1] if len(sys.argv) > 1 else "?"
running = True


def stop(signum: int, frame: object) -> None:
    global running
    running = False


signal.signal(signal.SIGTERM, stop)
print(f"worker {wid} (pid {os.getpid()}) started", flush=True)
ticks = 0
while running:
    time.sleep(1)
    ticks += 1
    if ticks % 10 == 0:
        print(f"worker {wid} (pid {os.getpid()}) alive for {ticks}s", flush=True)
print(f"worker {wid} (pid {os.getpid()}) stopping", flush=True)
