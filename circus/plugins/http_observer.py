"""HttpObserver: fetch a health URL every ``loop_rate`` seconds; when it fails, restart a
watcher.

A check fails when the connection cannot be made, no status line arrives within
``timeout`` seconds, or the status is 400 or above. Redirects are not followed: a 3xx
answer means the server is up. On a failure the plugin logs it, counts
``circus.<application_name>.http_observer.error`` in statsd, and sends ``restart`` for the
watcher named by ``restart_on_error`` (if set). Each successful check sends its duration
as the statsd timer ``http_observer.request_time``.

The request is made with asyncio streams rather than an HTTP library: one ``GET`` and its
status line are all a health check needs, no thread is left behind when the plugin stops,
and ``http_proxy`` variables meant for other programs are not applied to a local check.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import ssl
import time
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

from circus.plugins.base import CircusPlugin, PluginOption, optional, positive_seconds
from circus.plugins.statsd import make_statsd, statsd_options

log = logging.getLogger(__name__)


class CheckFailed(Exception):
    """The health URL did not answer well."""


def _url(value: Any) -> str:
    url = urlsplit(str(value))
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
    try:
        url.port  # noqa: B018 (a bad port raises here)
    except ValueError as exc:
        raise ValueError(f"bad port in {value!r}: {exc}") from None
    return str(value)


async def fetch_status(url: str, limit: float) -> int:
    """GET *url* and return the HTTP status code.

    Raises:
        CheckFailed: no connection, no answer within *limit* seconds, or not HTTP.
    """
    parts = urlsplit(url)
    secure = parts.scheme == "https"
    host = parts.hostname or "localhost"
    port = parts.port or (443 if secure else 80)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    host_header = f"[{host}]" if ":" in host else host
    if parts.port:
        host_header += f":{parts.port}"
    headers = [
        f"GET {target} HTTP/1.1",
        f"Host: {host_header}",
        "User-Agent: circus-http-observer",
        "Accept: */*",
        "Connection: close",
    ]
    if parts.username is not None:
        secret = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        headers.append("Authorization: Basic " + base64.b64encode(secret.encode()).decode())
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(limit):
            reader, writer = await asyncio.open_connection(
                host, port, ssl=ssl.create_default_context() if secure else None
            )
            writer.write(("\r\n".join(headers) + "\r\n\r\n").encode("latin-1"))
            await writer.drain()
            line = await reader.readline()
    except TimeoutError:
        raise CheckFailed(f"no answer within {limit:g}s") from None
    except (OSError, ssl.SSLError) as exc:
        raise CheckFailed(str(exc) or type(exc).__name__) from None
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
    words = line.decode("latin-1").split()
    if len(words) < 2 or not words[0].startswith("HTTP/") or not words[1].isdigit():
        raise CheckFailed(f"not an HTTP answer: {line[:80]!r}")
    return int(words[1])


class HttpObserver(CircusPlugin):
    """Restarts a watcher when a health URL fails; see the module docstring."""

    name = "http_observer"
    topics: ClassVar[tuple[bytes, ...]] = (b"watcher.",)
    options: ClassVar[Mapping[str, PluginOption]] = {
        **CircusPlugin.options,
        "check_url": PluginOption("http://localhost/", _url, "The URL to fetch."),
        "timeout": PluginOption(10.0, positive_seconds, "Seconds to wait for the answer."),
        "restart_on_error": PluginOption(None, optional(str), "Watcher to restart."),
        "loop_rate": PluginOption(60.0, positive_seconds, "Seconds between two checks."),
        **statsd_options("http_observer"),
    }

    def __init__(self, *args: Any, **config: Any) -> None:
        super().__init__(*args, **config)
        self.statsd = make_statsd(self.settings)
        self.every(self.settings["loop_rate"], self.check)

    def handle_recv(self, data: tuple[bytes, bytes]) -> None:
        """Events are not needed: the plugin only checks the URL."""

    def handle_stop(self) -> None:
        self.statsd.close()

    async def check(self) -> bool:
        """One check; True if the URL answered well."""
        url = self.settings["check_url"]
        started = time.monotonic()
        try:
            status = await fetch_status(url, self.settings["timeout"])
            if status >= 400:
                raise CheckFailed(f"HTTP status {status}")
        except CheckFailed as exc:
            self.statsd.incr("http_observer.error")
            await self.on_error(f"{url}: {exc}")
            return False
        self.statsd.timing("http_observer.request_time", (time.monotonic() - started) * 1000)
        return True

    async def on_error(self, reason: str) -> None:
        await self.restart_on(self.settings["restart_on_error"], reason)
