"""``tail``: the last lines a watcher's processes wrote, and (``-f``) what they write next.

The daemon side answers from the watcher's in-memory ring (:class:`circus.streams.OutputRing`).
The client side of ``tail -f`` (:class:`Follow`) lives here too, next to the message it sends;
``circusctl`` only hands it a way to call the daemon and somewhere to print.

Joining the live feed without a gap
-----------------------------------
Live output goes out on the events socket (topics ``output.<watcher>.<stream>``), and only
while someone subscribes to it. A ZeroMQ subscription reaches the daemon asynchronously, on a
different socket from the control request, so "ask for the last lines, then subscribe" would
lose whatever is written in between. ``tail -f`` therefore goes the other way round:

1. connect a SUB socket, subscribe to the output topics, then to a topic of its own
   (``sync.<random>``) that nothing publishes;
2. send ``tail`` with ``"sync": "sync.<random>"``: circusd answers only once that subscription
   has arrived. A subscriber's subscriptions arrive in the order they were made, so the output
   topics are in effect by then, and every chunk read from that moment on is published;
3. the reply carries ``snapshot``, the time the lines were taken from the ring. A published
   chunk whose ``time`` is earlier was read before the snapshot and is already among the
   lines: it is skipped. Everything later is printed.

What can still be missed: chunks ZeroMQ drops because this follower fell more than the
socket's high-water mark (1000 messages) behind, and output written while the follower is
disconnected from a restarting circusd. The files the streams write are the record; ``tail``
is a view.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from circus.commands.base import Command, Flag, Props, Reply, make_message
from circus.errors import ArgumentError, CommandError, MessageError, NotFoundError
from circus.tiers import Tier

if TYPE_CHECKING:
    from circus.types import ArbiterAPI

STREAMS = ("stdout", "stderr", "both")
DEFAULT_LINES = 10
# How long circusd waits for the subscription a `sync` request names.
SYNC_TIMEOUT = 2.0
# tail -f: a line left unfinished this long is shown as it is (a prompt, a progress bar).
IDLE_FLUSH = 0.5
# tail -f: an unfinished line is shown once it grows past this many bytes.
MAX_HELD = 64 * 1024


def topic_name(watcher: str) -> str:
    """The watcher's name as event topics spell it (lower case, ``_`` for spaces)."""
    return watcher.lower().replace(" ", "_")


def _names(stream: str) -> tuple[str, ...]:
    return ("stdout", "stderr") if stream == "both" else (stream,)


class Tail(Command):
    """\
    Show the latest output of a watcher
    ===================================

    The last ``lines`` lines (default 10) that the processes of watcher ``<name>`` wrote,
    oldest first, on ``stdout``, ``stderr`` or ``both`` (the default), of every process or
    of process ``pid`` only. circusd keeps the latest 256 KiB of each watcher's output in
    memory, whatever its streams do with it, so lines show here even when they went to a
    file, to syslog or nowhere. Lines of processes that have exited stay until newer output
    pushes them out. A line still being written (no newline yet) is included, with
    ``partial`` true.

    With ``-f`` circusctl prints the last lines, then follows: every new line is printed as
    it is written, until Ctrl-C or SIGTERM (exit status 0). Live output comes from the
    events endpoint (``pubsub_endpoint``, which circusctl asks the daemon for) on the topics
    ``output.<name>.stdout`` and ``output.<name>.stderr``, which circusd produces only while
    someone subscribes to them; ``<name>`` is lower-cased with spaces turned into ``_``.
    Each event is ``{"pid": <pid>, "stream": "stdout", "data": "<text>", "time": <float>}``:
    a chunk as read from the pipe, not cut at line ends. The ``sync`` property makes
    circusd answer only once the subscription to the topic it names has reached its
    events socket (errno 5 if none comes within 2 seconds), so that a follower that
    subscribes first, then asks for the last lines, misses nothing in between: chunks
    with a ``time`` before the reply's ``snapshot`` are already in ``lines``.

    circusctl prints the lines as they were written, stdout and stderr interleaved as
    they were read; each line starts with ``[<pid>] `` when the watcher has more than one
    process or the lines come from several processes, unless one was asked for with
    ``--pid`` (decided once, at the start). With
    ``--json``, ``tail`` prints the reply and ``tail -f`` one JSON object per line,
    ``{"time", "pid", "stream", "line"}``. ``tail -f`` holds an unfinished line until its
    end arrives, its process exits, or it has waited half a second.

    ZMQ Message
    -----------

    ::

        {"command": "tail",
         "properties": {"name": "<name>", "lines": 10, "pid": <pid>,
                        "stream": "stdout" | "stderr" | "both", "sync": "<topic>"}}

    Response:

    ::

        {"status": "ok",
         "lines": [{"time": <float>, "pid": <pid>, "stream": "stdout", "line": "<text>",
                    "partial": false}, ...],
         "pid": <pid> | null, "pids": [<pid>, ...], "numprocesses": <n>,
         "snapshot": <float>}

    ``time`` is when the line's last piece was read, ``pid`` the process asked for (null:
    all), ``pids`` the watcher's processes now.
    A ``pid`` that neither runs nor has output left gets errno 3.

    Command line
    ------------

    ::

        $ circusctl tail <name> [-n <lines>] [--pid <pid>] [--stream stdout|stderr|both]
              [-f | --follow]
    """

    name = "tail"
    tier = Tier.READER
    usage = "tail <name> [-n <lines>] [--pid <pid>] [--stream stdout|stderr|both] [-f]"
    required = ("name",)
    flags = (
        Flag("lines", "how many lines to show (default 10); also -n", True),
        Flag("pid", "only this process", True),
        Flag("stream", "stdout, stderr or both (the default)", True, "both", STREAMS),
        Flag("follow", "keep printing new output until Ctrl-C; also -f"),
    )

    # -- circusctl side ----------------------------------------------------------------------

    def message(self, *args: str, **opts: Any) -> Props:
        positional: list[str] = []
        items = list(args)
        i = 0
        while i < len(items):  # the short options circusctl's flag parser leaves here
            arg = items[i]
            if arg == "-f":
                opts["follow"] = True
            elif arg == "-n":
                i += 1
                if i >= len(items):
                    raise ArgumentError("-n needs a number of lines")
                opts["lines"] = items[i]
            elif arg.startswith("-n") and len(arg) > 2:
                opts["lines"] = arg[2:]
            elif arg.startswith("-") and len(arg) > 1:
                raise ArgumentError(f"unknown option {arg}")
            else:
                positional.append(arg)
            i += 1
        if len(positional) != 1:
            raise ArgumentError(f"usage: {self.usage}")
        props: dict[str, Any] = {"name": positional[0]}
        for key in ("lines", "pid"):
            if key in opts:
                try:
                    props[key] = int(opts[key])
                except ValueError:
                    raise ArgumentError(f"{key} must be a number, got {opts[key]!r}") from None
        if props.get("lines", 0) < 0:
            raise ArgumentError(f"lines must be 0 or more, got {props['lines']}")
        if "stream" in opts:
            props["stream"] = opts["stream"]
        if opts.get("follow"):
            props["follow"] = True  # circusctl's business: never sent
        return make_message(self.name, **props)

    def console_msg(self, reply: Reply) -> str:
        if reply.get("status") == "error":
            return super().console_msg(reply)
        lines = reply.get("lines") or []
        tagged = several_processes(reply)
        return "\n".join(format_line(line, tagged) for line in lines)

    # -- circusd side ------------------------------------------------------------------------

    def validate(self, arbiter: ArbiterAPI, props: Props) -> None:
        super().validate(arbiter, props)
        self.watcher(arbiter, props)
        self.int_prop(props, "lines", default=DEFAULT_LINES, minimum=0)
        if "pid" in props:
            self.int_prop(props, "pid")
        if props.get("stream", "both") not in STREAMS:
            raise MessageError(
                f"'stream' should be one of {', '.join(STREAMS)}, got {props['stream']!r}"
            )
        self.str_prop(props, "sync")

    async def execute(self, arbiter: ArbiterAPI, props: Props) -> Reply:
        sync = self.str_prop(props, "sync")
        if sync is not None and not await arbiter.wait_subscribed(sync, SYNC_TIMEOUT):
            raise CommandError(
                f"no subscription to {sync!r} reached circusd's events endpoint "
                f"({arbiter.pubsub_endpoint}) within {SYNC_TIMEOUT:g}s"
            )
        watcher = self.watcher(arbiter, props)  # again: it may have gone while we waited
        n = self.int_prop(props, "lines", default=DEFAULT_LINES, minimum=0)
        pid = self.int_prop(props, "pid") if "pid" in props else None
        names = _names(props.get("stream", "both"))
        ring = watcher.output
        snapshot = time.time()
        found = ring.last(n, pid, names)
        if pid is not None and pid not in watcher.processes and not ring.last(1, pid):
            raise NotFoundError(f"process {pid} not found in {watcher.name!r}")
        unfinished = ring.unfinished()
        lines: list[dict[str, Any]] = []
        last_seen: set[tuple[int, str]] = set()
        for when, lpid, name, text in reversed(found):
            key = (lpid, name)
            partial = key in unfinished and key not in last_seen  # only its latest line
            last_seen.add(key)
            lines.append({
                "time": when,
                "pid": lpid,
                "stream": name,
                "line": text.decode("utf-8", "replace"),
                "partial": partial,
            })
        lines.reverse()
        return {
            "lines": lines,
            "pid": pid,
            "pids": watcher.pids,
            "numprocesses": watcher.numprocesses,
            "snapshot": snapshot,
        }


def several_processes(reply: Reply) -> bool:
    """Whether lines get a ``[<pid>] `` tag: several processes run or wrote them, and the
    reply is not about one process."""
    if reply.get("pid") is not None:
        return False
    lines = reply.get("lines") or []
    numprocesses = reply.get("numprocesses")
    return (isinstance(numprocesses, int) and numprocesses > 1) or len(
        {line.get("pid") for line in lines}
    ) > 1


def format_line(line: Any, tagged: bool) -> str:
    text = str(line.get("line", ""))
    return f"[{line.get('pid')}] {text}" if tagged else text


class Stopped(Exception):
    """SIGTERM during ``tail -f`` (or ``stats --watch``)."""


class Follow:
    """``circusctl tail -f``: the last lines, then live output line by line, until stopped.

    Args:
        props: the ``tail`` properties (``name``, ``lines``, ``pid``, ``stream``).
        out: where lines go.
        as_json: one JSON object per line rather than the text.
        clock: monotonic time, for holding unfinished lines.
    """

    def __init__(self, props: Props, out: TextIO, *, as_json: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.props = {k: v for k, v in props.items() if k != "follow"}
        self.out = out
        self.as_json = as_json
        self._clock = clock
        self.topic = topic_name(str(props["name"]))
        self.names = _names(str(props.get("stream", "both")))
        self.pid: int | None = props.get("pid")
        self.tagged = False
        self.snapshot = 0.0
        # unfinished line per (pid, stream): (bytes so far, monotonic time of the last piece)
        self._held: dict[tuple[int, str], tuple[bytes, float]] = {}

    def run(self, call: Callable[[Props], Reply]) -> Reply | None:
        """Follow until Ctrl-C or SIGTERM: None then, or the daemon's error reply.

        *call* sends a message and returns the reply; its errors (no daemon, time-out)
        propagate.
        """
        import zmq

        reply = call(make_message("globaloptions", option="pubsub_endpoint"))
        if reply.get("status") == "error":
            return reply
        endpoint = str(reply.get("options", {}).get("pubsub_endpoint", ""))
        ctx = zmq.Context()
        sub = ctx.socket(zmq.SUB)
        sub.linger = 0
        restore = on_sigterm()
        try:
            # Connect before subscribing: the subscriptions then travel in the order made
            # (on connection a SUB sends the ones it already has in topic order).
            sub.connect(endpoint)
            for name in self.names:
                sub.setsockopt(zmq.SUBSCRIBE, f"output.{self.topic}.{name}".encode())
            sub.setsockopt(zmq.SUBSCRIBE, f"watcher.{self.topic}.reap".encode())
            token = f"sync.{os.urandom(8).hex()}"
            sub.setsockopt(zmq.SUBSCRIBE, token.encode())
            reply = call(make_message("tail", **self.props, sync=token))
            sub.setsockopt(zmq.UNSUBSCRIBE, token.encode())
            if reply.get("status") == "error":
                return reply
            self._start(reply)
            self._follow(sub)
        except (KeyboardInterrupt, Stopped):
            pass
        finally:
            restore()
            sub.close(linger=0)
            ctx.term()
        self._flush_all()
        return None

    # -- the snapshot, then the feed ---------------------------------------------------------

    def _start(self, reply: Reply) -> None:
        self.snapshot = float(reply.get("snapshot") or 0.0)
        self.tagged = several_processes(reply)
        now = self._clock()
        for line in reply.get("lines") or []:
            if line.get("partial"):  # its end is still to come: hold it
                key = (int(line["pid"]), str(line["stream"]))
                self._held[key] = (str(line["line"]).encode("utf-8", "replace"), now)
            else:
                self._print(int(line["pid"]), str(line["stream"]), str(line["line"]),
                            float(line.get("time") or 0.0))
        self.out.flush()

    def _follow(self, sub: Any) -> None:
        import zmq

        prefix = f"output.{self.topic}."
        reap = f"watcher.{self.topic}.reap"
        while True:
            timeout = int(IDLE_FLUSH * 1000 / 2) if self._held else -1
            if sub.poll(timeout, zmq.POLLIN):
                while True:
                    try:
                        frames = sub.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    if len(frames) == 2:
                        self._handle(frames[0].decode("utf-8", "replace"), frames[1], prefix,
                                     reap)
            self._flush_idle()
            self.out.flush()

    def _handle(self, topic: str, body: bytes, prefix: str, reap: str) -> None:
        try:
            payload = json.loads(body)
        except ValueError:
            return
        if not isinstance(payload, dict):
            return
        if topic == reap:  # its output was all sent before this: end its lines
            pid = payload.get("process_pid")
            for key in [k for k in self._held if k[0] == pid]:
                self._flush(key)
            return
        name = topic[len(prefix):] if topic.startswith(prefix) else ""
        if name not in self.names:  # another watcher whose name starts like ours
            return
        pid = payload.get("pid")
        when = payload.get("time")
        if not isinstance(pid, int) or not isinstance(when, int | float):
            return
        if self.pid is not None and pid != self.pid:
            return
        if when < self.snapshot:  # read before the snapshot: already printed
            return
        self.feed(pid, name, str(payload.get("data", "")).encode("utf-8", "replace"), when)

    def feed(self, pid: int, name: str, data: bytes, when: float) -> None:
        """A chunk of live output: print its complete lines, hold the unfinished rest."""
        key = (pid, name)
        held = self._held.pop(key, None)
        buf = held[0] + data if held else data
        end = buf.rfind(b"\n")
        if end >= 0:
            for part in buf[:end].split(b"\n"):
                self._print(pid, name, part.decode("utf-8", "replace"), when)
            buf = buf[end + 1:]
        if len(buf) > MAX_HELD:
            self._print(pid, name, buf.decode("utf-8", "replace"), when)
        elif buf:
            self._held[key] = (buf, self._clock())

    def _flush_idle(self) -> None:
        now = self._clock()
        for key, (_, since) in list(self._held.items()):
            if now - since >= IDLE_FLUSH:
                self._flush(key)

    def _flush(self, key: tuple[int, str]) -> None:
        held = self._held.pop(key, None)
        if held is not None:
            self._print(key[0], key[1], held[0].decode("utf-8", "replace"), time.time())

    def _flush_all(self) -> None:
        for key in list(self._held):
            self._flush(key)
        self.out.flush()

    def _print(self, pid: int, name: str, text: str, when: float) -> None:
        if self.as_json:
            record = {"time": when, "pid": pid, "stream": name, "line": text}
            self.out.write(json.dumps(record) + "\n")
        elif self.tagged:
            self.out.write(f"[{pid}] {text}\n")
        else:
            self.out.write(text + "\n")


def on_sigterm() -> Callable[[], None]:
    """Make SIGTERM end ``tail -f`` (or ``stats --watch``) like Ctrl-C; return what puts
    the old handler back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def stop(signum: int, frame: Any) -> None:
        raise Stopped

    previous = signal.signal(signal.SIGTERM, stop)

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)

    return restore


__all__: Sequence[str] = ["Follow", "Tail", "format_line", "several_processes", "topic_name"]
