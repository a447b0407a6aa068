"""circusd: run the watchers of a Circus configuration file and keep them alive.

Exit status: 0 after a normal quit (the quit command, SIGTERM, SIGINT, SIGQUIT); the
status of an ``essential`` watcher that stopped for good (128 + N if its last process was
killed by signal N; 1 if it stopped without a process exit, e.g. spawns failed); 78
(EX_CONFIG) when the configuration cannot be used, so a service manager does not
restart-loop on it; 1 when circusd cannot start for another reason (an endpoint in use, a
live pidfile).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import os
import resource
import select
import sys
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from circus import __version__, descriptors
from circus.curve import SERVER_OPTIONS
from circus.errors import ConfigError, OptionError
from circus.kernel import read_stat
from circus.quietgc import QuietCollector
from circus.sdnotify import ServiceNotifier, counts

if TYPE_CHECKING:
    from circus.arbiter import Arbiter

log = logging.getLogger("circus")

EX_CONFIG = 78


def raise_nofile_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (each child costs up to 2 fds);
    children get the soft limit back (circus/descriptors.py)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            descriptors.started_soft_nofile = soft
            return hard
    return soft


# How to raise each limit, for the message when it cannot be had.
_HOW = {
    "RLIMIT_NOFILE": "LimitNOFILE= in the systemd unit, `ulimit -n` in the shell, or "
                     "--ulimit nofile= for a container",
    "RLIMIT_NPROC": "LimitNPROC= in the systemd unit, `ulimit -u` in the shell, or "
                    "--ulimit nproc= for a container",
}


def ensure_limit(name: str, option: str, wanted: int) -> str | None:
    """Raise the soft (and, when allowed, hard) limit *name* to at least *wanted*, as
    supervisord's ``minfds``/``minprocs`` do. None when it holds; otherwise why not."""
    which = getattr(resource, name)
    soft, hard = resource.getrlimit(which)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return None
    new_hard = hard if hard == resource.RLIM_INFINITY or hard >= wanted else wanted
    try:
        resource.setrlimit(which, (wanted, new_hard))
    except (ValueError, OSError) as exc:
        have = "unlimited" if hard == resource.RLIM_INFINITY else str(hard)
        return (f"[circus] {option} = {wanted} needs {name} of at least {wanted}, but it is "
                f"{soft} (hard limit {have}) and cannot be raised ({exc}); lower {option} or "
                f"raise the limit: {_HOW[name]}")
    return None


# How long the command that launched ``--daemon`` waits for the daemon to be up (systemd's
# default start timeout): stopping what a crashed circusd left, binding, starting the
# watchers (warmup_delay, hooks, depends_on) and their readiness happen within it.
READY_TIMEOUT = 90.0


class StartReport:
    """How a start ends, told to whoever waits for it.

    With ``--daemon`` the launching command stays on the terminal until the daemon writes
    on a pipe ``pid N`` once detached, then ``ready`` (sockets bound, watchers ready) or
    ``failed STATUS REASON``; it prints the reason and exits with STATUS, the status of the
    same failure in the foreground. Before the fork (*terminal*) a failure is printed
    directly. In the foreground the log alone hears of it, as before.
    """

    def __init__(self, fd: int | None = None, *, terminal: bool = False) -> None:
        self._fd = fd
        self._terminal = terminal
        self.in_daemon = fd is not None  # stderr is /dev/null: only the log sees a traceback
        self.is_ready = False

    def _send(self, line: str) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):  # the launching command is gone: nobody listens
            os.write(self._fd, line.replace("\n", " ").encode(errors="replace") + b"\n")

    def _close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def detached(self) -> None:
        self._send(f"pid {os.getpid()}")

    def ready(self) -> None:
        self.is_ready = True
        self._send("ready")
        self._close()

    def failed(self, status: int, reason: str) -> int:
        """Log *reason*, tell the launching command; return *status* for main()."""
        if self.is_ready:
            log.error("circusd failed: %s", reason)
            return status
        log.error("circusd cannot start: %s", reason)
        if self._fd is not None:
            self._send(f"failed {status} {reason}")
            self._close()
        elif self._terminal:
            print(f"circusd: cannot start: {reason}", file=sys.stderr)
        return status


def wait_for_daemon(fd: int, timeout: float) -> int:
    """In the launching command: read the daemon's report from *fd* for at most *timeout*
    seconds; print a failure on stderr. Returns the exit status of the launching command."""
    deadline = time.monotonic() + timeout
    daemon = "the daemon"
    pending = b""
    try:
        while True:
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                word, _, rest = line.decode(errors="replace").partition(" ")
                if word == "pid":
                    daemon = f"the daemon (pid {rest})"
                elif word == "ready":
                    return 0
                elif word == "failed":
                    status, _, reason = rest.partition(" ")
                    print(f"circusd: cannot start: {reason}", file=sys.stderr)
                    return int(status) if status.isdigit() else 1
            left = deadline - time.monotonic()
            if left <= 0:
                print(f"circusd: {daemon} is not up after {timeout:g}s; it goes on starting "
                      f"in the background (see its log)", file=sys.stderr)
                return 1
            if select.select([fd], [], [], left)[0]:
                chunk = os.read(fd, 4096)
                if not chunk:
                    print(f"circusd: {daemon} exited before it was up (see its log)",
                          file=sys.stderr)
                    return 1
                pending += chunk
    except KeyboardInterrupt:
        print(f"circusd: interrupted; {daemon} goes on starting in the background",
              file=sys.stderr)
        return 130
    finally:
        os.close(fd)


def detach(timeout: float = READY_TIMEOUT) -> StartReport | int:
    """Fork the daemon: fork, setsid, fork again (the daemon is not a session leader),
    stdio to /dev/null; the cwd is kept.

    Returns, in the launching command, its exit status once the daemon has reported (see
    :func:`wait_for_daemon`); in the daemon, the :class:`StartReport` to report through.
    """
    read_fd, write_fd = os.pipe()  # not inherited by what the daemon spawns (O_CLOEXEC)
    try:
        first = os.fork()
    except OSError:
        os.close(read_fd)
        os.close(write_fd)
        raise
    if first > 0:
        os.close(write_fd)
        os.waitpid(first, 0)  # it exits as soon as it has forked the daemon
        return wait_for_daemon(read_fd, timeout)
    os.close(read_fd)
    report = StartReport(write_fd)
    try:
        os.setsid()
        if os.fork() > 0:
            os._exit(0)
    except OSError as exc:
        os._exit(report.failed(1, f"cannot detach: {describe(exc)}"))
    report.detached()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    if devnull > 2:
        os.close(devnull)
    return report


class Pidfile:
    """The file that names circusd's pid; refused while it names another live process."""

    def __init__(self, path: str) -> None:
        self.path = path

    def holder(self) -> int | None:
        """The pid the file names, if that process is alive and is not this one."""
        try:
            with open(self.path) as fh:
                old = int(fh.read().strip() or 0)
        except (OSError, ValueError):
            return None
        if old <= 0 or old == os.getpid():
            return None
        try:
            os.kill(old, 0)
        except ProcessLookupError:
            return None  # stale: overwritten
        except PermissionError:
            pass  # alive, another user's
        stat = read_stat(old)
        if stat is not None and stat.state == "Z":
            return None  # a circusd killed a moment ago, not reaped yet: dead
        return old

    def refusal(self, pid: int) -> str:
        return (f"pidfile {self.path} holds the live pid {pid}: stop that circusd first, "
                f"or remove the file if pid {pid} is not one")

    def create(self) -> None:
        if (old := self.holder()) is not None:
            raise RuntimeError(self.refusal(old))
        with open(self.path, "w") as fh:
            fh.write(f"{os.getpid()}\n")
        os.chmod(self.path, 0o644)

    def remove(self) -> None:
        try:
            with open(self.path) as fh:
                if int(fh.read().strip() or 0) != os.getpid():
                    return
            os.unlink(self.path)
        except (OSError, ValueError):
            pass


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="circusd", description="Run the watchers of a Circus configuration file."
    )
    p.add_argument("config", nargs="?", help="the configuration file")
    p.add_argument("--log-level", dest="loglevel", type=str.lower,
                   choices=("critical", "error", "warning", "info", "debug"),
                   help="log level (default: the file's loglevel, else info)")
    p.add_argument("--log-output", dest="logoutput",
                   help="'-' (stdout), 'stderr', a file, or syslog://host:port?facility")
    p.add_argument("--logger-config", dest="loggerconfig",
                   help="a logging config file (.ini, .json, .yaml)")
    p.add_argument("--daemon", dest="daemonize", action="store_true",
                   help="run in the background")
    p.add_argument("--pidfile", help="write circusd's pid to this file")
    p.add_argument("--check", action="store_true",
                   help="check the file and the limits it needs (processes, open files) "
                        "against this machine's, print every problem, and exit: 0 when "
                        "nothing is wrong, 1 with warnings, 78 when circusd would refuse it")
    p.add_argument("--version", action="version", version=__version__)
    return p


def build_arbiter(config: Any, notifier: ServiceNotifier | None = None) -> Any:
    """An Arbiter for a loaded Config; watcher errors become ConfigErrors with file:line.

    With *notifier* (circusd under systemd) the arbiter tells it of reloads and the stop.
    """
    from circus.arbiter import Arbiter, watcher_from_config

    watchers = []
    for conf in config.watchers:
        try:
            watchers.append(watcher_from_config(conf))
        except OptionError as exc:
            section = f"watcher:{conf['name']}"
            path, line = config.location(section, exc.option) or (config.path, None)
            message = exc.reason
            raise ConfigError(message, path=path, line=line, section=section,
                              option=exc.option) from exc
        except (ValueError, ImportError, OSError, TypeError) as exc:
            section = f"watcher:{conf['name']}"
            path, line = config.location(section) or (config.path, None)
            raise ConfigError(str(exc), path=path, line=line, section=section) from exc
    from circus.plugins.launch import check_plugin

    for plugin in config.plugins:  # the class must import, its options must parse
        try:
            check_plugin(plugin)
        except OptionError as exc:
            section = f"plugin:{plugin['name']}"
            path, line = config.location(section, exc.option) or (config.path, None)
            message = exc.reason
            raise ConfigError(message, path=path, line=line, section=section,
                              option=exc.option) from exc
    c = config.circus
    arbiter: Any = (Arbiter if notifier is None else notifying_arbiter())(
        watchers,
        c["endpoint"],
        c["pubsub_endpoint"],
        check_delay=c["check_delay"],
        stats_endpoint=c.get("stats_endpoint"),
        plugins=config.plugins,
        sockets=config.sockets,
        warmup_delay=c["warmup_delay"],
        max_processes=c.get("max_processes"),
        multicast_endpoint=c.get("multicast_endpoint"),
        endpoint_owner=c.get("endpoint_owner"),
        allow_users=c.get("allow_users"),
        allow_groups=c.get("allow_groups"),
        **{key: c[key] for key in SERVER_OPTIONS if c.get(key)},
        umask=c.get("umask"),
        statsd=c.get("statsd", False),
        prometheus_host=c.get("prometheus_host"),
        prometheus_port=c.get("prometheus_port"),
        debug=c.get("debug", False),
        config_file=config.path,
        allow_unauthenticated_remote=c.get("allow_unauthenticated_remote", False),
        state_file=c.get("state_file"),
        httpd=c.get("httpd", False),
        httpd_host=c.get("httpd_host", "localhost"),
        httpd_port=c.get("httpd_port", 8080),
        httpd_token_file=c.get("httpd_token_file"),
    )
    if notifier is not None:
        arbiter.notifier = notifier
    return arbiter


@functools.cache
def notifying_arbiter() -> type[Arbiter]:
    """The Arbiter class circusd runs when a service manager listens (``NOTIFY_SOCKET``).

    Made on first use, so that ``circusd --help`` does not import the arbiter. Its start is
    told through ``run(on_ready=...)`` (:func:`announce_ready`).
    """
    from circus.arbiter import Arbiter

    class NotifyingArbiter(Arbiter):
        """Tells the service manager of reloads (``RELOADING=1``, then ``READY=1``) and of
        the stop (``STOPPING=1``), whoever asked: a command, a signal, an essential
        watcher that ended."""

        notifier: ServiceNotifier

        @contextlib.asynccontextmanager
        async def _telling_reload(self) -> AsyncIterator[None]:
            self.notifier.reloading()
            try:
                yield
            finally:  # applied or refused, circusd runs on
                self.notifier.reloaded(counts(self.numwatchers(), self.numprocesses()))

        async def reload(self, graceful: bool = True, sequential: bool = False) -> None:
            async with self._telling_reload():  # SIGHUP, `reload` of every watcher
                await super().reload(graceful=graceful, sequential=sequential)

        async def reload_config(self) -> dict[str, list[str]]:
            async with self._telling_reload():
                return await super().reload_config()

        async def restart(self) -> None:
            async with self._telling_reload():  # the file is read again, as by reloadconfig
                await super().restart()

        def request_quit(self) -> None:
            self.notifier.stopping()
            super().request_quit()

    return NotifyingArbiter


def announce_ready(arbiter: Any, report: StartReport,
                   notifier: ServiceNotifier | None) -> None:
    """Called once the autostart watchers have started: once each of them is also ready,
    or will not be, circusd is up (:func:`when_ready`)."""
    arbiter.background(when_ready(arbiter, report, notifier), name="announce-ready")


async def when_ready(arbiter: Any, report: StartReport,
                     notifier: ServiceNotifier | None) -> None:
    """Wait until every watcher started is ready (its ``ready`` check passed, a
    ``respawn = false`` one ended with status 0) or will not be (``fatal``, left stopped
    by its ``depends_on``...), then tell whoever waits for circusd: the command that
    launched ``--daemon``, the service manager (``READY=1``). What is not ready is
    logged and named in ``STATUS=``; circusd is up all the same, as it serves commands."""
    from circus.startorder import of

    problems = await of(arbiter).settle()
    status = counts(arbiter.numwatchers(), arbiter.numprocesses())
    if problems:
        log.warning("circusd is up, but not every watcher is ready: %s",
                    "; ".join(problems.values()))
        status += "; not ready: " + "; ".join(problems.values())
    report.ready()
    if notifier is not None:
        notifier.ready(status)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.config is None:  # a usage error, as argparse's own: exit 2, on stderr
        parser().print_usage(sys.stderr)
        print("circusd: a configuration file is needed (see circusd --help)", file=sys.stderr)
        return 2
    if args.check:
        from circus.cli.check import main as check

        return check(args.config)
    from circus.config import load_config
    from circus.logs import StartupBuffer, configure

    # What the loader logs (warnings about the file) is kept until the log's destination
    # is known, then written there; if the file is refused it goes to stderr.
    startup = StartupBuffer()
    # Taken out of the environment before anything is spawned (circus/sdnotify.py).
    notifier = ServiceNotifier.from_environment()
    try:
        config = load_config(args.config)
        arbiter = build_arbiter(config, notifier)
    except ConfigError as exc:
        startup.flush_to_stderr()
        print(f"circusd: {exc}", file=sys.stderr)
        return EX_CONFIG
    c = config.circus
    try:
        configure(
            args.loglevel or c.get("loglevel") or "info",
            args.logoutput or c.get("logoutput") or "-",
            args.loggerconfig or c.get("loggerconfig"),
        )
    except Exception as exc:  # a logging config file can fail in many ways
        startup.flush_to_stderr()
        option = "loggerconfig" if (args.loggerconfig or c.get("loggerconfig")) else "logoutput"
        print(f"circusd: {config.path}: [circus] {option}: {exc!r}", file=sys.stderr)
        return EX_CONFIG
    startup.replay()
    # Whatever refuses the start from here on exits 1; with --daemon the launching command
    # prints the reason and exits with that status (StartReport).
    start = StartReport(terminal=args.daemonize)
    for name, option in (("RLIMIT_NOFILE", "minfds"), ("RLIMIT_NPROC", "minprocs")):
        problem = ensure_limit(name, option, c.get(option, 0))
        if problem is not None:
            return start.failed(1, problem)
    limit = raise_nofile_limit()  # before detaching: the daemon inherits the limits
    log.debug("open files limit: %d", limit)
    pidfile = Pidfile(args.pidfile or c["pidfile"]) if (args.pidfile or c.get("pidfile")) else None
    if args.daemonize:
        if pidfile is not None and (holder := pidfile.holder()) is not None:
            return start.failed(1, pidfile.refusal(holder))
        try:
            launched = detach()
        except OSError as exc:  # no fork: nothing was started
            return start.failed(1, f"cannot detach: {describe(exc)}")
        if isinstance(launched, int):
            return launched  # the launching command: the daemon is up, or why it is not
        start = launched
    try:
        return serve(arbiter, pidfile, start)
    except Exception as exc:
        if not start.in_daemon:
            raise
        # a bug: nobody sees the daemon's stderr, so the traceback goes to the log
        log.exception("circusd crashed")
        return start.failed(1, f"{exc!r} (the traceback is in the log)")


def describe(exc: OSError) -> str:
    """*exc* as one line without the ``[Errno N]`` prefix, naming its file if it has one."""
    if exc.strerror and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror}"
    return exc.strerror or str(exc)


def serve(arbiter: Any, pidfile: Pidfile | None, report: StartReport) -> int:
    """Write the pidfile, run *arbiter* until it quits; returns circusd's exit status."""
    if pidfile is not None:
        try:
            pidfile.create()
        except RuntimeError as exc:
            return report.failed(1, str(exc))
        except OSError as exc:
            return report.failed(1, f"cannot write the pidfile: {describe(exc)}")
    try:
        asyncio.run(run_arbiter(arbiter, report))
    except OSError as exc:
        return report.failed(1, describe(exc))
    except KeyboardInterrupt:
        pass
    finally:
        if pidfile is not None:
            pidfile.remove()
    status: int = arbiter.exit_status  # 0, or that of an essential watcher that ended
    log.info("circusd stopped (exit status %d)", status)
    return status


async def run_arbiter(arbiter: Any, report: StartReport) -> None:
    """Run *arbiter* until it quits; the service manager, if any, hears of it and gets its
    watchdog pings from this loop while it runs."""
    notifier: ServiceNotifier | None = getattr(arbiter, "notifier", None)
    if notifier is not None:
        notifier.start_watchdog()
    collector = QuietCollector()  # a full collection after a burst, not during the next
    collector.start()
    try:
        await arbiter.run(on_ready=functools.partial(announce_ready, arbiter, report,
                                                     notifier))
    finally:
        collector.close()
        if notifier is not None:
            notifier.close()


if __name__ == "__main__":
    sys.exit(main())
