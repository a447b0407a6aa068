"""What the configuration loader checks beyond the type of each value, and how it says so.

* A key that is no option is kept (a watcher's, for plugins and hooks) or ignored, and
  said: a warning with ``did you mean 'numprocesses'?`` when it is close to an option, a
  quiet info line when it is close to none (a plugin's own ``flapping.attempts`` is not
  mentioned at all).
* A watcher's command is checked as far as it is known before a spawn (placeholders such
  as ``$(circus.wid)`` are filled in at each spawn, see :func:`circus.util.command.knowable`):
  a ``working_dir`` that is not a directory is an error; a program that cannot be found
  is a warning, since it may be installed before the watcher starts. Unbalanced quotes in
  ``cmd``, ``args`` or ``shell_args`` are refused by :func:`circus.keys.together`.
* A file with no watcher is warned about.

Every message has the form of a :class:`~circus.errors.ConfigError`,
``file:line: [section] option: message``. Warnings and infos are logged on the loader's
logger with their location in the record (``record.where``), which ``circusd --check``
uses to list them in file order.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any

from circus.errors import ConfigError
from circus.ini import Entry
from circus.keys import STREAMS
from circus.options import WATCHER_OPTIONS
from circus.util.command import (
    has_placeholder,
    knowable,
    program_problem,
    search_path,
    split_words,
)

__all__ = ["close_to", "command_problems", "no_watchers", "notice", "unknown_watcher_key"]

log = logging.getLogger("circus.config")

# what a watcher section takes besides the option table
WATCHER_KEYS = (*WATCHER_OPTIONS, "env")
_NAMESPACES = ("hooks", *STREAMS)  # the dotted keys circus itself reads


def notice(level: int, message: str, *, path: str, line: int | None,
           section: str | None = None, option: str | None = None) -> None:
    """Log *message* at *level* in the form ``file:line: [section] option: message``."""
    text = str(ConfigError(message, path=path, line=line or None, section=section,
                           option=option))
    log.log(level, "%s", text, extra={"where": (path, line or 0)})


def close_to(word: str, choices: Iterable[str], cutoff: float = 0.8) -> str | None:
    """The one of *choices* that *word* most likely misspells (case aside), or None."""
    folded = {choice.lower(): choice for choice in choices}
    match = difflib.get_close_matches(word.lower(), list(folded), n=1, cutoff=cutoff)
    if match:
        return folded[match[0]]
    # a word cut short: "warmup" for warmup_delay
    longer = [c for c in folded if len(word) >= 5 and c.startswith(word.lower())]
    return folded[longer[0]] if len(longer) == 1 else None


def unknown_watcher_key(key: str, entry: Entry, section: str) -> None:
    """Say that *key*, which no option or key family of a watcher takes, is kept as a
    custom key: a warning when it looks like a misspelt option, info otherwise."""
    def say(level: int, message: str) -> None:
        notice(level, message, path=entry.path, line=entry.line, section=section, option=key)

    kept = "(kept as a custom key, for plugins and hooks)"
    head, dot, tail = key.partition(".")
    if dot:  # a plugin's namespace (flapping.attempts), unless it misspells one of ours
        guess = close_to(head, _NAMESPACES)
        if guess is not None and guess != head:
            say(logging.WARNING, f"not a watcher option; did you mean '{guess}.{tail}'? {kept}")
        return
    guess = close_to(key, WATCHER_KEYS)
    if guess is not None:
        case = " (option names are case-sensitive)" if guess.lower() == key.lower() else ""
        say(logging.WARNING, f"not a watcher option{case}; did you mean '{guess}'? {kept}")
        return
    say(logging.INFO, "not a watcher option; kept as a custom key for plugins and hooks "
        "(no part of circus reads it)")


def no_watchers(path: str, empty: bool) -> None:
    what = "the file is empty" if empty else "no [watcher:NAME] section"
    notice(logging.WARNING, f"{what}: circusd would start with nothing to run "
           "(watchers can be added later with `circusctl add`)", path=path, line=None)


def command_problems(w: Mapping[str, Any], environ: Mapping[str, str]
                     ) -> tuple[tuple[str, str] | None, tuple[str, str] | None]:
    """What is wrong with the command of the watcher *w* (its loaded values) as far as it
    is known now: ``(error, warning)``, each None or ``(key, message)``.

    The error is a ``working_dir`` that is not a directory; the warning, a program that
    cannot be found (looked up as a spawn will: on the PATH of the environment the
    processes get, else on circusd's own, *environ*).
    """
    working_dir = w.get("working_dir")
    cwd: str | None = None
    if isinstance(working_dir, str) and not has_placeholder(working_dir):
        if not os.path.isdir(working_dir):
            why = "not a directory" if os.path.exists(working_dir) else "no such directory"
            return ("working_dir", f"{working_dir!r}: {why}"), None
        cwd = working_dir
    if w.get("shell"):
        return None, None  # /bin/sh reads the command
    key, name = "executable", w.get("executable")
    if not name:
        # a placeholder becomes a NUL: a first word holding one is known only at spawn
        key, text = "cmd", knowable(str(w.get("cmd", "")), "\0")
        try:
            words = split_words(text, "cmd") if text is not None else []
        except ValueError:
            return None, None  # refused elsewhere (keys.together)
        name = words[0] if words and "\0" not in words[0] else None
    if not name or (os.sep in name and not os.path.isabs(name) and working_dir
                    and cwd is None):
        return None, None  # a placeholder in the program, or in the directory it is in
    env: dict[str, str] = dict(environ) if w.get("copy_env") else {}
    env.update(w.get("env") or {})
    if w.get("virtualenv"):
        env["PATH"] = os.pathsep.join(
            [os.path.join(w["virtualenv"], "bin"), env.get("PATH", os.defpath)])
    problem = program_problem(name, search_path(env, environ), cwd)
    if problem is None:
        return None, None
    return None, (key, f"{name!r}: {problem}; the processes cannot start until it exists")
