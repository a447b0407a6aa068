"""The floor of the health-check benchmark: a plain loop of connect and close, nothing else.

    python connect_floor.py PORT [--rate 1000] [--slot 0.1]

Every *slot* seconds it opens ``rate × slot`` blocking
TCP connections to 127.0.0.1:PORT one after the other and closes each at once: the bare
cost of ``rate`` checks a second, with the wake-ups of circusd's probe grid (checks due
within 0.1 s share one) and none of its bookkeeping. A failed connection is counted, not
retried. It runs until its standard input ends; the runner reads its CPU time in ``/proc``.
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--rate", type=int, default=1000, help="connections a second")
    parser.add_argument("--slot", type=float, default=0.1, help="seconds between bursts")
    args = parser.parse_args(argv)
    per_slot = max(1, round(args.rate * args.slot))
    address = ("127.0.0.1", args.port)
    failed = 0
    due = time.monotonic()
    while True:
        for _ in range(per_slot):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.connect(address)
            except OSError:
                failed += 1
            finally:
                sock.close()
        # the next burst is due one slot after this one was; a late one is not made up
        # (as circusd's pollers do)
        now = time.monotonic()
        due = max(due + args.slot, now)
        delay = due - now
        if select.select([0], [], [], delay)[0] and not os.read(0, 4096):
            sys.stderr.write(f"{failed} failed connections\n")
            return 0


if __name__ == "__main__":
    sys.exit(main())
