"""``listen``: print the events circusd publishes (a circusctl command only)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from circus.commands.base import Command, Props, Reply, make_message
from circus.errors import CallError, MessageError
from circus.tiers import Tier

if TYPE_CHECKING:
    import zmq

    from circus.curve import ClientKeys
    from circus.types import ArbiterAPI


class Listen(Command):
    """\
    Subscribe to a watcher event
    ============================

    Prints the events circusd publishes, one line each as they come,
    ``<topic>: <payload>``, e.g. ``watcher.web.spawn: {"process_pid": 4242, "time":
    ...}`` (with ``--json``, one JSON object ``{"topic": ..., "payload": ...}`` per line).
    Topics are prefixes: ``watcher.web.`` gives every event of ``web``; no topic gives
    everything. Stop with Ctrl-C.

    circusctl subscribes at once to the endpoint given with ``--endpoint`` (by default
    ``tcp://127.0.0.1:5556``, Circus's events endpoint), so no event published after it
    started is lost. In the same moment it asks that endpoint for ``globaloptions``: if it
    is circusd's control endpoint, the reply names the events endpoint
    (``pubsub_endpoint``) and circusctl listens there instead. ``$CIRCUSCTL_ENDPOINT``
    is used when ``--endpoint`` is not given.

    ZMQ Message
    -----------

    Not a command of the control socket (errno 3): subscribe a ZeroMQ SUB socket to the
    ``pubsub_endpoint``; each event is two frames, the topic and a JSON object.

    Command line
    ------------

    ::

        $ circusctl listen [<topic> ...]
    """

    name = "listen"
    tier = Tier.READER
    usage = "listen [<topic> ...]"

    def message(self, *args: str, **opts: Any) -> Props:
        return make_message(self.name, topics=list(args))

    def validate(self, arbiter: ArbiterAPI, props: Props) -> None:
        raise MessageError("invalid message. use a pub/sub socket")

    async def execute(self, arbiter: ArbiterAPI, props: Props) -> Reply | None:
        raise MessageError("invalid message. use a pub/sub socket")


class Listener:
    """What ``circusctl listen`` does: print the events published at *endpoint*, or at the
    events endpoint of the daemon whose control endpoint *endpoint* is.

    The subscription is made first, before anything else: an events endpoint given
    directly loses nothing. At the same time a DEALER asks *endpoint* for
    ``globaloptions``. A reply means *endpoint* is a control endpoint (a ROUTER, which never
    completes a connection with a SUB): the subscription moves to the ``pubsub_endpoint``
    the reply names. An event means *endpoint* is a publisher, and the question is dropped;
    so is one without a reply within *probe_timeout*.

    Args:
        endpoint: where to subscribe and ask.
        topics: topic prefixes (none: every event).
        emit: called with each event's topic and body, as text.
        note: called with what circusctl tells on stderr (where it listens).
        probe_timeout: how long the question may stay unanswered.
        keys: the client's CURVE keys (:class:`circus.curve.ClientKeys`), when circusd
            requires CURVE.
    """

    def __init__(self, endpoint: str, topics: Sequence[str],
                 emit: Callable[[str, str], None], note: Callable[[str], None],
                 probe_timeout: float = 5.0, keys: ClientKeys | None = None) -> None:
        self.keys = keys
        self.endpoint = endpoint
        self.topics = list(topics) or [""]
        self.emit = emit
        self.note = note
        self.probe_timeout = probe_timeout
        self.listening = endpoint

    def run(self) -> None:
        """Print events until Ctrl-C.

        Raises:
            CallError: the daemon names an events endpoint that cannot be connected to.
        """
        import zmq

        ctx: zmq.Context[Any] = zmq.Context()
        sub = ctx.socket(zmq.SUB)
        sub.linger = 0
        if self.keys is not None:
            self.keys.apply(sub)
        for topic in self.topics:
            sub.setsockopt(zmq.SUBSCRIBE, topic.encode())
        sub.connect(self.endpoint)
        self.note(f"listening to {self.endpoint} (Ctrl-C to stop)")
        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)
        dealer = ctx.socket(zmq.DEALER)
        dealer.linger = 0
        if self.keys is not None:
            self.keys.apply(dealer)
        dealer.connect(self.endpoint)
        msg_id = os.urandom(16).hex()
        dealer.send(json.dumps({"id": msg_id, "command": "globaloptions",
                                "properties": {}}).encode())
        poller.register(dealer, zmq.POLLIN)
        probe: zmq.Socket[Any] | None = dealer  # None once the question is settled
        deadline = time.monotonic() + self.probe_timeout

        def drop_probe() -> None:
            nonlocal probe
            if probe is not None:
                poller.unregister(probe)
                probe.close(linger=0)
                probe = None

        try:
            while True:
                wait = None
                if probe is not None:
                    wait = max(int((deadline - time.monotonic()) * 1000), 0)
                ready = dict(poller.poll(wait))
                if sub in ready:
                    drop_probe()  # a publisher: this is the events endpoint
                    while sub.poll(0):
                        frames = sub.recv_multipart()
                        if len(frames) == 2:
                            self.emit(frames[0].decode("utf-8", "replace"),
                                      frames[1].decode("utf-8", "replace"))
                if probe is not None and probe in ready:
                    found = _pubsub_endpoint(probe.recv(), msg_id)
                    if found is not None:
                        drop_probe()
                        self._move(sub, found)
                if probe is not None and time.monotonic() >= deadline:
                    drop_probe()
        finally:
            drop_probe()
            sub.close(linger=0)
            ctx.term()

    def _move(self, sub: zmq.Socket[Any], found: str) -> None:
        from circus.client import endpoint_problem

        target = _connectable(found, self.endpoint)
        if target == self.endpoint:
            return
        problem = endpoint_problem(target)
        if problem:
            raise CallError(f"circusd at {self.endpoint} publishes its events at {found}, "
                            f"which cannot be connected to: {problem}")
        sub.disconnect(self.endpoint)
        sub.connect(target)
        self.listening = target
        self.note(f"{self.endpoint} is circusd's control endpoint: listening to its events "
                  f"endpoint {target}")


def _pubsub_endpoint(data: bytes, msg_id: str) -> str | None:
    """The ``pubsub_endpoint`` of a ``globaloptions`` reply, if *data* is that reply."""
    try:
        reply = json.loads(data)
    except ValueError:
        return None
    if not isinstance(reply, dict) or reply.get("id") != msg_id:
        return None
    options = reply.get("options")
    found = options.get("pubsub_endpoint") if isinstance(options, dict) else None
    return found if isinstance(found, str) and found else None


def _connectable(endpoint: str, control: str) -> str:
    """*endpoint* as a client reaches it: a daemon bound to every address (``*``,
    ``0.0.0.0``) is reached at the host of its control endpoint."""
    if not endpoint.startswith("tcp://"):
        return endpoint
    url = urlparse(endpoint)
    if url.hostname not in ("*", "0.0.0.0"):
        return endpoint
    host = urlparse(control).hostname if control.startswith("tcp://") else None
    return f"tcp://{host or '127.0.0.1'}:{url.port}"
