"""``[circus] minfds`` and ``minprocs``: circusd raises its limits, or refuses naming them."""

from __future__ import annotations

import os
import resource
import subprocess
from pathlib import Path

from tests.conftest import wait_until
from tests.e2e.conftest import CIRCUSD

SLEEPER = "[watcher:w]\ncmd = sleep 600\n"


def _ini(tmp: Path, circus: str) -> Path:
    ini = tmp / "c.ini"
    ini.write_text(f"[circus]\nendpoint = ipc://{tmp}/c\npubsub_endpoint = ipc://{tmp}/p\n"
                   f"{circus}\n{SLEEPER}")
    return ini


def _limits(pid: int, name: str) -> tuple[str, str]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith(name):
            soft, hard = line[len(name):].split()[:2]
            return soft, hard
    raise AssertionError(f"no {name!r} in /proc/{pid}/limits")


def _env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "XDG_RUNTIME_DIR": str(tmp)}


def test_minfds_beyond_what_the_kernel_allows_refuses_naming_the_limit(short_tmp: Path) -> None:
    nr_open = int(Path("/proc/sys/fs/nr_open").read_text())  # not even root gets more
    ini = _ini(short_tmp, f"minfds = {nr_open + 1}")
    proc = subprocess.run([*CIRCUSD, str(ini)], capture_output=True, text=True, timeout=30,
                          env=_env(short_tmp), cwd=short_tmp)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert f"minfds = {nr_open + 1}" in out and "RLIMIT_NOFILE" in out, out
    assert "ulimit -n" in out and "Traceback" not in out


def test_minfds_and_minprocs_raise_low_soft_limits(short_tmp: Path) -> None:
    """A low soft limit under a higher hard one is raised (no privilege needed)."""
    ini = _ini(short_tmp, "minfds = 4096\nminprocs = 5000")

    def low_limits() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 8192))
        resource.setrlimit(resource.RLIMIT_NPROC, (300, 10000))

    log = (short_tmp / "circusd.log").open("wb")
    proc = subprocess.Popen([*CIRCUSD, str(ini)], stdout=log, stderr=subprocess.STDOUT,
                            env=_env(short_tmp), cwd=short_tmp, preexec_fn=low_limits,
                            start_new_session=True)
    try:
        wait_until(lambda: (short_tmp / "c").exists(), what="circusd to bind")
        nofile = _limits(proc.pid, "Max open files")
        nproc = _limits(proc.pid, "Max processes")
        assert int(nofile[0]) >= 4096 and int(nproc[0]) >= 5000, (nofile, nproc)
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
