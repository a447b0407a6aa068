"""The supervisors under test, one class each, behind one interface.

A target writes its own configuration for a :class:`Workload`, launches its daemon in a new
session (so the daemon and anything left in its process group can be killed by group), exposes
the daemon's pid for ``/proc`` checks, and knows how to ask its daemon to stop the workload and
to quit. ``ours`` and ``circus019`` share one class: same INI, same ZeroMQ client, different
``circusd`` binary.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from benchmarks import envs, procfs
from benchmarks.clients import CircusControl, ControlError, SupervisorControl

ROOT = envs.ROOT
#: Our daemon; BENCH_OURS_CIRCUSD points the benchmarks at another build.
OURS_CIRCUSD = Path(os.environ.get("BENCH_OURS_CIRCUSD", ROOT / ".venv" / "bin" / "circusd"))
FLOOR_SCRIPT = Path(__file__).resolve().parent / "floor.py"
WATCHER = "sleepers"
WRITER = "writer"
NOTIFIER = "notifier"
WATCHER_NAMES = {"sleepers": WATCHER, "writer": WRITER, "notify": NOTIFIER}
QUIT_TIMEOUT = 30.0


class TargetFailed(RuntimeError):
    """The daemon could not be started, died, or did not do what was asked in time."""


@dataclass
class Workload:
    """What the daemon is asked to run.

    ``sleepers``: *numprocesses* copies of *argv*, replaced when they die.
    ``writer``: one copy of *argv*, not replaced, whose standard output goes to *output*.
    ``notify``: *numprocesses* copies of *argv* under ``ready = notify`` (circus only).
    *options*: more lines for a circus watcher's section (``health``...), in this order.
    *circus*: more lines for the ``[circus]`` section of ours and Circus 0.19 (``statsd``...).
    """

    kind: str
    numprocesses: int
    argv: list[str]
    output: Path | None = None
    options: dict[str, str] = field(default_factory=dict)
    circus: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return WATCHER_NAMES[self.kind]

    @property
    def command_line(self) -> str:
        return " ".join(self.argv)

    def matcher(self) -> Callable[[list[bytes]], bool]:
        return procfs.argv_matcher(os.path.basename(self.argv[0]), self.argv[1:])


@dataclass
class Target(ABC):
    """One supervisor under test and the daemon it is running, if any."""

    key: ClassVar[str]
    label: ClassVar[str]
    #: Period of the daemon's own timer-driven housekeeping, in seconds: the respawn benchmark
    #: spreads its kills over several periods so that they fall at every phase of that timer.
    period: ClassVar[float]

    workdir: Path | None = None
    workload: Workload | None = None
    proc: subprocess.Popen[bytes] | None = None
    tracker: procfs.ChildTracker | None = None
    launched_at: float = 0.0
    _log: Any = field(default=None, repr=False)

    # -- description ------------------------------------------------------------------------
    def unavailable(self) -> str | None:
        """Why this target cannot run here, or None if it can."""
        return None

    @abstractmethod
    def version(self) -> str: ...

    @abstractmethod
    def config_note(self) -> str:
        """One line on the configuration used, for the report."""

    # -- lifecycle --------------------------------------------------------------------------
    @abstractmethod
    def launch_argv(self, workload: Workload, workdir: Path) -> list[str]:
        """Write the configuration for *workload* under *workdir*; return the daemon's argv."""

    def start(self, workload: Workload, workdir: Path) -> float:
        """Launch the daemon; return the ``time.perf_counter()`` taken just before launching."""
        self.workdir, self.workload = workdir, workload
        argv = self.launch_argv(workload, workdir)
        self._log = open(workdir / "daemon.log", "wb")  # noqa: SIM115 - closed in shutdown()
        cursor = procfs.last_pid()  # the daemon's children get pids handed out after this one
        self.launched_at = time.perf_counter()
        self.proc = subprocess.Popen(
            argv,
            env=daemon_environment(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=workdir,
        )
        self.tracker = procfs.ChildTracker(self.proc.pid, workload.matcher(), cursor)
        return self.launched_at

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def check_alive(self) -> None:
        """Raise :class:`TargetFailed` with the end of the daemon's log if it has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise TargetFailed(
                f"daemon exited with status {self.proc.returncode}: {self.log_tail()}"
            )

    def log_errors(self, lines: int = 1) -> str:
        """The first lines of the daemon's log that report an error, or its last lines."""
        if self.workdir is None:
            return ""
        try:
            text = (self.workdir / "daemon.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""
        errors = [line for line in text.splitlines() if "ERROR" in line or "Errno" in line]
        return " | ".join(errors[:lines]) if errors else self.log_tail(lines)

    def log_tail(self, lines: int = 5) -> str:
        if self.workdir is None:
            return ""
        try:
            text = (self.workdir / "daemon.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])

    @abstractmethod
    def connect(self, timeout: float) -> None:
        """Open the control client and wait until the daemon answers."""

    @abstractmethod
    def rtt_calls(self) -> dict[str, Callable[[], object]]:
        """The control calls whose round trip is measured, by the circus command they mirror."""

    @abstractmethod
    def request_stop(self, timeout: float) -> None:
        """Ask the daemon to stop the workload's processes; return once it has answered.

        The daemon is not asked to wait for the processes to end; *timeout* bounds the wait
        for its answer.
        """

    def close_client(self) -> None:  # noqa: B027 - a target without a client has nothing to close
        """Close the control client, if any."""

    def request_quit(self) -> None:
        """Ask the daemon to stop its children and exit (default: SIGTERM)."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGTERM)

    def shutdown(self) -> list[int]:
        """Quit the daemon (politely, then SIGKILL to its group) and kill leftover children.

        Returns the pids that had to be killed after the daemon was gone. Safe to call twice.
        """
        killed: list[int] = []
        if self.proc is not None:
            # Everything the daemon started that may outlive it: its children now (circusd-stats
            # and plugins included) and every workload child ever seen.
            # A pid seen earlier counts only if it still runs the workload's (unique) command:
            # it may have been recycled for someone else's process since.
            candidates = set(procfs.children_of(self.proc.pid))
            if self.tracker is not None:
                for pid in self.tracker.ever_seen - candidates:
                    argv = procfs.cmdline(pid)
                    if argv and self.tracker.match(argv):
                        candidates.add(pid)
            before_quit = procfs.snapshot(candidates)
            if self.proc.poll() is None:
                deadline = time.monotonic() + QUIT_TIMEOUT
                with contextlib.suppress(Exception):
                    self.request_quit()
                try:
                    self.proc.wait(max(1.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait()
            killed = procfs.kill_leftovers(before_quit)
            self.proc = None
        with contextlib.suppress(Exception):
            self.close_client()
        if self._log is not None:
            self._log.close()
            self._log = None
        return killed


#: The limits raised for every daemon (it inherits them from the runner), by /proc's name.
RAISED_LIMITS = {"nofile": resource.RLIMIT_NOFILE, "nproc": resource.RLIMIT_NPROC}


def raise_soft_limits() -> dict[str, tuple[int, int]]:
    """Raise this process's soft RLIMIT_NOFILE and RLIMIT_NPROC to their hard limits.

    Every daemon is launched from here and inherits them, so all of them start under the same
    limits, the most the machine allows without privileges, whether or not they would raise
    their own (ours raises its soft RLIMIT_NOFILE, supervisord to its ``minfds``, Circus 0.19
    none). Returns the limits now in force, (soft, hard), by name.
    """
    now = {}
    for name, which in RAISED_LIMITS.items():
        soft, hard = resource.getrlimit(which)
        if soft != hard:
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(which, (hard, hard))
        now[name] = resource.getrlimit(which)
    return now


def daemon_environment() -> dict[str, str]:
    """The runner's environment without what would make a daemon import the wrong code.

    A ``PYTHONPATH`` pointing at this checkout would make Circus 0.19's ``circusd`` import our
    ``circus`` package instead of its own.
    """
    # PYTHONDONTWRITEBYTECODE goes too: every daemon runs from compiled bytecode, as an
    # installed package does (see ensure_bytecode for ours).
    drop = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PYTHONSAFEPATH",
            "PYTHONDONTWRITEBYTECODE")
    return {k: v for k, v in os.environ.items() if k not in drop}


def ensure_bytecode() -> None:
    """Compile our package, as pip does for the anchors' installed packages.

    An editable install is never compiled by pip; without this, each start of our circusd
    would compile its modules from source while the anchors load theirs from .pyc files.
    """
    import compileall

    import circus

    compileall.compile_dir(os.path.dirname(circus.__file__), quiet=1)


def _circus_ini(workload: Workload, workdir: Path) -> str:
    """The same INI for ours and Circus 0.19: every option at its default but the endpoints."""
    lines = [
        "[circus]",
        f"endpoint = ipc://{workdir}/ctl",
        f"pubsub_endpoint = ipc://{workdir}/pub",
        "multicast_endpoint =",
        *(f"{key} = {value}" for key, value in workload.circus.items()),
        "",
        f"[watcher:{workload.name}]",
        f"cmd = {workload.command_line}",
        f"numprocesses = {workload.numprocesses}",
    ]
    if workload.kind == "writer":
        assert workload.output is not None
        lines += [
            "respawn = false",
            "stdout_stream.class = FileStream",
            f"stdout_stream.filename = {workload.output}",
        ]
    if workload.kind == "notify":
        lines.append("ready = notify")
    lines += [f"{key} = {value}" for key, value in workload.options.items()]
    return "\n".join(lines) + "\n"


@dataclass
class ZmqTarget(Target):
    """A daemon driven over the circus ZeroMQ protocol, by the one shared client."""

    client: CircusControl | None = None

    def connect(self, timeout: float) -> None:
        assert self.workdir is not None
        self.client = CircusControl(f"ipc://{self.workdir}/ctl")
        self.client.wait_ready(timeout)

    def rtt_calls(self) -> dict[str, Callable[[], object]]:
        client = self.client
        assert client is not None
        return {
            "status": lambda: client.call("status"),
            f"list {WATCHER}": lambda: client.call("list", name=WATCHER),
        }

    def request_stop(self, timeout: float) -> None:
        assert self.client is not None and self.workload is not None
        saved, self.client.timeout = self.client.timeout, timeout
        try:
            self.client.call("stop", name=self.workload.name)
        finally:
            self.client.timeout = saved

    def close_client(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def request_quit(self) -> None:
        """Send ``quit``, retrying while the daemon is busy; SIGTERM if that cannot be done.

        Circus 0.19 loses a SIGTERM that arrives while a command (start, stop) is still running
        and then never exits; its ``quit`` command answers "already running" instead, so a
        client retries, as 0.19's own clients do.
        """
        try:
            if self.client is None:
                self.connect(timeout=10.0)
            assert self.client is not None
            self.client.timeout = 5.0
            deadline = time.monotonic() + 15.0
            while True:
                try:
                    self.client.call("quit")
                    return
                except ControlError as exc:
                    if "already running" not in str(exc) or time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
        except Exception:
            super().request_quit()


@dataclass
class CircusTarget(ZmqTarget):
    """A circus ``circusd``; subclasses say which binary."""

    period: ClassVar[float] = 5.0  # check_delay's default in an INI file

    @property
    @abstractmethod
    def circusd(self) -> Path: ...

    def unavailable(self) -> str | None:
        if not self.circusd.exists():
            return f"{self.circusd} not found"
        return None

    def config_note(self) -> str:
        return (
            "INI with every option at its default (check_delay = 5) except ipc:// "
            "endpoints and `multicast_endpoint =` (off); the throughput watcher adds "
            "`respawn = false` and `stdout_stream.class = FileStream`"
        )

    def launch_argv(self, workload: Workload, workdir: Path) -> list[str]:
        ini = workdir / "circus.ini"
        ini.write_text(_circus_ini(workload, workdir))
        return [str(self.circusd), str(ini)]


@dataclass
class OursTarget(CircusTarget):
    key: ClassVar[str] = "ours"
    label: ClassVar[str] = "ours"

    @property
    def circusd(self) -> Path:
        return OURS_CIRCUSD

    def version(self) -> str:
        """``circus.__version__`` as the binary's interpreter sees it, and the git revision."""
        python = self.circusd.parent / "python"
        try:
            version = subprocess.run(
                [str(python), "-c", "import circus; print(circus.__version__)"],
                capture_output=True,
                text=True,
                check=False,
                cwd="/",
            ).stdout.strip()
        except OSError:
            version = ""

        def git(*args: str) -> str:
            done = subprocess.run(
                ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False
            )
            return done.stdout.strip()

        rev = git("rev-parse", "--short", "HEAD") or "?"
        if git("status", "--porcelain", "--", "circus"):
            rev += " + uncommitted changes"
        return f"{version or '?'} (git {rev})"


@dataclass
class Circus019Target(CircusTarget):
    key: ClassVar[str] = "circus019"
    label: ClassVar[str] = "Circus 0.19"

    @property
    def circusd(self) -> Path:
        return envs.CIRCUS019.bin("circusd")

    def version(self) -> str:
        return envs.CIRCUS019.version()


def _supervisor_conf(workload: Workload, workdir: Path) -> str:
    nofile_hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    # supervisord keeps three pipe ends per child; minfds makes it raise its own limit.
    minfds = max(1024, 3 * workload.numprocesses + 256)
    if nofile_hard != resource.RLIM_INFINITY:
        minfds = min(minfds, nofile_hard)
    lines = [
        "[unix_http_server]",
        f"file = {workdir}/supervisor.sock",
        "",
        "[supervisord]",
        "nodaemon = true",
        f"logfile = {workdir}/supervisord.log",
        f"pidfile = {workdir}/supervisord.pid",
        f"childlogdir = {workdir}",
        f"minfds = {minfds}",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl = unix://{workdir}/supervisor.sock",
        "",
        f"[program:{workload.name}]",
        f"command = {workload.command_line}",
        f"numprocs = {workload.numprocesses}",
        "process_name = %(program_name)s_%(process_num)d",
        "stderr_logfile = NONE",
    ]
    if workload.kind == "writer":
        assert workload.output is not None
        lines += [
            f"stdout_logfile = {workload.output}",
            "stdout_logfile_maxbytes = 0",
            "autorestart = false",
            "startsecs = 0",
        ]
    else:
        lines += ["stdout_logfile = NONE"]
    return "\n".join(lines) + "\n"


@dataclass
class SupervisorTarget(Target):
    key: ClassVar[str] = "supervisord"
    label: ClassVar[str] = "supervisord 4.3"
    period: ClassVar[float] = 1.0  # its main loop wakes at least once a second
    client: SupervisorControl | None = None

    def unavailable(self) -> str | None:
        if not envs.SUPERVISOR.bin("supervisord").exists():
            return "supervisord venv not built"
        return None

    def version(self) -> str:
        return envs.SUPERVISOR.version()

    def config_note(self) -> str:
        return (
            "`[program:x]` with `numprocs`, defaults otherwise (autorestart, startsecs = 1), "
            "`stdout_logfile = NONE` for the sleepers; the throughput program logs to "
            "`stdout_logfile` with `stdout_logfile_maxbytes = 0`, `autorestart = false`, "
            "`startsecs = 0`; minfds raised to fit N children"
        )

    def launch_argv(self, workload: Workload, workdir: Path) -> list[str]:
        conf = workdir / "supervisord.conf"
        conf.write_text(_supervisor_conf(workload, workdir))
        return [str(envs.SUPERVISOR.bin("supervisord")), "-n", "-c", str(conf)]

    def connect(self, timeout: float) -> None:
        assert self.workdir is not None
        self.client = SupervisorControl(f"{self.workdir}/supervisor.sock")
        self.client.wait_ready(timeout)

    def rtt_calls(self) -> dict[str, Callable[[], object]]:
        client = self.client
        assert client is not None
        return {
            "status": lambda: client.supervisor.getState(),
            f"list {WATCHER}": lambda: client.supervisor.getAllProcessInfo(),
        }

    def request_stop(self, timeout: float) -> None:
        assert self.client is not None and self.workload is not None
        self.client.supervisor.stopProcessGroup(self.workload.name, False)

    def close_client(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


@dataclass
class FloorTarget(ZmqTarget):
    key: ClassVar[str] = "floor"
    label: ClassVar[str] = "floor"
    period: ClassVar[float] = 0.0  # nothing timer-driven

    def version(self) -> str:
        return f"benchmarks/floor.py on Python {sys.version.split()[0]}"

    def config_note(self) -> str:
        return (
            "os.posix_spawn (setsid, stdin /dev/null) + one pidfd per child in an epoll "
            "loop, respawn at once; a ZeroMQ ROUTER answers status/list/stop; the "
            "throughput child writes straight to the file"
        )

    def launch_argv(self, workload: Workload, workdir: Path) -> list[str]:
        argv = [
            sys.executable,
            str(FLOOR_SCRIPT),
            "-n",
            str(workload.numprocesses),
            "--endpoint",
            f"ipc://{workdir}/ctl",
        ]
        if workload.kind == "writer":
            argv += ["--no-respawn", "--stdout", str(workload.output)]
        return [*argv, "--", *workload.argv]


TARGETS: dict[str, type[Target]] = {
    cls.key: cls for cls in (OursTarget, Circus019Target, SupervisorTarget, FloorTarget)
}
