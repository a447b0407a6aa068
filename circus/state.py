"""What one circusd runs, recorded so that the next circusd on the same configuration
finds it after a crash.

The **process record** is a JSON file that lists circusd itself (pid and kernel start
time) and every process it runs (pid, kernel start time, watcher, wid). A pid alone is
not enough: the kernel reuses pids, so a process counts as recorded only if its start
time (field 22 of ``/proc/<pid>/stat``, in clock ticks since boot) is the one recorded.

Where it lives (see docs/deployment.md): ``$XDG_RUNTIME_DIR/circus/`` when that is set,
``/run/circus/`` for root, else ``/tmp/circus-<uid>/`` (created mode 0700, refused if
another user owns it). The name is the configuration file's base name and the first 12
hex digits of the SHA-256 of its real path: ``web-3f2a9c01d4e7.json``. A lock file next to
it (``.lock``) is held by the running circusd; the kernel releases it when circusd dies,
even by SIGKILL, so a second circusd on the same configuration is refused at once.

Writes are atomic (a temporary file renamed over the record) and batched: a spawn or an
exit only schedules a write :data:`FLUSH_DELAY` later (or :data:`WRITE_SHARE` times what the
last write took, whichever is longer), so a burst of a thousand spawns
costs a handful of writes. The processes spawned since the last write are not lost if
circusd is killed in between: every process circusd starts carries the
``CIRCUS_ORIGIN`` mark of circus/reaper.py, whose *run* part is ``<config id>-<circusd
start time>``, in its environment (its descendants inherit it), and the next circusd looks
for marks of its configuration in ``/proc/*/environ`` as well as in the record. A process
that clears its environment is still found through the record once a write has happened.

When circusd starts and finds processes of a previous generation (their circusd is dead),
it stops them before it spawns anything: ``stop_signal`` of their watcher (as the current
configuration defines it; SIGTERM for a watcher that is gone), ``graceful_timeout``, then
SIGKILL to the process and its group. Their output pipes were held by the dead circusd, so
adopting them would leave workers whose output nobody reads and that die of SIGPIPE at
their next write.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from circus.kernel import read_stat
from circus.reaper import ORIGIN_VAR, Origin, read_origin

if TYPE_CHECKING:
    from circus.process import Process
    from circus.watcher import Watcher

log = logging.getLogger(__name__)

FLUSH_DELAY = 0.1  # seconds between a spawn or exit and the write of the record
# ... or more: this many times what the last write took, so that writing the record of
# 10,000 processes takes at most 2 % of the loop while they start or die
WRITE_SHARE = 50
KILL_WAIT = 5.0  # seconds to wait for a process to go after SIGKILL


class AlreadyRunning(OSError):
    """Another circusd runs the same configuration."""


# -- what the kernel says about a process ------------------------------------------------


def proc_stat(pid: int) -> tuple[int, int] | None:
    """``(start time, process group)`` of a live *pid*; None if it is gone or a zombie."""
    stat = read_stat(pid)
    if stat is None or stat.state in ("Z", "X"):
        return None
    return stat.start, stat.pgrp


def start_time(pid: int) -> int | None:
    stat = proc_stat(pid)
    return stat[0] if stat is not None else None


def _ancestors() -> set[int]:
    pids = {os.getpid()}
    pid = os.getppid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        stat = read_stat(pid)
        if stat is None:
            break
        pid = stat.ppid
    return pids


# -- where the record lives -------------------------------------------------------------


def config_id(config_file: str) -> str:
    """A short id of the configuration: the SHA-256 of its real path, 12 hex digits."""
    return hashlib.sha256(os.path.realpath(config_file).encode()).hexdigest()[:12]


def runtime_dir() -> str:
    """The directory of process records (created if missing)."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base:
        path = os.path.join(base, "circus")
    elif os.geteuid() == 0:
        path = "/run/circus"
    else:
        path = f"/tmp/circus-{os.geteuid()}"
    os.makedirs(path, mode=0o700, exist_ok=True)
    info = os.lstat(path)
    if info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise OSError(f"{path} is not a directory of this user only: "
                      "refusing to keep the process record there")
    return path


def record_path(config_file: str) -> str:
    name = os.path.splitext(os.path.basename(config_file))[0] or "circus"
    return os.path.join(runtime_dir(), f"{name}-{config_id(config_file)}.json")


def write_atomic(path: str, data: dict[str, Any] | str) -> None:
    """Write *data* as JSON (or JSON text as it is) to *path* through a temporary file
    renamed over it."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        fh.write(data if isinstance(data, str) else json.dumps(data, separators=(",", ":")))
    os.replace(tmp, path)


# -- the previous generation --------------------------------------------------------------


@dataclass
class Found:
    pid: int
    start: int
    watcher: str
    circusd: tuple[int, int] | None  # (pid, start time) of the circusd that spawned it
    how: str  # "record" or "marker"


def scan_markers(cid: str) -> list[Found]:
    """Every process whose ``CIRCUS_ORIGIN`` mark names a run of configuration *cid*."""
    skip = _ancestors()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in skip:
            continue
        value = read_origin(int(name))
        if value is None:
            continue
        mark = Origin.parse(value)
        config, _, circusd_start = mark.run.partition("-") if mark else ("", "", "")
        start = start_time(int(name))
        if mark is None or config != cid or not circusd_start.isdigit() or start is None:
            continue
        found.append(Found(int(name), start, mark.watcher,
                           (mark.circusd, int(circusd_start)), "marker"))
    return found


def read_record(path: str) -> tuple[dict[str, Any], list[Found]]:
    """The record at *path* and its processes that still run (start time checked)."""
    try:
        with open(path) as fh:
            data = json.load(fh)
        owner = (int(data["circusd"]["pid"]), int(data["circusd"]["start"]))
        entries = list(data.get("processes", []))
    except FileNotFoundError:
        return {}, []
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("process record %s cannot be read (%s); looking for markers only",
                    path, exc)
        return {}, []
    alive = []
    for entry in entries:
        with contextlib.suppress(KeyError, TypeError, ValueError):
            pid, start = int(entry["pid"]), int(entry["start"])
            if start_time(pid) == start:
                alive.append(Found(pid, start, str(entry["watcher"]), owner, "record"))
    return data, alive


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def stop_previous(found: Iterable[Found], settings: Callable[[str], tuple[int, float]]
                        ) -> dict[str, int]:
    """Stop *found* as their watchers would; return how many went at the stop signal and
    how many needed SIGKILL."""
    loop = asyncio.get_running_loop()
    figures = {"signalled": 0, "killed": 0}

    async def stop(target: Found) -> None:
        try:
            fd = os.pidfd_open(target.pid)
        except OSError:
            return
        try:
            stat = proc_stat(target.pid)
            if stat is None or stat[0] != target.start:
                return  # gone, and its pid taken by another process meanwhile
            leader = stat[1] == target.pid
            gone = loop.create_future()
            loop.add_reader(fd, _settle, gone)
            try:
                sig, timeout = settings(target.watcher)
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(fd, sig)
                try:
                    await asyncio.wait_for(asyncio.shield(gone), timeout)
                    figures["signalled"] += 1
                except TimeoutError:
                    if leader:
                        with contextlib.suppress(ProcessLookupError, PermissionError):
                            os.killpg(target.pid, signal.SIGKILL)
                    with contextlib.suppress(ProcessLookupError):
                        signal.pidfd_send_signal(fd, signal.SIGKILL)
                    figures["killed"] += 1
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(gone, KILL_WAIT)
            finally:
                loop.remove_reader(fd)
            if leader:  # what it left in its group goes too
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(target.pid, signal.SIGKILL)
        finally:
            os.close(fd)

    await asyncio.gather(*(stop(t) for t in found))
    return figures


# -- the record of the running circusd -------------------------------------------------------


class ProcessRecord:
    """The record of one running circusd (see the module's docstring)."""

    def __init__(self, path: str, config_file: str | None) -> None:
        self.path = path
        self.cid = config_id(config_file or path)
        self.me = (0, 0)  # circusd's (pid, start time): known once it runs (after --daemon)
        self._lock_fd: int | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._rows: dict[int, str] = {}  # pid -> its entry in the record, encoded
        self._cost = 0.0  # seconds the last write took
        self.released: list[dict[str, int]] = []  # rm --nostop: let go, not to be stopped

    def run_id(self) -> str:
        """This run in every spawn's ``CIRCUS_ORIGIN`` mark: ``<config id>-<start time>``."""
        return f"{self.cid}-{self.me[1]}"

    def lock(self) -> None:
        """Hold the lock of the record, or raise AlreadyRunning naming its holder."""
        lock_path = self.path + ".lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise AlreadyRunning(f"circusd pid {holder} already runs this configuration "
                                 f"(it holds {lock_path})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd
        self.me = (os.getpid(), start_time(os.getpid()) or 0)

    async def recover(self, settings: Callable[[str], tuple[int, float]]) -> None:
        """Find the previous generation and stop it (nothing is spawned before)."""
        began = time.monotonic()
        data, recorded = read_record(self.path)
        self.released = [r for r in data.get("released", [])
                         if isinstance(r, dict) and start_time(r.get("pid", 0)) == r.get("start")]
        let_go = {(r["pid"], r["start"]) for r in self.released}
        targets = {(f.pid, f.start): f for f in recorded}
        for found in scan_markers(self.cid):
            owner = found.circusd
            if owner == self.me:
                continue  # ours (an arbiter opened again in the same process)
            if owner is not None and start_time(owner[0]) == owner[1]:
                raise AlreadyRunning(f"circusd pid {owner[0]} already runs this configuration "
                                     f"(its process {found.pid} carries {ORIGIN_VAR})")
            targets.setdefault((found.pid, found.start), found)
        for key in let_go:
            targets.pop(key, None)
        if not targets:
            return
        by_record = sum(1 for f in targets.values() if f.how == "record")
        log.warning("found %d process(es) of a previous circusd of this configuration "
                    "(%d in %s, %d by their %s marker): stopping them before starting",
                    len(targets), by_record, self.path, len(targets) - by_record, ORIGIN_VAR)
        figures = await stop_previous(targets.values(), settings)
        log.warning("previous generation stopped in %.3fs: %d at their stop signal, "
                    "%d killed", time.monotonic() - began, figures["signalled"],
                    figures["killed"])

    def open(self, watchers: Iterable[Watcher]) -> None:
        """Start the record with the processes *watchers* run now (none, at a start)."""
        self._rows = {}
        for watcher in watchers:
            for process in watcher.processes.values():
                self._add(watcher.name, process)
        self.write()

    def changed(self, watcher: str, process: Process, running: bool) -> None:
        """*process* of *watcher* was spawned (*running*) or has exited: its entry is
        made or dropped now, and the record written soon. Each change costs one entry,
        so that a respawn among 10,000 processes does not go over all of them."""
        if running:
            self._add(watcher, process)
        else:
            self._rows.pop(process.pid, None)
        self.note()

    def _add(self, watcher: str, process: Process) -> None:
        start = start_time(process.pid)
        if start is not None:  # gone already: nothing to find after a crash
            self._rows[process.pid] = json.dumps(
                {"pid": process.pid, "start": start, "watcher": watcher, "wid": process.wid},
                separators=(",", ":"))

    def note(self) -> None:
        """A process was spawned or exited: write the record soon."""
        if self._timer is None and self._lock_fd is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(max(FLUSH_DELAY, WRITE_SHARE * self._cost),
                                          self.write)

    def release(self, pids: Iterable[int]) -> None:
        for pid in pids:
            self._rows.pop(pid, None)  # let go: listed as released, not as ours
            start = start_time(pid)
            if start is not None:
                self.released.append({"pid": pid, "start": start})
        self.write()

    def write(self) -> None:
        """Write the record now. Each process's entry is encoded once, when it is spawned:
        a record of 10,000 processes costs a join and a write of about 600 KB (about 1.3
        ms here), not a pass over every process at each spawn or exit."""
        self._timer = None
        began = time.perf_counter()
        head = json.dumps({"version": 1, "circusd": {"pid": self.me[0], "start": self.me[1]},
                           "written": time.time(), "released": self.released},
                          separators=(",", ":"))
        text = f'{head[:-1]},"processes":[{",".join(self._rows.values())}]}}'
        try:
            write_atomic(self.path, text)
        except OSError as exc:
            log.error("cannot write the process record %s: %s", self.path, exc)
        self._cost = time.perf_counter() - began

    def close(self) -> None:
        """circusd stops: the record goes (unless processes were let go), the lock too."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._lock_fd is None:
            return
        self.released = [r for r in self.released if start_time(r["pid"]) == r["start"]]
        self._rows = {}  # what is left running is listed as released, if at all
        if self.released:
            self.write()
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        os.close(self._lock_fd)
        self._lock_fd = None


# -- what the arbiter sees -------------------------------------------------------------------


class RunState:
    """The process record and the recorded runtime changes of one arbiter.

    Taken from the arbiter's keyword *options*: ``process_record``: None (the default)
    keeps a record when the arbiter has a configuration file, at the place derived from it;
    a path keeps it there; False keeps none. ``state_file``: the file of runtime changes
    (:mod:`circus.changes`), relative to the configuration file's directory; None (the
    default) records none.
    """

    def __init__(self, config_file: str | None, options: dict[str, Any]) -> None:
        from circus.changes import ChangeLog

        process_record: str | bool | None = options.pop("process_record", None)
        state_file: str | None = options.pop("state_file", None)
        self.config_file = config_file
        self._record_at = process_record if process_record is not None else bool(config_file)
        self.record: ProcessRecord | None = None
        self.changes: ChangeLog | None = None
        if state_file:
            base = os.path.dirname(os.path.abspath(config_file)) if config_file else "."
            self.changes = ChangeLog(os.path.join(base, os.path.expanduser(state_file)))

    def attach(self, watcher: Watcher) -> None:
        """A watcher joins the arbiter: its processes carry the marker, its spawns and
        exits are written to the record, its changes are recorded."""
        watcher.on_change = self.options_changed
        if self.record is not None:
            watcher.on_processes_changed = functools.partial(self.record.changed, watcher.name)
            watcher.run_id = self.record.run_id()

    def added(self, watcher: Watcher) -> None:
        """*watcher* was added over the control socket (``add``)."""
        if self.changes is not None:
            self.changes.watcher_added(watcher, changed_keys(watcher))

    async def open(self, arbiter: Any) -> None:
        """Before anything is bound or spawned: refuse if another circusd runs this
        configuration, apply the recorded changes, stop the previous generation."""
        if self.changes is not None:
            self.changes.load()
        if self._record_at:
            try:
                path = (self._record_at if isinstance(self._record_at, str)
                        else record_path(self.config_file or ""))
                record = ProcessRecord(path, self.config_file)
                record.lock()
                self.record = record
            except AlreadyRunning:
                raise
            except OSError as exc:  # a read-only or foreign directory: run without one
                log.error("no process record (%s): a crash of circusd will not be "
                          "recovered from", exc)
        try:
            for watcher in arbiter.watchers:
                self.attach(watcher)
            if self.changes is not None:
                await self.changes.replay(arbiter)
            if self.record is not None:
                await self.record.recover(lambda name: _stop_settings(arbiter, name))
                self.record.open(arbiter.watchers)
        except BaseException:
            self.close()
            raise

    def removed(self, name: str, released: list[int]) -> None:
        if self.changes is not None:
            self.changes.watcher_removed(name)
        if self.record is not None and released:
            self.record.release(released)

    def options_changed(self, watcher: Watcher, keys: list[str]) -> None:
        if self.changes is not None:
            self.changes.options_changed(watcher, keys)

    def config_applied(self) -> None:
        if self.changes is not None:
            self.changes.forget()

    def close(self) -> None:
        if self.record is not None:
            self.record.close()
            self.record = None


def changed_keys(watcher: Watcher) -> list[str]:
    """The keys of *watcher* whose value is not the default (``cmd`` always)."""
    from circus.keys import CUSTOM, EnvKey, StreamKey, TableKey, current_keys, key_for

    keys = ["cmd"]
    for key in current_keys(watcher):
        family = key_for(key, watcher.custom_options) or CUSTOM
        if key != "cmd" and not (isinstance(family, TableKey | EnvKey | StreamKey)
                                 and family.read(watcher, key) == family.default(key)):
            keys.append(key)
    return keys


def _stop_settings(arbiter: Any, name: str) -> tuple[int, float]:
    """How a process of watcher *name* is stopped: its stop_signal and graceful_timeout."""
    from circus.errors import NotFoundError

    try:
        watcher = arbiter.get_watcher(name)
    except NotFoundError:
        return signal.SIGTERM, 30.0
    return int(watcher.stop_signal), float(watcher.graceful_timeout)
