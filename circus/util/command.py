"""A watcher's command as the shell would take it: its words, its program, and what to say
when it cannot be started.

* ``cmd``, ``args`` and ``shell_args`` are split into words like a shell line
  (:func:`shlex.split`); text that cannot be split names the option.
* A program named without a slash is looked up on the ``PATH`` of the child's environment
  when that environment sets one, and on circusd's own ``PATH`` otherwise (supervisord does
  the same): a watcher with ``copy_env = false`` finds ``python`` where circusd's user
  does, not only in ``/bin:/usr/bin``.
* A spawn that fails says so naming the option at fault
  (``cmd 'pyhton': not found on PATH (/usr/bin:/bin)``,
  ``working_dir '/nope': no such directory``), as a :class:`SpawnError`.

Placeholders (``$(circus.wid)``, ``$(circus.env.X)``, ``((circus.sockets.web))``, ``$WID``)
are filled in at each spawn. :func:`knowable` tells what of a value can be checked before:
the worker id and socket descriptors are numbers, any other placeholder may hold anything.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "SpawnError",
    "apply_virtualenv",
    "build_argv",
    "explain",
    "find_program",
    "has_placeholder",
    "knowable",
    "not_found",
    "program_problem",
    "search_path",
    "split_words",
    "words_problem",
]

# placeholders whose value is always a number: the worker id, a socket's descriptor
_NUMERIC = re.compile(
    r"\$\(circus\.(?:wid|sockets\.[\w.\-]+)\)|\(\(circus\.(?:wid|sockets\.[\w.\-]+)\)\)"
    r"|\$WID(?![A-Za-z0-9_])",
    re.IGNORECASE,
)
_PLACEHOLDER = re.compile(r"\$\(circus\.[^)]*\)|\(\(circus\.[^)]*\)\)", re.IGNORECASE)


class SpawnError(OSError):
    """A spawn that failed, told in words naming the option at fault; ``errno`` is the
    system's, so a resource error is still known as one."""

    def __str__(self) -> str:
        return str(self.strerror)


class _NotFound(SpawnError, FileNotFoundError):
    pass


class _Denied(SpawnError, PermissionError):
    pass


class _NotADirectory(SpawnError, NotADirectoryError):
    pass


def _error(code: int | None, message: str) -> SpawnError:
    """A SpawnError that is also the OSError subclass its errno maps to."""
    kind = {errno.ENOENT: _NotFound, errno.EACCES: _Denied,
            errno.ENOTDIR: _NotADirectory}.get(code or 0, SpawnError)
    return kind(code, message)


def _reason(exc: ValueError) -> str:
    text = str(exc)
    if "closing quotation" in text:
        return "unbalanced quotes (no closing quotation)"
    if "escaped character" in text:
        return "ends with a lone backslash"
    return text[:1].lower() + text[1:]


def split_words(text: str, what: str) -> list[str]:
    """*text* split into words like a shell line; ValueError naming *what* otherwise."""
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise ValueError(f"{what} {text!r}: {_reason(exc)}") from None


def knowable(text: str, mark: str = "0") -> str | None:
    """*text* as far as it can be checked before a spawn: the numeric placeholders stand
    for a number (*mark*); None when another placeholder remains (its value may hold
    anything)."""
    masked = _NUMERIC.sub(mark, text)
    return None if _PLACEHOLDER.search(masked) else masked


def has_placeholder(text: str) -> bool:
    """Does *text* hold a ``$(circus.X)`` or ``((circus.X))`` placeholder?"""
    return _PLACEHOLDER.search(text) is not None


def words_problem(values: Mapping[str, Any]) -> tuple[str, str] | None:
    """The first of ``cmd``, ``args`` and ``shell_args`` (in a watcher's option values)
    that cannot be split into words, as ``(key, message)``; None if they all can.

    With ``shell = true`` the shell reads ``cmd`` itself; ``shell_args`` is read only then.
    """
    shell = bool(values.get("shell"))
    for key in ("cmd", "args", "shell_args"):
        value = values.get(key)
        if not isinstance(value, str) or (key == "cmd" and shell):
            continue
        if key == "shell_args" and not shell:
            continue
        text = knowable(value)
        if text is None:
            continue
        try:
            shlex.split(text)
        except ValueError as exc:
            return key, f"{value!r}: {_reason(exc)}"
    return None


def search_path(env: Mapping[str, str], own: Mapping[str, str] | None = None) -> str:
    """Where a program without a slash is looked for: the child's ``PATH`` (*env*) when
    it sets one, else circusd's own (*own*, ``os.environ`` by default)."""
    if "PATH" in env:
        return env["PATH"]
    return (os.environ if own is None else own).get("PATH", os.defpath)


def _executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


@functools.lru_cache(maxsize=256)
def _lookup(name: str, path: str, cwd: str) -> str:
    """Raises LookupError (not cached: the program may appear later)."""
    for directory in path.split(os.pathsep):
        candidate = os.path.join(directory or ".", name)
        if _executable(os.path.join(cwd, candidate)):
            return candidate
    raise LookupError(name)


def find_program(name: str, path: str, cwd: str | None = None) -> str | None:
    """The file exec would run for *name*: *name* itself when it holds a slash, else the
    first executable file called *name* in the directories of *path* (a relative directory
    is taken from *cwd*); None when there is none. Found names are cached."""
    if os.sep in name:
        return name
    try:
        return _lookup(name, path, cwd or "")
    except LookupError:
        return None


def forget_programs() -> None:
    """Forget the programs found so far (one may have moved)."""
    _lookup.cache_clear()


def not_found(what: str, name: str, path: str) -> SpawnError:
    return _error(errno.ENOENT, f"{what} {name!r}: not found on PATH ({path})")


def program_problem(name: str, path: str, cwd: str | None = None) -> str | None:
    """Why exec could not run *name* now (``not found on PATH (...)``, ``no such
    file``, ``not executable``), or None."""
    if os.sep not in name:
        return None if find_program(name, path, cwd) else f"not found on PATH ({path})"
    full = os.path.join(cwd or "", name)
    if not os.path.exists(full):
        return "no such file"
    if os.path.isdir(full):
        return "is a directory"
    if not os.access(full, os.X_OK):
        return "not executable (no x permission)"
    return None


_DIRECTORY_REASONS = {
    errno.ENOENT: "no such directory",
    errno.ENOTDIR: "not a directory",
    errno.EACCES: "permission denied",
}


def explain(exc: OSError, *, what: str, name: str, program: str,
            working_dir: str | None) -> OSError:
    """*exc*, raised by a spawn of *program* (*name* as the option *what* gives it), told
    as a :class:`SpawnError` naming ``working_dir`` or *what*; *exc* itself when it is
    about neither (a resource error such as ``EMFILE``)."""
    if isinstance(exc, SpawnError):
        return exc
    code = exc.errno
    if working_dir and exc.filename == working_dir:  # Popen's chdir failed
        reason = _DIRECTORY_REASONS.get(code or 0, str(exc.strerror))
        return _error(code, f"working_dir {working_dir!r}: {reason}")
    if code == errno.ENOENT:
        if os.path.exists(os.path.join(working_dir or "", program)):
            reason = "cannot be run: the interpreter its #! line names was not found"
        else:
            reason = "no such file"
    elif code == errno.EACCES:
        reason = "permission denied (not executable, or a directory on the way is closed)"
    elif code == errno.ENOEXEC:
        reason = "not a program this system can run (a script needs a #! line)"
    elif code in (errno.ENOTDIR, errno.EISDIR, errno.ELOOP, errno.ENAMETOOLONG,
                  errno.ETXTBSY):
        reason = str(exc.strerror).lower()
    else:
        return exc
    return _error(code, f"{what} {name!r}: {reason}")


def build_argv(
    cmd: str,
    args: str | Sequence[str] | None,
    *,
    shell: bool = False,
    shell_args: str | None = None,
) -> list[str]:
    """The argv to execute for *cmd* and *args* (already substituted)."""
    extra = (split_words(args, "args") if isinstance(args, str)
             else [str(a) for a in args or ()])
    if shell:
        line = " ".join([cmd, *(shlex.quote(a) for a in extra)]) if extra else cmd
        argv = ["/bin/sh", "-c", line]
        if shell_args:
            argv.extend(split_words(shell_args, "shell_args"))
        return argv
    argv = split_words(cmd, "cmd") + extra
    if not argv:
        raise ValueError("the command is empty")
    return argv


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
