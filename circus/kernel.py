"""What circusd asks the kernel directly: prctl, /proc readers, clock ticks.

Small and dependency-free, so that the reaper, the spawner and the process record share
one reading of each fact (psutil would read far more than they need).
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def boot_ticks() -> int:
    """Now, in the clock ticks since boot that ``/proc/<pid>/stat`` counts start times in
    (a process started at or after this moment has a start time at least this)."""
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * CLOCK_TICKS)


@functools.cache
def libc() -> ctypes.CDLL:
    """The C library, its calls made without the interpreter lock (ctypes.CDLL)."""
    return ctypes.CDLL(None, use_errno=True)


def trim_heap() -> None:
    """Hand the C heap's free pages back to the kernel (glibc's ``malloc_trim``): after a
    reply about thousands of processes, its transient objects would otherwise stay in
    circusd's resident memory. Nothing where the C library has no such call."""
    trim = getattr(libc(), "malloc_trim", None)
    if trim is not None:
        trim(0)


def prctl(option: int, arg: int = 0) -> int:
    """``prctl(option, arg, 0, 0, 0)``; OSError on failure."""
    result = int(libc().prctl(option, ctypes.c_ulong(arg), 0, 0, 0))
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


def is_subreaper() -> bool:
    value = ctypes.c_int(0)
    if libc().prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(value), 0, 0, 0) == -1:
        return False
    return bool(value.value)


def pdeathsig_setter(signum: int, parent: int) -> Callable[[], None]:
    """Code for the child between fork and exec: get *signum* when the parent dies.

    If the parent died before the prctl, the child was already reparented and the
    signal would never come: it sends the signal to itself.
    """
    call = libc().prctl  # looked up here: no dlopen/dlsym between fork and exec

    def apply() -> None:
        if call(PR_SET_PDEATHSIG, ctypes.c_ulong(signum), 0, 0, 0) == -1:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:
            os.kill(os.getpid(), signum)

    return apply


class Stat(NamedTuple):
    state: str
    ppid: int
    pgrp: int
    session: int
    start: int  # clock ticks after boot: with the pid, names one process


def read_stat(pid: int) -> Stat | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2:].split()
    try:
        return Stat(fields[0].decode(), int(fields[1]), int(fields[2]), int(fields[3]),
                    int(fields[19]))
    except (IndexError, ValueError):
        return None


def read_env(pid: int, name: str) -> str | None:
    """The value of the variable *name* in the environment of *pid*, if any (zombies and
    other users' processes have none to read)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    needle = name.encode() + b"="
    at = data.find(needle)
    while at > 0 and data[at - 1] != 0:  # inside another variable's value
        at = data.find(needle, at + 1)
    if at < 0:
        return None
    return data[at + len(needle):].split(b"\0", 1)[0].decode(errors="replace")


def children_of(pid: int) -> list[int]:
    """The children of every thread of *pid*."""
    result: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return result
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as fh:
                result.extend(int(p) for p in fh.read().split())
        except OSError:
            continue
    return result


# -- posix_spawn without the interpreter lock ---------------------------------------------
#
# os.posix_spawn keeps the interpreter lock for the whole call, and glibc's posix_spawn
# returns only once the child has exec'd: under load, a scheduling delay of the child of
# 10-50 ms during which no other thread of circusd runs Python (its event loop neither).
# The same call through ctypes lets go of the lock, so a spawn made in a thread of its own
# leaves the loop free. The flags and actions are glibc's and musl's values.

POSIX_SPAWN_SETSIGDEF = 0x04
POSIX_SPAWN_SETSIGMASK = 0x08
POSIX_SPAWN_SETSID = 0x80
_ATTR_SIZE = 1024  # sizeof(posix_spawnattr_t) is 336 on x86-64 glibc
_ACTIONS_SIZE = 256  # sizeof(posix_spawn_file_actions_t) is 80
_SIGSET_SIZE = 128
# What CPython's subprocess resets (restore_signals): Python ignores them, and an ignored
# signal stays ignored across exec.
RESET_SIGNALS = tuple(getattr(signal, name) for name in ("SIGPIPE", "SIGXFSZ")
                      if hasattr(signal, name))

# file actions, as os.posix_spawn takes them
Action = tuple[int, int, str, int, int] | tuple[int, int, int] | tuple[int, int]


@functools.cache
def native_spawn_available() -> bool:
    try:
        lib = libc()
        return all(hasattr(lib, name) for name in (
            "posix_spawn", "posix_spawnattr_init", "posix_spawnattr_setflags",
            "posix_spawnattr_setsigdefault", "posix_spawnattr_setsigmask",
            "posix_spawn_file_actions_init", "posix_spawn_file_actions_adddup2",
            "posix_spawn_file_actions_addopen", "posix_spawn_file_actions_addclose"))
    except OSError:
        return False


def _check(result: int, what: str) -> None:
    if result != 0:
        raise OSError(result, f"{what}: {os.strerror(result)}")


def _sigset(signals: Sequence[int]) -> ctypes.Array[ctypes.c_char]:
    lib = libc()
    buf = ctypes.create_string_buffer(_SIGSET_SIZE)
    lib.sigemptyset(buf)
    for signum in signals:
        lib.sigaddset(buf, signum)
    return buf


def posix_spawn(path: str, argv: Sequence[str], env: Mapping[str, str],
                actions: Sequence[Action], *, setsid: bool = True) -> int:
    """``os.posix_spawn(path, argv, env, file_actions=actions, setsid=setsid)`` that lets
    go of the interpreter lock while the child is made, with the signals of
    :data:`RESET_SIGNALS` back to their default and an empty signal mask in the child.

    Raises OSError as os.posix_spawn does (ENOENT for a missing program, ...).
    """
    lib = libc()
    enc = os.fsencode
    args = [enc(a) for a in argv]
    c_argv = (ctypes.c_char_p * (len(args) + 1))(*args, None)
    pairs = [enc(k) + b"=" + enc(v) for k, v in env.items()]
    c_env = (ctypes.c_char_p * (len(pairs) + 1))(*pairs, None)
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    fa = ctypes.create_string_buffer(_ACTIONS_SIZE)
    _check(lib.posix_spawnattr_init(attr), "posix_spawnattr_init")
    _check(lib.posix_spawn_file_actions_init(fa), "posix_spawn_file_actions_init")
    try:
        flags = POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK
        if setsid:
            flags |= POSIX_SPAWN_SETSID
        _check(lib.posix_spawnattr_setflags(attr, ctypes.c_short(flags)), "setflags")
        _check(lib.posix_spawnattr_setsigdefault(attr, _sigset(RESET_SIGNALS)), "sigdefault")
        _check(lib.posix_spawnattr_setsigmask(attr, _sigset(())), "sigmask")
        for action in actions:
            if action[0] == os.POSIX_SPAWN_OPEN:
                _, fd, name, flag, mode = action  # type: ignore[misc]
                _check(lib.posix_spawn_file_actions_addopen(
                    fa, fd, enc(name), flag, ctypes.c_uint(mode)), "addopen")
            elif action[0] == os.POSIX_SPAWN_DUP2:
                _, fd, new = action  # type: ignore[misc]
                _check(lib.posix_spawn_file_actions_adddup2(fa, fd, new), "adddup2")
            elif action[0] == os.POSIX_SPAWN_CLOSE:
                _check(lib.posix_spawn_file_actions_addclose(fa, action[1]), "addclose")
            else:
                raise ValueError(f"unknown file action {action!r}")
        pid = ctypes.c_int(0)
        result = lib.posix_spawn(ctypes.byref(pid), enc(path), fa, attr, c_argv, c_env)
        if result != 0:
            raise OSError(result, os.strerror(result), path)
        return pid.value
    finally:
        lib.posix_spawn_file_actions_destroy(fa)
        lib.posix_spawnattr_destroy(attr)
