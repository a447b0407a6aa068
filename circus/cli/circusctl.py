"""circusctl: drive a running circusd, one command at a time or in an interactive shell.

::

    circusctl [--endpoint URL] [--timeout S] [--json | --prettify] COMMAND [ARGS] [OPTIONS]
    circusctl                       # the interactive shell
    circusctl help [--wire] [COMMAND]
    circusctl completion bash|zsh   # a shell completion script

Exit status: 0 ok; 2 usage error (nothing sent); 3 the daemon answered with an error
(0 with --json or --prettify, as Circus 0.19: the reply printed carries the error); 69 the
daemon cannot be reached; 75 the daemon did not answer in time.
"""

from __future__ import annotations

import cmd
import contextlib
import json
import os
import shlex
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from circus import __version__
from circus.cli.ctlargs import UsageError, parser, split_globals

if TYPE_CHECKING:
    from circus.client import CircusClient
    from circus.commands.base import Command
    from circus.curve import ClientKeys

EX_OK = 0
EX_USAGE = 2
EX_ERROR_REPLY = 3
EX_UNAVAILABLE = 69
EX_TEMPFAIL = 75

DEFAULT_TIMEOUT, WAIT_TIMEOUT, WAIT_MARGIN = 5.0, 60.0, 5.0  # see Controller.reply_timeout
DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"
DEFAULT_PUBSUB = "tcp://127.0.0.1:5556"
HISTORY_FILE = "~/.circusctl_history"
HISTORY_LENGTH = 1000
SHORT_USAGE = "usage: circusctl [--endpoint URL] [--timeout SECONDS] [--json] COMMAND [ARGS]"
HINT = ("hint: is circusd running? Give its endpoint (the endpoint option of its [circus] "
        "section) with --endpoint URL or $CIRCUSCTL_ENDPOINT")


class _Commands(Mapping[str, "Command"]):
    """The commands by name, each imported the first time it is looked up.

    A one-shot `circusctl status` then loads one command module instead of all of them.
    """

    def __init__(self) -> None:
        from circus.commands import REGISTRY

        self._names = sorted(REGISTRY)
        self._loaded: dict[str, Command] = {}

    def __getitem__(self, name: str) -> Command:
        if name not in self._loaded:
            from circus.commands import get_command

            command = get_command(name)
            if command is None:
                raise KeyError(name)
            self._loaded[name] = command
        return self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def _commands() -> Mapping[str, Command]:
    return _Commands()


def usage() -> str:
    lines = [
        "usage: circusctl [--endpoint URL] [--timeout SECONDS] [--json | --prettify]",
        "                 [COMMAND [ARGS] [OPTIONS]]",
        "",
        "Without a command, circusctl opens an interactive shell.",
        "",
        "options:",
        "  --endpoint URL     control endpoint of circusd (default: $CIRCUSCTL_ENDPOINT,",
        f"                     else {DEFAULT_ENDPOINT})",
        "  --timeout SECONDS  how long to wait for a reply (default: 5); for wait and",
        "                     start --wait, how long to wait for readiness (default: 60)",
        "  --json             print the daemon's reply as JSON",
        "  --prettify         print the reply as indented JSON",
        "  --curve-key PATH   this client's .key_secret, when circusd requires CURVE",
        "                     (default: $CIRCUSCTL_CURVE_KEY, else",
        "                     $XDG_CONFIG_HOME/circus/client.key_secret if it exists)",
        "  --server-key PATH  circusd's public .key (default: $CIRCUSCTL_SERVER_KEY, else",
        "                     $XDG_CONFIG_HOME/circus/server.key)",
        "  --version          print the version and exit",
        "",
        "commands:",
    ]
    for name, command in sorted(_commands().items()):
        lines.append(f"  {name:<14} {command.short}")
    lines.append(f"  {'help':<14} Show the documentation of a command")
    lines.append(f"  {'completion':<14} Print a completion script for bash or zsh")
    lines.append(f"  {'keygen':<14} Write a CURVE key pair (circusctl keygen --help)")
    lines.append("")
    lines.append("circusctl help COMMAND shows the documentation of a command, "
                 "help --wire COMMAND")
    lines.append("its ZeroMQ message too.")
    return "\n".join(lines)


class Controller:
    """What both modes share: a client, output formatting, exit statuses.

    *origin* says where the endpoint came from (``--endpoint``, ``$CIRCUSCTL_ENDPOINT``,
    or None for the default), for the message when the daemon cannot be reached.
    """

    def __init__(self, endpoint: str, timeout: float, as_json: bool = False,
                 prettify: bool = False, out: TextIO | None = None,
                 err: TextIO | None = None, origin: str | None = "--endpoint",
                 wait_timeout: float | None = None, keys: ClientKeys | None = None) -> None:
        self.endpoint = endpoint
        self.keys = keys  # CURVE (circus/curve.py), or None
        self.timeout = timeout
        self.wait_timeout = wait_timeout  # --timeout when given: the limit of a wait
        self.as_json = as_json
        self.prettify = prettify
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.origin = origin
        self.commands = _commands()
        self._client: CircusClient | None = None

    @property
    def client(self) -> CircusClient:
        if self._client is None:
            from circus.client import CircusClient

            self._client = CircusClient(endpoint=self.endpoint, timeout=self.timeout,
                                        keys=self.keys)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.stop()
            self._client = None

    def print(self, text: str) -> None:
        if text:
            print(text, file=self.out, flush=True)

    def error(self, text: str) -> None:
        print(text, file=self.err, flush=True)

    def usage_error(self, text: str, usage_line: str = SHORT_USAGE,
                    see: str = "see circusctl --help") -> int:
        """The error, one usage line, where to read more; exit status 2."""
        self.error(f"{text}\n{usage_line}  ({see})")
        return EX_USAGE

    def unreachable(self, detail: str, endpoint: str | None = None) -> int:
        """Nothing answers at the endpoint: say which, and where it came from."""
        endpoint = endpoint or self.endpoint
        where = {None: " (the default endpoint)",
                 "$CIRCUSCTL_ENDPOINT": " (from $CIRCUSCTL_ENDPOINT)"}.get(self.origin, "")
        self.error(f"circusctl: cannot reach circusd at {endpoint}{where}: {detail}\n{HINT}")
        return EX_UNAVAILABLE

    def call(self, message: dict[str, Any], timeout: float | None = None
             ) -> dict[str, Any] | int:
        """Send *message*: its reply (within *timeout* s or --timeout), else an exit status."""
        from circus.client import TimedOut, Unreachable, refusal
        from circus.errors import CallError

        problem = refusal(self.endpoint, min(self.timeout, 1.0))
        if problem:  # at once: ZeroMQ would wait the whole timeout in silence
            return self.unreachable(problem)
        client = self.client
        client.timeout = self.timeout if timeout is None else timeout
        try:
            return client.call(message)
        except Unreachable:
            return self.unreachable("nothing listens there")
        except TimedOut as exc:
            self.error(f"circusctl: {exc}\n{self.curve_hint()}")
            return EX_TEMPFAIL
        except CallError as exc:
            self.error(f"circusctl: {exc}")
            return EX_TEMPFAIL

    def curve_hint(self) -> str:
        """What a silent daemon may mean: a CURVE handshake that failed gives no error."""
        if self.keys is None:
            return ("hint: if circusd requires CURVE (curve_secret_key), give --curve-key "
                    "and --server-key")
        return ("hint: circusd drops a client whose key is in none of its curve_*_keys "
                "directories, or that has the wrong --server-key")

    def reply_timeout(self, command: Command, message: dict[str, Any]) -> float | None:
        """``wait``, ``start --wait``: --timeout (60 s if not given) is the wait's limit,
        sent as ``timeout``; the reply is awaited that long plus a margin."""
        props = message.setdefault("properties", {})
        if command.name != "wait" and props.get("wait") is not True:
            return None
        props["timeout"] = props.get("timeout") or self.wait_timeout or WAIT_TIMEOUT
        return float(props["timeout"]) + WAIT_MARGIN

    def run(self, name: str, args: Sequence[str]) -> int:
        """Run one command line; return the exit status."""
        if name == "help":
            return self.help(args)
        if name == "completion":
            from circus.cli import completion

            return completion.main(args)
        command = self.commands.get(name.lower())
        if command is None:
            import difflib

            close = difflib.get_close_matches(name.lower(), [*self.commands, "help"], 3)
            names = ", ".join(close[:-1]) + " or " * (len(close) > 1) + "".join(close[-1:])
            guess = f" (did you mean {names}?)" if close else ""
            return self.usage_error(f"circusctl: unknown command {name!r}{guess}",
                                    "usage: circusctl [OPTIONS] COMMAND [ARGS]",
                                    "circusctl help lists the commands")
        before_dashes = list(args[:args.index("--")] if "--" in args else args)
        if any(a in ("--help", "-h") for a in
               (before_dashes[:1] if command.free_words else before_dashes)):
            return self.help([command.name])
        if command.name == "listen":
            return self.listen(args)
        from circus.commands.base import parse_flags
        from circus.errors import ArgumentError

        try:
            positional, opts = parse_flags(command.flags, args, command.free_words)
            message = command.message(*positional, **opts)
        except ArgumentError as exc:
            text = str(exc)
            if text.startswith("usage:"):  # the command's own way to say: wrong arguments
                text = "missing or extra arguments"
            return self.usage_error(f"circusctl {command.name}: {text}",
                                    f"usage: circusctl {command.usage}",
                                    f"see circusctl help {command.name}")
        streaming = {"tail": "follow", "stats": "watch"}.get(command.name)
        if streaming and message["properties"].pop(streaming, False):
            return self.follow(command, message)
        return self.send(command, message)

    def follow(self, command: Command, message: dict[str, Any]) -> int:
        """``tail -f`` or ``stats --watch``: output or figures as they come, until Ctrl-C."""
        from circus.client import TimedOut, Unreachable, refusal
        from circus.commands.stats import stream
        from circus.errors import CallError

        if problem := refusal(self.endpoint, min(self.timeout, 1.0)):
            return self.unreachable(problem)
        try:
            reply = stream(command.name, message, self.client.call, self.out,
                           as_json=self.as_json or self.prettify)
        except Unreachable:
            return self.unreachable("nothing listens there")
        except (TimedOut, CallError) as exc:
            self.error(f"circusctl: {exc}")
            return EX_TEMPFAIL
        if reply is not None:
            return self.failed(command, reply)
        return EX_OK

    def send(self, command: Command, message: dict[str, Any]) -> int:
        reply = self.call(message, self.reply_timeout(command, message))
        if isinstance(reply, int):
            return reply
        if reply.get("status") == "error":
            return self.failed(command, reply)
        if self.as_json or self.prettify:
            self.print(self.render_json(reply))
        else:
            self.print(command.console_msg(reply))
        return EX_OK

    def failed(self, command: Command, reply: dict[str, Any]) -> int:
        """An error reply: exit 3, or, when the reply is printed as JSON, 0 as in Circus
        0.19 (scripts read the error in the reply)."""
        if self.as_json or self.prettify:
            self.print(self.render_json(reply))
            self.error(f"error: {reply.get('reason')}")
            return EX_OK
        self.error(command.console_msg(reply))
        return EX_ERROR_REPLY

    def render_json(self, reply: Any) -> str:
        if not self.prettify:
            return json.dumps(reply)
        text = json.dumps(reply, indent=2, sort_keys=True)
        if self.out.isatty():
            with contextlib.suppress(ImportError):
                from pygments import highlight  # type: ignore[import-untyped]
                from pygments.formatters import (  # type: ignore[import-untyped]
                    TerminalFormatter,
                )
                from pygments.lexers import JsonLexer  # type: ignore[import-untyped]

                return str(highlight(text, JsonLexer(), TerminalFormatter())).rstrip("\n")
        return text

    def help(self, args: Sequence[str]) -> int:
        wire = "--wire" in args
        names = [a for a in args if a != "--wire"]
        if not names:
            self.print(usage())
            return EX_OK
        from circus.cli.helptext import CLIENT_HELP, command_help, plain

        name = names[0].lower()
        if name in CLIENT_HELP:
            synopsis, doc = CLIENT_HELP[name]
            self.print(f"usage: circusctl {synopsis}\n\n{plain(doc)}")
            return EX_OK
        command = self.commands.get(name)
        if command is None:
            return self.usage_error(f"circusctl: unknown command {names[0]!r}",
                                    "usage: circusctl help [--wire] [COMMAND]",
                                    "circusctl help lists the commands")
        self.print(command_help(command, wire))
        return EX_OK

    # -- listen ------------------------------------------------------------------------------

    def listen(self, args: Sequence[str]) -> int:
        """Print events: at the endpoint given, or at the events endpoint of the daemon
        whose control endpoint it is (:class:`circus.commands.listen.Listener`)."""
        from circus.client import endpoint_problem, refusal
        from circus.commands.listen import Listener
        from circus.errors import CallError

        topics = [a for a in args if "://" not in a]
        given = [a for a in args if "://" in a]
        endpoint = given[0] if given else self.endpoint
        problem = endpoint_problem(endpoint)
        if problem:
            self.error(bad_endpoint(endpoint, "listen", problem))
            return EX_USAGE
        problem = refusal(endpoint, min(self.timeout, 1.0))
        if problem:
            return self.unreachable(problem, endpoint)

        def emit(topic: str, body: str) -> None:
            if self.as_json or self.prettify:
                try:
                    payload: Any = json.loads(body)
                except ValueError:
                    payload = body
                self.print(self.render_json({"topic": topic, "payload": payload}))
            else:
                self.print(f"{topic}: {body}")

        try:
            Listener(endpoint, topics, emit, self.error, self.timeout, self.keys).run()
        except KeyboardInterrupt:
            return EX_OK
        except CallError as exc:
            self.error(f"circusctl listen: {exc}")
            return EX_UNAVAILABLE
        return EX_OK


def bad_endpoint(endpoint: str, source: str, problem: str) -> str:
    """The one line for an endpoint that is not one."""
    from circus.client import ENDPOINT_FORMS

    return (f"circusctl: {source} {endpoint!r} is not an endpoint: {problem} "
            f"(the forms are {ENDPOINT_FORMS})")


class Shell(cmd.Cmd):
    """The interactive shell: ``(circusctl) status``, with history and tab completion."""

    prompt = "(circusctl) "
    identchars = cmd.Cmd.identchars + "-"

    def __init__(self, ctl: Controller, stdin: TextIO | None = None) -> None:
        interactive = (stdin or sys.stdin).isatty()
        super().__init__(stdin=stdin)
        self.ctl = ctl
        self.interactive = interactive
        self.use_rawinput = interactive
        if not interactive:
            self.prompt = ""
        self.status = EX_OK
        self._history: str | None = None

    # -- lifetime ----------------------------------------------------------------------------

    def preloop(self) -> None:
        if not self.interactive:
            return
        self._load_history()
        self.ctl.print(f"circusctl {__version__} connected to {self.ctl.endpoint}")
        self.ctl.run("status", [])
        self.ctl.print("Type help for the commands, Ctrl-D to leave.")

    def postloop(self) -> None:
        self._save_history()

    def _load_history(self) -> None:
        try:
            import readline
        except ImportError:
            return
        readline.set_completer_delims(" \t\n")
        path = os.path.expanduser(os.environ.get("CIRCUSCTL_HISTORY", HISTORY_FILE))
        self._history = path
        readline.set_history_length(HISTORY_LENGTH)
        with contextlib.suppress(OSError):
            readline.read_history_file(path)

    def _save_history(self) -> None:
        if self._history is None:
            return
        with contextlib.suppress(ImportError, OSError):
            import readline

            readline.write_history_file(self._history)

    # -- commands ----------------------------------------------------------------------------

    def emptyline(self) -> bool:
        return False

    def onecmd(self, line: str) -> bool:
        line = line.strip()
        if not line or line.startswith("#"):
            return False
        if line in ("EOF", "exit"):
            if self.interactive and line == "EOF":
                self.ctl.print("")
            return True
        try:
            words = shlex.split(line)
        except ValueError as exc:
            self.ctl.error(f"circusctl: {exc}")
            self.status = self.status or EX_USAGE
            return False
        if words[0] == "?":
            words[0] = "help"
        status = self.ctl.run(words[0], words[1:])
        if status != EX_OK and self.status == EX_OK:
            self.status = status  # piped scripts exit with the first failure
        return False

    # -- completion -----------------------------------------------------------------------------

    def completenames(self, text: str, *ignored: Any) -> list[str]:
        names = [*self.ctl.commands, "help", "exit"]
        return sorted(n + " " for n in names if n.startswith(text))

    def watcher_names(self) -> list[str]:
        from circus.client import refusal
        from circus.errors import CallError

        if refusal(self.ctl.endpoint, min(self.ctl.timeout, 1.0)):
            return []  # a Tab must not wait for a daemon that is gone
        try:
            reply = self.ctl.client.call({"command": "list", "properties": {}})
        except CallError:
            return []
        names = reply.get("watchers", [])
        return [str(n) for n in names] if isinstance(names, list) else []

    def completedefault(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        from circus.cli.completion import arguments

        words = line[:begidx].split()
        if not words:
            return self.completenames(text)
        if words[0].lower() == "help" and len(words) == 1 and not text.startswith("-"):
            return self.completenames(text)
        return arguments(words[0].lower(), words[1:], text, self.watcher_names)

    def complete(self, text: str, state: int) -> str | None:  # type: ignore[override]
        """The readline completer: commands first, then watcher names, flags, keys."""
        try:
            import readline
        except ImportError:
            return None
        if state == 0:
            line = readline.get_line_buffer()
            begidx = readline.get_begidx()
            endidx = readline.get_endidx()
            if begidx > 0 and line[:begidx].strip():
                self.completion_matches = self.completedefault(text, line, begidx, endidx)
            else:
                self.completion_matches = self.completenames(text)
        matches: list[str] = self.completion_matches or []
        return matches[state] if state < len(matches) else None


def main(argv: list[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    if raw[:1] == ["completion"]:  # before the options: the words to complete are not ours
        from circus.cli import completion

        return completion.main(raw[1:])
    if raw[:1] == ["keygen"]:
        from circus.cli import keygen

        return keygen.main(raw[1:])
    front, rest = split_globals(raw)
    try:
        args = parser().parse_args(front + rest)
    except UsageError as exc:
        print(f"circusctl: {exc}\n{SHORT_USAGE}  (see circusctl --help)", file=sys.stderr)
        return EX_USAGE
    if args.version:
        print(__version__)
        return EX_OK
    if args.help:
        print(usage())
        return EX_OK
    if args.ssh:
        print("circusctl: SSH tunnels are not supported; forward the endpoint with ssh -L",
              file=sys.stderr)
        return EX_USAGE
    origin, endpoint = "--endpoint", args.endpoint
    if endpoint is None and os.environ.get("CIRCUSCTL_ENDPOINT"):
        origin, endpoint = "$CIRCUSCTL_ENDPOINT", os.environ["CIRCUSCTL_ENDPOINT"]
    if endpoint is not None:
        from circus.client import endpoint_problem

        problem = endpoint_problem(endpoint)
        if problem:  # before any ZeroMQ call, which would raise a bare ZMQError
            print(bad_endpoint(endpoint, origin, problem), file=sys.stderr)
            return EX_USAGE
    if args.command == "listen" and endpoint is None:
        endpoint = DEFAULT_PUBSUB  # Circus's default for listen: the events endpoint
    from circus.cli.keygen import client_keys

    keys, problem = client_keys(args.curve_key, args.server_key)
    if problem:
        print(problem, file=sys.stderr)
        return EX_USAGE
    ctl = Controller(endpoint or DEFAULT_ENDPOINT, args.timeout or DEFAULT_TIMEOUT, args.json,
                     args.prettify, origin=origin if endpoint else None,
                     wait_timeout=args.timeout, keys=keys)
    try:
        if args.command is None:
            shell = Shell(ctl)
            with contextlib.suppress(KeyboardInterrupt):
                shell.cmdloop()
            return EX_OK if shell.interactive else shell.status
        return ctl.run(args.command, args.args)
    finally:
        ctl.close()


if __name__ == "__main__":
    sys.exit(main())
