"""Tab completion for circusctl: in bash and zsh, and in circusctl's own shell.

``circusctl completion bash`` (or ``zsh``) prints a script to load in the shell. The
script holds no list of its own: on each Tab it runs ``circusctl completion line bash
LINE`` (bash: the line up to the cursor) or ``circusctl completion words zsh INDEX
WORD...`` (zsh: its words and the index of the one completed) and offers what that prints,
one candidate a line. So it never goes stale when circusctl changes. What is offered:

* the command names (and ``help``, ``completion``) where a command goes;
* circusctl's global options, and the options of the command typed (``--waiting`` ...),
  where a word starts with ``-``; the choices of an option that has some (``--match``);
* watcher names where a command takes ``<name>``, asked of the daemon (at the
  ``--endpoint`` typed on the line, else ``$CIRCUSCTL_ENDPOINT``, else the default) with
  a short timeout; when it cannot be reached nothing is offered and nothing is printed;
* option keys after ``set NAME`` and ``get NAME``.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
from collections.abc import Callable, Sequence

from circus.client import DEFAULT_ENDPOINT

GLOBAL_OPTIONS = ("--endpoint", "--timeout", "--json", "--prettify", "--curve-key",
                  "--server-key", "--help", "--version")
AFTER_COMMAND = GLOBAL_OPTIONS[:6]  # global options that may also follow the command
VALUE_OPTIONS = ("--endpoint", "--timeout", "--curve-key", "--server-key")
CLIENT_COMMANDS = ("help", "completion", "keygen")
SHELLS = ("bash", "zsh")
WATCHERS_TIMEOUT = 1.0  # at most, for asking the daemon during a completion

BASH = r"""# bash completion for circusctl.
# Load it with:  source <(circusctl completion bash)
# or save it as ~/.local/share/bash-completion/completions/circusctl
_circusctl_complete() {
    local prog="${COMP_WORDS[0]/#\~/$HOME}" IFS=$'\n'
    # the line up to the cursor, not COMP_WORDS: bash cuts words at ':' and '='
    COMPREPLY=($("$prog" completion line bash "${COMP_LINE:0:COMP_POINT}" 2>/dev/null))
}
complete -F _circusctl_complete circusctl
"""

ZSH = r"""#compdef circusctl
# zsh completion for circusctl.
# Load it with:  source <(circusctl completion zsh)   (after compinit)
# or save it as _circusctl in a directory of $fpath.
_circusctl() {
    local -a found
    found=("${(@f)$(${~words[1]} completion words zsh $((CURRENT - 2)) \
        "${(@Q)words[2,-1]}" 2>/dev/null)}")
    found=(${found:#})
    (( ${#found} )) && compadd -- "${found[@]}"
}
if [[ "${funcstack[1]}" = _circusctl ]]; then
    _circusctl "$@"
elif (( $+functions[compdef] )); then
    compdef _circusctl circusctl
fi
"""


def script(shell: str) -> str:
    """The completion script for *shell* (``bash`` or ``zsh``)."""
    return {"bash": BASH, "zsh": ZSH}[shell]


def command_names() -> list[str]:
    from circus.commands import REGISTRY

    return sorted([*REGISTRY, *CLIENT_COMMANDS])


def settable_keys() -> list[str]:
    from circus.options import WATCHER_OPTIONS

    return [*WATCHER_OPTIONS, "env", "hooks"]


def _matching(names: Sequence[str], prefix: str) -> list[str]:
    return sorted({n for n in names if n.startswith(prefix)})


def arguments(name: str, before: Sequence[str], prefix: str,
              watchers: Callable[[], list[str]]) -> list[str]:
    """Candidates for a word of command *name*'s arguments; *before* are the arguments
    already typed. *watchers* gives the watcher names (asked only when they are needed)."""
    if name == "help":
        rest = [w for w in before if not w.startswith("-")]
        if prefix.startswith("-"):
            return _matching(["--wire"], prefix)
        return [] if rest else _matching(command_names(), prefix)
    if name == "completion":
        return [] if before else _matching(SHELLS, prefix)
    from circus.commands import get_command

    command = get_command(name)
    if command is None:
        return []
    if prefix.startswith("-"):
        return _matching([f"--{f.name}" for f in command.flags], prefix)
    if before and before[-1].startswith("--"):
        flag = next((f for f in command.flags if f"--{f.name}" == before[-1]), None)
        if flag is not None and flag.takes_value:
            return _matching(flag.choices or (), prefix)
    positional = [w for w in before if not w.startswith("-")]
    if not positional and "<name>" in command.usage:
        return _matching(watchers(), prefix)
    if (command.name == "set" and len(positional) % 2 == 1) or (
            command.name == "get" and positional):
        return _matching(settable_keys(), prefix)
    return []


def candidates(words: Sequence[str], index: int,
               watchers: Callable[..., list[str]]) -> list[str]:
    """Candidates for ``words[index]`` of a circusctl command line (*words* without the
    program name); *watchers(endpoint, timeout[, curve_key, server_key])* asks a daemon
    for its watcher names."""
    prefix = words[index] if 0 <= index < len(words) else ""
    before = list(words[:max(index, 0)])
    if before and before[-1] in VALUE_OPTIONS:
        return []  # an endpoint, a number of seconds or a path: nothing to offer
    endpoint = os.environ.get("CIRCUSCTL_ENDPOINT") or DEFAULT_ENDPOINT
    timeout = WATCHERS_TIMEOUT
    command: str | None = None
    args: list[str] = []
    keys: dict[str, str] = {}
    i = 0
    while i < len(before):
        word = before[i]
        option, eq, value = word.partition("=")
        if option in VALUE_OPTIONS:
            if not eq and i + 1 < len(before):
                i += 1
                value = before[i]
            if option == "--endpoint":
                endpoint = value
            elif option in ("--curve-key", "--server-key"):
                keys[option] = value
            else:
                with contextlib.suppress(ValueError):
                    timeout = min(float(value), WATCHERS_TIMEOUT)
        elif word in GLOBAL_OPTIONS:
            pass
        elif command is None:
            command = word.lower()
        else:
            args.append(word)
        i += 1
    if command is None:
        if prefix.startswith("-"):
            return _matching(GLOBAL_OPTIONS, prefix)
        return _matching(command_names(), prefix)
    def names() -> list[str]:
        if keys:  # CURVE keys typed on the line
            return watchers(endpoint, timeout, keys.get("--curve-key"),
                            keys.get("--server-key"))
        return watchers(endpoint, timeout)

    found = arguments(command, args, prefix, names)
    if prefix.startswith("-"):
        found = sorted({*found, *_matching(AFTER_COMMAND, prefix)})
    return found


def ask_watchers(endpoint: str, timeout: float, curve_key: str | None = None,
                 server_key: str | None = None) -> list[str]:
    """The watcher names of the daemon at *endpoint*; [] when it cannot tell, quietly.
    CURVE keys: those given, else circusctl's defaults (environment, per-user files)."""
    from circus.client import CircusClient, endpoint_problem, refusal
    from circus.curve import cli_keys
    from circus.errors import CallError

    if endpoint_problem(endpoint) or refusal(endpoint, timeout):
        return []
    try:
        keys = cli_keys(curve_key, server_key)
    except ValueError:
        return []
    client = CircusClient(endpoint=endpoint, timeout=timeout, keys=keys)
    try:
        reply = client.call({"command": "list", "properties": {}})
    except CallError:
        return []
    finally:
        client.stop()
    names = reply.get("watchers")
    return [str(n) for n in names] if isinstance(names, list) else []


def split_line(line: str) -> tuple[list[str], int]:
    """The words of a command line up to the cursor, without the program name, and the
    index of the word being completed (an empty one after a space)."""
    words: list[str] = []
    for closing in ("", "'", '"'):  # the word being typed may have an open quote
        try:
            words = shlex.split(line + closing)
            break
        except ValueError:
            continue
    words = words[1:]
    if not line or line[-1].isspace():
        words.append("")
    return words, max(len(words) - 1, 0)


def main(argv: Sequence[str]) -> int:
    """``circusctl completion SHELL`` prints the script; ``circusctl completion line|words
    ...`` (what the scripts run) prints the candidates."""
    if len(argv) == 1 and argv[0] in SHELLS:
        sys.stdout.write(script(argv[0]))
        return 0
    found: list[str] | None = None
    if len(argv) == 3 and argv[0] == "line" and argv[1] in SHELLS:
        words, index = split_line(argv[2])
        found = candidates(words, index, ask_watchers)
    elif len(argv) >= 3 and argv[0] == "words" and argv[1] in SHELLS:
        try:
            index = int(argv[2])
        except ValueError:
            return 2
        found = candidates(argv[3:], index, ask_watchers)
    if found is not None:
        quote = shlex.quote if argv[1] == "bash" else str  # zsh's compadd quotes itself
        sys.stdout.write("".join(f"{quote(c)}\n" for c in found))
        return 0
    got = f", got {' '.join(argv)!r}" if argv else ""
    print(f"circusctl completion: which shell? bash or zsh{got}\n"
          "usage: circusctl completion bash|zsh  (see circusctl help completion)",
          file=sys.stderr)
    return 2
