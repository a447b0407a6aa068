"""The ``cgroup`` option (circus/cgroup.py) on the real circusd.

A worker (tests/fixtures/forker.py) leaves grandchildren that clear their environment and
call ``setsid()``: the subreaper mode cannot tell whose they are (see
test_contain_reaper.py, which shows that one escapes ``stop``). In the watcher's cgroup
they are found all the same. Every test that needs a writable cgroup v2 skips, naming
what is missing, where there is none.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from circus import cgroup
from tests.conftest import pid_alive, wait_until
from tests.e2e.conftest import CIRCUSD, Daemon
from tests.e2e.test_contain_reaper import forker, parent_of, piddir, pids_in

__all__ = ["piddir"]  # the fixture, used here by name

REASON = cgroup.unavailable()
needs_cgroup = pytest.mark.skipif(REASON is not None,
                                  reason=f"no writable cgroup v2 here: {REASON}")


def watcher(piddir: Path, *extra: str, n: int = 2, timeout: float = 2.0,
            name: str = "w", on: bool = True) -> str:
    return (f"[watcher:{name}]\ncmd = {forker(piddir, '--clear-env', *extra)}\n"
            f"numprocesses = {n}\ngraceful_timeout = {timeout}\ncgroup = {str(on).lower()}\n")


def run_dir(d: Daemon) -> Path:
    return Path(cgroup.base_dir()) / f"circus-{d.pid}"


def cgroup_of(pid: int) -> str:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return line[3:]
    return ""


def wait_escapees(piddir: Path, count: int, exclude: set[int] = frozenset()
                  ) -> set[int]:  # type: ignore[assignment]
    def ready() -> set[int]:
        found = {p for p in pids_in(piddir, "g") - exclude if pid_alive(p)}
        return found if len(found) >= count else set()

    found = wait_until(ready, what=f"{count} grandchildren to write their pids", timeout=15)
    for pid in found:  # what the subreaper mode cannot attribute
        assert b"CIRCUS_ORIGIN" not in Path(f"/proc/{pid}/environ").read_bytes()
        assert os.getsid(pid) == pid
    return found


def empty_after(d: Daemon) -> float:
    """The time circusd logged between the processes stopped and their cgroup empty."""
    line = [x for x in d.log_text().splitlines() if "cgroup empty" in x][-1]
    return float(line.split("cgroup empty ")[1].split("s ")[0])


@needs_cgroup
@pytest.mark.parametrize("command", ["stop", "rm", "quit"])
def test_escapees_do_not_outlive_the_watcher(circusd: Callable[..., Daemon], piddir: Path,
                                             command: str) -> None:
    d = circusd(watcher(piddir, "--orphans", "2"))
    escaped = wait_escapees(piddir, 4)
    workers = set(d.pids("w"))
    group = run_dir(d) / "w"
    inside = f"/{group.relative_to(cgroup.mount_point() or '/')}"
    for pid in escaped | workers:  # every process, from its first instruction
        assert cgroup_of(pid) == inside, (pid, cgroup_of(pid), inside)
    assert {int(p) for p in (group / "cgroup.procs").read_text().split()} >= escaped | workers
    started = time.monotonic()
    if command == "quit":
        assert d.call({"command": "quit", "properties": {"waiting": True}})["status"] == "ok"
        assert d.proc.wait(timeout=20) == 0
    else:
        result = d.ctl(command, "w", "--waiting", timeout=20)
        assert result.returncode == 0, result.stdout + result.stderr
    took = time.monotonic() - started
    assert [p for p in escaped | workers if pid_alive(p)] == []
    assert not group.exists()
    if command != "stop":  # the last watcher's cgroup gone, so is circusd's own directory
        assert not run_dir(d).exists()
    print(f"\ncgroup {command}: reply after {took * 1000:.0f} ms, cgroup empty "
          f"{empty_after(d) * 1000:.1f} ms after the workers stopped")


@needs_cgroup
def test_an_escapee_that_ignores_sigterm_gets_cgroup_kill(circusd: Callable[..., Daemon],
                                                          piddir: Path) -> None:
    d = circusd(watcher(piddir, "--orphans", "1", "--ignore-term", n=1, timeout=0.5))
    (pid,) = wait_escapees(piddir, 1)
    started = time.monotonic()
    result = d.ctl("stop", "w", "--waiting", timeout=20)
    took = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert not pid_alive(pid)
    assert not (run_dir(d) / "w").exists()
    assert 0.5 <= took < 5, took  # graceful_timeout, then cgroup.kill
    assert "ignored SIGTERM for 0.5s; cgroup.kill" in d.log_text()
    print(f"\ncgroup.kill: stop answered after {took * 1000:.0f} ms (graceful_timeout "
          f"500 ms), cgroup empty {empty_after(d) * 1000:.1f} ms after the worker stopped")


@needs_cgroup
def test_a_reload_keeps_the_cgroup_and_the_stop_ends_what_old_processes_left(
        circusd: Callable[..., Daemon], piddir: Path) -> None:
    d = circusd(watcher(piddir, "--orphans", "1", n=1))
    old = wait_escapees(piddir, 1)
    assert d.ctl("reload", "w", "--waiting", timeout=20).returncode == 0
    new = wait_escapees(piddir, 1, exclude=old)
    # old and new processes share the cgroup: a reload cannot kill it, the escapee of the
    # old process lives on until the watcher stops
    assert all(pid_alive(p) for p in old)
    assert d.ctl("stop", "w", "--waiting", timeout=20).returncode == 0
    assert [p for p in old | new if pid_alive(p)] == []
    assert not (run_dir(d) / "w").exists()


@needs_cgroup
def test_released_processes_leave_the_cgroup(circusd: Callable[..., Daemon],
                                             piddir: Path) -> None:
    d = circusd(watcher(piddir, "--orphans", "1", n=1))
    (pid,) = wait_escapees(piddir, 1)
    (worker,) = d.pids("w")
    try:
        assert d.ctl("rm", "w", "--nostop", "--waiting", timeout=20).returncode == 0
        assert pid_alive(pid) and pid_alive(worker)
        assert cgroup_of(pid) == cgroup_of(d.pid)  # back in circusd's own cgroup
        assert not run_dir(d).exists()
    finally:
        for one in (pid, worker):
            if pid_alive(one):
                os.kill(one, 9)


@needs_cgroup
def test_a_watcher_started_again_gets_a_new_cgroup(circusd: Callable[..., Daemon],
                                                   piddir: Path) -> None:
    d = circusd(watcher(piddir, "--orphans", "1", n=1))
    first = wait_escapees(piddir, 1)
    assert d.ctl("stop", "w", "--waiting", timeout=20).returncode == 0
    assert not (run_dir(d) / "w").exists()
    assert d.ctl("start", "w", "--waiting", timeout=20).returncode == 0
    (pid,) = wait_escapees(piddir, 1, exclude=first)
    assert cgroup_of(pid).endswith(f"/circus-{d.pid}/w")
    assert parent_of(pid) == d.pid  # still adopted by the subreaper too


# -- where no cgroup can be made -----------------------------------------------------------


@needs_cgroup  # the message checked is the one of a hierarchy that is read-only
def test_the_option_is_refused_where_no_cgroup_can_be_made(short_tmp: Path,
                                                           piddir: Path) -> None:
    """A read-only cgroup v2 (a mount namespace of its own, as in many containers):
    circusd refuses the file, exit 78, naming the option and why."""
    mount = cgroup.mount_point()
    if mount is None:
        reason: str | None = "no cgroup v2 hierarchy is mounted"
    elif shutil.which("unshare") is None:
        reason = "the unshare program is missing"
    elif os.geteuid() != 0:
        reason = "making a read-only cgroup v2 mount needs root"
    else:
        reason = None
    if reason is not None:
        pytest.skip(reason)
    ini = short_tmp / "ro.ini"
    ini.write_text(f"[circus]\nendpoint = ipc://{short_tmp}/c\npubsub_endpoint = "
                   f"ipc://{short_tmp}/p\n" + watcher(piddir, n=1))
    # "--propagation unchanged": in a chroot "/" is no mount point, and unshare's default
    # (making every mount private from "/") fails there; only the cgroup mount is made
    # private, inside the new namespace, before it is made read-only.
    script = ('mount --make-rprivate "$1" && mount -o remount,bind,ro "$1" && shift '
              '&& exec "$@"')
    result = subprocess.run(["unshare", "--mount", "--propagation", "unchanged", "sh", "-c",
                             script, "sh", str(mount), *CIRCUSD, str(ini)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 78, result.stdout + result.stderr
    text = result.stdout + result.stderr
    assert "[watcher:w] cgroup" in text and "cannot create a cgroup" in text, text
    assert "Read-only file system" in text and "Delegate=yes" in text, text
    assert "Traceback" not in text
    assert pids_in(piddir, "w") == set()  # nothing ran


@needs_cgroup
def test_set_live_moves_the_new_processes_into_a_cgroup(circusd: Callable[..., Daemon],
                                                   piddir: Path) -> None:
    d = circusd(watcher(piddir, n=1, on=False))
    assert cgroup_of(d.pids("w")[0]) == cgroup_of(d.pid)  # off: circusd's own cgroup
    assert d.ctl("set", "w", "cgroup", "true", "--waiting", timeout=20).returncode == 0
    (worker,) = d.pids("w")  # reloaded: the new process is in the cgroup
    assert cgroup_of(worker).endswith(f"/circus-{d.pid}/w")


@needs_cgroup
def test_the_cgroups_of_a_circusd_that_is_gone_are_removed(circusd: Callable[..., Daemon],
                                                           piddir: Path) -> None:
    """circusd killed with -9 leaves its empty circus-<pid> cgroups; the next start (which
    stops that circusd's processes first) removes them."""
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid no process has now
    stale = Path(cgroup.base_dir()) / f"circus-{gone.pid}"
    (stale / "w").mkdir(parents=True)
    try:
        d = circusd(watcher(piddir, n=1))
        (pid,) = d.pids("w")
        assert cgroup_of(pid).endswith(f"/circus-{d.pid}/w")
        assert not stale.exists()
    finally:
        for path in (stale / "w", stale):
            if path.exists():
                path.rmdir()
