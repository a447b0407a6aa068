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

import contextlib
import dataclasses
import heapq
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from circus.options import WATCHER_OPTIONS

__all__ = ["SpawnOptions", "SpawnSpec", "Spawner", "WorkerIds"]


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


class SpawnOptions(Protocol):
    """What the spawner reads of a watcher (its options, as the option table names them)."""

    name: str
    cmd: str
    args: str | Sequence[str] | None
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
        )
        return self._base

    def spec(self, wid: int, sockets: Mapping[str, int]) -> SpawnSpec:
        """The spec of the process with worker id *wid*, given the sockets' ``{name: fd}``."""
        base = self.base()
        opts = self._options
        cmd, args = self.command(wid, base.env, sockets)
        stdin_fd = sockets.get(opts.stdin_socket.lower()) if opts.stdin_socket else None
        return dataclasses.replace(
            base,
            cmd=cmd,
            args=args,
            shell_args=(self.expand(base.shell_args, wid, base.env, opts.sockets)
                        if base.shell_args else None),
            pass_fds=tuple(sockets.values()) if opts.use_sockets else (),
            stdin_fd=stdin_fd,
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


def apply_virtualenv(env: dict[str, str], venv: str, py_ver: str | None) -> None:
    """Put *venv*'s bin/ first on PATH and its site-packages on PYTHONPATH."""
    version = py_ver or f"{sys.version_info.major}.{sys.version_info.minor}"
    site = os.path.join(venv, "lib", f"python{version}", "site-packages")
    env["VIRTUAL_ENV"] = venv
    env["PATH"] = os.pathsep.join(
        [os.path.join(venv, "bin"), *filter(None, [env.get("PATH", os.defpath)])]
    )
    paths = [site]
    if os.path.isdir(site):
        for entry in sorted(os.listdir(site)):
            if entry.endswith(".pth"):
                with contextlib.suppress(OSError), open(os.path.join(site, entry)) as fh:
                    for line in fh:
                        line = line.strip()
                        if line and not line.startswith(("#", "import ")):
                            path = os.path.join(site, line)
                            if os.path.isdir(path):
                                paths.append(path)
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
