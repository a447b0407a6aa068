"""How to start one child: the :class:`SpawnSpec` value and the :class:`Spawner` that
builds it from a watcher's options.

A watcher's options change rarely and its processes are spawned often (a thousand at a
time), so the part of the spec that is the same for every process (the environment after
``copy_env``, ``copy_path``, ``env`` and ``virtualenv``, the user, the limits, …) is built
once, when the spawner is first asked after a change of options. Per spawn only the
worker id is substituted into ``cmd``, ``args`` and ``shell_args`` (``$(circus.wid)``,
``((circus.wid))`` and the other ``$(circus.*)`` values), and the descriptors of the shared
sockets are filled in: sockets can be bound after the watcher was created, and
``so_reuseport`` sockets are opened for each process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import errno
import heapq
import os
import pwd
import resource
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

from circus import descriptors, spawnserver
from circus.cgroup import joiner
from circus.children import CHILDREN
from circus.kernel import native_spawn_available, pdeathsig_setter, posix_spawn
from circus.options import WATCHER_OPTIONS, rlimit_resource
from circus.reaper import ORIGIN_VAR, new_origin
from circus.util.accounts import group_id
from circus.util.command import (
    apply_virtualenv,
    build_argv,
    explain,
    find_program,
    forget_programs,
    not_found,
    search_path,
)

__all__ = ["SpawnOptions", "SpawnSpec", "Spawner", "WorkerIds", "build_argv", "start_child"]

Pipes = dict[int, tuple[str, IO[bytes]]]


@dataclass(frozen=True, slots=True)
class SpawnSpec:
    """Everything that describes how to start one child process.

    ``cmd``, ``args`` and ``shell_args`` are final (already substituted). ``env`` is the
    child's complete environment (empty: none at all); ``rlimits`` maps ``nofile`` … to a
    limit (None: unlimited). The ``close_child_*`` options send a stream to
    ``/dev/null``; otherwise ``pipe_stdout``/``pipe_stderr`` decide whether circusd reads
    it through a pipe or the child inherits circusd's own descriptor.
    """

    cmd: str
    args: str | Sequence[str] | None = None
    shell: bool = False
    shell_args: str | None = None
    executable: str | None = None
    working_dir: str | None = None
    uid: int | str | None = None
    gid: int | str | None = None
    umask: int | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    rlimits: Mapping[str, int | None] = field(default_factory=dict)
    pass_fds: tuple[int, ...] = ()
    stdin_fd: int | None = None
    close_child_stdin: bool = True
    close_child_stdout: bool = False
    close_child_stderr: bool = False
    pipe_stdout: bool = False
    pipe_stderr: bool = False
    pdeathsig: int | None = None  # signal the child gets when circusd's loop thread dies
    cgroup_procs: int | None = None  # a cgroup.procs the child moves itself to (cgroup.py)
    # a piped stream's write end shared by the watcher's processes, instead of a pipe of
    # the process's own, when descriptors are short (circus/descriptors.py)
    shared_out: Mapping[str, int] = field(default_factory=dict)
    # (fd, n): the child gets *fd* as its descriptor n (``ready = fd:N``, s6's protocol)
    ready_fd: tuple[int, int] | None = None


class SpawnOptions(Protocol):
    """What the spawner reads of a watcher (its options, as the option table names them)."""

    name: str
    cmd: str
    args: str | list[str] | None
    shell: bool
    shell_args: str | None
    executable: str | None
    working_dir: str | None
    uid: int | str | None
    gid: int | str | None
    umask: int | None
    env: dict[str, str]
    rlimits: dict[str, int | None]
    copy_env: bool
    copy_path: bool
    virtualenv: str | None
    virtualenv_py_ver: str | None
    use_sockets: bool
    stdin_socket: str | None
    close_child_stdin: bool
    close_child_stdout: bool
    close_child_stderr: bool
    run_id: str  # the circusd run, for the CIRCUS_ORIGIN mark (circus/state.py)
    pdeathsig: int | None

    def cgroup_procs(self) -> int | None:  # the watcher's cgroup.procs, open; None: no cgroup
        ...

    @property
    def sockets(self) -> Mapping[str, int]:  # every shared socket, by name
        ...


class Spawner:
    """Builds the :class:`SpawnSpec` of each process of one watcher.

    Call :meth:`invalidate` whenever an option changes; the shared part of the spec is
    rebuilt at the next spawn.
    """

    def __init__(self, options: SpawnOptions) -> None:
        self._options = options
        self._env: dict[str, str] | None = None
        self._base: SpawnSpec | None = None

    def invalidate(self) -> None:
        """The watcher's options changed: forget the cached environment and spec."""
        self._env = None
        self._base = None

    def env(self) -> dict[str, str]:
        """The environment every process of the watcher starts with."""
        if self._env is not None:
            return self._env
        opts = self._options
        env: dict[str, str] = dict(os.environ) if opts.copy_env else {}
        if opts.copy_path:
            env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        env.update(opts.env)
        if opts.virtualenv:
            apply_virtualenv(env, opts.virtualenv, opts.virtualenv_py_ver)
        self._env = env
        return env

    def fill(self, text: str, wid: int) -> str:
        """*text* with the templates of worker *wid* filled in (``ready``, ``health``)."""
        return self.expand(text, wid, self.env(), self._options.sockets)

    def base(self) -> SpawnSpec:
        """The part of the spec that every process of the watcher shares (cached)."""
        if self._base is not None:
            return self._base
        opts = self._options
        self._base = SpawnSpec(
            cmd=opts.cmd,
            args=opts.args,
            shell=opts.shell,
            shell_args=opts.shell_args,
            executable=opts.executable,
            working_dir=opts.working_dir,
            uid=opts.uid,
            gid=opts.gid,
            umask=opts.umask,
            env=self.env(),
            rlimits=dict(opts.rlimits),
            close_child_stdin=opts.close_child_stdin,
            close_child_stdout=opts.close_child_stdout,
            close_child_stderr=opts.close_child_stderr,
            # Output is always read (unless sent to /dev/null): it feeds `tail`, and goes
            # on to the configured stream or to circusd's own stdout/stderr.
            pipe_stdout=True,
            pipe_stderr=True,
            pdeathsig=opts.pdeathsig,
        )
        return self._base

    def spec(self, wid: int, sockets: Mapping[str, int]) -> SpawnSpec:
        """The spec of the process with worker id *wid*, given the sockets' ``{name: fd}``."""
        base = self.base()
        opts = self._options
        cmd, args = self.command(wid, base.env, sockets)
        stdin_fd = sockets.get(opts.stdin_socket.lower()) if opts.stdin_socket else None
        # a mark of this spawn that descendants inherit: see circus/reaper.py
        env = dict(base.env)
        env[ORIGIN_VAR] = new_origin(opts.name, opts.run_id)
        return dataclasses.replace(
            base,
            env=env,
            cmd=cmd,
            args=args,
            shell_args=(self.expand(base.shell_args, wid, base.env, opts.sockets)
                        if base.shell_args else None),
            pass_fds=tuple(sockets.values()) if opts.use_sockets else (),
            stdin_fd=stdin_fd,
            cgroup_procs=opts.cgroup_procs(),
        )

    def command(self, wid: int, env: Mapping[str, str], sockets: Mapping[str, int]
                ) -> tuple[str, str | list[str] | None]:
        """``cmd`` and ``args`` with the ``$(circus.*)`` values of worker *wid* substituted."""
        opts = self._options
        cmd = self.expand(opts.cmd, wid, env, sockets)
        args = opts.args
        if isinstance(args, str):
            args = self.expand(args, wid, env, sockets)
        elif args is not None:
            args = [self.expand(str(a), wid, env, sockets) for a in args]
        return cmd, args

    def expand(self, text: str, wid: int, env: Mapping[str, str],
               sockets: Mapping[str, int]) -> str:
        if "$" not in text and "((" not in text:
            return text
        from circus.util.template import expand, expand_wid

        return expand_wid(expand(text, self._variables(wid, env, sockets)), wid)

    def _variables(self, wid: int, env: Mapping[str, str],
                   sockets: Mapping[str, int]) -> dict[str, object]:
        opts = self._options
        values: dict[str, object] = {"wid": wid, "name": opts.name}
        for key in WATCHER_OPTIONS:
            values[key] = getattr(opts, key)
        for key, value in env.items():
            values["env." + key.lower()] = value
        for name, fd in sockets.items():
            values["sockets." + name.lower()] = fd
        for key, limit in opts.rlimits.items():
            values["rlimits." + key.lower()] = limit
        return values


class WorkerIds:
    """Worker ids (``$(circus.wid)``): the lowest one not in use, freed ids first."""

    def __init__(self) -> None:
        self._free: list[int] = []  # a heap
        self._next = 0

    def take(self) -> int:
        if self._free:
            return heapq.heappop(self._free)
        self._next += 1
        return self._next

    def release(self, wid: int) -> None:
        heapq.heappush(self._free, wid)



# -- starting a child -------------------------------------------------------------------
#
# The usual path is one os.posix_spawn call. A spec that needs what posix_spawn cannot do
# (a user, group, umask, limits, a parent-death signal, a cgroup, another working
# directory, descriptors to pass on an old libc) goes through subprocess.Popen, without
# preexec_fn unless it sets rlimits, pdeathsig or cgroup, so CPython can still use vfork.

def _spawn_dup2_keeps_fd() -> bool:
    """Does posix_spawn's dup2 action with fd == newfd clear close-on-exec (POSIX 2024)?

    glibc does since 2.29; elsewhere (or unknown) the fds to pass go through Popen.
    """
    try:
        name, _, version = (os.confstr("CS_GNU_LIBC_VERSION") or "").partition(" ")
        major, minor = (int(x) for x in version.split(".")[:2])
    except (ValueError, OSError):
        return False
    return name == "glibc" and (major, minor) >= (2, 29)


# Shared sockets (pass_fds) keep the posix_spawn fast path where the libc allows it.
SPAWN_KEEPS_FDS = _spawn_dup2_keeps_fd()


def _program(spec: SpawnSpec) -> tuple[list[str], str, str, str]:
    """``(argv, program, what, name)``: what to run, the file exec runs, and the option
    and value that named it (for errors). Raises OSError when there is no such program."""
    argv = build_argv(spec.cmd, spec.args, shell=spec.shell, shell_args=spec.shell_args)
    # with shell = true, argv[0] is /bin/sh; `executable` applies to plain commands only
    what, name = ("executable", spec.executable) if spec.executable and not spec.shell \
        else ("cmd", argv[0])
    path = search_path(spec.env)
    program = find_program(name, path, spec.working_dir)
    if program is None:
        raise not_found(what, name, path)
    return argv, program, what, name


def _explained(exc: OSError, spec: SpawnSpec, program: str, what: str, name: str) -> OSError:
    if exc.errno == errno.ENOENT:
        forget_programs()  # the program may have moved
    return explain(exc, what=what, name=name, program=program, working_dir=spec.working_dir)


def start_child(spec: SpawnSpec) -> tuple[int, subprocess.Popen[bytes] | None, Pipes]:
    """Start the child *spec* describes, in a new session and process group.

    Returns its pid, the ``Popen`` object if it went through Popen, and the read ends of
    its piped streams, ``{fd: ("stdout" or "stderr", file)}``, non-blocking. Raises
    OSError (missing program, bad directory, …) or ValueError (empty command, no such
    user).
    """
    argv, program, what, name = _program(spec)
    popen: subprocess.Popen[bytes] | None = None
    try:
        if _needs_popen(spec):
            popen, pipes = _spawn_popen(spec, argv, program)
            pid = popen.pid
        else:
            pid, pipes = _spawn_posix(spec, argv, program)
    except OSError as exc:
        raise _explained(exc, spec, program, what, name) from None
    soft = descriptors.started_soft_nofile
    if soft is not None and "nofile" not in spec.rlimits:
        # circusd raised its own soft limit: the child gets the one circusd was given, so
        # that programs using select() keep working (just after exec: glibc's posix_spawn
        # has no way to set it before)
        with contextlib.suppress(OSError, ValueError):
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
    return pid, popen, pipes


_spawn_thread: concurrent.futures.ThreadPoolExecutor | None = None
_in_flight = 0  # spawns started by start_child_soon and not ended yet


async def start_child_soon(spec: SpawnSpec
                           ) -> tuple[int, subprocess.Popen[bytes] | None, Pipes]:
    """:func:`start_child`, leaving the event loop free: in circusd's spawning thread for a
    spawn that comes alone (a respawn), by the spawn server (:mod:`circus.spawnserver`)
    when others are in flight and *spec* takes the posix_spawn path.

    glibc's posix_spawn returns once the child has exec'd, which under load can take tens
    of milliseconds; made in the loop's thread, no death would be collected and no
    command answered meanwhile. One thread, so its spawns stay in the order they were
    asked. The server makes many spawns at once on the other core; for one alone, its
    hand-over (a request, a fork, the worker passed to circusd when the fork exits) costs
    more than the spawn itself: about 3.5 ms for a respawn against 2 ms in the thread.
    """
    global _in_flight
    server = spawnserver.current()
    _in_flight += 1
    try:
        if server is not None and _in_flight > 1 and not _needs_popen(spec):
            with contextlib.suppress(spawnserver.Unavailable):
                return await _spawn_served(server, spec)
        return await _spawn_in_thread(spec)
    finally:
        _in_flight -= 1


async def _spawn_in_thread(spec: SpawnSpec
                           ) -> tuple[int, subprocess.Popen[bytes] | None, Pipes]:
    global _spawn_thread
    if _spawn_thread is None:
        _spawn_thread = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="circus-spawn")
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_spawn_thread, start_child, spec)


async def _spawn_served(server: spawnserver.SpawnServer, spec: SpawnSpec
                        ) -> tuple[int, subprocess.Popen[bytes] | None, Pipes]:
    argv, program, what, name = _program(spec)
    actions, pipes = _posix_actions(spec)
    try:
        pid = await server.spawn(program, argv, dict(spec.env), actions)
    except OSError as exc:
        _close_pipes(pipes)
        raise _explained(exc, spec, program, what, name) from None
    except BaseException:
        _close_pipes(pipes)
        raise
    return pid, None, _read_ends(pipes)


def _posix_actions(spec: SpawnSpec) -> tuple[list[tuple[Any, ...]], list[tuple[str, int, int]]]:
    """The file actions of the posix_spawn path, and the pipes ``(name, read end, write
    end)`` made for them."""
    actions: list[tuple[Any, ...]] = []
    if spec.stdin_fd is not None:
        actions.append((os.POSIX_SPAWN_DUP2, spec.stdin_fd, 0))
    elif spec.close_child_stdin:
        actions.append((os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0))
    for fd in spec.pass_fds:  # clears close-on-exec on that fd in the child only
        actions.append((os.POSIX_SPAWN_DUP2, fd, fd))
    if spec.ready_fd is not None:
        actions.append((os.POSIX_SPAWN_DUP2, *spec.ready_fd))
    pipes: list[tuple[str, int, int]] = []
    for fd, name, close, pipe in (
        (1, "stdout", spec.close_child_stdout, spec.pipe_stdout),
        (2, "stderr", spec.close_child_stderr, spec.pipe_stderr),
    ):
        if close:
            actions.append((os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_WRONLY, 0))
        elif pipe and name in spec.shared_out:
            actions.append((os.POSIX_SPAWN_DUP2, spec.shared_out[name], fd))
        elif pipe:
            read_end, write_end = os.pipe2(os.O_CLOEXEC)
            pipes.append((name, read_end, write_end))
            actions.append((os.POSIX_SPAWN_DUP2, write_end, fd))
    return actions, pipes


def _close_pipes(pipes: list[tuple[str, int, int]]) -> None:
    for _, read_end, write_end in pipes:
        os.close(read_end)
        os.close(write_end)


def _read_ends(pipes: list[tuple[str, int, int]]) -> Pipes:
    """Once the child holds the write ends: ours closed, the read ends non-blocking."""
    result: Pipes = {}
    for name, read_end, write_end in pipes:
        os.close(write_end)
        os.set_blocking(read_end, False)
        # kept open for the life of the process; closed by Process._close_pipe
        result[read_end] = (name, open(read_end, "rb", buffering=0))  # noqa: SIM115
    return result


def _spawn_posix(spec: SpawnSpec, argv: list[str], path: str) -> tuple[int, Pipes]:
    """The fast path: one posix_spawn (vfork + exec in glibc), as cheap as it gets."""
    actions, pipes = _posix_actions(spec)
    try:
        with CHILDREN.spawning() as register:
            if native_spawn_available():  # lets go of the interpreter lock
                pid = posix_spawn(path, argv, spec.env, actions)
            else:
                pid = os.posix_spawn(path, argv, spec.env, file_actions=actions,
                                     setsid=True)
            register(pid)
    except BaseException:
        _close_pipes(pipes)
        raise
    return pid, _read_ends(pipes)

def _spawn_popen(spec: SpawnSpec, argv: list[str], program: str
                 ) -> tuple[subprocess.Popen[bytes], Pipes]:
    """Popen, for what posix_spawn cannot do (user, group, umask, limits, directory)."""
    user, group, extra_groups = _credentials(spec.uid, spec.gid)
    stdin: int | None
    if spec.stdin_fd is not None:
        stdin = spec.stdin_fd
    elif spec.close_child_stdin:
        stdin = subprocess.DEVNULL
    else:
        stdin = None
    stdout = _output_target(spec.close_child_stdout, spec.pipe_stdout,
                            spec.shared_out.get("stdout"))
    stderr = _output_target(spec.close_child_stderr, spec.pipe_stderr,
                            spec.shared_out.get("stderr"))
    kwargs: dict[str, Any] = {}
    # rlimits, pdeathsig and cgroup need code in the child between fork and exec: CPython then
    # cannot use vfork, so only watchers that ask for them pay for it.
    steps = []
    if spec.cgroup_procs is not None:  # first: nothing runs outside the cgroup
        steps.append(joiner(spec.cgroup_procs))
    if spec.rlimits:
        steps.append(_rlimit_setter(spec.rlimits))
    if spec.pdeathsig is not None:
        steps.append(pdeathsig_setter(spec.pdeathsig, os.getpid()))
    if spec.ready_fd is not None:
        # close_fds would close it again after preexec_fn: the child keeps only what is
        # inheritable instead (circusd's own descriptors are all close-on-exec)
        steps.append(_dup2_step(*spec.ready_fd))
        kwargs["close_fds"] = False
    if steps:
        kwargs["preexec_fn"] = steps[0] if len(steps) == 1 else _chain(steps)
    if spec.umask is not None:
        kwargs["umask"] = spec.umask
    with CHILDREN.spawning() as register:
        popen = _popen(argv, program, spec, stdin, stdout, stderr, user, group, extra_groups,
                       kwargs)
        register(popen.pid)
    result: Pipes = {}
    for name, pipe in (("stdout", popen.stdout), ("stderr", popen.stderr)):
        if pipe is not None:
            os.set_blocking(pipe.fileno(), False)
            result[pipe.fileno()] = (name, pipe)
    return popen, result


def _popen(argv: list[str], program: str, spec: SpawnSpec, stdin: int | None,
           stdout: int | None, stderr: int | None, user: int | None, group: int | None,
           extra_groups: list[int] | None, kwargs: dict[str, Any]
           ) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv,
        executable=program,  # found on the PATH start_child chose; argv[0] stays as written
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        cwd=spec.working_dir or None,
        env=spec.env,
        start_new_session=True,
        pass_fds=spec.pass_fds,
        user=user,
        group=group,
        extra_groups=extra_groups,
        **{"close_fds": True, **kwargs},
    )


def _dup2_step(fd: int, n: int) -> Callable[[], None]:
    def dup2() -> None:
        os.dup2(fd, n)  # inheritable

    return dup2


def _chain(steps: Sequence[Callable[[], None]]) -> Callable[[], None]:
    def run() -> None:
        for step in steps:
            step()

    return run


def _needs_popen(spec: SpawnSpec) -> bool:
    """posix_spawn cannot change user, directory, umask, limits, the parent-death
    signal or the cgroup (nor keep fds on an old libc)."""
    return bool(
        spec.rlimits
        or spec.pdeathsig is not None
        or spec.cgroup_procs is not None
        or spec.uid is not None
        or spec.gid is not None
        or spec.umask is not None
        or ((spec.pass_fds or spec.ready_fd) and not SPAWN_KEEPS_FDS)
        or (spec.working_dir and not _is_cwd(spec.working_dir))
    )


def _output_target(close: bool, pipe: bool, shared: int | None) -> int | None:
    if close:
        return subprocess.DEVNULL
    if pipe:
        return subprocess.PIPE if shared is None else shared
    return None


def _credentials(uid: int | str | None, gid: int | str | None
                 ) -> tuple[int | None, int | None, list[int] | None]:
    """Resolve uid/gid; with a uid and no gid the user's primary group is used."""
    if uid is None and gid is None:
        return None, None, None
    user: int | None = None
    group: int | None = None
    extra: list[int] | None = None
    if gid is not None:
        group = group_id(gid)
    if uid is not None:
        try:
            pw = pwd.getpwuid(uid) if isinstance(uid, int) else pwd.getpwnam(uid)
        except KeyError:
            if isinstance(uid, int):
                return uid, group, None
            raise ValueError(f"no user named {uid!r}") from None
        user = pw.pw_uid
        if group is None:
            group = pw.pw_gid
        if os.geteuid() == 0:
            extra = os.getgrouplist(pw.pw_name, group)
    return user, group, extra


def _is_cwd(path: str) -> bool:
    try:
        return os.path.samefile(path, ".")
    except OSError:
        return False  # let the spawn report the bad directory


def _rlimit_setter(rlimits: Mapping[str, int | None]) -> Callable[[], None]:
    """A preexec_fn applying *rlimits* (soft = hard = value; None = unlimited)."""
    limits = [(rlimit_resource(name), value) for name, value in rlimits.items()]

    def apply() -> None:
        for res, value in limits:
            limit = resource.RLIM_INFINITY if value is None else value
            try:
                resource.setrlimit(res, (limit, limit))
            except (ValueError, OSError):
                if value is not None:
                    raise
                # an unlimited value the kernel refuses (NOFILE): take the hard limit
                hard = resource.getrlimit(res)[1]
                resource.setrlimit(res, (hard, hard))

    return apply
