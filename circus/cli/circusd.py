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
import logging
import os
import resource
import sys
from typing import Any

from circus import __version__, descriptors
from circus.errors import ConfigError, OptionError

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


def daemonize() -> None:
    """Detach: fork, setsid, fork again; stdio to /dev/null. The cwd is kept."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    if devnull > 2:
        os.close(devnull)


class Pidfile:
    def __init__(self, path: str) -> None:
        self.path = path

    def create(self) -> None:
        try:
            with open(self.path) as fh:
                old = int(fh.read().strip() or 0)
        except (OSError, ValueError):
            old = 0
        if old and old != os.getpid():
            try:
                os.kill(old, 0)
            except ProcessLookupError:
                pass
            except PermissionError:
                raise RuntimeError(f"pidfile {self.path} holds the live pid {old}") from None
            else:
                raise RuntimeError(f"pidfile {self.path} holds the live pid {old}")
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


def build_arbiter(config: Any) -> Any:
    """An Arbiter for a loaded Config; watcher errors become ConfigErrors with file:line."""
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
    return Arbiter(
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
        umask=c.get("umask"),
        statsd=c.get("statsd", False),
        debug=c.get("debug", False),
        config_file=config.path,
        allow_unauthenticated_remote=c.get("allow_unauthenticated_remote", False),
        state_file=c.get("state_file"),
    )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.config is None:
        parser().print_usage()
        return 0
    if args.check:
        from circus.cli.check import main as check

        return check(args.config)
    from circus.config import load_config
    from circus.logs import StartupBuffer, configure

    # What the loader logs (warnings about the file) is kept until the log's destination
    # is known, then written there; if the file is refused it goes to stderr.
    startup = StartupBuffer()
    try:
        config = load_config(args.config)
        arbiter = build_arbiter(config)
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
    if args.daemonize:
        daemonize()
    for name, option in (("RLIMIT_NOFILE", "minfds"), ("RLIMIT_NPROC", "minprocs")):
        problem = ensure_limit(name, option, c.get(option, 0))
        if problem is not None:
            log.error("circusd cannot start: %s", problem)
            return 1
    limit = raise_nofile_limit()
    log.debug("open files limit: %d", limit)
    pidfile = Pidfile(args.pidfile or c["pidfile"]) if (args.pidfile or c.get("pidfile")) else None
    if pidfile is not None:
        try:
            pidfile.create()
        except (RuntimeError, OSError) as exc:
            log.error("%s", exc)
            return 1
    try:
        asyncio.run(arbiter.run())
    except OSError as exc:
        log.error("circusd cannot start: %s", exc)
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        if pidfile is not None:
            pidfile.remove()
    status: int = arbiter.exit_status  # 0, or that of an essential watcher that ended
    log.info("circusd stopped (exit status %d)", status)
    return status


if __name__ == "__main__":
    sys.exit(main())
