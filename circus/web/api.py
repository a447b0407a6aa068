"""The JSON API (docs/web.md) and the WebSocket feed ``/ws`` the pages use.

Every state change goes through :func:`perform` (from a POST or a WebSocket ``action``),
which sends one command to circusd and returns its reply. The guard (guard.py) has already
checked the Host, the authentication, the Origin, the CSRF token and the read-only mode of
POSTs; a WebSocket's ``action`` messages are checked here, the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import shlex
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from circus.errors import ArgumentError, CallError
from circus.web.guard import identity, origin_matches
from circus.web.hub import Endpoint, Hub, Message

if TYPE_CHECKING:
    from circus.web.app import Settings

log = logging.getLogger("circus.web")

WATCHER_ACTIONS = {"start": "start", "stop": "stop", "restart": "restart",
                   "reload": "reload", "incr": "incr", "decr": "decr", "rm": "rm"}
GLOBAL_ACTIONS = ("start", "stop", "reloadconfig")
MAX_TAIL = 10000
SEND_QUEUE = 5000  # messages a slow WebSocket may lag behind before it is closed


class ApiError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def hub_of(request: web.Request) -> Hub:
    from circus.web.app import HUB

    return request.app[HUB]


def settings_of(request: web.Request) -> Settings:
    from circus.web.app import SETTINGS

    return request.app[SETTINGS]


def pick(hub: Hub, value: object) -> Endpoint:
    """The endpoint numbered *value* (``?endpoint=N``, default 0)."""
    if value is None or value == "":
        return hub.endpoints[0]
    try:
        index = int(str(value))
    except ValueError:
        raise ApiError(400, f"endpoint should be a number, got {value!r}") from None
    if not 0 <= index < len(hub.endpoints):
        raise ApiError(404, f"there is no endpoint {index} (0 to {len(hub.endpoints) - 1})")
    return hub.endpoints[index]


async def send(endpoint: Endpoint, command: str, **props: Any) -> Message:
    """*command* to circusd; an error reply or no answer becomes an :class:`ApiError`."""
    try:
        reply = await endpoint.call(command, **props)
    except CallError as exc:
        raise ApiError(502, str(exc)) from None
    if reply.get("status") == "error":
        reason = str(reply.get("reason", "error"))
        status = 404 if "not found" in reason else 400
        raise ApiError(status, reason)
    return reply


async def perform(endpoint: Endpoint, action: str, watcher: str | None = None,
                  pid: int | None = None) -> Message:
    """One state change: a watcher's action, a process's kill, or a global action."""
    if pid is not None:
        if watcher is None:
            raise ApiError(400, "kill needs a watcher")
        return await send(endpoint, "kill", name=watcher, pid=pid)
    if watcher is None:
        if action not in GLOBAL_ACTIONS:
            raise ApiError(404, f"unknown action {action!r} (one of {', '.join(GLOBAL_ACTIONS)})")
        return await send(endpoint, action)
    command = WATCHER_ACTIONS.get(action)
    if command is None:
        raise ApiError(404, f"unknown action {action!r} "
                            f"(one of {', '.join(sorted(WATCHER_ACTIONS))})")
    if command in ("incr", "decr"):
        return await send(endpoint, command, name=watcher, nb=1)
    return await send(endpoint, command, name=watcher)


def parse_env(value: object) -> dict[str, str]:
    """``env`` of the add form: an object, or lines (or commas) of ``KEY=VALUE``."""
    if value is None or value == "":
        return {}
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    if not isinstance(value, str):
        raise ApiError(400, "env should be an object or lines of KEY=VALUE")
    env: dict[str, str] = {}
    for item in value.replace(",", "\n").splitlines():
        item = item.strip()
        if not item:
            continue
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise ApiError(400, f"env: expected KEY=VALUE, got {item!r}")
        env[key.strip()] = val
    return env


def add_props(data: Any) -> Message:
    """The ``add`` command's properties from the form or JSON: name, cmd, args,
    numprocesses, working_dir, env, start (default true)."""
    if not isinstance(data, dict):
        raise ApiError(400, "expected a JSON object")
    name = str(data.get("name") or "").strip()
    cmd = str(data.get("cmd") or "").strip()
    if not name:
        raise ApiError(400, "name: a watcher needs a name")
    if not cmd:
        raise ApiError(400, "cmd: a watcher needs a command")
    options: Message = {}
    numprocesses = data.get("numprocesses")
    if numprocesses not in (None, ""):
        try:
            options["numprocesses"] = int(str(numprocesses))
        except ValueError:
            raise ApiError(400, f"numprocesses: expected a number, got {numprocesses!r}") \
                from None
    if data.get("working_dir"):
        options["working_dir"] = str(data["working_dir"])
    env = parse_env(data.get("env"))
    if env:
        options["env"] = env
    props: Message = {"name": name, "cmd": cmd, "options": options,
                      "start": data.get("start", True) not in (False, "false", "0", "")}
    args = data.get("args")
    if isinstance(args, list):
        props["args"] = [str(a) for a in args]
    elif args:
        try:
            props["args"] = shlex.split(str(args))
        except ValueError as exc:
            raise ApiError(400, f"args: {exc}") from None
    return props


def typed_options(options: object) -> Message:
    """``set``'s options typed from text by key, as circusctl types them."""
    from circus.commands._options import cli_known_key, cli_value

    if not isinstance(options, dict) or not options:
        raise ApiError(400, "expected {\"options\": {\"<key>\": \"<value>\", ...}}")
    typed: Message = {}
    for key, value in options.items():
        if not isinstance(value, str):
            typed[key] = value
            continue
        if not cli_known_key(key):
            raise ApiError(400, f"unknown key {key!r}")
        try:
            typed[key] = cli_value(key, value)
        except ArgumentError as exc:
            raise ApiError(400, str(exc)) from None
    return typed


async def body(request: web.Request) -> Any:
    if request.content_type == "application/json":
        try:
            return await request.json()
        except ValueError:
            raise ApiError(400, "the body is not valid JSON") from None
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return dict(await request.post())  # read once: the guard may have read it already
    return {}


def ok(payload: Message | None = None) -> web.Response:
    return web.json_response({"status": "ok", **(payload or {})})


@web.middleware
async def api_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except ApiError as exc:
        return web.json_response({"status": "error", "reason": exc.reason},
                                 status=exc.status)


# -- handlers -----------------------------------------------------------------------------

async def status(request: web.Request) -> web.Response:
    hub = hub_of(request)
    hub.api_used = time.monotonic()
    if "endpoint" in request.query:
        return web.json_response({"endpoints": [pick(hub, request.query["endpoint"])
                                                .snapshot()]})
    return web.json_response(hub.status())


async def watcher_status(request: web.Request) -> web.Response:
    endpoint = pick(hub_of(request), request.query.get("endpoint"))
    name = request.match_info["name"]
    snap = endpoint.snapshot(watcher=name)
    if not snap["watchers"]:
        raise ApiError(404, f"program {name} not found")
    return web.json_response(snap["watchers"][0])


async def watcher_action(request: web.Request) -> web.Response:
    endpoint = pick(hub_of(request), request.query.get("endpoint"))
    name, action = request.match_info["name"], request.match_info["action"]
    if action == "set":
        data = await body(request)
        options = typed_options(data.get("options") if isinstance(data, dict) else None)
        reply = await send(endpoint, "set", name=name, options=options)
    else:
        reply = await perform(endpoint, action, name)
    endpoint.refresh_soon()
    return ok({k: v for k, v in reply.items() if k not in ("status", "id")})


async def kill_process(request: web.Request) -> web.Response:
    endpoint = pick(hub_of(request), request.query.get("endpoint"))
    try:
        pid = int(request.match_info["pid"])
    except ValueError:
        raise ApiError(400, f"a pid is a number, got {request.match_info['pid']!r}") from None
    await perform(endpoint, "kill", request.match_info["name"], pid)
    return ok()


async def global_action(request: web.Request) -> web.Response:
    endpoint = pick(hub_of(request), request.query.get("endpoint"))
    reply = await perform(endpoint, request.match_info["action"])
    endpoint.refresh_soon()
    return ok({k: v for k, v in reply.items() if k not in ("status", "id")})


async def add_watcher(request: web.Request) -> web.Response:
    endpoint = pick(hub_of(request), request.query.get("endpoint"))
    props = add_props(await body(request))
    await send(endpoint, "add", **props)
    endpoint.refresh_soon()
    return ok({"name": props["name"]})


async def options(request: web.Request) -> web.Response:
    endpoint = pick(hub_of(request), request.query.get("endpoint"))
    reply = await send(endpoint, "options", name=request.match_info["name"])
    return ok({"options": reply.get("options", {})})


def tail_lines(value: str | None, default: int = 100) -> int:
    if value is None:
        return default
    try:
        lines = int(value)
    except ValueError:
        raise ApiError(400, f"lines should be a number, got {value!r}") from None
    if not 0 <= lines <= MAX_TAIL:
        raise ApiError(400, f"lines should be from 0 to {MAX_TAIL}, got {lines}")
    return lines


async def tail(request: web.Request) -> web.Response:
    endpoint = pick(hub_of(request), request.query.get("endpoint"))
    lines = tail_lines(request.query.get("lines"))
    props: Message = {"name": request.match_info["name"], "lines": lines}
    stream = request.query.get("stream")
    if stream:
        props["stream"] = stream
    reply = await send(endpoint, "tail", **props)
    return ok({"lines": reply.get("lines", []), "snapshot": reply.get("snapshot")})


async def events(request: web.Request) -> web.Response:
    endpoint = pick(hub_of(request), request.query.get("endpoint"))
    return ok({"events": list(endpoint.events)})


async def history(request: web.Request) -> web.Response:
    endpoint = pick(hub_of(request), request.query.get("endpoint"))
    return ok({"history": {name: list(points) for name, points in endpoint.history.items()}})


# -- the WebSocket ------------------------------------------------------------------------

class Feed:
    """One page's WebSocket: what the hub publishes, scoped to what the page shows."""

    def __init__(self, ws: web.WebSocketResponse, hub: Hub, csrf: str | None,
                 readonly: bool) -> None:
        self.ws = ws
        self.hub = hub
        self.csrf = csrf  # None: a bearer-token socket, which needs none
        self.readonly = readonly
        self.page = ""  # nothing is sent until the page says what it shows ("view")
        self.view_endpoint: int | None = None
        self.view_watcher: str | None = None
        self.queue: deque[Message] = deque()
        self.dirty: set[int] = set()
        self.wake = asyncio.Event()
        self.closed = False

    # hub -> page
    def notify(self, kind: str, endpoint: Endpoint, payload: Message) -> None:
        if self.closed:
            return
        if kind == "status":
            self.dirty.add(endpoint.index)
        elif kind == "figures" and self.page:
            message = {"type": "figures", "endpoint": endpoint.index, **payload}
            if self.page == "watcher":
                if endpoint.index != self.view_endpoint:
                    return
                w = endpoint.watchers.get(self.view_watcher or "")
                message["watchers"] = {k: v for k, v in payload["watchers"].items()
                                       if k == self.view_watcher}
                message["processes"] = {
                    p["pid"]: list(endpoint.figures.get(p["pid"], (None, None)))
                    for p in (w["processes"] if w else [])}
            self.push(message)
        elif kind == "event":
            self.push({"type": "event", "endpoint": endpoint.index, **payload})
        elif kind == "output":
            self.push({"type": "output", "endpoint": endpoint.index, **payload})
        self.wake.set()

    def push(self, message: Message) -> None:
        if len(self.queue) >= SEND_QUEUE:
            log.warning("closing a WebSocket that fell %d messages behind", SEND_QUEUE)
            self.closed = True
            return
        self.queue.append(message)
        self.wake.set()

    def status_message(self, endpoint: Endpoint) -> Message:
        if not self.page:
            return {}
        if self.page == "watcher":
            if endpoint.index != self.view_endpoint:
                return {}
            snap = endpoint.snapshot(watcher=self.view_watcher)
        else:
            snap = endpoint.snapshot(processes=False)
        return {"type": "status", "endpoint": snap}

    async def writer(self) -> None:
        while not self.closed and not self.ws.closed:
            await self.wake.wait()
            self.wake.clear()
            dirty, self.dirty = self.dirty, set()
            for index in sorted(dirty):
                message = self.status_message(self.hub.endpoints[index])
                if message:
                    await self.ws.send_str(json.dumps(message))
            while self.queue:
                await self.ws.send_str(json.dumps(self.queue.popleft()))
        if not self.ws.closed:
            await self.ws.close()

    # page -> hub
    async def handle(self, data: Any) -> None:
        if not isinstance(data, dict):
            self.push({"type": "error", "reason": "a message is a JSON object"})
            return
        kind = data.get("type")
        try:
            if kind == "view":
                await self.set_view(data)
            elif kind == "follow":
                await self.follow(data)
            elif kind == "unfollow":
                for endpoint in self.hub.endpoints:
                    endpoint.unfollow(self)
            elif kind == "action":
                self.check_action(data)
                pid = data.get("pid")
                reply = await perform(pick(self.hub, data.get("endpoint")),
                                      str(data.get("action")),
                                      data.get("watcher"), int(pid) if pid else None)
                self.push({"type": "reply", "id": data.get("id"), **reply, "status": "ok"})
            else:
                raise ApiError(400, f"unknown message type {kind!r}")
        except (ApiError, CallError, ValueError, TypeError) as exc:
            reason = exc.reason if isinstance(exc, ApiError) else str(exc)
            self.push({"type": "reply", "id": data.get("id"), "status": "error",
                       "reason": reason})

    def check_action(self, data: Message) -> None:
        if self.readonly:
            raise ApiError(403, "this console is read-only")
        if self.csrf is not None and not hmac.compare_digest(
                str(data.get("csrf", "")).encode(), self.csrf.encode()):
            raise ApiError(403, "the CSRF token is missing or wrong")

    async def set_view(self, data: Message) -> None:
        page = str(data.get("page", "dashboard"))
        if page not in ("dashboard", "watcher", "events", "add"):
            raise ApiError(400, f"unknown page {page!r}")
        self.page = page
        if page == "watcher":
            self.view_endpoint = pick(self.hub, data.get("endpoint")).index
            self.view_watcher = str(data.get("watcher", ""))
        self.dirty.update(e.index for e in self.hub.endpoints)
        self.wake.set()

    async def follow(self, data: Message) -> None:
        endpoint = pick(self.hub, data.get("endpoint"))
        for e in self.hub.endpoints:
            e.unfollow(self)
        watcher = str(data.get("watcher", ""))
        lines = tail_lines(None if data.get("lines") is None else str(data.get("lines")))
        reply = await endpoint.follow(self, watcher, lines)
        if reply.get("status") != "ok":
            raise ApiError(404, str(reply.get("reason", "cannot follow")))
        self.push({"type": "lines", "endpoint": endpoint.index, "watcher": watcher,
                   "lines": reply.get("lines", [])})
        for chunk in reply.get("held", []):
            self.push({"type": "output", "endpoint": endpoint.index, **chunk})


async def websocket(request: web.Request) -> web.StreamResponse:
    origin = request.headers.get("Origin")
    if origin is not None and not origin_matches(origin, request.host):
        return web.json_response({"status": "error",
                                  "reason": "cross-origin WebSocket refused (Origin)"},
                                 status=403)
    ident = identity(request)
    if ident.kind == "session" and origin is None:
        return web.json_response({"status": "error", "reason": "a WebSocket opened with "
                                  "the session cookie needs an Origin"}, status=403)
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=1 << 20)
    await ws.prepare(request)
    hub, settings = hub_of(request), settings_of(request)
    feed = Feed(ws, hub, ident.session.csrf if ident.session else None, settings.readonly)
    hub.listeners.add(feed)
    for endpoint in hub.endpoints:
        endpoint.refresh_soon()
    feed.push({"type": "hello", "readonly": settings.readonly,
               "endpoints": [e.url for e in hub.endpoints]})
    writer = asyncio.create_task(feed.writer())
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            try:
                data = json.loads(msg.data)
            except ValueError:
                feed.push({"type": "error", "reason": "a message is JSON"})
                continue
            await feed.handle(data)
    finally:
        feed.closed = True
        hub.listeners.discard(feed)
        for endpoint in hub.endpoints:
            endpoint.unfollow(feed)
        feed.wake.set()
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await writer
    return ws


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/status", status)
    app.router.add_post("/api/watchers", add_watcher)
    app.router.add_get("/api/watchers/{name}", watcher_status)
    app.router.add_get("/api/watchers/{name}/options", options)
    app.router.add_get("/api/watchers/{name}/tail", tail)
    app.router.add_post("/api/watchers/{name}/processes/{pid}/kill", kill_process)
    app.router.add_post("/api/watchers/{name}/{action}", watcher_action)
    app.router.add_post("/api/{action:start|stop|reloadconfig}", global_action)
    app.router.add_get("/api/events", events)
    app.router.add_get("/api/history", history)
    app.router.add_get("/ws", websocket)
