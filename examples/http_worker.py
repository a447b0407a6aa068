"""An HTTP worker that serves from a listening socket circusd shares (stdlib only).

circusd binds the socket of ``[socket:web]`` once and starts several copies of this
worker; each inherits the socket and is told its descriptor number on the command line::

    cmd = python3 examples/http_worker.py --fd $(circus.sockets.web) --wid $(circus.wid)

Every worker accepts on the same socket, so the kernel hands each connection to one of
them. On SIGTERM a worker finishes the request it is serving and exits without touching
the listening socket: connections that arrive meanwhile wait in the kernel's queue for
the other workers. That is what lets ``circusctl reload web`` replace every worker (new
ones first) without refusing a single connection.

``GET /`` answers ``hello from pid <pid> (wid <wid>)``; ``GET /slow?ms=N`` waits N
milliseconds first, which makes a reload catch requests in flight.
"""

from __future__ import annotations

import argparse
import os
import selectors
import signal
import socket
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler

stopping = False


def _stop(signum: int, frame: object) -> None:
    global stopping
    stopping = True


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection: a worker can stop at once
    wid = "?"

    def do_GET(self) -> None:  # noqa: N802 - the name http.server looks for
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/slow":
            query = urllib.parse.parse_qs(url.query)
            time.sleep(min(int(query.get("ms", ["100"])[0]), 10_000) / 1000)
        elif url.path != "/":
            self.send_error(404)
            return
        body = f"hello from pid {os.getpid()} (wid {self.wid})\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # one line per request would drown circusd's log


def serve(listener: socket.socket) -> None:
    """Accept and answer one connection at a time until SIGTERM."""
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    while not stopping:
        # a short timeout so a SIGTERM is noticed promptly between two requests
        if not selector.select(timeout=0.2):
            continue
        try:
            conn, address = listener.accept()
        except (BlockingIOError, InterruptedError):
            continue  # another worker took this connection
        conn.setblocking(True)
        conn.settimeout(10)
        try:
            Handler(conn, address, None)  # type: ignore[arg-type]  # serves one request
        except OSError:
            pass  # the client went away
        finally:
            conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fd", type=int, required=True,
                        help="descriptor of the listening socket: $(circus.sockets.NAME)")
    parser.add_argument("--wid", default="?", help="the worker id: $(circus.wid)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _stop)
    Handler.wid = args.wid
    # socket(fileno=) adopts the inherited descriptor and reads its family and type
    listener = socket.socket(fileno=args.fd)
    listener.setblocking(False)
    print(f"worker {args.wid} (pid {os.getpid()}) serving on {listener.getsockname()}",
          flush=True)
    try:
        serve(listener)
    finally:
        listener.detach()  # the socket is circusd's: leave its descriptor alone
    print(f"worker {args.wid} (pid {os.getpid()}) stopped", flush=True)


if __name__ == "__main__":
    main()
