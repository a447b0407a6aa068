"""circusd telling its service manager how it is doing: systemd's ``sd_notify``, sending side.

systemd starts a ``Type=notify`` service with ``NOTIFY_SOCKET`` in its environment, the
address of a datagram socket (a path, or ``@name`` for an abstract one). The service sends
it ``KEY=VALUE`` lines: ``READY=1`` once it is up (``systemctl start`` returns then, and
units ordered after it start), ``STATUS=`` for ``systemctl status``, ``RELOADING=1`` and
``READY=1`` around a reload, ``STOPPING=1``, and ``WATCHDOG=1`` at least every
``WATCHDOG_USEC`` microseconds when the unit sets ``WatchdogSec=``.

:func:`notify` is the whole protocol; :class:`Watchdog` pings from the event loop, so a
loop that stops turning stops the pings and systemd restarts circusd;
:class:`ServiceNotifier` is what circusd sends, and when (docs/deployment.md, "Running
under systemd (Type=notify)").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, MutableMapping

log = logging.getLogger(__name__)

# The longest a send waits for room in the manager's queue. It holds the event loop, so
# it is short, and a watchdog ping does not wait at all: a ping that finds the queue full
# is not needed (the manager has not read the previous ones).
SEND_TIMEOUT = 0.5

# Taken out of circusd's environment, so that workers started with copy_env do not talk
# to systemd as if they were the service (circusd gives them an address of its own).
SERVICE_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def notify(*assignments: str, address: str | None = None,
           timeout: float = SEND_TIMEOUT) -> bool:
    """Send *assignments* (``"READY=1"``, ``"STATUS=…"``) as one datagram.

    Args:
        address: where to; ``$NOTIFY_SOCKET`` when None.
        timeout: how long to wait for room in the manager's queue (0: not at all).

    Returns:
        True once sent; False when there is no address, or when the send failed (logged
        at DEBUG: a service manager that went away is no reason for circusd to fail).

    Raises:
        ValueError: an assignment without ``=`` or with a newline (it would be read as
            more than one line).
    """
    for item in assignments:
        if "=" not in item or "\n" in item:
            raise ValueError(f"not a KEY=VALUE line: {item!r}")
    if address is None:
        address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    payload = "\n".join(assignments).encode()
    if address.startswith("@"):
        target: str | bytes = b"\0" + os.fsencode(address[1:])
    elif address.startswith("/"):
        target = address
    else:  # systemd also has vsock:CID:PORT, for virtual machines; not for circusd
        log.debug("NOTIFY_SOCKET %r is not a path nor an @name: not notified", address)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            # connected, a full queue at the manager makes the socket unwritable, so the
            # timeout waits for room instead of spinning
            sock.settimeout(timeout)
            sock.connect(target)
            sock.send(payload)
    except OSError as exc:
        log.debug("cannot notify %s (%s): %s", address, " ".join(assignments), exc)
        return False
    return True


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, for ``MONOTONIC_USEC=`` (systemd 253 and later
    want it with ``RELOADING=1``, to tell this reload from an older one)."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def watchdog_interval(environ: MutableMapping[str, str] | None = None) -> float | None:
    """Seconds between two ``WATCHDOG=1`` pings: half of ``WATCHDOG_USEC``, as systemd
    advises. None when no watchdog is asked of this process (``WATCHDOG_USEC`` unset or
    not a positive number, or ``WATCHDOG_PID`` naming another process)."""
    env = os.environ if environ is None else environ
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    owner = env.get("WATCHDOG_PID", "")
    if owner and owner != str(os.getpid()):
        return None
    return usec / 2_000_000


class Watchdog:
    """Call *ping* every *interval* seconds from the event loop (a ``call_later`` chain)."""

    def __init__(self, interval: float, ping: Callable[[], object]) -> None:
        self.interval = interval
        self._ping = ping
        self._handle: asyncio.Handle | None = None

    def start(self) -> None:
        """Ping now, then every interval. Call it from the running loop."""
        self._handle = asyncio.get_running_loop().call_soon(self._tick)

    def _tick(self) -> None:
        self._ping()
        self._handle = asyncio.get_running_loop().call_later(self.interval, self._tick)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}{'es' if word.endswith('s') else 's'}"


def counts(watchers: int, processes: int) -> str:
    """The ``STATUS=`` text: ``3 watchers, 12 processes``."""
    return f"{_plural(watchers, 'watcher')}, {_plural(processes, 'process')}"


class ServiceNotifier:
    """What circusd tells its service manager, and when.

    ``READY=1`` once, at the start (:meth:`ready`); around a reload ``RELOADING=1`` and
    ``READY=1`` (overlapping reloads are one: the first begins it, the last ends it); once
    quitting, ``STOPPING=1`` and nothing else but the watchdog. Each comes with a
    ``STATUS=`` line.
    """

    def __init__(self, address: str, watchdog: float | None = None) -> None:
        self.address = address
        self.watchdog_interval = watchdog
        self._watchdog: Watchdog | None = None
        self._ready = False
        self._stopping = False
        self._reloads = 0

    @classmethod
    def from_environment(cls, environ: MutableMapping[str, str] | None = None
                         ) -> ServiceNotifier | None:
        """A notifier for ``$NOTIFY_SOCKET``, or None when circusd was not started with one.

        ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` are removed from
        *environ* (``os.environ``), as ``sd_notify``'s ``unset_environment`` does: the
        workers circusd starts are not the service.
        """
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        interval = watchdog_interval(env) if address else None
        for name in SERVICE_VARS:
            env.pop(name, None)
        return cls(address, interval) if address else None

    def send(self, *assignments: str, timeout: float = SEND_TIMEOUT) -> bool:
        return notify(*assignments, address=self.address, timeout=timeout)

    def start_watchdog(self) -> None:
        """Ping ``WATCHDOG=1`` from the running loop, if the manager asked for it."""
        if self.watchdog_interval is not None and self._watchdog is None:
            self._watchdog = Watchdog(self.watchdog_interval,
                                      lambda: self.send("WATCHDOG=1", timeout=0))
            self._watchdog.start()
            log.info("service watchdog: pinging every %.3gs", self.watchdog_interval)

    def ready(self, status: str) -> None:
        """circusd is up (its watchers started)."""
        if self._stopping or self._ready:
            return
        self._ready = True
        self.send("READY=1", f"STATUS={status}")

    def reloading(self) -> None:
        """A reload of the configuration or of every watcher begins."""
        self._reloads += 1
        if self._reloads == 1 and self._ready and not self._stopping:
            self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}",
                      "STATUS=reloading")

    def reloaded(self, status: str) -> None:
        """A reload ended (applied or refused): circusd is up again."""
        self._reloads = max(0, self._reloads - 1)
        if self._reloads == 0 and self._ready and not self._stopping:
            self.send("READY=1", f"STATUS={status}")

    def stopping(self) -> None:
        """circusd began to stop every watcher and will exit."""
        if not self._stopping:
            self._stopping = True
            self.send("STOPPING=1", "STATUS=stopping every watcher")

    def status(self, text: str) -> None:
        if not self._stopping:
            self.send(f"STATUS={text}")

    def close(self) -> None:
        """Stop the watchdog pings (circusd is exiting)."""
        if self._watchdog is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed already
                self._watchdog.close()
            self._watchdog = None


__all__ = ["ServiceNotifier", "Watchdog", "counts", "monotonic_usec", "notify",
           "watchdog_interval"]
