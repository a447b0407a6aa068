"""Circus 0.19, installed from PyPI in its own virtual environment, against our programs.

The environment is the one the benchmarks use, ``.bench-cache/venv-circus019`` (a
``.bench-requirement`` file records what it was built for). It is created when missing,
under a file lock so that concurrent runs do not build it twice. If it cannot be built (no
network, pip failing) the tests fail: they are part of the contract, not optional.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Daemon
from tests.e2e.conftest import circusd as circusd  # noqa: F401  (our daemon, for comparisons)

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".bench-cache"
VENV = CACHE / "venv-circus019"
REQUIREMENT = "circus==0.19.0"
MARKER = VENV / ".bench-requirement"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "interop: drives Circus 0.19 (installed from PyPI) against our programs")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.interop)


def _ready() -> bool:
    return (
        MARKER.exists()
        and MARKER.read_text().strip() == REQUIREMENT
        and all((VENV / "bin" / s).exists() for s in ("python", "circusd", "circusctl"))
    )


def _build() -> None:
    if VENV.exists():
        shutil.rmtree(VENV)
    python = shutil.which("python3.11") or sys.executable
    steps = [
        [python, "-m", "venv", str(VENV)],
        [str(VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", REQUIREMENT],
    ]
    for step in steps:
        res = subprocess.run(step, capture_output=True, text=True, timeout=900)
        if res.returncode != 0:
            pytest.fail(f"cannot prepare Circus 0.19: {' '.join(step)} exited "
                        f"{res.returncode}:\n{res.stdout}\n{res.stderr}")
    MARKER.write_text(REQUIREMENT + "\n")


@pytest.fixture(scope="session")
def circus019() -> Path:
    """The bin/ directory of a virtual environment with ``circus==0.19.0``."""
    CACHE.mkdir(exist_ok=True)
    with open(CACHE / "venv-circus019.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _ready():
            _build()
    version = subprocess.run([str(VENV / "bin" / "circusd"), "--version"],
                             capture_output=True, text=True, timeout=60)
    assert version.stdout.strip() == "0.19.0", version
    return VENV / "bin"


def ctl019(bin_dir: Path, endpoint: str, *args: str,
           timeout: float = 10) -> subprocess.CompletedProcess[str]:
    """Circus 0.19's circusctl."""
    return subprocess.run(
        [str(bin_dir / "circusctl"), "--endpoint", endpoint, "--timeout", str(int(timeout)),
         *args],
        capture_output=True, text=True, timeout=timeout + 30,
    )


@pytest.fixture
def circusd019(circus019: Path, short_tmp: Path) -> Iterator[Callable[..., Daemon]]:
    """Start Circus 0.19's circusd on an INI body, as ``circusd`` does with ours."""
    daemons: list[Daemon] = []

    def start(body: str, circus_extra: str = "") -> Daemon:
        n = len(daemons)
        endpoint = f"ipc://{short_tmp}/o{n}"
        pubsub = f"ipc://{short_tmp}/q{n}"
        ini = short_tmp / f"circus019-{n}.ini"
        ini.write_text(
            f"[circus]\nendpoint = {endpoint}\npubsub_endpoint = {pubsub}\n"
            f"multicast_endpoint =\ncheck_delay = 0.2\n{circus_extra}\n{body}"
        )
        log = short_tmp / f"circusd019-{n}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        with open(log, "wb") as out:
            proc = subprocess.Popen([str(circus019 / "circusd"), str(ini)], stdout=out,
                                    stderr=subprocess.STDOUT, cwd=short_tmp, env=env)
        daemon = Daemon(proc, short_tmp, ini, endpoint, pubsub, log, circus019=True)
        daemons.append(daemon)
        daemon.wait_ready("circusd 0.19", timeout=30, interval=0.1)
        return daemon

    yield start
    for daemon in daemons:
        daemon.close()
