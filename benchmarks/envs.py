"""Virtual environments for the anchors: Circus 0.19 and supervisord 4.3, each in its own.

They are created once under ``.bench-cache/`` (git-ignored) and reused; a marker file records
the requirement a venv was built for, so changing a pin rebuilds it. Run as a script to prepare
them ahead of a benchmark: ``python -m benchmarks.envs``.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".bench-cache"
PYTHON = "python3.11"


@dataclass(frozen=True)
class AnchorEnv:
    """One pinned package in its own virtual environment."""

    name: str  # folder under the cache
    requirement: str  # what pip installs
    scripts: tuple[str, ...]  # console scripts the benchmarks run

    @property
    def path(self) -> Path:
        return CACHE / self.name

    @property
    def marker(self) -> Path:
        return self.path / ".bench-requirement"

    def bin(self, script: str) -> Path:
        return self.path / "bin" / script

    def ready(self) -> bool:
        """True if the venv exists, was built for this requirement and has its scripts."""
        return (
            self.bin("python").exists()
            and self.marker.exists()
            and self.marker.read_text().strip() == self.requirement
            and all(self.bin(s).exists() for s in self.scripts)
        )

    def ensure(self, log: bool = True) -> Path:
        """Create the venv and install the requirement unless that was already done.

        Builds hold ``.bench-cache/<name>.lock`` (as the interop tests do for the Circus 0.19
        venv), so two runs never build, or delete, the same venv at once.
        """
        CACHE.mkdir(exist_ok=True)
        with open(CACHE / f"{self.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not self.ready():
                self._build(log)
        return self.path

    def _build(self, log: bool) -> None:
        if self.path.exists():
            shutil.rmtree(self.path)
        python = shutil.which(PYTHON) or sys.executable
        if log:
            print(f"[envs] creating {self.path} with {self.requirement}", file=sys.stderr)
        subprocess.run([python, "-m", "venv", str(self.path)], check=True)
        subprocess.run(
            [str(self.bin("python")), "-m", "pip", "install", "--quiet", self.requirement],
            check=True,
        )
        self.marker.write_text(self.requirement + "\n")

    def version(self) -> str:
        """The installed version of the pinned distribution."""
        dist = self.requirement.split("==")[0]
        out = subprocess.run(
            [
                str(self.bin("python")),
                "-c",
                f"import importlib.metadata as m; print(m.version({dist!r}))",
            ],
            capture_output=True,
            text=True,
            check=False,
            cwd="/",  # not the checkout, whose own circus metadata would be found first
            env={k: v for k, v in os.environ.items() if not k.startswith("PYTHON")},
        )
        return out.stdout.strip() or "unknown"


CIRCUS019 = AnchorEnv("venv-circus019", "circus==0.19.0", ("circusd", "circusctl"))
SUPERVISOR = AnchorEnv("venv-supervisor", "supervisor==4.3.0", ("supervisord", "supervisorctl"))
ANCHORS = {"circus019": CIRCUS019, "supervisord": SUPERVISOR}


def main() -> int:
    for env in ANCHORS.values():
        env.ensure()
        print(f"{env.name}: {env.requirement} -> {env.version()} at {env.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
