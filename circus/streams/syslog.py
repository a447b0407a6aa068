"""A stream that sends each line of output to syslog."""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping
from logging.handlers import SysLogHandler
from typing import Any

from circus.streams.base import CARRY_LIMIT, StreamConfigError, chunk_of

__all__ = ["SyslogStream", "parse_address"]

log = logging.getLogger(__name__)


def parse_address(value: str) -> tuple[str | tuple[str, int], socket.SocketKind | None]:
    """``/dev/log`` (a unix socket), ``host:port`` or ``udp://host:port`` (UDP), ``tcp://…``."""
    text = value.strip()
    kind: socket.SocketKind | None = socket.SOCK_DGRAM
    if text.startswith("unix://"):
        return text[7:], None
    if text.startswith("/"):
        return text, None  # SysLogHandler finds out whether the socket is DGRAM or STREAM
    if text.startswith("udp://"):
        text = text[6:]
    elif text.startswith("tcp://"):
        text, kind = text[6:], socket.SOCK_STREAM
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected /path/to/socket, host:port or udp://host:port, got {value!r}")
    return (host.strip("[]"), int(port)), kind


class _Handler(SysLogHandler):
    """A SysLogHandler with one fixed priority whose send errors do not print tracebacks."""

    def __init__(self, priority: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._priority = priority
        self.append_nul = self.socktype == socket.SOCK_STREAM  # NUL ends a message on TCP

    def mapPriority(self, levelName: str) -> str:  # noqa: N802 - logging's name
        return self._priority

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        log.debug("could not send a line to syslog at %s", self.address, exc_info=True)


class SyslogStream:
    """Send each complete line to syslog as ``<PRI>tag[pid]: line``.

    Args:
        facility: ``user``, ``daemon``, ``local0`` … ``local7`` and the other syslog names.
        tag: The program name syslog files the lines under. The stream cannot know its
            watcher's name: ``build_stream`` callers pass ``tag=<watcher name>``; if no one
            does, the tag is ``circus``.
        address: ``/dev/log`` (default), another unix socket path, ``host:port`` or
            ``udp://host:port`` (UDP), or ``tcp://host:port``.
        priority: ``info`` (default), ``notice``, ``warning``, ``err`` … for every line.
    """

    def __init__(
        self,
        facility: str = "user",
        tag: str | None = None,
        address: str = "/dev/log",
        priority: str = "info",
    ) -> None:
        fac = str(facility).strip().lower()
        if fac not in SysLogHandler.facility_names:
            names = ", ".join(sorted(SysLogHandler.facility_names))
            raise StreamConfigError("facility", f"expected one of {names}, got {facility!r}")
        prio = str(priority).strip().lower()
        if prio not in SysLogHandler.priority_names:
            names = ", ".join(sorted(SysLogHandler.priority_names))
            raise StreamConfigError("priority", f"expected one of {names}, got {priority!r}")
        try:
            target, kind = parse_address(str(address))
        except ValueError as exc:
            raise StreamConfigError("address", str(exc)) from None
        self.tag = str(tag) if tag else "circus"
        self.address = address
        try:
            self._handler = _Handler(
                prio, address=target, facility=SysLogHandler.facility_names[fac], socktype=kind
            )
        except OSError as exc:
            reason = f"cannot reach syslog at {address!r}: {exc}"
            raise StreamConfigError("address", reason) from None
        self._carry: dict[tuple[int, str], bytes] = {}

    def __call__(self, data: Mapping[str, Any]) -> None:
        chunk, pid, name = chunk_of(data)
        key = (pid, name)
        held = self._carry.pop(key, None)
        buf = held + chunk if held else chunk
        last = buf.rfind(b"\n")
        if last < 0 and len(buf) <= CARRY_LIMIT:
            if buf:
                self._carry[key] = buf
            return
        if last >= 0:
            tail = buf[last + 1 :]
            if len(tail) <= CARRY_LIMIT:
                if tail:
                    self._carry[key] = tail
                buf = buf[:last]
        for line in buf.split(b"\n"):
            self._send(pid, line)

    def _send(self, pid: int, line: bytes) -> None:
        text = line.rstrip(b"\r").decode("utf-8", "replace")
        message = f"{self.tag}[{pid}]: {text}"
        record = logging.LogRecord(self.tag, logging.INFO, "", 0, message, None, None)
        self._handler.handle(record)

    def close(self) -> None:
        """Send lines still waiting for their end, then close the socket."""
        for (pid, _name), held in self._carry.items():
            self._send(pid, held)
        self._carry.clear()
        self._handler.close()
