"""The spawn server: the small process that makes circusd's workers.

circusd holds a descriptor or two per process it runs (the read ends of their output
pipes), so with thousands of processes its descriptor table is thousands long. Every
``posix_spawn`` copies the caller's table into the child and closes it again at
``exec`` (each entry is close-on-exec), so a spawn from circusd costs time that grows
with the number of processes already running: about 2 ms more per spawn at 20,000
descriptors than at 20 on a 2-core machine, which turns starting 10,000 processes into
a quadratic job. This process keeps a table of a few entries, so a spawn made here costs
the same at any scale, and it runs on another core while circusd's loop goes on.

How a worker is made (see :mod:`circus.spawnserver` for circusd's side)
-----------------------------------------------------------------------
circusd sends one message per process on a ``SOCK_SEQPACKET`` socket pair: the program,
argv, environment and file actions, with the descriptors they refer to (the write ends
of the output pipes, shared sockets, ...) attached as ``SCM_RIGHTS``. This process
reads every request that is queued, then forks a short-lived *batch* process (up to
:data:`MAX_RUNNING` at once, so that a batch's workers are made while the previous
batch's are still starting) that:

1. moves the received descriptors above every descriptor number the actions target;
2. gives itself back the soft ``RLIMIT_NOFILE`` circusd was started with (the workers
   inherit it, so programs that use ``select()`` keep working);
3. makes each worker with ``posix_spawn`` (a new session, SIGPIPE and SIGXFSZ back to
   their default, an empty signal mask) and answers each request with the pid or the
   error;
4. exits. Its workers, alive or already dead, are handed by the kernel to circusd,
   which is a child subreaper (see :mod:`circus.reaper`): circusd is the parent that
   collects their exit statuses, exactly as if it had made them itself. This process
   then sends a message naming the batch's requests, so that a request a failed batch
   left unanswered fails in circusd instead of waiting for ever.

This process never collects a worker's status; it waits only for its batch processes.
It ends when circusd closes its end of the socket pair (or dies). It shares circusd's
session and process group, so it ignores the terminal's signals (a Ctrl-C in front of
``circusd`` is circusd's to handle); its handlers are Python functions, which ``exec``
resets, so no worker inherits an ignored signal.

Run as ``python -m circus.spawnd FD SOFT`` (FD: its end of the socket pair; SOFT: the
soft ``RLIMIT_NOFILE`` to give workers, 0 for none). It imports nothing from circus but
this module, so it starts in a few milliseconds and stays small.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import os
import pickle
import resource
import select
import signal
import socket
import sys
from typing import Any

# What one message may carry: the request (the environment is most of it) and its
# descriptors. A request that does not fit is made by circusd itself.
MAX_MESSAGE = 1 << 20
MAX_FDS = 250  # the kernel takes at most 253 descriptors per message
MAX_BATCH = 64  # requests one batch process makes
MAX_RUNNING = 2  # batch processes at once
DONE = -1  # the request id of the message that ends a batch
RESET_SIGNALS = tuple(getattr(signal, name) for name in ("SIGPIPE", "SIGXFSZ")
                      if hasattr(signal, name))

# file actions as they travel: ("dup", index of a passed descriptor, target),
# ("open", target, path, flags, mode), ("close", target)
Request = tuple[int, str, list[str], dict[str, str], list[tuple[Any, ...]]]


def _ignore(signum: int, frame: object) -> None:
    return None


def receive(sock: socket.socket, *, block: bool) -> tuple[Request, list[int]] | None:
    """One request and its descriptors; None when nothing is queued (or at the end)."""
    # (socket.recv_fds would ignore the flags)
    try:
        data, ancillary, flags, _ = sock.recvmsg(
            MAX_MESSAGE, socket.CMSG_SPACE(MAX_FDS * 4),
            socket.MSG_CMSG_CLOEXEC | (0 if block else socket.MSG_DONTWAIT))
    except BlockingIOError:
        return None
    fds: list[int] = []
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % 4
            fds.extend(array.array("i", payload[:usable]))
    if not data:
        for fd in fds:
            os.close(fd)
        raise EOFError
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        for fd in fds:
            os.close(fd)
        return None  # cannot happen: circusd sends nothing larger
    request: Request = pickle.loads(data)
    return request, fds


def _file_actions(actions: list[tuple[Any, ...]], fds: list[int]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for action in actions:
        if action[0] == "dup":
            out.append((os.POSIX_SPAWN_DUP2, fds[action[1]], action[2]))
        elif action[0] == "open":
            out.append((os.POSIX_SPAWN_OPEN, *action[1:]))
        else:
            out.append((os.POSIX_SPAWN_CLOSE, action[1]))
    return out


def _lift(fds: list[int], actions: list[tuple[Any, ...]]) -> list[int]:
    """The received descriptors moved above every target of the actions, so that no
    action overwrites a descriptor a later action reads."""
    floor = max([2] + [a[2] for a in actions if a[0] == "dup"]
                + [a[1] for a in actions if a[0] != "dup"]) + 1
    lifted = []
    for fd in fds:
        if fd >= floor:
            lifted.append(fd)
            continue
        lifted.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, floor))
        os.close(fd)
    return lifted


def make(request: Request, fds: list[int]) -> tuple[int, int, int, str]:
    """Make one worker: ``(request id, pid, 0, "")`` or ``(request id, 0, errno, text)``."""
    rid, program, argv, env, actions = request
    try:
        fds = _lift(fds, actions)
        pid = os.posix_spawn(program, argv, env, file_actions=_file_actions(actions, fds),
                             setsid=True, setsigdef=RESET_SIGNALS, setsigmask=())
    except OSError as exc:
        return rid, 0, exc.errno or 0, exc.strerror or str(exc)
    except (ValueError, TypeError) as exc:
        return rid, 0, 0, str(exc)
    finally:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
    return rid, pid, 0, ""


def run_batch(sock: socket.socket, batch: list[tuple[Request, list[int]]], soft: int) -> None:
    """In the batch process: make every worker of *batch*, answer each request."""
    if soft > 0:
        with contextlib.suppress(OSError, ValueError):
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    for request, fds in batch:
        sock.send(pickle.dumps(make(request, fds)))


def serve(sock: socket.socket, soft: int) -> None:
    # SIGCHLD (a batch process ended) wakes the select() through this pipe
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, _ignore)
    running: dict[int, list[int]] = {}  # batch process -> the request ids it makes
    while True:
        _reap(sock, running, block=len(running) >= MAX_RUNNING)
        if len(running) >= MAX_RUNNING:
            continue
        readable, _, _ = select.select([sock.fileno(), wake_r], [], [])
        if wake_r in readable:
            with contextlib.suppress(BlockingIOError):
                while os.read(wake_r, 512):
                    pass
        if sock.fileno() not in readable:
            continue
        batch: list[tuple[Request, list[int]]] = []
        while len(batch) < MAX_BATCH:
            more = receive(sock, block=False)
            if more is None:
                break
            batch.append(more)
        if not batch:
            continue
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                signal.set_wakeup_fd(-1)
                run_batch(sock, batch, soft)
            except BaseException:  # noqa: BLE001 - the batch process must exit, whatever
                code = 1
            os._exit(code)
        for _, fds in batch:
            for fd in fds:
                os.close(fd)
        running[pid] = [request[0] for request, _ in batch]


def _reap(sock: socket.socket, running: dict[int, list[int]], *, block: bool) -> None:
    """Collect the batch processes that ended; after their own replies, a message naming
    their requests (whatever a failed batch left unanswered then fails in circusd)."""
    while running:
        pid, _ = os.waitpid(-1, 0 if block else os.WNOHANG)
        if pid == 0:
            return
        rids = running.pop(pid, None)
        if rids is not None:
            sock.send(pickle.dumps((DONE, rids, "", 0)))
        block = False


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                   signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(signum, _ignore)
    sock = socket.socket(fileno=int(args[0]))
    try:
        serve(sock, int(args[1]))
    except (EOFError, ConnectionError):
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
