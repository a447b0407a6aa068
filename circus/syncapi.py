"""Library methods that work when called from plain code and from asyncio code alike.

Circus documents ``watcher.stop()``, ``arbiter.add_watcher(...)`` and ``process.stop()``
as plain calls that do their work, and circus's own code awaits the same methods. The
methods are coroutine functions underneath; :func:`dual` wraps one so that a call

* **in a thread that runs no event loop** runs the method on the object's loop (an
  arbiter running with ``background=True`` has it in its own thread) with
  ``asyncio.run_coroutine_threadsafe``, blocks until it is done and returns its value
  or raises its exception. There is no deadline: the work has its own (a stop ends
  with SIGKILL after ``graceful_timeout``), and the wait ends with
  :class:`NotRunningError` if the loop stops first. An object that has no running loop
  at all is refused with :class:`NotRunningError`, unless the method says the call is
  safe on a private loop (:func:`offline_when`: a process started outside any loop, a
  watcher with nothing to stop), which then runs it with ``asyncio.run``;
* **in asyncio code** returns a :class:`Call`, a coroutine: ``await`` runs the method
  right there, as if it were the plain coroutine (same task, same cancellation, no
  extra task). If nothing awaits it or hands it to a task, it starts by itself as a
  task two turns of the loop later, so the work is done either way; an exception
  nobody awaits is then logged. A call from a loop other than the object's (another
  thread's) submits the work to the object's loop at once, and the Call awaits it.

The wrapped methods keep their coroutine type for the type checker, which describes
asyncio callers (circus's own code, ``types.WatcherAPI``); from plain code the value
itself is returned.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from circus.errors import CircusError

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

# How often a blocked plain caller checks that the object's loop still runs.
POLL = 0.1


class NotRunningError(CircusError, RuntimeError):
    """A library call from plain code, on an object whose event loop is not running."""


class Bound(Protocol):
    """An object whose work runs on one event loop (an arbiter's, a process's)."""

    def loop_for_calls(self) -> asyncio.AbstractEventLoop | None:
        """The loop its work belongs to; None if it belongs to none (yet)."""


S = TypeVar("S", bound=Bound)
Method = Callable[Concatenate[S, P], Coroutine[Any, Any, T]]

_unawaited: set[asyncio.Task[Any]] = set()  # keeps the tasks of un-awaited calls alive


class Call(Coroutine[Any, Any, T]):
    """One call of a :func:`dual` method made in asyncio code (see the module docstring).

    ``await`` it (once) for its value, or hand it to ``asyncio.create_task`` / ``gather``;
    left alone, it runs as a task of its own.
    """

    __slots__ = ("_make", "_name", "_handle", "_it", "_task", "_driven", "_awaited")

    def __init__(self, make: Callable[[], Awaitable[T]], name: str,
                 loop: asyncio.AbstractEventLoop) -> None:
        self._make = make
        self._name = name
        self._it: Generator[Any, Any, T] | None = None  # what a driving task sends to
        self._task: asyncio.Task[T] | None = None  # when it started by itself
        self._driven = False  # awaited inline (or closed): it never starts by itself
        self._awaited = False  # someone receives its outcome
        # Two turns, so that a task created in the caller's step drives it first.
        self._handle: asyncio.Handle | None = loop.call_soon(self._turn, loop)

    def _turn(self, loop: asyncio.AbstractEventLoop) -> None:
        self._handle = None if self._driven else loop.call_soon(self._start_alone)

    def _start_alone(self) -> None:
        self._handle = None
        if self._driven:
            return
        task = asyncio.get_running_loop().create_task(_await(self._make()), name=self._name)
        self._task = task
        _unawaited.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[T]) -> None:
        _unawaited.discard(task)
        if task.cancelled():
            return
        exc = task.exception()  # retrieved: asyncio does not report it again
        if exc is not None and not self._awaited:
            log.error("%s (not awaited) failed", self._name, exc_info=exc)

    def _claim(self) -> None:
        self._driven = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def __await__(self) -> Generator[Any, Any, T]:
        self._awaited = True
        if self._task is not None:
            return self._task.__await__()
        if self._driven:
            raise RuntimeError(f"cannot await {self._name} twice")
        self._claim()
        return self._make().__await__()

    # -- the coroutine protocol, for a task that drives it ----------------------------------

    def send(self, value: Any) -> Any:
        if self._it is None:
            self._it = self.__await__()
        return self._it.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        if self._it is None:  # thrown into before it ran (a task cancelled at once)
            self._claim()
            if self._task is not None:  # it started by itself meanwhile: cancel that too
                self._task.cancel()
            raise typ if val is None else val
        if val is None and tb is None:
            return self._it.throw(typ)
        return self._it.throw(typ, val, tb)

    def close(self) -> None:
        if self._it is None:
            self._claim()
        else:
            self._it.close()

    def __repr__(self) -> str:
        state = "task" if self._task is not None else "awaited" if self._driven else "pending"
        return f"<Call {self._name} {state}>"


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable


F = TypeVar("F", bound=Callable[..., Any])


def offline_when(predicate: Callable[..., bool]) -> Callable[[F], F]:
    """Let a :func:`dual` method run on a private loop (``asyncio.run``) when neither the
    caller nor the object has a running loop and ``predicate(self, *args, **kwargs)`` is
    true: the call then leaves nothing behind that needs a loop (put it under ``@dual``)."""

    def mark(method: F) -> F:
        setattr(method, "_offline_when", predicate)  # noqa: B010
        return method

    return mark


def dual(method: Method[S, P, T]) -> Method[S, P, T]:
    """Make the coroutine method callable from plain code too (see the module docstring)."""
    offline: Callable[..., bool] | None = getattr(method, "_offline_when", None)
    name = method.__qualname__

    @functools.wraps(method)
    def call(self: S, /, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, T]:
        def make() -> Coroutine[Any, Any, T]:
            return method(self, *args, **kwargs)

        def safe_offline() -> bool:
            return offline is not None and offline(self, *args, **kwargs)

        result = run_call(self.loop_for_calls(), make, name, safe_offline)
        return result  # type: ignore[return-value]  # the value itself, from plain code

    return call


def run_call(target: asyncio.AbstractEventLoop | None,
             make: Callable[[], Coroutine[Any, Any, T]], name: str,
             offline: Callable[[], bool]) -> Call[T] | T:
    """Run ``make()`` for the current caller: a :class:`Call` in asyncio code, the value
    in plain code (see the module docstring)."""
    try:
        here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        here = None
    elsewhere = target is not None and target is not here and target.is_running()
    if here is not None and not elsewhere:
        return Call(make, name, here)
    if target is not None and elsewhere:
        coro = make()
        try:
            future = asyncio.run_coroutine_threadsafe(coro, target)
        except RuntimeError:  # the loop closed meanwhile
            coro.close()
            raise NotRunningError(_not_running(name)) from None
        if here is not None:
            return Call(lambda: asyncio.wrap_future(future), name, here)
        return _wait(future, target, name)
    if offline():
        return asyncio.run(make())
    raise NotRunningError(_not_running(name))


def _wait(future: concurrent.futures.Future[T], loop: asyncio.AbstractEventLoop,
          name: str) -> T:
    """The outcome of *future*, run on *loop* in another thread; a stopped loop ends it."""
    while True:
        done, _ = concurrent.futures.wait([future], timeout=POLL)
        if done:
            try:
                return future.result()
            except concurrent.futures.CancelledError:
                raise NotRunningError(f"{name}() was cancelled: the arbiter stopped "
                                      "before it finished") from None
        if not loop.is_running():
            future.cancel()
            raise NotRunningError(f"{name}() could not finish: the arbiter stopped")


def _not_running(name: str) -> str:
    return (f"{name}() needs the event loop of a running arbiter, and none runs: start the "
            "arbiter first (arbiter.start(background=True) returns once it runs), or "
            "await the call in asyncio code")


__all__ = ["Call", "NotRunningError", "dual", "offline_when", "run_call"]
