"""Arbiter: every watcher of one circusd, the control and event sockets, and the signals.

Lifetime (``run``)::

    open()      the run state (circus/state.py), bind the PUB and ROUTER sockets, start
                watchers by priority (warmup_delay between them), a watcher with
                depends_on once what it needs is there (circus/startorder.py)
    serve       until quit is requested (the quit command, SIGTERM, SIGINT, SIGQUIT)
    close()     stop watchers, dependents first, then in reverse priority order (each:
                stop_signal, graceful_timeout, SIGKILL), let replies go out, close sockets

Background tasks (commands without ``waiting``, the SIGHUP reload) are owned by the arbiter
and cancelled when it closes; signal handlers (``loop.add_signal_handler``) only schedule.

Driven by ``circusd`` (``asyncio.run(arbiter.run())``), the seed's blocking ``start()`` /
``stop()`` (optionally in a background thread), or an asyncio program: ``async with arbiter:``.
Its library coroutines (``add_watcher``, ``reload``, …) and its watchers' can be called from
plain code too: they then run on the arbiter's loop (``loop_for_calls``, circus/syncapi.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from itertools import groupby
from typing import TYPE_CHECKING, Any

import zmq
import zmq.asyncio

from circus import depends, descriptors, keys, reaper, spawnserver
from circus.curve import ServerKeys
from circus.endpoints import check_local
from circus.errors import (
    AlreadyExistsError,
    ConfigError,
    MessageError,
    NotFoundError,
    OptionError,
)
from circus.ondemand import OnDemand
from circus.plugins.launch import own_watcher_confs
from circus.readiness import NotifyHub
from circus.socketset import CircusSockets
from circus.startorder import StartOrder
from circus.state import RunState
from circus.states import WatcherState
from circus.syncapi import dual, offline_when
from circus.tasks import TaskOwner
from circus.watcher import Watcher

if TYPE_CHECKING:
    from circus.types import Frontend, FrontendFactory

log = logging.getLogger(__name__)

QUIT_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)


def _adds_only(arbiter: Arbiter, name: str, cmd: str, start: bool = False, **_: Any) -> bool:
    return not start  # an unstarted arbiter may get a watcher from plain code


def _nothing_runs(arbiter: Arbiter) -> bool:
    return arbiter.numprocesses() == 0


class Arbiter:
    """Runs a set of watchers and serves commands for them.

    Args:
        watchers: the :class:`Watcher` objects.
        endpoint: ZeroMQ endpoint of the controller (ROUTER).
        pubsub_endpoint: ZeroMQ endpoint of the event publisher (PUB).
        check_delay: reported by ``globaloptions``; nothing runs on it.
        prereload_fn: called with the arbiter before each reload of all watchers.
        context: a ``zmq.asyncio.Context`` to use.
        warmup_delay: seconds to wait after starting each watcher.
        config_file: the INI file, read again by ``reloadconfig`` and ``restart``.
        frontend: builds the event publisher and controller (``server.frontend_for``).
        subreaper: while open, adopt and reap the orphans of the workers and stop them
            with their watcher (circus/reaper.py, docs/deployment.md).
    """

    def __init__(
        self,
        watchers: Sequence[Watcher],
        endpoint: str,
        pubsub_endpoint: str,
        check_delay: float = 1.0,
        prereload_fn: Callable[[Arbiter], Any] | None = None,
        context: zmq.asyncio.Context | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        stats_endpoint: str | None = None,
        plugins: Sequence[Mapping[str, Any]] | None = None,
        sockets: Sequence[Any] | None = None,
        warmup_delay: float = 0.0,
        multicast_endpoint: str | None = None,
        endpoint_owner: str | None = None,
        umask: int | None = None,
        statsd: bool = False,
        debug: bool = False,
        config_file: str | None = None,
        background: bool = False,
        allow_unauthenticated_remote: bool = False,
        frontend: FrontendFactory | None = None,
        subreaper: bool = True,
        **options: Any,
    ) -> None:
        self.subreaper = subreaper
        self.exit_status = 0  # circusd's: 0, or an essential watcher's (reaper.exit_status)
        self.run_in_thread = background
        self.allow_unauthenticated_remote = allow_unauthenticated_remote
        self._watchers: dict[str, Watcher] = {}  # by lower-cased name, in order added
        self.endpoint = endpoint
        self.pubsub_endpoint = pubsub_endpoint
        self.check_delay = check_delay
        self.prereload_fn = prereload_fn
        self.stats_endpoint = stats_endpoint
        self.multicast_endpoint = multicast_endpoint
        self.endpoint_owner = endpoint_owner
        self.warmup_delay = warmup_delay
        self.umask = umask
        self.statsd = statsd
        self.debug = debug
        self.plugins = list(plugins or [])
        self.sockets = CircusSockets(sockets or [])  # bound by open(), closed by close()
        self._on_demand = OnDemand(self.sockets, self.background)
        self._notify: NotifyHub | None = None  # $NOTIFY_SOCKET of ready = notify workers
        self._spawn_server: spawnserver.SpawnServer | None = None  # makes the workers
        self.config_file = config_file
        self.state = RunState(config_file, options)  # takes process_record, state_file
        self.options = options
        self.curve = ServerKeys.load(options)  # ValueError: a key that cannot be used
        self._context = context
        self._own_context = context is None
        self._frontend_factory = frontend
        self._frontend: Frontend | None = None
        self._tasks = TaskOwner("arbiter")
        self._lock = asyncio.Lock()
        self._quit: asyncio.Event | None = None
        self._stopped: asyncio.Event | None = None
        self._restart_requested = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._open = False
        self.started_at = 0.0
        self.order = StartOrder(self)  # depends_on: starts that wait, stops in order
        for watcher in watchers:
            self._attach(watcher)
        for conf in own_watcher_confs(self, self.plugins):
            self._attach(watcher_from_config(conf))

    # -- watchers ---------------------------------------------------------------------------

    def _attach(self, watcher: Watcher) -> None:
        if watcher.name.lower() in self._watchers:
            raise AlreadyExistsError(f"a watcher named {watcher.name!r} already exists")
        watcher.arbiter = self
        watcher.publish = self.publish
        watcher.events_wanted = self.events_wanted
        watcher.on_state_change = self._state_changed
        self.order.attach(watcher)  # ready processes, ends (and essential)
        watcher.sockets = self.sockets.fds  # every socket, by name; updated in place
        self.state.attach(watcher)
        self._watchers[watcher.name.lower()] = watcher
        self._update_output_wanted(watcher)

    @property
    def watchers(self) -> list[Watcher]:
        """Every watcher, in the order they were added."""
        return list(self._watchers.values())

    def _subscriptions_changed(self) -> None:
        for watcher in self.watchers:
            self._update_output_wanted(watcher)

    def _update_output_wanted(self, watcher: Watcher) -> None:
        prefix = f"output.{watcher.topic_name}."
        watcher.output_wanted = self._frontend is not None and self._frontend.subscribed(
            prefix + "stdout", prefix + "stderr"
        )

    def publish(self, topic: str, payload: dict[str, Any]) -> None:
        if self._frontend is not None:
            self._frontend.publish(topic, payload)

    def events_wanted(self) -> bool:
        """Whether a published event would reach a subscriber now."""
        return self._frontend is not None and self._frontend.events_wanted()

    def _state_changed(self, watcher: Watcher) -> None:
        self._on_demand.refresh()  # a stopped on_demand watcher waits for a connection
        self.order.changed(watcher)  # starts and waits on it look again

    async def wait_subscribed(self, topic: str, limit: float) -> bool:
        """True once a subscription to exactly *topic* reached the event socket (``tail -f``)."""
        if self._frontend is None:
            return False
        return await self._frontend.wait_subscribed(topic, limit)

    def notify_address(self) -> str:
        """The ``$NOTIFY_SOCKET`` of workers with ``ready = notify`` (bound at first use)."""
        if self._notify is None:
            self._notify = NotifyHub(lambda: self._watchers.values())
        return self._notify.address

    def get_watcher(self, name: str) -> Watcher:
        """The watcher called *name* (any case). Raises NotFoundError."""
        watcher = self._watchers.get(name.lower())
        if watcher is None:
            raise NotFoundError(f"program {name} not found")
        return watcher

    def match_watchers(self, pattern: str, mode: str = "glob") -> list[Watcher]:
        """Watchers whose (lower-cased) name *pattern* matches: simple, glob or regex."""
        lowered = pattern.lower()
        if mode == "simple":
            return [w for w in self.watchers if w.name.lower() == lowered]
        if mode == "regex":
            try:
                regex = re.compile(pattern)
            except re.error as exc:
                raise MessageError(f"invalid regex {pattern!r}: {exc}") from None
            return [w for w in self.watchers if regex.match(w.name)]
        return [w for w in self.watchers if fnmatch.fnmatchcase(w.name.lower(), lowered)]

    def numprocesses(self) -> int:
        """The number of live processes over all watchers."""
        return sum(len(w.processes) for w in self.watchers)

    def numwatchers(self) -> int:
        return len(self.watchers)

    def _by_priority(self, reverse: bool = False) -> list[list[Watcher]]:
        """Watchers grouped by priority, highest first (lowest first with *reverse*)."""
        ordered = sorted(self.watchers, key=lambda w: w.priority, reverse=not reverse)
        return [list(group) for _, group in groupby(ordered, key=lambda w: w.priority)]

    @dual
    @offline_when(_adds_only)
    async def add_watcher(self, /, name: str, cmd: str, start: bool = False, **options: Any
                          ) -> Watcher:
        """Create a watcher (stopped unless *start*) and publish ``add``."""
        if name.lower() in self._watchers:
            raise AlreadyExistsError(f"a watcher named {name!r} already exists")
        watcher = Watcher(name, cmd, **options)
        if problem := depends.problem_with(depends.of(self.watchers), name, watcher.depends_on):
            raise OptionError("depends_on", problem)
        self._attach(watcher)
        self.state.added(watcher)  # a runtime change, for state_file
        watcher.emit("add")
        if start:
            await watcher.start()
        return watcher

    @dual
    async def rm_watcher(self, name: str, nostop: bool = False) -> None:
        """Remove a watcher; its processes are stopped unless *nostop*."""
        watcher = self.get_watcher(name)
        del self._watchers[watcher.name.lower()]
        self.order.changed()
        watcher.emit("remove")
        self.state.removed(watcher.name, watcher.pids if nostop else [])
        if nostop:
            await watcher.detach()
            watcher.release_cgroup()  # no longer contained (circus/cgroup.py)
        else:
            await watcher.close()

    # -- operations on all watchers -----------------------------------------------------------

    @dual
    async def start_watchers(self, autostart_only: bool = False) -> None:
        """Start watchers by priority, highest first, pausing warmup_delay after each; a
        watcher with ``depends_on`` once what it needs is there (circus/startorder.py)."""
        async with self._lock:
            await self.order.start_all(autostart_only, self.warmup_delay)

    @dual
    @offline_when(_nothing_runs)
    async def stop_watchers(self) -> None:
        """Stop watchers, dependents before their dependencies, then by priority, lowest
        first; the same priority (and depth) stop together."""
        async with self._lock:
            await self._stop_all()

    async def _stop_all(self) -> None:
        await self.order.stop_all()  # plugins, then dependents before their dependencies

    @dual
    async def reload(self, graceful: bool = True, sequential: bool = False) -> None:
        """Gracefully reload every watcher, highest priority first."""
        async with self._lock:
            if self.prereload_fn is not None:
                result = self.prereload_fn(self)
                if asyncio.iscoroutine(result):
                    await result
            for group in self._by_priority():
                for watcher in group:
                    await watcher.reload(graceful=graceful, sequential=sequential)
                    if self.warmup_delay > 0:
                        await asyncio.sleep(self.warmup_delay)

    @dual
    async def restart(self) -> None:
        """Stop every watcher, read the configuration again (if any), start them."""
        async with self._lock:
            await self._stop_all()
            if self.config_file:
                await self._apply_config(reload_running=False)
        await self.start_watchers(autostart_only=True)

    @dual
    async def reload_config(self) -> dict[str, list[str]]:
        """Apply the difference between the running watchers and the config file.

        Unchanged watchers are untouched; a watcher whose only change is numprocesses is
        resized; other changes are applied with a graceful reload, in priority order; new
        watchers are created (and started if autostart); removed ones are stopped. A file
        that cannot be used is refused whole and nothing changes.
        """
        async with self._lock:
            return await self._apply_config(reload_running=True)

    async def _apply_config(self, reload_running: bool) -> dict[str, list[str]]:
        from circus.config import load_config

        if not self.config_file:
            raise ConfigError("circusd was not started from a configuration file")
        config = load_config(self.config_file)  # ConfigError: nothing is touched
        plugins = own_watcher_confs(self, config.plugins)  # ConfigError: nothing touched
        wanted = {d["name"].lower(): d for d in [*config.watchers, *plugins]}
        current = dict(self._watchers)
        # Build every new/changed watcher first, so a bad stream or hook refuses the whole
        # file before anything is stopped.
        built: dict[str, Watcher] = {}
        changes: dict[str, dict[str, Any]] = {}
        for key, conf in wanted.items():
            watcher = current.get(key)
            if watcher is None:
                built[key] = watcher_from_config(conf)
                continue
            flat = keys.flatten(conf)
            flat.pop("name", None)
            diff = keys.diff(watcher, flat)
            if diff:
                try:  # a value the watcher refuses refuses the whole file
                    changes[key] = watcher.check_options(diff)
                except OptionError as exc:
                    raise ConfigError(exc.reason,
                                      section=f"watcher:{watcher.name}",
                                      option=exc.option) from exc
        # Sockets: new ones are bound first (one that cannot be bound refuses the file);
        # the users of a changed socket are stopped while it is rebound, started below.
        socket_plan = self.sockets.plan(config.sockets)
        self.sockets.bind_added(socket_plan)
        rebound = await self.sockets.apply(socket_plan, self.watchers)
        self.options["max_processes"] = config.circus.get("max_processes")  # circus/limits.py
        summary: dict[str, list[str]] = {"added": [], "removed": [], "changed": [],
                                         "resized": []}
        gone = [current[key] for key in sorted(set(current) - set(wanted))]
        for group in depends.stop_groups(gone):  # dependents first
            for watcher in group:
                await self.rm_watcher(watcher.name)
                summary["removed"].append(watcher.name)
        ordered = sorted(changes, key=lambda k: -current[k].priority)
        for key in ordered:
            watcher = current[key]
            diff = changes[key]
            await watcher.set_options(diff, reload="always" if reload_running else "never")
            summary["resized" if set(diff) == {"numprocesses"} else "changed"].append(
                watcher.name)
        added = sorted(built.values(), key=lambda w: -w.priority)
        for watcher in added:
            self._attach(watcher)
            watcher.emit("add")
            summary["added"].append(watcher.name)
        if reload_running:  # in dependency order, waiting as at circusd's start
            await self.order.start([w for w in added if w.autostart and not w.on_demand])
        for watcher in rebound:
            current_one = self._watchers.get(watcher.name.lower())
            if current_one is watcher and watcher.state is WatcherState.STOPPED:
                await watcher.start()
        self._on_demand.refresh()
        self.state.config_applied()  # the file is the truth again
        if socket_plan:
            log.info("sockets: added %s, changed %s, removed %s",
                     [s.name for s in socket_plan.added], [s.name for s in socket_plan.changed],
                     socket_plan.removed)
        log.info(
            "configuration applied: %s",
            ", ".join(f"{k} {v}" for k, v in summary.items() if v) or "no change",
        )
        return summary

    # -- lifetime ---------------------------------------------------------------------------

    def loop_for_calls(self) -> asyncio.AbstractEventLoop | None:
        """The loop the arbiter runs on (circus/syncapi.py), once it was opened."""
        return self._loop

    def background(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """Run *coro* as a task owned by the arbiter (cancelled when it closes)."""
        return self._tasks.spawn(coro, name=name)

    def request_quit(self) -> None:
        """Ask the arbiter to stop everything and return from :meth:`run`."""
        if self._quit is not None:
            self._quit.set()
            for watcher in self.watchers:  # spawn bursts end at their next spawn
                watcher.halt_spawning()
            self.order.changed()  # starts that wait give up

    async def wait_stopped(self) -> None:
        if self._stopped is not None:
            await self._stopped.wait()

    async def open(self) -> None:
        """Bind the sockets and start the watchers; return once they are started."""
        if self._open:
            return
        remote = self.allow_unauthenticated_remote or self.curve is not None  # keys, or the risk
        check_local(self.endpoint, "endpoint", remote)
        check_local(self.pubsub_endpoint, "pubsub_endpoint", remote)
        await self.state.open(self)  # another circusd refused; a previous generation stopped
        self._loop = asyncio.get_running_loop()
        self._quit = asyncio.Event()
        self._stopped = asyncio.Event()
        if self.umask is not None:
            os.umask(self.umask)
        if self._context is None:
            self._context = zmq.asyncio.Context()
        if self._frontend_factory is None:
            from circus.server import frontend_for

            self._frontend_factory = frontend_for
        frontend = self._frontend_factory(self, self._context, self._subscriptions_changed)
        frontend.open(self.endpoint, self.pubsub_endpoint, self.endpoint_owner)
        self._frontend = frontend
        self._open = True
        self.started_at = time.time()
        log.info("circusd listening on %s (events on %s)", self.endpoint, self.pubsub_endpoint)
        try:
            self.sockets.bind_all()  # before any watcher starts; the error names [socket:X]
        except OSError:
            await self.close()
            raise
        self._on_demand.open(lambda: self.watchers)
        reaper.REAPER.install(self.subreaper)
        self._spawn_server = spawnserver.start(descriptors.started_soft_nofile)
        await self.start_watchers(autostart_only=True)

    async def close(self) -> None:
        """Stop every watcher and close the sockets. Safe to call more than once."""
        if not self._open:
            return
        self._open = False
        self.request_quit()  # nothing spawns from here on
        log.info("stopping every watcher")
        self._on_demand.close()  # no on_demand start while everything stops
        try:
            async with self._lock:
                await self._stop_all()
            for watcher in self.watchers:
                await watcher.close()
            await reaper.stop_all_orphans()
        finally:
            server, self._spawn_server = self._spawn_server, None
            await spawnserver.stop(server)
            reaper.REAPER.uninstall()
            if self._stopped is not None:
                self._stopped.set()
            await self._tasks.close(timeout=5.0)
            if self._frontend is not None:
                await self._frontend.close()
                self._frontend = None
            if self._own_context and self._context is not None:
                self._context.term()
                self._context = None
            self.sockets.close_all()
            if self._notify is not None:
                self._notify.close()
                self._notify = None
            self.state.close()

    async def __aenter__(self) -> Arbiter:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def run(self, on_ready: Callable[[], None] | None = None) -> None:
        """Serve until a quit is requested, then stop everything. Used by circusd, which
        passes *on_ready* to hear when the sockets are bound and the watchers started."""
        loop = asyncio.get_running_loop()
        installed: list[int] = []
        if threading.current_thread() is threading.main_thread():
            for sig in (*QUIT_SIGNALS, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
                loop.add_signal_handler(sig, self._on_signal, sig)
                installed.append(sig)
            with contextlib.suppress(ValueError, OSError):
                signal.signal(signal.SIGWINCH, signal.SIG_IGN)
        try:
            await self.open()
            if on_ready is not None:
                on_ready()
            log.info("arbiter now waiting for commands")
            assert self._quit is not None
            await self._quit.wait()
        finally:
            await self.close()
            for signum in installed:
                loop.remove_signal_handler(signum)

    def _on_signal(self, sig: int) -> None:
        name = signal.Signals(sig).name
        if sig == signal.SIGHUP:
            log.info("got %s: reloading every watcher gracefully", name)
            self.background(self.reload(graceful=True), name="sighup-reload")
        elif sig in (signal.SIGUSR1, signal.SIGUSR2):
            # Their default action would kill circusd and orphan every child.
            log.info("got %s: ignored", name)
        else:
            log.info("got %s: stopping every watcher and exiting", name)
            self.request_quit()

    # -- the seed's blocking API --------------------------------------------------------------

    def start(self, background: bool | None = None) -> None:
        """Run the arbiter. Blocks until it quits, unless *background* (then a thread runs it).

        *background* defaults to the ``background`` given to the constructor.
        """
        if background is None:
            background = self.run_in_thread
        if background:
            ready = threading.Event()

            def target() -> None:
                async def main() -> None:
                    await self.open()
                    ready.set()
                    assert self._quit is not None
                    try:
                        await self._quit.wait()
                    finally:
                        await self.close()

                try:
                    asyncio.run(main())
                finally:
                    ready.set()

            self._thread = threading.Thread(target=target, name="circus-arbiter", daemon=True)
            self._thread.start()
            ready.wait()
            return
        asyncio.run(self.run())

    def stop(self) -> None:
        """Stop a running arbiter (from another thread) and wait until it has stopped."""
        loop = self._loop
        if loop is not None and loop.is_running() and self._quit is not None:
            loop.call_soon_threadsafe(self._quit.set)
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __repr__(self) -> str:
        return f"<Arbiter {self.endpoint} watchers={len(self.watchers)}>"


# -- building from configuration ------------------------------------------------------------


def watcher_from_config(conf: Mapping[str, Any]) -> Watcher:
    """A Watcher from a watcher mapping of :func:`circus.config.load_config`."""
    options = dict(conf)
    name = options.pop("name")
    cmd = options.pop("cmd", "")
    return Watcher(name, cmd, **options)

