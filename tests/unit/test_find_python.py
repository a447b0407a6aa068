"""tools/find-python and the Makefile choose the interpreter .venv is built with.

Each case runs with a PATH holding only stand-in interpreters: shell scripts that answer
find-python's probe the way a Python of that version would ("3.12 yes": the version, and
whether venv and ensurepip are there). Only the Makefile is also given a real interpreter,
to see a whole `make -n test` expand with it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIND_PYTHON = ROOT / "tools" / "find-python"
MAKE = shutil.which("make")


def fake_pythons(where: Path, **versions: str) -> Path:
    """Stand-ins named like interpreters: fake_pythons(d, python3_12="3.12 yes")."""
    where.mkdir(exist_ok=True)
    for name, answer in versions.items():
        path = where / name.replace("_", ".")
        path.write_text(f"#!/bin/sh\necho '{answer}'\n")
        path.chmod(0o755)
    return where


def find_python(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(FIND_PYTHON), *args], capture_output=True, text=True,
                          timeout=30, env={"PATH": str(path)})


@pytest.mark.parametrize(("pythons", "chosen"), [
    ({"python3_12": "3.12 yes"}, "python3.12"),
    ({"python3_13": "3.13 yes"}, "python3.13"),
    ({"python3_11": "3.11 yes"}, "python3.11"),
    # python3 comes first when it is new enough...
    ({"python3": "3.13 yes", "python3_11": "3.11 yes"}, "python3"),
    # ...and is passed over when it is too old or cannot make a venv
    ({"python3": "3.10 yes", "python3_12": "3.12 yes"}, "python3.12"),
    ({"python3": "3.12 no", "python3_11": "3.11 yes"}, "python3.11"),
    # newest first among the versioned names
    ({"python3_11": "3.11 yes", "python3_13": "3.13 yes"}, "python3.13"),
])
def test_chooses_the_first_suitable_interpreter(tmp_path: Path, pythons: dict[str, str],
                                                chosen: str) -> None:
    res = find_python(fake_pythons(tmp_path / "bin", **pythons))
    assert (res.returncode, res.stdout, res.stderr) == (0, f"{chosen}\n", "")


@pytest.mark.parametrize(("pythons", "needed"), [
    ({"python3_10": "3.10 yes"},
     "Circus needs Python 3.11 or newer with venv; found only python3.10 (3.10) on PATH"),
    ({"python3": "3.10 yes"},
     "Circus needs Python 3.11 or newer with venv; found only python3 (3.10) on PATH"),
    ({}, "Circus needs Python 3.11 or newer with venv; none of python3 python3.13 "
         "python3.12 python3.11 is on PATH"),
    ({"python3_12": "3.12 no"},
     "Python 3.12 is here but cannot create virtual environments; install its venv "
     "module (Debian/Ubuntu: apt-get install python3.12-venv)"),
])
def test_one_line_naming_what_is_needed(tmp_path: Path, pythons: dict[str, str],
                                        needed: str) -> None:
    res = find_python(fake_pythons(tmp_path / "bin", **pythons))
    assert res.returncode == 1 and res.stderr == ""
    assert len(res.stdout.splitlines()) == 1
    assert res.stdout.startswith(needed), res.stdout


def test_an_interpreter_that_does_not_run_is_passed_over(tmp_path: Path) -> None:
    where = fake_pythons(tmp_path / "bin", python3_12="3.12 yes")
    broken = where / "python3"  # like a pyenv shim with no version selected
    broken.write_text("#!/bin/sh\necho 'pyenv: python3: command not found' >&2\nexit 127\n")
    broken.chmod(0o755)
    assert find_python(where).stdout == "python3.12\n"


@pytest.mark.parametrize(("given", "answer", "result", "status"), [
    ("python3.12", "3.12 yes", "python3.12", 0),
    ("python3.10", "3.10 yes",
     "PYTHON=python3.10 is Python 3.10; Circus needs Python 3.11 or newer", 1),
    ("python3.11", "3.11 no",
     "PYTHON=python3.11 (Python 3.11) cannot create virtual environments; install its "
     "venv module (Debian/Ubuntu: apt-get install python3.11-venv)", 1),
])
def test_a_given_interpreter_is_checked(tmp_path: Path, given: str, answer: str,
                                        result: str, status: int) -> None:
    where = fake_pythons(tmp_path / "bin", **{given.replace(".", "_"): answer},
                         python3="3.13 yes")
    res = find_python(where, given)
    assert (res.returncode, res.stdout) == (status, f"{result}\n")


def test_a_given_interpreter_that_is_not_there(tmp_path: Path) -> None:
    res = find_python(fake_pythons(tmp_path / "bin", python3="3.13 yes"), "python3.14")
    assert (res.returncode, res.stdout) == (
        1, "PYTHON=python3.14: no such command; give a Python 3.11 or newer\n")


def test_the_real_interpreter_running_these_tests_is_accepted() -> None:
    res = subprocess.run([str(FIND_PYTHON), sys.executable], capture_output=True, text=True,
                         timeout=30)
    assert (res.returncode, res.stdout) == (0, f"{sys.executable}\n")


# --------------------------------------------------------------------------- the Makefile


def make_n(path: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`make -n test` for a .venv that does not exist yet, with only *path* on PATH."""
    assert MAKE is not None
    return subprocess.run(
        [MAKE, "-n", "--no-print-directory", "-C", str(ROOT), f"VENV={tmp_path / 'venv'}",
         *args, "test"],
        capture_output=True, text=True, timeout=60,
        env={"PATH": str(path), "MAKEFLAGS": ""})


@pytest.mark.skipif(MAKE is None, reason="make is not installed")
@pytest.mark.parametrize("name", ["python3.12", "python3.13"])
def test_make_builds_the_venv_with_the_only_interpreter_there(tmp_path: Path,
                                                              name: str) -> None:
    where = tmp_path / "bin"
    where.mkdir()
    # the real interpreter under the name of the only one on PATH
    (where / name).symlink_to(sys.executable)
    res = make_n(where, tmp_path)
    assert res.returncode == 0, res.stderr
    first = res.stdout.splitlines()[0]
    assert first == f"{name} -m venv {tmp_path / 'venv'}"


@pytest.mark.skipif(MAKE is None, reason="make is not installed")
def test_make_stops_with_one_line_when_there_is_only_python3_10(tmp_path: Path) -> None:
    res = make_n(fake_pythons(tmp_path / "bin", python3_10="3.10 yes"), tmp_path)
    assert res.returncode == 2 and res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert "Circus needs Python 3.11 or newer with venv; found only python3.10 (3.10)" \
        in lines[0]


@pytest.mark.skipif(MAKE is None, reason="make is not installed")
def test_make_uses_python_when_given(tmp_path: Path) -> None:
    res = make_n(tmp_path, tmp_path, f"PYTHON={sys.executable}")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0] == f"{sys.executable} -m venv {tmp_path / 'venv'}"


@pytest.mark.skipif(MAKE is None, reason="make is not installed")
def test_make_clean_needs_no_python(tmp_path: Path) -> None:
    assert MAKE is not None
    res = subprocess.run([MAKE, "-n", "--no-print-directory", "-C", str(ROOT), "clean"],
                         capture_output=True, text=True, timeout=60,
                         env={"PATH": str(tmp_path)})
    assert res.returncode == 0 and res.stdout.startswith("rm -rf .venv"), res
