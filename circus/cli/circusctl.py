"""circusctl: drive a running circusd, one command at a time or in an interactive shell.

::

    circusctl [--endpoint URL] [--timeout S] [--json | --prettify] COMMAND [ARGS] [OPTIONS]
    circusctl                       # the interactive shell
    circusctl help [COMMAND]

Exit status: 0 ok; 2 usage error; 3 the daemon answered with an error; 69 the daemon
cannot be reached; 75 the daemon did not answer in time.
"""

from __future__ import annotations

import argparse
import cmd
import contextlib
import json
import os
import shlex
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from circus import __version__

if TYPE_CHECKING:
    from circus.client import CircusClient
    from circus.commands.base import Command

EX_OK = 0
EX_USAGE = 2
EX_ERROR_REPLY = 3
EX_UNAVAILABLE = 69
EX_TEMPFAIL = 75

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"
DEFAULT_PUBSUB = "tcp://127.0.0.1:5556"
HISTORY_FILE = "~/.circusctl_history"
HISTORY_LENGTH = 1000
# How long `listen` waits for the daemon to name its events endpoint before taking
# --endpoint to be that endpoint (Circus's own convention).
PUBSUB_PROBE = 1.0


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
        "  --timeout SECONDS  how long to wait for a reply (default: 5)",
        "  --json             print the daemon's reply as JSON",
        "  --prettify         print the reply as indented JSON",
        "  --version          print the version and exit",
        "",
        "commands:",
    ]
    for name, command in sorted(_commands().items()):
        lines.append(f"  {name:<14} {command.short}")
    lines.append(f"  {'help':<14} Show the documentation of a command")
    lines.append("")
    lines.append("circusctl help COMMAND shows the documentation of a command.")
    return "\n".join(lines)


def command_help(command: Command) -> str:
    return f"usage: circusctl {command.usage}\n\n{command.desc}"


class _Parser(argparse.ArgumentParser):
    """Raises instead of exiting, so that main() chooses the message and the status."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


class _UsageError(Exception):
    pass


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="circusctl", add_help=False)
    p.add_argument("--endpoint", default=None)
    p.add_argument("--timeout", type=float, default=5.0)
    p.add_argument("--json", action="store_true")
    p.add_argument("--prettify", action="store_true")
    p.add_argument("--help", "-h", action="store_true")
    p.add_argument("--version", action="store_true")
    p.add_argument("--ssh", default=None)
    p.add_argument("--ssh_keyfile", default=None)
    p.add_argument("command", nargs="?")
    p.add_argument("args", nargs=argparse.REMAINDER)
    return p


_GLOBAL_VALUE = ("--endpoint", "--timeout")
_GLOBAL_FLAGS = ("--json", "--prettify")


def _split_globals(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Move global options written after the command to the front (``list --json``)."""
    front: list[str] = []
    rest: list[str] = []
    items = list(argv)
    i = 0
    while i < len(items):
        arg = items[i]
        if arg == "--":
            rest.extend(items[i:])  # the command's own arguments, -- included
            break
        name = arg.split("=", 1)[0]
        if name in _GLOBAL_FLAGS:
            front.append(arg)
        elif name in _GLOBAL_VALUE:
            front.append(arg)
            if "=" not in arg and i + 1 < len(items):
                front.append(items[i + 1])
                i += 1
        else:
            rest.append(arg)
        i += 1
    return front, rest


class Controller:
    """What both modes share: a client, output formatting, exit statuses."""

    def __init__(self, endpoint: str, timeout: float, as_json: bool = False,
                 prettify: bool = False, out: TextIO | None = None,
                 err: TextIO | None = None) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.as_json = as_json
        self.prettify = prettify
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.commands = _commands()
        self._client: CircusClient | None = None

    @property
    def client(self) -> CircusClient:
        if self._client is None:
            from circus.client import CircusClient

            self._client = CircusClient(endpoint=self.endpoint, timeout=self.timeout)
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

    def run(self, name: str, args: Sequence[str]) -> int:
        """Run one command line; return the exit status."""
        if name == "help":
            return self.help(args)
        command = self.commands.get(name.lower())
        if command is None:
            self.error(f"circusctl: unknown command {name!r} (circusctl help lists them)")
            return EX_USAGE
        if command.name == "listen":
            return self.listen(args)
        from circus.commands.base import parse_flags
        from circus.errors import ArgumentError

        try:
            positional, opts = parse_flags(command.flags, args, command.free_words)
            message = command.message(*positional, **opts)
        except ArgumentError as exc:
            self.error(f"circusctl {command.name}: {exc}")
            return EX_USAGE
        if command.name == "tail" and message["properties"].pop("follow", False):
            return self.follow(command, message["properties"])
        return self.send(command, message)

    def follow(self, command: Command, props: dict[str, Any]) -> int:
        """``tail -f``: the last lines, then new output as it comes, until Ctrl-C/SIGTERM."""
        from circus.client import TimedOut, Unreachable
        from circus.commands.tail import Follow
        from circus.errors import CallError

        follower = Follow(props, self.out, as_json=self.as_json or self.prettify)
        try:
            reply = follower.run(self.client.call)
        except Unreachable as exc:
            self.error(f"circusctl: {exc}")
            return EX_UNAVAILABLE
        except (TimedOut, CallError) as exc:
            self.error(f"circusctl: {exc}")
            return EX_TEMPFAIL
        if reply is not None:
            self.error(command.console_msg(reply))
            return EX_ERROR_REPLY
        return EX_OK

    def send(self, command: Command, message: dict[str, Any]) -> int:
        from circus.client import TimedOut, Unreachable
        from circus.errors import CallError

        try:
            reply = self.client.call(message)
        except Unreachable as exc:
            self.error(f"circusctl: {exc}")
            return EX_UNAVAILABLE
        except (TimedOut, CallError) as exc:
            self.error(f"circusctl: {exc}")
            return EX_TEMPFAIL
        failed = reply.get("status") == "error"
        if self.as_json or self.prettify:
            self.print(self.render_json(reply))
            if failed:
                self.error(f"error: {reply.get('reason')}")
        elif failed:
            self.error(command.console_msg(reply))
        else:
            self.print(command.console_msg(reply))
        return EX_ERROR_REPLY if failed else EX_OK

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
        if not args:
            self.print(usage())
            return EX_OK
        command = self.commands.get(args[0].lower())
        if command is None:
            self.error(f"circusctl: unknown command {args[0]!r} (circusctl help lists them)")
            return EX_USAGE
        self.print(command_help(command))
        return EX_OK

    # -- listen ------------------------------------------------------------------------------

    def pubsub_endpoint(self, explicit: str | None) -> str:
        """Where events are published: asked of the daemon, else --endpoint itself."""
        if explicit:
            return explicit
        from circus.client import CircusClient
        from circus.errors import CallError

        probe = CircusClient(endpoint=self.endpoint, timeout=min(self.timeout, PUBSUB_PROBE))
        try:
            reply = probe.call({"command": "globaloptions", "properties": {}})
            found = reply.get("options", {}).get("pubsub_endpoint")
            if isinstance(found, str) and found:
                return found
        except CallError:
            pass
        finally:
            probe.stop()
        return self.endpoint

    def listen(self, args: Sequence[str]) -> int:
        import zmq

        topics = [a for a in args if "://" not in a]
        given = [a for a in args if "://" in a]
        endpoint = self.pubsub_endpoint(given[0] if given else None)
        ctx = zmq.Context()
        sock = ctx.socket(zmq.SUB)
        sock.linger = 0
        for topic in topics or [""]:
            sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        try:
            sock.connect(endpoint)
        except zmq.ZMQError as exc:
            self.error(f"circusctl listen: cannot connect to {endpoint}: {exc}")
            sock.close()
            ctx.term()
            return EX_UNAVAILABLE
        self.error(f"listening to {endpoint} (Ctrl-C to stop)")
        try:
            while True:
                frames = sock.recv_multipart()
                if len(frames) != 2:
                    continue
                topic = frames[0].decode("utf-8", "replace")
                body = frames[1].decode("utf-8", "replace")
                if self.as_json or self.prettify:
                    try:
                        payload: Any = json.loads(body)
                    except ValueError:
                        payload = body
                    self.print(self.render_json({"topic": topic, "payload": payload}))
                else:
                    self.print(f"{topic}: {body}")
        except KeyboardInterrupt:
            return EX_OK
        finally:
            sock.close()
            ctx.term()


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
        from circus.errors import CallError

        try:
            reply = self.ctl.client.call({"command": "list", "properties": {}})
        except CallError:
            return []
        names = reply.get("watchers", [])
        return [str(n) for n in names] if isinstance(names, list) else []

    def completedefault(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        words = line[:begidx].split()
        if not words:
            return self.completenames(text)
        name = words[0].lower()
        if name == "help":
            return self.completenames(text) if len(words) == 1 else []
        command = self.ctl.commands.get(name)
        if command is None:
            return []
        if text.startswith("--"):
            return sorted(f"--{f.name}" for f in command.flags if f"--{f.name}".startswith(text))
        positional = [w for w in words[1:] if not w.startswith("--")]
        if not positional and "<name>" in command.usage:
            return sorted(n for n in self.watcher_names() if n.startswith(text))
        if command.name == "set" and len(positional) % 2 == 1:
            return sorted(k for k in _settable_keys() if k.startswith(text))
        if command.name == "get" and positional:
            return sorted(k for k in _settable_keys() if k.startswith(text))
        return []

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


def _settable_keys() -> list[str]:
    from circus.options import WATCHER_OPTIONS

    return [*WATCHER_OPTIONS, "env", "hooks"]


def main(argv: list[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    front, rest = _split_globals(raw)
    try:
        args = parser().parse_args(front + rest)
    except _UsageError as exc:
        print(f"circusctl: {exc}\n\n{usage()}", file=sys.stderr)
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
    endpoint = args.endpoint or os.environ.get("CIRCUSCTL_ENDPOINT") or None
    ctl = Controller(endpoint or DEFAULT_ENDPOINT, args.timeout, args.json, args.prettify)
    try:
        if args.command is None:
            shell = Shell(ctl)
            with contextlib.suppress(KeyboardInterrupt):
                shell.cmdloop()
            return EX_OK if shell.interactive else shell.status
        if args.command == "listen" and endpoint is None:
            # Circus's default for listen is the events endpoint, not the control one.
            ctl.endpoint = DEFAULT_PUBSUB
            given = [a for a in args.args if "://" in a]
            return ctl.listen(args.args if given else [DEFAULT_PUBSUB, *args.args])
        return ctl.run(args.command, args.args)
    finally:
        ctl.close()


if __name__ == "__main__":
    sys.exit(main())
