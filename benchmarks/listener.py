"""The other end of the health-check benchmark: one loopback port that accepts and closes.

    python listener.py [--backlog 4096]

Listens on 127.0.0.1 on a port the kernel picks, prints the port on the first line of its
standard output, then accepts every connection and closes it at once. Each line read on
standard input is answered with one line: the number of connections accepted so far (how
the runner checks that the checks really ran). End of standard input ends it.
"""

from __future__ import annotations

import argparse
import os
import selectors
import socket
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlog", type=int, default=4096,
                        help="listen backlog (the kernel caps it at net.core.somaxconn)")
    args = parser.parse_args(argv)
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(args.backlog)
    server.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(server, selectors.EVENT_READ)
    selector.register(0, selectors.EVENT_READ)
    sys.stdout.write(f"{server.getsockname()[1]}\n")
    sys.stdout.flush()
    accepted = 0
    while True:
        for key, _ in selector.select():
            if key.fileobj == 0:
                data = os.read(0, 4096)
                if not data:
                    return 0
                for _ in range(data.count(b"\n")):
                    sys.stdout.write(f"{accepted}\n")
                sys.stdout.flush()
                continue
            while True:
                try:
                    conn, _ = server.accept()
                except BlockingIOError:
                    break
                conn.close()
                accepted += 1


if __name__ == "__main__":
    sys.exit(main())
