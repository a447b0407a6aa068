"""RedisObserver: ping a Redis server every ``loop_rate`` seconds; when it does not answer
within ``timeout`` seconds, restart a watcher.

Needs the ``redis`` client library: ``pip install 'circus[redis]'``. On a failure the
plugin logs it, counts ``circus.<application_name>.redis_observer.error`` in statsd, and
sends ``restart`` for the watcher named by ``restart_on_timeout`` (if set). Each answered
ping sends its duration as the statsd timer ``redis_observer.ping_time``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import urlsplit

from circus.errors import OptionError
from circus.plugins.base import CircusPlugin, PluginOption, optional, positive_seconds
from circus.plugins.statsd import make_statsd, statsd_options

log = logging.getLogger(__name__)


def _redis_url(value: Any) -> str:
    if urlsplit(str(value)).scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"expected a redis://, rediss:// or unix:// URL, got {value!r}")
    return str(value)


class RedisObserver(CircusPlugin):
    """Restarts a watcher when Redis stops answering; see the module docstring."""

    name = "redis_observer"
    topics: ClassVar[tuple[bytes, ...]] = (b"watcher.",)
    options: ClassVar[Mapping[str, PluginOption]] = {
        **CircusPlugin.options,
        "redis_url": PluginOption("redis://localhost:6379/0", _redis_url, "The server."),
        "timeout": PluginOption(5.0, positive_seconds, "Seconds to wait for the answer."),
        "restart_on_timeout": PluginOption(None, optional(str), "Watcher to restart."),
        "loop_rate": PluginOption(60.0, positive_seconds, "Seconds between two pings."),
        **statsd_options("redis_observer"),
    }

    @classmethod
    def check_config(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        # circusd calls this at start-up: a missing client is a configuration error there,
        # not a plugin process that dies at every respawn
        try:
            import redis.asyncio  # noqa: F401
        except ImportError:
            raise OptionError(
                "use", "RedisObserver needs the redis client: pip install 'circus[redis]'"
            ) from None
        return super().check_config(config)

    def __init__(self, *args: Any, **config: Any) -> None:
        super().__init__(*args, **config)
        self.statsd = make_statsd(self.settings)
        self.redis: Any = None
        self.every(self.settings["loop_rate"], self.check)

    def handle_recv(self, data: tuple[bytes, bytes]) -> None:
        """Events are not needed: the plugin only pings Redis."""

    def handle_init(self) -> None:
        import redis.asyncio

        timeout = self.settings["timeout"]
        self.redis = redis.asyncio.Redis.from_url(
            self.settings["redis_url"], socket_timeout=timeout, socket_connect_timeout=timeout
        )

    async def handle_stop(self) -> None:
        self.statsd.close()
        if self.redis is not None:
            close = getattr(self.redis, "aclose", None) or self.redis.close
            await close()

    async def check(self) -> bool:
        """One ping; True if Redis answered in time."""
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.settings["timeout"]):
                await self.redis.ping()
        except Exception as exc:  # redis errors, OSError, TimeoutError: all mean "down"
            self.statsd.incr("redis_observer.error")
            reason = str(exc) or type(exc).__name__
            await self.on_error(f"{self.settings['redis_url']}: {reason}")
            return False
        self.statsd.timing("redis_observer.ping_time", (time.monotonic() - started) * 1000)
        return True

    async def on_error(self, reason: str) -> None:
        await self.restart_on(self.settings["restart_on_timeout"], reason)
