"""The floor: about the least work any Python process supervisor can do.

Runs as a standalone script (``python floor.py -n 1000 -- sleep 86399``). It starts N copies
of a command with ``os.posix_spawn`` (own session, stdin from ``/dev/null``, as circus does),
opens a pidfd per child and waits for all of them in one epoll loop; a readable pidfd means the
child died: it is reaped with ``waitpid(pid, 0)`` and, unless told otherwise, replaced at once.

It optionally answers a tiny subset of the circus control protocol on a ZeroMQ ROUTER socket
(``status``, ``list``, ``stop``, ``quit``), so the control round trip and the stop time have a
floor too. SIGTERM or SIGINT stops every child (SIGTERM, reaped through the pidfds) and exits.

With ``--stdout FILE`` each child's standard output is the file itself (opened for append by
the spawn file actions), which is the floor for the output throughput benchmark: no copy
through the supervisor at all.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import selectors
import shutil
import signal
import sys
import time
from typing import Any

WATCHER = "sleepers"
STOP_DEADLINE = 30.0


class Floor:
    """N children, one pidfd each, one epoll loop; nothing else."""

    def __init__(
        self,
        argv: list[str],
        numprocesses: int,
        *,
        respawn: bool,
        stdout_path: str | None,
        endpoint: str | None,
    ) -> None:
        exe = shutil.which(argv[0])
        if exe is None:
            raise SystemExit(f"floor: command not found: {argv[0]}")
        self.exe = exe
        self.argv = argv
        self.numprocesses = numprocesses
        self.respawn = respawn
        self.env = dict(os.environ)
        self.file_actions: list[tuple[Any, ...]] = [
            (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0)
        ]
        if stdout_path is not None:
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
            self.file_actions.append((os.POSIX_SPAWN_OPEN, 1, stdout_path, flags, 0o644))
        self.selector = selectors.EpollSelector()
        self.children: dict[int, int] = {}  # pid -> pidfd
        self.active = True  # False once stopped: the dead are no longer replaced
        self.quitting = False
        self.stop_deadline = 0.0

        # Signals only write a byte to a pipe the loop watches (the handler does nothing else).
        self.wakeup_r, wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wakeup_w)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: None)
        self.selector.register(self.wakeup_r, selectors.EVENT_READ, "signal")

        self.socket: Any = None
        if endpoint is not None:
            import zmq  # only the control-channel variant needs pyzmq

            self.zmq = zmq
            self.context = zmq.Context()
            self.socket = self.context.socket(zmq.ROUTER)
            self.socket.linger = 0
            self.socket.bind(endpoint)
            self.selector.register(self.socket.getsockopt(zmq.FD), selectors.EVENT_READ, "zmq")

    # -- children ---------------------------------------------------------------------------
    def spawn(self) -> None:
        pid = os.posix_spawn(
            self.exe, self.argv, self.env, file_actions=self.file_actions, setsid=True
        )
        pidfd = os.pidfd_open(pid)
        self.children[pid] = pidfd
        self.selector.register(pidfd, selectors.EVENT_READ, pid)

    def reap(self, pid: int) -> None:
        pidfd = self.children.pop(pid)
        self.selector.unregister(pidfd)
        os.close(pidfd)
        os.waitpid(pid, 0)
        if self.active and self.respawn:
            self.spawn()

    def stop_children(self) -> None:
        """Stop replacing children and SIGTERM every one of them; the loop reaps them."""
        self.active = False
        self.stop_deadline = time.monotonic() + STOP_DEADLINE
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    # -- control channel --------------------------------------------------------------------
    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        command = str(request.get("command", "")).lower()
        props = request.get("properties") or {}
        reply: dict[str, Any] = {"status": "ok", "time": time.time(), "id": request.get("id")}
        if command == "status":
            state = "active" if self.active else "stopped"
            if "name" in props:
                reply["status"] = state
            else:
                reply["statuses"] = {WATCHER: state}
        elif command == "list":
            if "name" in props:
                reply["pids"] = sorted(self.children)
            else:
                reply["watchers"] = [WATCHER]
        elif command == "stop":
            self.stop_children()
        elif command == "quit":
            self.quitting = True
            self.stop_children()
        else:
            reply.update(status="error", reason=f"unknown command: {command!r}", errno=2)
        return reply

    def serve_control(self) -> None:
        """Answer every queued request (the ZeroMQ fd is edge-triggered: drain it)."""
        zmq = self.zmq
        while self.socket.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            frames = self.socket.recv_multipart(zmq.NOBLOCK)
            if len(frames) != 2:
                continue
            try:
                request = json.loads(frames[1])
                reply = self.answer(request if isinstance(request, dict) else {})
            except ValueError:
                reply = {"status": "error", "reason": "json invalid", "errno": 1, "id": None}
            self.socket.send_multipart([frames[0], json.dumps(reply).encode()])

    # -- loop -------------------------------------------------------------------------------
    def run(self) -> int:
        for _ in range(self.numprocesses):
            self.spawn()
        while not (self.quitting and not self.children):
            timeout = None
            if not self.active and self.children:
                timeout = max(0.0, self.stop_deadline - time.monotonic())
                if timeout == 0.0:  # a child ignored SIGTERM: no more patience
                    for pid in self.children:
                        os.killpg(pid, signal.SIGKILL)
                    self.stop_deadline = float("inf")
                    timeout = None
            for key, _ in self.selector.select(timeout):
                if key.data == "signal":
                    while True:
                        try:
                            if not os.read(self.wakeup_r, 512):
                                break
                        except BlockingIOError:
                            break
                    self.quitting = True
                    self.stop_children()
                elif key.data != "zmq":
                    self.reap(key.data)
            if self.socket is not None:
                self.serve_control()
        if self.socket is not None:
            self.socket.close()
            self.context.term()
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--numprocesses", type=int, default=1)
    parser.add_argument("--no-respawn", action="store_true", help="do not replace the dead")
    parser.add_argument("--stdout", help="file the children's standard output is appended to")
    parser.add_argument("--endpoint", help="ZeroMQ endpoint of the control socket")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- program [args...]")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("a command is required")
    floor = Floor(
        command,
        args.numprocesses,
        respawn=not args.no_respawn,
        stdout_path=args.stdout,
        endpoint=args.endpoint,
    )
    return floor.run()


if __name__ == "__main__":
    sys.exit(main())
