"""The views the layers have of each other, as Protocols.

Commands and the controller see the arbiter as :class:`ArbiterAPI` and its watchers as
:class:`WatcherAPI`; a watcher sees its arbiter (for hooks) as :class:`ArbiterAPI`; the
arbiter sees its ZeroMQ side as :class:`Frontend`. None of these modules imports another
layer's classes, so the picture in docs/design.md is the import graph.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import asyncio

    import zmq.asyncio

    from circus.states import WatcherState
    from circus.streams.ring import OutputRing

Props = dict[str, Any]
Reply = dict[str, Any]
Publish = Callable[[str, dict[str, Any]], None]


class ProcessAPI(Protocol):
    """One process, as commands read it."""

    @property
    def pid(self) -> int: ...

    def info(self) -> dict[str, Any] | str: ...


class WatcherAPI(Protocol):
    """One watcher, as commands and the controller use it."""

    name: str
    numprocesses: int
    max_processes: int | None
    singleton: bool
    state: WatcherState

    @property
    def status(self) -> str: ...

    def details(self) -> dict[str, Any]: ...

    @property
    def processes(self) -> Mapping[int, ProcessAPI]: ...

    @property
    def pids(self) -> list[int]: ...

    @property
    def output(self) -> OutputRing: ...

    def has_hook(self, name: str) -> bool: ...

    def get_process(self, pid: int) -> ProcessAPI | None: ...

    def options(self) -> dict[str, Any]: ...

    def get_option(self, key: str) -> Any: ...

    def check_options(self, changes: Mapping[str, Any]) -> dict[str, Any]: ...

    async def set_options(self, changes: Mapping[str, Any], reload: Any = ...) -> bool: ...

    async def start(self) -> dict[str, list[int]]: ...

    async def stop(self) -> None: ...

    async def restart(self) -> dict[str, list[int]]: ...

    async def reload(self, graceful: bool = ..., sequential: bool = ...) -> dict[str, Any]: ...

    async def set_numprocesses(self, n: int) -> int: ...

    def halt_spawning(self) -> None: ...

    def resume_spawning(self) -> None: ...

    async def incr(self, nb: int = ...) -> int: ...

    async def decr(self, nb: int = ...) -> int: ...

    async def kill(self, pid: int | None = ..., signum: int | None = ...,
                   graceful_timeout: float | None = ...) -> None: ...

    async def signal_processes(self, signum: int, pid: int | None = ...,
                               childpid: int | None = ..., children: bool = ...,
                               recursive: bool = ...) -> None: ...

    async def call_hook(self, hook_name: str, **extra: Any) -> Any: ...


class ArbiterAPI(Protocol):
    """The arbiter, as commands, the controller and hooks use it."""

    endpoint: str
    pubsub_endpoint: str
    stats_endpoint: str | None
    multicast_endpoint: str | None
    check_delay: float

    @property
    def watchers(self) -> Sequence[WatcherAPI]: ...

    def get_watcher(self, name: str) -> WatcherAPI: ...

    def match_watchers(self, pattern: str, mode: str = ...) -> Sequence[WatcherAPI]: ...

    def numprocesses(self) -> int: ...

    def numwatchers(self) -> int: ...

    async def add_watcher(self, name: str, cmd: str, start: bool = ...,
                          **options: Any) -> WatcherAPI: ...

    async def rm_watcher(self, name: str, nostop: bool = ...) -> None: ...

    async def start_watchers(self, autostart_only: bool = ...) -> None: ...

    async def stop_watchers(self) -> None: ...

    async def reload(self, graceful: bool = ..., sequential: bool = ...) -> None: ...

    async def restart(self) -> None: ...

    async def reload_config(self) -> dict[str, list[str]]: ...

    def request_quit(self) -> None: ...

    def loop_for_calls(self) -> asyncio.AbstractEventLoop | None: ...

    async def wait_stopped(self) -> None: ...

    async def wait_subscribed(self, topic: str, limit: float) -> bool: ...

    def background(self, coro: Coroutine[Any, Any, Any], *,
                   name: str) -> asyncio.Task[Any]: ...


class Frontend(Protocol):
    """The arbiter's ZeroMQ side: the event publisher and the controller."""

    def open(self, endpoint: str, pubsub_endpoint: str, owner: str | None) -> None: ...

    def publish(self, topic: str, payload: dict[str, Any]) -> None: ...

    def subscribed(self, *topics: str) -> bool: ...

    def events_wanted(self) -> bool: ...

    async def wait_subscribed(self, topic: str, limit: float) -> bool: ...

    async def close(self) -> None: ...


FrontendFactory = Callable[["ArbiterAPI", "zmq.asyncio.Context", Callable[[], None]], Frontend]
