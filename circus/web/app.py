"""The aiohttp application of circushttpd, and how it is served."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from aiohttp import web

from circus.web import api, pages
from circus.web.auth import Auth
from circus.web.guard import LOOPBACK_HOSTS, add_security_headers, make_guard, split_host
from circus.web.hub import Hub

log = logging.getLogger("circus.web")


@dataclass
class Settings:
    endpoints: list[str]
    auth: Auth
    host: str = "127.0.0.1"
    port: int = 8080
    allowed_hosts: frozenset[str] = frozenset()
    readonly: bool = False
    timeout: float = 5.0
    client_options: dict[str, Any] = field(default_factory=dict)


SETTINGS = web.AppKey("settings", Settings)
HUB = web.AppKey("hub", Hub)


def allowed_hosts(bind: str, extra: list[str]) -> frozenset[str]:
    """The names a request's ``Host`` may give: the bind address, the loopback names and
    *extra* (``--allowed-host``)."""
    names = set(LOOPBACK_HOSTS)
    if bind not in ("0.0.0.0", "::", ""):
        names.add(bind.strip("[]").lower())
    names.update(split_host(h)[0] for h in extra if h.strip())
    return frozenset(names)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def make_app(settings: Settings, hub: Hub | None = None) -> web.Application:
    """The application; *hub* defaults to one on ``settings.endpoints``, started and closed
    with the application."""
    own_hub = hub is None
    hub = hub or Hub(settings.endpoints, settings.timeout, settings.client_options)
    app = web.Application(middlewares=[make_guard(settings, pages.login_page),
                                       api.api_errors])
    app[SETTINGS] = settings
    app[HUB] = hub
    app.on_response_prepare.append(add_security_headers)
    pages.add_routes(app)
    api.add_routes(app)
    static = resources.files("circus.web") / "static"
    app.router.add_static("/static/", str(static), append_version=False)

    if own_hub:
        async def lifecycle(app: web.Application) -> Any:
            app[HUB].start()
            yield
            await app[HUB].close()

        app.cleanup_ctx.append(lifecycle)
    return app


async def serve(settings: Settings, ready: Any = None) -> None:
    """Serve until SIGTERM or SIGINT; *ready* (a callable) is told the bound port."""
    app = make_app(settings)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    try:
        await site.start()
        port = settings.port
        for address in runner.addresses:
            if isinstance(address, tuple) and len(address) >= 2:
                port = int(address[1])
                break
        if ready is not None:
            ready(port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await runner.cleanup()
