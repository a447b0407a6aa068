"""A watcher's own cgroup (cgroup v2): the ``cgroup`` option.

The subreaper (:mod:`circus.reaper`) finds a worker's descendants by their session and by
the ``CIRCUS_ORIGIN`` variable they inherit; one that clears its environment and calls
``setsid()`` cannot be told apart. The kernel's cgroups can: a process stays in its
parent's cgroup, whatever it does to its session or environment, and only a process with
write access to the hierarchy can move it out.

With ``cgroup = true`` a watcher's processes run in a cgroup of their own::

    <cgroup2 mount><circusd's own cgroup>/circus-<circusd pid>/<watcher>

made at the watcher's first spawn and removed once it is empty after a stop. circusd itself
stays where it is; the cgroups below it enable no controller, so they only group and
kill. Each process writes itself to the cgroup's ``cgroup.procs`` between fork and exec
(a ``preexec_fn``; the descriptor is opened by circusd, so the kernel checks circusd's
rights even when the process has already taken another ``uid``): from its first
instruction, nothing it forks is outside. The ``posix_spawn`` fast path is lost for these
watchers, as with ``rlimit_*`` and ``pdeathsig``.

A stop of the whole watcher (``stop``, ``rm``, ``quit``, its end with ``respawn = false``)
first stops each process as usual (``stop_signal``, ``graceful_timeout``, SIGKILL to its
group, then its attributed orphans), then :meth:`WatcherCgroup.stop` takes what is left
in the cgroup: ``stop_signal`` to every pid in it, ``graceful_timeout``, then
``cgroup.kill`` (SIGKILL to all at once, forks in flight included), and waits for
``cgroup.events`` to say ``populated 0``. A reload's old and new processes share the
cgroup, so ``reload``, ``decr``, ``kill`` and ``max_age`` stop single processes as the
subreaper mode does, and whatever escaped from an old process is ended with the watcher.

Where no cgroup can be made (no cgroup v2 hierarchy, a read-only one, no right to write
it, a kernel before 5.14 without ``cgroup.kill``), the option is refused where it is
given: :func:`unavailable` says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

# How often a stop looks at cgroup.events.
STOP_POLL = 0.01
# After cgroup.kill, how long a stop waits for the cgroup to empty before giving up.
KILL_WAIT = 2.0
MOUNTINFO = "/proc/self/mountinfo"
OWN_CGROUP = "/proc/self/cgroup"


def mount_point(mountinfo: str = MOUNTINFO) -> str | None:
    """Where the cgroup v2 hierarchy is mounted (``/sys/fs/cgroup``, or
    ``/sys/fs/cgroup/unified`` on a hybrid host); None if it is not."""
    try:
        with open(mountinfo) as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    for line in lines:
        before, sep, after = line.partition(" - ")
        fields = before.split()
        if sep and after.split()[:1] == ["cgroup2"] and len(fields) >= 5:
            return fields[4].replace("\\040", " ")
    return None


def own_cgroup(path: str = OWN_CGROUP) -> str | None:
    """circusd's cgroup in the v2 hierarchy (the ``0::/...`` line), e.g. ``/system.slice/
    circus.service``; None if there is none."""
    try:
        with open(path) as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("0::"):
            return line[3:].removesuffix(" (deleted)") or "/"
    return None


def base_dir() -> str:
    """The directory of circusd's own cgroup; OSError if there is no v2 hierarchy."""
    mount, own = mount_point(), own_cgroup()
    if mount is None:
        raise OSError("no cgroup v2 hierarchy is mounted (no cgroup2 in /proc/self/mountinfo)")
    if own is None:
        raise OSError("circusd is in no cgroup v2 (no 0:: line in /proc/self/cgroup)")
    return os.path.normpath(os.path.join(mount, own.lstrip("/")))


@functools.cache
def unavailable() -> str | None:
    """Why ``cgroup = true`` cannot work on this host; None if it can (probed once, by
    making and removing an empty cgroup)."""
    hint = "run circusd as root or under systemd with Delegate=yes, or remove the option"
    try:
        base = base_dir()
    except OSError as exc:
        return f"{exc}; {hint}"
    probe = os.path.join(base, f"circus-probe-{os.getpid()}")
    try:
        os.mkdir(probe)
    except FileExistsError:
        pass
    except OSError as exc:
        return f"cannot create a cgroup in {base} ({exc.strerror}); {hint}"
    try:
        if not os.path.exists(os.path.join(probe, "cgroup.kill")):
            return f"the cgroups in {base} have no cgroup.kill (Linux 5.14 or later is needed)"
        if not os.access(os.path.join(base, "cgroup.procs"), os.W_OK):
            return f"cannot move processes out of {base} (cgroup.procs is not writable); {hint}"
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(probe)
    return None


def _dirname(watcher: str) -> str:
    """A cgroup directory name for *watcher*: what is not a letter, digit, ``-`` or ``_``
    is written ``%XX``, so no name can be ``..`` or collide with an interface file."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_") else f"%{ord(c):02X}"
                   for c in watcher)


def joiner(procs_fd: int) -> Callable[[], None]:
    """Code for the child between fork and exec: move itself into the cgroup whose
    ``cgroup.procs`` is open as *procs_fd* (``0`` names the writer)."""
    write = os.write

    def join() -> None:
        write(procs_fd, b"0")

    return join


class WatcherCgroup:
    """The cgroup of one watcher's processes (see the module docstring)."""

    def __init__(self, watcher: str) -> None:
        self.watcher = watcher
        self.run_dir = os.path.join(base_dir(), f"circus-{os.getpid()}")
        self.path = os.path.join(self.run_dir, _dirname(watcher))
        self._procs: int | None = None

    def procs_fd(self) -> int:
        """``cgroup.procs`` open for writing; the cgroup is made on first use."""
        if self._procs is None:
            sweep_stale()
            os.makedirs(self.path, exist_ok=True)
            self._procs = os.open(os.path.join(self.path, "cgroup.procs"),
                                  os.O_WRONLY | os.O_CLOEXEC)
            log.debug("%s: processes go to the cgroup %s", self.watcher, self.path)
        return self._procs

    def _read(self, name: str) -> str:
        try:
            with open(os.path.join(self.path, name)) as fh:
                return fh.read()
        except FileNotFoundError:
            return ""

    def pids(self) -> list[int]:
        """Every process in the cgroup now."""
        return [int(p) for p in self._read("cgroup.procs").split()]

    def populated(self) -> bool:
        """Does any process remain (``cgroup.events``)?"""
        return "populated 1" in self._read("cgroup.events")

    def kill(self) -> None:
        """SIGKILL to every process in the cgroup, those being forked included."""
        with contextlib.suppress(FileNotFoundError), \
                open(os.path.join(self.path, "cgroup.kill"), "w") as fh:
            fh.write("1")

    async def stop(self, sig: int, graceful_timeout: float,
                   busy: Callable[[], bool]) -> list[int] | None:
        """Stop what is left in the cgroup: *sig* to each pid, ``cgroup.kill`` after
        *graceful_timeout*, then wait for it to be empty and remove it.

        Returns the pids signalled, or None if the cgroup is kept: *busy* (the watcher
        runs processes again) or it would not empty.
        """
        started = time.monotonic()
        deadline = started + max(graceful_timeout, 0.0)
        signalled: set[int] = set()
        killed_at: float | None = None
        while self.populated():
            if busy():  # started again meanwhile: its new processes are not ours to end
                return None
            now = time.monotonic()
            if now < deadline:
                for pid in self.pids():
                    if pid not in signalled:
                        signalled.add(pid)
                        with contextlib.suppress(ProcessLookupError, PermissionError):
                            os.kill(pid, sig)
            elif killed_at is None:
                log.warning("%s: %s left in its cgroup ignored %s for %.1fs; cgroup.kill",
                            self.watcher, sorted(self.pids()), signal.Signals(sig).name,
                            graceful_timeout)
                self.kill()
                killed_at = now
            elif now - killed_at > KILL_WAIT:
                log.error("%s: the cgroup %s is still populated after cgroup.kill; it is "
                          "kept", self.watcher, self.path)
                return None
            await asyncio.sleep(STOP_POLL)
        if busy():
            return None
        log.log(logging.INFO if signalled else logging.DEBUG,
                "%s: cgroup empty %.3fs after the processes stopped (%d left behind)",
                self.watcher, time.monotonic() - started, len(signalled))
        self.remove()
        return sorted(signalled)

    def release(self) -> None:
        """``rm --nostop``: the processes leave for circusd's own cgroup, uncontained."""
        try:
            parent = os.open(os.path.join(base_dir(), "cgroup.procs"), os.O_WRONLY)
        except OSError as exc:
            log.warning("%s: cannot release the processes from %s: %s", self.watcher,
                        self.path, exc)
            self.close()
            return
        try:
            for _ in range(10):  # a process forked meanwhile is listed on the next pass
                pids = self.pids()
                if not pids:
                    break
                for pid in pids:
                    with contextlib.suppress(OSError):
                        os.write(parent, str(pid).encode())
        finally:
            os.close(parent)
        self.remove()

    def close(self) -> None:
        if self._procs is not None:
            os.close(self._procs)
            self._procs = None

    def remove(self) -> None:
        """Remove the (empty) cgroup, and circusd's ``circus-<pid>`` once it has no other."""
        self.close()
        for path in (self.path, self.run_dir):
            try:
                os.rmdir(path)
            except FileNotFoundError:
                continue
            except OSError as exc:  # busy: processes, or the cgroup of another watcher
                if path == self.path:
                    log.warning("%s: cannot remove the cgroup %s: %s", self.watcher, path,
                                exc.strerror)
                return


@functools.cache
def sweep_stale() -> list[str]:
    """Remove the empty ``circus-<pid>`` cgroups of circusds that are gone (killed with -9:
    nothing removed them; their processes were stopped at this start, see circus/state.py).
    Once per circusd; returns what was removed. A populated one is left, and logged."""
    removed: list[str] = []
    base = base_dir()
    try:
        names = os.listdir(base)
    except OSError:
        return removed
    for name in names:
        pid = name.removeprefix("circus-")
        if not pid.isdigit() or int(pid) == os.getpid() or os.path.exists(f"/proc/{pid}"):
            continue
        run_dir = os.path.join(base, name)
        with contextlib.suppress(OSError):
            for child in os.listdir(run_dir):
                if os.path.isdir(os.path.join(run_dir, child)):
                    with contextlib.suppress(OSError):
                        os.rmdir(os.path.join(run_dir, child))
        try:
            os.rmdir(run_dir)
            removed.append(run_dir)
        except OSError as exc:
            log.warning("cannot remove the cgroup %s of a circusd that is gone: %s", run_dir,
                        exc.strerror)
    return removed


__all__ = ["WatcherCgroup", "base_dir", "joiner", "mount_point", "own_cgroup",
           "unavailable"]
