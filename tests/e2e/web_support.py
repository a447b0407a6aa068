"""Shared by the web console's tests: a real circusd started once per module, and a real
circushttpd as a subprocess (the browser tests) or an aiohttp test server (the API tests)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import python_cmd, wait_until
from tests.e2e.conftest import CIRCUSD, Daemon

HTTPD = [sys.executable, "-m", "circus.cli.httpd"]
SLEEPER = python_cmd("import time; time.sleep(3600)")
# prints a line whenever it gets SIGUSR1, and "ready" at start
TALKER = python_cmd(
    "import os, signal, time; n = [0]; "
    "signal.signal(signal.SIGUSR1, lambda *_: (n.__setitem__(0, n[0] + 1), "
    "print('line', n[0], 'of', os.getpid(), flush=True))); "
    "print('ready', flush=True); [time.sleep(3600) for _ in iter(int, 1)]")


def start_daemon(where: Path, body: str, n: int = 0, circus_extra: str = "") -> Daemon:
    """circusd on ipc endpoints in *where* (a short path), ready to answer."""
    endpoint, pubsub = f"ipc://{where}/c{n}", f"ipc://{where}/p{n}"
    ini = where / f"circus{n}.ini"
    ini.write_text(f"[circus]\nendpoint = {endpoint}\npubsub_endpoint = {pubsub}\n"
                   f"{circus_extra}\n{body}")
    log = where / f"circusd{n}.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1", XDG_RUNTIME_DIR=str(where))
    with open(log, "wb") as out:
        proc = subprocess.Popen([*CIRCUSD, str(ini)], stdout=out, stderr=subprocess.STDOUT,
                                cwd=where, env=env)
    daemon = Daemon(proc, where, ini, endpoint, pubsub, log)
    daemon.wait_ready("circusd", timeout=30, interval=0.05)
    return daemon


@contextmanager
def short_dir() -> Iterator[Path]:
    import shutil

    path = Path(tempfile.mkdtemp(prefix="cw", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class Httpd:
    """circushttpd as a subprocess on a port it picked (``--port 0``)."""

    def __init__(self, where: Path, endpoints: list[str], *extra: str) -> None:
        self.token_file = where / "token"
        self.log = where / f"httpd{len(list(where.glob('httpd*.log')))}.log"
        args = [*HTTPD, "--port", "0", "--token-file", str(self.token_file)]
        for endpoint in endpoints:
            args += ["--endpoint", endpoint]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([*args, *extra], stdout=out, stderr=subprocess.STDOUT,
                                         cwd=where, start_new_session=True)
        match = wait_until(self._login_line, what="circushttpd to print its login URL",
                           timeout=30, detail=self.log_text)
        self.login_url = match.group(0)
        self.base = re.sub(r"/\?token=.*$", "", self.login_url)
        self.token = self.token_file.read_text().strip()

    def _login_line(self) -> re.Match[str] | None:
        if self.proc.poll() is not None:
            raise AssertionError(f"circushttpd exited with {self.proc.returncode}:\n"
                                 f"{self.log_text()}")
        return re.search(r"http://\S+/\?token=\S+", self.log_text())

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
