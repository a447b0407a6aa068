"""The :class:`CircusPlugin` base class: a subscriber to circusd's events and a client of
its control socket, in a process of its own.

A plugin runs one asyncio loop (:meth:`CircusPlugin.start` blocks on it):

* a task reads the events circusd publishes and hands each one to ``handle_recv``, in the
  order they were published;
* one task per :meth:`CircusPlugin.every` registration runs a callback periodically;
* :meth:`CircusPlugin.stop` (thread-safe; the ``circus-plugin`` runner calls it on SIGTERM)
  ends both, then ``handle_stop`` runs and the sockets are closed.

The seed's API is kept as it was: ``call`` blocks until circusd answers (it uses a
synchronous socket of its own, so it works from ``handle_recv``, from a periodic callback
and from any thread), ``cast`` sends without waiting. Plugins written for asyncio use
``await self.async_call(...)`` instead, and may define ``handle_recv``, ``handle_init``,
``handle_stop`` and periodic callbacks as coroutines.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, ClassVar, NamedTuple

import zmq
import zmq.asyncio

from circus.client import AsyncCircusClient, CircusClient, cast_message, make_message
from circus.curve import ClientKeys
from circus.errors import CallError, OptionError
from circus.tasks import TaskOwner
from circus.util.convert import to_bool, to_float, to_int

log = logging.getLogger(__name__)

Callback = Callable[[], Any]


class EventFrame(bytes):
    """One frame of an event: ``bytes``, as Circus 0.19 hands them to plugins, that prints
    as text, as the seed's (Python 2) strings did.

    ``topic.split(b".")`` and ``json.loads(msg)`` work as on bytes, and
    ``"%s::%s" % (topic, msg)`` writes ``watcher.web.spawn::{...}``.
    """

    def __str__(self) -> str:
        return self.decode("utf-8", "replace")

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


class PluginOption(NamedTuple):
    """A declared option of a plugin: its default and the converter of its text."""

    default: Any
    convert: Callable[[Any], Any]
    help: str


REQUIRED: Any = object()  # the default of an option that must be given


def optional(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A converter that maps an empty value to None."""

    def parse(value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return convert(value)

    return parse


def positive_seconds(value: Any) -> float:
    """A period: a number of seconds above zero."""
    seconds = to_float(value)
    if seconds <= 0:
        raise ValueError(f"expected a positive number of seconds, got {seconds:g}")
    return seconds


def port_number(value: Any) -> int:
    port = to_int(value)
    if not 0 < port < 65536:
        raise ValueError(f"a port is 1-65535, got {port}")
    return port


async def _maybe_await(result: Any) -> Any:
    if inspect.isawaitable(result):
        return await result
    return result


class CircusPlugin:
    """Base class of plugins.

    Args:
        endpoint: circusd's control endpoint (ROUTER).
        pubsub_endpoint: circusd's event endpoint (PUB).
        check_delay: circusd's check_delay, for plugins that pace themselves on it.
        ssh_server: accepted for compatibility; SSH tunnels are not supported.
        context: the ``zmq.Context`` to use (default: a new one).
        keys: CURVE keys (:class:`circus.curve.ClientKeys`) when circusd requires CURVE;
            circusd gives the plugins it starts a key of its own.
        **config: every other key of the plugin's configuration section, as given
            (strings from an INI file).

    Subclasses implement :meth:`handle_recv` and may declare their options in
    :attr:`options`; the converted values are in :attr:`settings`.
    """

    #: The plugin's name, used in its log lines.
    name: ClassVar[str] = ""
    #: Topic prefixes subscribed to; the empty prefix means every event.
    topics: ClassVar[tuple[bytes, ...]] = (b"",)
    #: Seconds to wait for circusd's answer to a call.
    call_timeout: ClassVar[float] = 5.0
    #: Declared options: name -> PluginOption. Undeclared keys stay in :attr:`config`.
    options: ClassVar[Mapping[str, PluginOption]] = {
        "active": PluginOption(True, to_bool, "false: the plugin does not run."),
    }

    def __init__(
        self,
        endpoint: str,
        pubsub_endpoint: str,
        check_delay: float,
        ssh_server: str | None = None,
        *,
        context: zmq.Context[Any] | None = None,
        keys: ClientKeys | None = None,
        **config: Any,
    ) -> None:
        if ssh_server:
            raise ValueError("SSH tunnels are not supported: forward the endpoints with ssh -L")
        self.endpoint = endpoint
        self.pubsub_endpoint = pubsub_endpoint
        self.keys = keys  # CURVE, when circusd requires it (circus/curve.py)
        self.check_delay = float(check_delay)
        self.ssh_server = ssh_server
        self.config: dict[str, Any] = dict(config)
        self.settings: dict[str, Any] = type(self).check_config(self.config)
        self.active: bool = bool(self.settings.get("active", True))
        self._own_context = context is None
        self.context: zmq.Context[Any] = context if context is not None else zmq.Context()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._sync_client: CircusClient | None = None
        self._sync_lock = threading.Lock()
        self._async_client: AsyncCircusClient | None = None
        self._periodic: list[tuple[float, float, Callback]] = []
        self._tasks = TaskOwner(f"plugin {self.label}")
        self._stop_event: asyncio.Event | None = None
        self._stop_requested = False
        self._running = False

    # -- configuration ------------------------------------------------------------------

    @classmethod
    def check_config(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        """The declared options of *config*, converted (defaults for the missing ones).

        Raises:
            OptionError: a value cannot be used, or a required option is missing.
        """
        values: dict[str, Any] = {}
        for key, option in cls.options.items():
            raw = config.get(key)
            if raw is None:
                if option.default is REQUIRED:
                    raise OptionError(key, "this option is required")
                values[key] = option.default
                continue
            try:
                values[key] = option.convert(raw)
            except (ValueError, TypeError) as exc:
                raise OptionError(key, str(exc)) from None
        return values

    @property
    def label(self) -> str:
        """The plugin's name for log lines."""
        return self.name or type(self).__name__

    @property
    def running(self) -> bool:
        return self._running

    # -- what plugins implement ---------------------------------------------------------

    def handle_recv(self, data: tuple[bytes, bytes]) -> Any:
        """Receives every event published by circusd: ``(topic, message)``.

        May be a coroutine function; events are handled one at a time, in order.
        """
        raise NotImplementedError("a plugin implements handle_recv(data)")

    def handle_init(self) -> Any:
        """Called in the plugin's loop right before it starts receiving events."""

    def handle_stop(self) -> Any:
        """Called right before the plugin stops, after the last event was handled."""

    # -- talking to circusd -------------------------------------------------------------

    def _client(self) -> CircusClient:
        if self._sync_client is None:
            self._sync_client = CircusClient(
                context=self.context, endpoint=self.endpoint, timeout=self.call_timeout,
                keys=self.keys)
        return self._sync_client

    def call(self, command: str, **props: Any) -> dict[str, Any]:
        """Send *command* to circusd and return its reply (blocks until it comes).

        Raises:
            CallError: no answer within :attr:`call_timeout` seconds.
        """
        with self._sync_lock:
            return self._client().call(make_message(command, **props))

    def cast(self, command: str, **props: Any) -> None:
        """Send *command* to circusd without waiting for (or getting) an answer."""
        with self._sync_lock:
            self._client().call(cast_message(command, **props))

    def _aclient(self) -> AsyncCircusClient:
        if self._async_client is None:
            actx = zmq.asyncio.Context.shadow(self.context.underlying)
            self._async_client = AsyncCircusClient(
                endpoint=self.endpoint, timeout=self.call_timeout, context=actx,
                keys=self.keys)
        return self._async_client

    async def async_call(self, command: str, **props: Any) -> dict[str, Any]:
        """:meth:`call` for coroutines: the loop keeps running while circusd answers."""
        return await self._aclient().call(make_message(command, **props))

    async def restart_on(self, watcher: str | None, reason: str) -> None:
        """Log *reason*; restart *watcher* if one is named. Failures are logged, not raised."""
        if watcher is None:
            log.warning("%s: %s", self.label, reason)
            return
        log.warning("%s: %s: restarting %s", self.label, reason, watcher)
        try:
            reply = await self.async_call("restart", name=watcher)
        except CallError as exc:
            log.error("%s: restart %s: %s", self.label, watcher, exc)
            return
        if reply.get("status") == "error":
            log.error("%s: restart %s: %s", self.label, watcher, reply.get("reason"))

    async def async_cast(self, command: str, **props: Any) -> None:
        """:meth:`cast` for coroutines."""
        await self._aclient().cast(command, **props)

    # -- helpers for plugins --------------------------------------------------------------

    def every(self, seconds: float, callback: Callback, *, first: float | None = None) -> None:
        """Run *callback* (a function or a coroutine function) every *seconds*.

        The first run comes after *first* seconds (default: *seconds*). A run that takes
        longer than the period skips the ticks it missed. Register in ``__init__`` or
        ``handle_init``.
        """
        if seconds <= 0:
            raise ValueError(f"a period is a positive number of seconds, got {seconds!r}")
        entry = (float(seconds), float(seconds if first is None else first), callback)
        self._periodic.append(entry)
        if self._running:
            self.spawn(self._repeat(*entry), name=f"every-{seconds}")

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """Run *coro* as a task of the plugin (cancelled when it stops; failures logged)."""
        return self._tasks.spawn(coro, name=name)

    @staticmethod
    def split_data(data: tuple[bytes, bytes]) -> tuple[str, str, bytes]:
        """``(watcher name, event, message)`` of a ``watcher.<name>.<event>`` event."""
        topic, msg = data
        text = topic.decode("utf-8", "replace") if isinstance(topic, bytes) else str(topic)
        _, _, rest = text.partition(".")
        watcher, _, event = rest.rpartition(".")
        return watcher, event, msg

    @staticmethod
    def load_message(msg: bytes | str) -> Any:
        return json.loads(msg)

    # -- running --------------------------------------------------------------------------

    def start(self) -> None:
        """Run the plugin until :meth:`stop` is called (blocks)."""
        asyncio.run(self.run())

    def stop(self) -> None:
        """Ask the plugin to stop; safe from any thread and from signal handlers."""
        self._stop_requested = True
        loop, event = self.loop, self._stop_event
        if loop is not None and event is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between
                loop.call_soon_threadsafe(event.set)

    async def run(self) -> None:
        """Receive events and run periodic callbacks until :meth:`stop`."""
        if not self.active:
            log.info("%s: not active (active = false); not running", self.label)
            return
        self.loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        if self._stop_requested:
            return
        actx = zmq.asyncio.Context.shadow(self.context.underlying)
        sub = actx.socket(zmq.SUB)
        sub.linger = 0
        if self.keys is not None:
            self.keys.apply(sub)
        for topic in self.topics:
            sub.setsockopt(zmq.SUBSCRIBE, topic)
        sub.connect(self.pubsub_endpoint)
        self._running = True
        try:
            await _maybe_await(self.handle_init())
            self._tasks.spawn(self._receive(sub), name="receive")
            for entry in self._periodic:
                self.spawn(self._repeat(*entry), name=f"every-{entry[0]}")
            await self._stop_event.wait()
        finally:
            self._running = False
            await self._tasks.close(timeout=5.0)
            try:
                await _maybe_await(self.handle_stop())
            finally:
                sub.close(linger=0)
                self._close_clients()

    def _close_clients(self) -> None:
        if self._async_client is not None:
            self._async_client.close()
            self._async_client = None
        with self._sync_lock:
            if self._sync_client is not None:
                self._sync_client.close()
                self._sync_client = None
        if self._own_context:
            self.context.term()

    async def _receive(self, sub: zmq.asyncio.Socket) -> None:
        while True:
            frames = await sub.recv_multipart()
            if len(frames) != 2:
                continue
            data = (EventFrame(frames[0]), EventFrame(frames[1]))
            try:
                await _maybe_await(self.handle_recv(data))
            except Exception:
                log.exception("%s: handling the event %s failed", self.label, data[0])

    async def _repeat(self, seconds: float, first: float, callback: Callback) -> None:
        start = time.monotonic() + first
        next_run = start
        while True:
            await asyncio.sleep(max(next_run - time.monotonic(), 0.0))
            try:
                await _maybe_await(callback())
            except Exception:
                log.exception("%s: periodic %s failed", self.label,
                              getattr(callback, "__name__", callback))
            now = time.monotonic()
            # the next tick on the original schedule that is still ahead of us
            missed = max(int((now - next_run) // seconds), 0)
            next_run += seconds * (missed + 1)


__all__ = [
    "REQUIRED",
    "CircusPlugin",
    "EventFrame",
    "PluginOption",
    "optional",
    "port_number",
    "positive_seconds",
]
