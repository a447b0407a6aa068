"""The worker of the readiness benchmark: it sends ``READY=1`` when told to, and says when.

    python notify_worker.py DIR

Run by circusd under ``ready = notify``. It blocks SIGUSR1, creates ``DIR/armed-PID`` to say
it is waiting, and waits for that signal. Then it reads CLOCK_MONOTONIC, sends ``READY=1``
to ``$NOTIFY_SOCKET`` at once, and writes the time it read to ``DIR/stamp-PID`` (under a
temporary name first, so the file appears whole). Then it sleeps until it is killed.

Only the standard library speaks the protocol here (the ``socket`` module), as any
``sd_notify`` client would: one datagram to an abstract (``@name``) or filesystem address.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time


def main() -> None:
    where = sys.argv[1]
    pid = os.getpid()
    address = os.environ["NOTIFY_SOCKET"]
    target = "\0" + address[1:] if address.startswith("@") else address
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    # Blocked before it says it waits: a signal sent from then on is held, never lost, and
    # never ends the process (SIGUSR1's default action).
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    with open(f"{where}/armed-{pid}", "w"):
        pass
    signal.sigwait({signal.SIGUSR1})
    sent = time.clock_gettime(time.CLOCK_MONOTONIC)
    sock.sendto(b"READY=1", target)
    with open(f"{where}/.stamp-{pid}", "w") as fh:
        fh.write(repr(sent))
    os.rename(f"{where}/.stamp-{pid}", f"{where}/stamp-{pid}")
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
