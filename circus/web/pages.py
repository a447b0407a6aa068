"""The pages: dashboard, watcher, add a watcher, events, and the login form.

Rendered with Jinja2 with autoescaping on for every template: a watcher's name, command,
environment or output is text, never markup. The page script (static/console.js) then keeps
the page current over ``/ws``, building what it adds with ``textContent``.
"""

from __future__ import annotations

import json
from typing import Any

import jinja2
from aiohttp import web

from circus.errors import CallError
from circus.web.api import ApiError, add_props, body, hub_of, pick, send, settings_of
from circus.web.auth import COOKIE
from circus.web.guard import IDENTITY, is_secure, set_session_cookie

ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("circus.web", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


def option_text(value: Any) -> str:
    """An option's value as ``circusctl set`` takes it back."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict) and all(isinstance(v, str | int | float) for v in value.values()):
        return ",".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


ENV.filters["option_text"] = option_text
ENV.filters["size"] = lambda n: "" if n is None else f"{n / 1048576:.1f} MB"
ENV.filters["cpu"] = lambda c: "" if c is None else f"{c:.1f} %"
ENV.filters["uptime"] = lambda s: "" if s is None else (
    f"{int(s) // 3600}h{int(s) % 3600 // 60:02d}m" if s >= 3600 else
    f"{int(s) // 60}m{int(s) % 60:02d}s" if s >= 60 else f"{int(s)}s")


def render(request: web.Request, template: str, status: int = 200,
           **context: Any) -> web.Response:
    settings = settings_of(request)
    ident = request.get(IDENTITY)
    csrf = ident.session.csrf if ident is not None and ident.session else ""
    context.setdefault("endpoint_index", "")
    context.setdefault("watcher_name", "")
    text = ENV.get_template(template).render(
        csrf=csrf, readonly=settings.readonly, logged_in=ident is not None,
        endpoints_count=len(hub_of(request).endpoints), **context)
    return web.Response(text=text, content_type="text/html", status=status)


async def login_page(request: web.Request, error: str = "") -> web.StreamResponse:
    settings = settings_of(request)
    return render(request, "login.html", status=401, page="login", error=error,
                  passwords=bool(settings.auth.users), title="Log in")


async def login(request: web.Request) -> web.StreamResponse:
    auth = settings_of(request).auth
    form = await request.post()
    token, user, password = (str(form.get(k, "")) for k in ("token", "user", "password"))
    if token and auth.token_ok(token):
        session = auth.open_session("token")
    elif user and auth.password_ok(user, password):
        session = auth.open_session(user)
    else:
        return await login_page(request, "wrong token, or wrong user or password")
    response = web.Response(status=303, headers={"Location": "/"})
    set_session_cookie(request, response, session)
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    settings_of(request).auth.close_session(request.cookies.get(COOKIE))
    response = web.Response(status=303, headers={"Location": "/login"})
    response.del_cookie(COOKIE, path="/", secure=is_secure(request), samesite="Strict",
                        httponly=True)
    return response


async def login_form(request: web.Request) -> web.StreamResponse:
    if request.get(IDENTITY) is not None:
        return web.Response(status=303, headers={"Location": "/"})
    return await login_page(request)


async def dashboard(request: web.Request) -> web.Response:
    hub = hub_of(request)
    return render(request, "dashboard.html", page="dashboard", title="Dashboard",
                  endpoints=[e.snapshot(processes=False) for e in hub.endpoints],
                  endpoint_index="", watcher_name="")


async def watcher(request: web.Request) -> web.Response:
    endpoint = pick(hub_of(request), request.query.get("endpoint"))
    name = request.match_info["name"]
    snap = endpoint.snapshot(watcher=name)
    options: dict[str, Any] = {}
    problem = ""
    try:
        options = (await send(endpoint, "options", name=name)).get("options", {})
    except ApiError as exc:
        problem = exc.reason
    found = bool(snap["watchers"])
    return render(request, "watcher.html", status=200 if found or not problem else 404,
                  page="watcher", title=name, endpoint=snap, endpoint_index=endpoint.index,
                  watcher_name=name, w=snap["watchers"][0] if found else None,
                  options=sorted(options.items()), problem=problem)


async def add_form(request: web.Request) -> web.Response:
    hub = hub_of(request)
    endpoint = pick(hub, request.query.get("endpoint"))
    return render(request, "add.html", page="add", title="Add a watcher", error="",
                  form={}, endpoint_index=endpoint.index, watcher_name="",
                  endpoints=[(e.index, e.url) for e in hub.endpoints])


async def add_submit(request: web.Request) -> web.StreamResponse:
    hub = hub_of(request)
    data = await body(request)
    try:
        endpoint = pick(hub, data.get("endpoint"))
        props = add_props(data)
        await send(endpoint, "add", **props)
    except (ApiError, CallError) as exc:
        reason = exc.reason if isinstance(exc, ApiError) else str(exc)
        return render(request, "add.html", status=400, page="add", title="Add a watcher",
                      error=reason, form=data, endpoint_index=data.get("endpoint", 0),
                      watcher_name="", endpoints=[(e.index, e.url) for e in hub.endpoints])
    endpoint.refresh_soon()
    from urllib.parse import quote

    target = f"/watchers/{quote(props['name'], safe='')}?endpoint={endpoint.index}"
    return web.Response(status=303, headers={"Location": target})


async def events(request: web.Request) -> web.Response:
    hub = hub_of(request)
    rows = [(e.index, e.url, ev) for e in hub.endpoints for ev in e.events]
    rows.sort(key=lambda r: -float(r[2].get("time") or 0))
    return render(request, "events.html", page="events", title="Events", rows=rows,
                  endpoint_index="", watcher_name="",
                  endpoints=[(e.index, e.url) for e in hub.endpoints])


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", dashboard)
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/watchers/{name}", watcher)
    app.router.add_get("/add", add_form)
    app.router.add_post("/add", add_submit)
    app.router.add_get("/events", events)
    app.router.add_get("/favicon.ico", no_icon)


async def no_icon(request: web.Request) -> web.Response:
    return web.Response(status=204)
