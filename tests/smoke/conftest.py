"""The package as users get it: the sdist and the wheel built with ``python -m build``,
the wheel installed with every extra into a fresh virtual environment outside the source
tree, and its console scripts run from there.

The build and the install happen once per test session, with the interpreter that runs
the tests. ``CIRCUS_SMOKE_VENV=/path/to/venv`` tests an existing install instead (one made
by ``pipx`` for instance); the sdist and wheel checks are then skipped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "circus"
BUILD_TIMEOUT = 600


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # the first test pays for the build and the install
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.timeout(BUILD_TIMEOUT + 120))


def console_scripts() -> dict[str, str]:
    """[project.scripts] of pyproject.toml: command name -> entry point."""
    with open(ROOT / "pyproject.toml", "rb") as fh:
        scripts: dict[str, str] = tomllib.load(fh)["project"]["scripts"]
    return scripts


def source_files() -> set[str]:
    """Every file of the circus package in the source tree, relative to circus/, except
    bytecode caches."""
    return {
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


@dataclass
class Installed:
    """Circus installed in its own virtual environment."""

    venv: Path
    workdir: Path  # a directory outside the source tree, the commands' cwd
    sdist: Path | None = None
    wheel: Path | None = None

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    @property
    def python(self) -> Path:
        return self.bin / "python"

    def env(self) -> dict[str, str]:
        """The environment of a user's shell: nothing pointing back at the source tree."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("PYTHON") and k != "VIRTUAL_ENV"}
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '')}"
        return env

    def run(self, command: str, *args: str,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run the installed console script *command* (or ``python``)."""
        return subprocess.run([str(self.bin / command), *args], capture_output=True,
                              text=True, timeout=timeout, cwd=self.workdir, env=self.env())

    def popen(self, command: str, *args: str, log: Path) -> subprocess.Popen[bytes]:
        """Start *command* in its own process group, its output going to *log*."""
        with open(log, "wb") as out:
            return subprocess.Popen([str(self.bin / command), *args], stdout=out,
                                    stderr=subprocess.STDOUT, cwd=self.workdir,
                                    env=self.env(), start_new_session=True)

    def python_value(self, code: str) -> str:
        """What *code* prints when run by the installed interpreter."""
        res = self.run("python", "-c", code)
        assert res.returncode == 0, res.stderr
        return res.stdout.strip()


def _step(args: list[str | Path], cwd: Path) -> str:
    res = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd,
                         timeout=BUILD_TIMEOUT)
    if res.returncode != 0:
        pytest.fail(f"{' '.join(map(str, args))} exited {res.returncode}:\n"
                    f"{res.stdout[-4000:]}\n{res.stderr[-4000:]}")
    return res.stdout


def wheel_extras(wheel: Path) -> list[str]:
    """The extras a wheel's metadata declares (Provides-Extra)."""
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = zf.read(name).decode()
    return [line.split(":", 1)[1].strip() for line in metadata.splitlines()
            if line.startswith("Provides-Extra:")]


# What a clean checkout does not have. A left-over *.egg-info/SOURCES.txt in particular
# would put files in the sdist that pyproject.toml no longer declares.
NOT_CHECKED_OUT_TOP = {".venv", "build", "dist", ".git", ".bench-cache", ".pytest_cache",
                       ".hypothesis", ".mypy_cache", ".ruff_cache"}
NOT_CHECKED_OUT = shutil.ignore_patterns("*.egg-info", "__pycache__", "*.pyc")


def not_checked_out(directory: str, names: list[str]) -> set[str]:
    ignored = set(NOT_CHECKED_OUT(directory, names))
    if Path(directory) == ROOT:
        ignored |= NOT_CHECKED_OUT_TOP & set(names)
    return ignored


def build_and_install(base: Path) -> Installed:
    dist = base / "dist"
    workdir = base / "work"
    workdir.mkdir()
    source = base / "source"
    shutil.copytree(ROOT, source, ignore=not_checked_out)
    # sdist first, then the wheel built from the unpacked sdist: what a pip install from
    # PyPI does with either
    _step([sys.executable, "-m", "build", "--outdir", dist, source], cwd=workdir)
    sdists = sorted(dist.glob("circus-*.tar.gz"))
    wheels = sorted(dist.glob("circus-*.whl"))
    assert len(sdists) == 1 and len(wheels) == 1, sorted(p.name for p in dist.iterdir())
    venv = base / "venv"
    _step([sys.executable, "-m", "venv", venv], cwd=workdir)
    extras = wheel_extras(wheels[0])
    spec = f"{wheels[0]}[{','.join(extras)}]" if extras else str(wheels[0])
    _step([venv / "bin" / "python", "-m", "pip", "install", "--quiet", spec], cwd=workdir)
    return Installed(venv=venv, workdir=workdir, sdist=sdists[0], wheel=wheels[0])


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    given = os.environ.get("CIRCUS_SMOKE_VENV")
    if given:
        venv = Path(given).resolve()
        if not (venv / "bin" / "python").exists():
            pytest.fail(f"CIRCUS_SMOKE_VENV={given}: no bin/python there")
        return Installed(venv=venv, workdir=tmp_path_factory.mktemp("work"))
    base = tmp_path_factory.mktemp("smoke")
    assert not base.resolve().is_relative_to(ROOT), "the install must be outside the tree"
    return build_and_install(base)


def sdist_files(sdist: Path) -> set[str]:
    """The files of the circus package in an sdist, relative to circus/."""
    with tarfile.open(sdist) as tf:
        names = [m.name for m in tf.getmembers() if m.isfile()]
    top = names[0].split("/", 1)[0]
    prefix = f"{top}/circus/"
    return {n[len(prefix):] for n in names if n.startswith(prefix)}


def wheel_files(wheel: Path) -> set[str]:
    """The files of the circus package in a wheel, relative to circus/."""
    with zipfile.ZipFile(wheel) as zf:
        return {n[len("circus/"):] for n in zf.namelist()
                if n.startswith("circus/") and not n.endswith("/")}


@dataclass
class Started:
    """A process a smoke test started in its own process group."""

    proc: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@pytest.fixture
def started() -> Iterator[list[Started]]:
    """Processes to stop at the end of the test: SIGTERM to the group each one leads (its
    children with it), then SIGKILL to the group after a deadline."""
    procs: list[Started] = []
    yield procs
    for item in reversed(procs):
        pgid = item.proc.pid
        if item.proc.poll() is None:
            os.killpg(pgid, signal.SIGTERM)
            try:
                item.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(pgid, signal.SIGKILL)
                item.proc.wait(timeout=30)
        # anything left in the group (a watcher's child) goes too
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
