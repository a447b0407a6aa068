"""circushttpd's handlers and safety rules, through aiohttp's test client, against a real
circusd (one per module, with circusd-stats) and, for the fleet, a second one without it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from circus.web.app import HUB, Settings, allowed_hosts, make_app
from circus.web.auth import Auth
from circus.web.guard import SECURITY_HEADERS
from circus.web.hub import Hub
from tests.conftest import pid_alive, wait_for
from tests.e2e.conftest import Daemon
from tests.e2e.web_support import SLEEPER, TALKER, short_dir, start_daemon

TOKEN = "t" * 20 + "-test-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
EVIL = "<img src=x onerror=\"window.__xss=1\">"


@pytest.fixture(scope="module")
def where() -> Iterator[Path]:
    with short_dir() as path:
        yield path


@pytest.fixture(scope="module")
def daemon(where: Path) -> Iterator[Daemon]:
    d = start_daemon(where, f"[watcher:web]\ncmd = {SLEEPER}\nnumprocesses = 2\n\n"
                            f"[watcher:talker]\ncmd = {TALKER}\nnumprocesses = 1\n",
                     circus_extra=f"statsd = true\nstats_endpoint = ipc://{where}/s0\n")
    yield d
    d.close()


@pytest.fixture(scope="module")
def second(where: Path) -> Iterator[Daemon]:
    d = start_daemon(where, f"[watcher:other]\ncmd = {SLEEPER}\nnumprocesses = 1\n", n=1)
    yield d
    d.close()


@dataclass
class Console:
    client: TestClient[Any, Any]
    hub: Hub
    settings: Settings

    @property
    def origin(self) -> str:
        return str(self.client.make_url("")).rstrip("/")

    async def login(self) -> str:
        """Log in with the token URL; the session's CSRF token."""
        response = await self.client.get(f"/?token={TOKEN}", allow_redirects=False)
        assert response.status == 303, await response.text()
        page = await (await self.client.get("/")).text()
        match = re.search(r'data-csrf="([^"]+)"', page)
        assert match, page
        return match.group(1)

    async def status(self, index: int = 0) -> dict[str, Any]:
        endpoint = self.hub.endpoints[index]
        await endpoint.refreshed()
        return endpoint.snapshot()

    async def watcher(self, name: str, index: int = 0) -> dict[str, Any] | None:
        snap = await self.status(index)
        return next((w for w in snap["watchers"] if w["name"] == name), None)


@asynccontextmanager
async def open_console(endpoints: list[str], readonly: bool = False, answer_within: float = 5.0
                       ) -> AsyncIterator[Console]:
    settings = Settings(endpoints=endpoints, auth=Auth(TOKEN), readonly=readonly,
                        timeout=answer_within,
                        allowed_hosts=allowed_hosts("127.0.0.1", []))
    app = make_app(settings)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        hub = app[HUB]
        await wait_for(lambda: hub.endpoints[0].connected, what="the console to connect")
        yield Console(client, hub, settings)


@pytest.fixture
async def console(daemon: Daemon) -> AsyncIterator[Console]:
    async with open_console([daemon.endpoint]) as c:
        yield c


# -- authentication -----------------------------------------------------------------------

async def test_without_auth_the_api_answers_401_and_pages_show_only_the_login_form(
        console: Console, daemon: Daemon) -> None:
    c = console.client
    for method, path in (("GET", "/api/status"), ("POST", "/api/watchers/web/stop"),
                         ("GET", "/api/watchers/web/tail"), ("GET", "/ws"),
                         ("POST", "/api/watchers"), ("POST", "/api/stop")):
        response = await c.request(method, path, headers={"Origin": console.origin})
        assert response.status == 401, (method, path, response.status)
        assert (await response.json())["reason"] == "authentication required"
    response = await c.get("/")
    page = await response.text()
    assert response.status == 401
    assert 'action="/login"' in page and "talker" not in page and 'data-watcher="' not in page
    response = await c.get("/?token=wrong-token-of-some-length")
    assert response.status == 401 and 'action="/login"' in await response.text()
    response = await c.get("/api/status", headers={"Authorization": "Bearer wrong"})
    assert response.status == 401
    assert daemon.call({"command": "status", "properties": {"name": "web"}})["status"] \
        == "active"


async def test_the_token_url_opens_a_session_in_a_strict_httponly_cookie(
        console: Console) -> None:
    response = await console.client.get(f"/watchers/web?endpoint=0&token={TOKEN}",
                                        allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/watchers/web?endpoint=0"
    cookie = response.headers["Set-Cookie"]
    assert "circus_session=" in cookie and "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie and "Secure" not in cookie
    response = await console.client.get("/api/status")
    assert response.status == 200
    # behind a TLS proxy the cookie is Secure
    console.client.session.cookie_jar.clear()
    response = await console.client.get(f"/?token={TOKEN}", allow_redirects=False,
                                        headers={"X-Forwarded-Proto": "https"})
    assert "Secure" in response.headers["Set-Cookie"]


async def test_the_login_form_takes_the_token_and_logout_ends_the_session(
        console: Console) -> None:
    c = console.client
    response = await c.post("/login", data={"token": "nope"},
                            headers={"Origin": console.origin})
    assert response.status == 401 and "wrong token" in await response.text()
    response = await c.post("/login", data={"token": TOKEN}, allow_redirects=False,
                            headers={"Origin": console.origin})
    assert response.status == 303
    assert (await c.get("/api/status")).status == 200
    csrf = re.search(r'data-csrf="([^"]+)"', await (await c.get("/")).text())
    assert csrf
    response = await c.post("/logout", data={"csrf": csrf.group(1)}, allow_redirects=False,
                            headers={"Origin": console.origin})
    assert response.status == 303
    assert (await c.get("/api/status")).status == 401


async def test_a_password_file_user_can_log_in(daemon: Daemon) -> None:
    from circus.web.auth import hash_password

    async with open_console([daemon.endpoint]) as console:
        console.settings.auth.users = {"ann": hash_password("s3cret")}
        c = console.client
        response = await c.post("/login", data={"user": "ann", "password": "bad"},
                                headers={"Origin": console.origin})
        assert response.status == 401
        response = await c.post("/login", data={"user": "ann", "password": "s3cret"},
                                headers={"Origin": console.origin}, allow_redirects=False)
        assert response.status == 303
        assert (await c.get("/api/status")).status == 200


# -- CSRF, Origin, Host ---------------------------------------------------------------------

async def test_a_cookie_post_needs_the_csrf_token_and_a_matching_origin(
        console: Console, daemon: Daemon) -> None:
    csrf = await console.login()
    c = console.client
    before = len(daemon.pids("web"))
    refused = [
        {"Origin": console.origin},  # no CSRF token
        {"Origin": console.origin, "X-CSRF-Token": "forged"},
        {"Origin": "http://attacker.example", "X-CSRF-Token": csrf},  # cross-origin
        {"X-CSRF-Token": csrf},  # neither Origin nor Referer
    ]
    for headers in refused:
        response = await c.post("/api/watchers/web/incr", headers=headers)
        assert response.status == 403, headers
    response = await c.post("/add", data={"csrf": csrf, "name": "x", "cmd": SLEEPER},
                            headers={"Origin": "http://attacker.example"})
    assert response.status == 403
    assert len(daemon.pids("web")) == before
    assert daemon.call({"command": "list"})["watchers"].count("x") == 0
    response = await c.post("/api/watchers/web/incr",
                            headers={"Origin": console.origin, "X-CSRF-Token": csrf})
    assert response.status == 200, await response.text()
    await wait_for(lambda: len(daemon.pids("web")) == before + 1, what="the new process")
    response = await c.post("/api/watchers/web/decr",
                            headers={"Referer": console.origin + "/", "X-CSRF-Token": csrf})
    assert response.status == 200
    await wait_for(lambda: len(daemon.pids("web")) == before, what="one process fewer")


async def test_a_bearer_call_needs_no_csrf_but_a_foreign_origin_is_refused(
        console: Console, daemon: Daemon) -> None:
    c = console.client
    response = await c.post("/api/watchers/web/incr",
                            headers={**BEARER, "Origin": "http://attacker.example"})
    assert response.status == 403
    before = len(daemon.pids("web"))
    response = await c.post("/api/watchers/web/incr", headers=BEARER)
    assert response.status == 200 and (await response.json())["numprocesses"] == before + 1
    response = await c.post("/api/watchers/web/decr", headers=BEARER)
    assert response.status == 200


async def test_a_foreign_host_header_is_refused_even_with_the_token(
        console: Console) -> None:
    for path in ("/", "/api/status", "/login", "/static/console.js"):
        response = await console.client.get(path, headers={**BEARER,
                                                           "Host": "attacker.example"})
        assert response.status == 421, path
    for host in ("localhost", f"localhost:{console.client.port}", "[::1]:8080",
                 "127.0.0.1"):
        response = await console.client.get("/api/status", headers={**BEARER, "Host": host})
        assert response.status == 200, host


async def test_allowed_host_adds_a_name(daemon: Daemon) -> None:
    assert "console.example" in allowed_hosts("127.0.0.1", ["console.example:443"])
    assert "10.1.2.3" in allowed_hosts("10.1.2.3", [])
    assert "0.0.0.0" not in allowed_hosts("0.0.0.0", [])


async def test_a_websocket_from_a_foreign_origin_is_refused(console: Console) -> None:
    await console.login()
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await console.client.ws_connect("/ws", headers={"Origin": "http://attacker.example"})
    assert info.value.status == 403
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await console.client.ws_connect("/ws")  # the cookie, but no Origin
    assert info.value.status == 403
    ws = await console.client.ws_connect("/ws", headers={"Origin": console.origin})
    hello = await ws.receive_json(timeout=5)
    assert hello["type"] == "hello" and hello["readonly"] is False
    await ws.close()


async def test_every_response_has_the_security_headers(console: Console) -> None:
    c = console.client
    responses = [await c.get("/"), await c.get("/api/status"),
                 await c.get("/static/console.js"), await c.get("/api/status", headers=BEARER),
                 await c.get("/", headers={"Host": "attacker.example"})]
    for response in responses:
        for name, value in SECURITY_HEADERS.items():
            assert response.headers.get(name) == value, (response.url, name)
    csp = responses[0].headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp


# -- the API --------------------------------------------------------------------------------

async def test_status_lists_the_watchers_and_their_processes(
        console: Console, daemon: Daemon) -> None:
    response = await console.client.get("/api/status", headers=BEARER)
    data = await response.json()
    [endpoint] = data["endpoints"]
    assert endpoint["endpoint"] == daemon.endpoint and endpoint["connected"] is True
    web = next(w for w in endpoint["watchers"] if w["name"] == "web")
    assert web["status"] == "active" and web["numprocesses"] == 2
    assert sorted(p["pid"] for p in web["processes"]) == sorted(daemon.pids("web"))
    assert {"pid", "wid", "uptime", "restarts", "cpu", "mem"} <= set(web["processes"][0])
    one = await (await console.client.get("/api/watchers/web", headers=BEARER)).json()
    assert one["name"] == "web" and len(one["processes"]) == 2
    missing = await console.client.get("/api/watchers/nope", headers=BEARER)
    assert missing.status == 404


async def test_figures_come_from_circusd_stats(console: Console, daemon: Daemon) -> None:
    # followed only once asked for: no page is open and the API has not been called yet
    assert not console.hub.figures_wanted()
    assert (await console.client.get("/api/status", headers=BEARER)).status == 200
    assert console.hub.figures_wanted()

    def with_figures() -> bool:
        snap = console.hub.endpoints[0].snapshot()
        web = next(w for w in snap["watchers"] if w["name"] == "web")
        return snap["stats"] and all(p["mem"] for p in web["processes"])

    await wait_for(with_figures, what="figures from circusd-stats", timeout=15)


async def test_watcher_actions(console: Console, daemon: Daemon) -> None:
    c = console.client
    for action, state in (("stop", "stopped"), ("start", "active"), ("restart", "active")):
        response = await c.post(f"/api/watchers/web/{action}", headers=BEARER)
        assert response.status == 200, await response.text()
        await wait_for(lambda s=state: daemon.call({"command": "status", "properties": {
            "name": "web"}})["status"] == s, what=f"web {state} after {action}")
    await wait_for(lambda: len(daemon.pids("web")) == 2, what="web's two processes")
    old = set(daemon.pids("web"))
    response = await c.post("/api/watchers/web/reload", headers=BEARER)
    assert response.status == 200
    await wait_for(lambda: len(set(daemon.pids("web")) - old) == 2,
                   what="reload to replace both processes", timeout=20)
    response = await c.post("/api/watchers/web/explode", headers=BEARER)
    assert response.status == 404 and "unknown action" in (await response.json())["reason"]
    response = await c.post("/api/watchers/nope/start", headers=BEARER)
    assert response.status == 404 and "not found" in (await response.json())["reason"]


async def test_kill_a_process_and_it_is_replaced(console: Console, daemon: Daemon) -> None:
    pids = await wait_for(lambda: len(daemon.pids("web")) == 2 and daemon.pids("web"),
                          what="two processes")
    victim = pids[0]
    response = await console.client.post(f"/api/watchers/web/processes/{victim}/kill",
                                         headers=BEARER)
    assert response.status == 200, await response.text()
    await wait_for(lambda: not pid_alive(victim), what="the killed process to exit")
    await wait_for(lambda: len(daemon.pids("web")) == 2 and victim not in daemon.pids("web"),
                   what="its replacement")
    response = await console.client.post("/api/watchers/web/processes/12x/kill",
                                         headers=BEARER)
    assert response.status == 400


async def test_add_set_options_and_remove_a_watcher(console: Console, daemon: Daemon) -> None:
    c = console.client
    body = {"name": "added", "cmd": SLEEPER.split(" ", 1)[0],
            "args": SLEEPER.split(" ", 1)[1], "numprocesses": "2",
            "working_dir": "/tmp", "env": "A=1\nB=two"}
    response = await c.post("/api/watchers", json=body, headers=BEARER)
    assert response.status == 200, await response.text()
    pids = await wait_for(lambda: len(daemon.pids("added")) == 2 and daemon.pids("added"),
                          what="the added watcher's processes")
    from tests.conftest import proc_environ

    assert proc_environ(pids[0])["B"] == "two"
    assert os.readlink(f"/proc/{pids[0]}/cwd") == "/tmp"
    again = await c.post("/api/watchers", json=body, headers=BEARER)
    assert again.status == 400 and "already exists" in (await again.json())["reason"]
    bad = await c.post("/api/watchers", json={"name": "x"}, headers=BEARER)
    assert bad.status == 400 and "cmd" in (await bad.json())["reason"]
    # set types values as circusctl does
    response = await c.post("/api/watchers/added/set", headers=BEARER,
                            json={"options": {"graceful_timeout": "7", "respawn": "true"}})
    assert response.status == 200, await response.text()
    options = await (await c.get("/api/watchers/added/options", headers=BEARER)).json()
    assert options["options"]["graceful_timeout"] == 7.0
    bad = await c.post("/api/watchers/added/set", headers=BEARER,
                       json={"options": {"graceful_timeout": "soon"}})
    assert bad.status == 400 and "graceful_timeout" in (await bad.json())["reason"]
    response = await c.post("/api/watchers/added/rm", headers=BEARER)
    assert response.status == 200
    await wait_for(lambda: "added" not in daemon.call({"command": "list"})["watchers"],
                   what="the watcher to be removed")


async def test_tail_events_history_and_endpoint_choice(console: Console,
                                                       daemon: Daemon) -> None:
    c = console.client
    [pid] = daemon.pids("talker")

    async def lines() -> list[str]:
        reply = await (await c.get("/api/watchers/talker/tail?lines=2",
                                   headers=BEARER)).json()
        return [line["line"] for line in reply["lines"]]

    deadline = asyncio.get_running_loop().time() + 10
    for _ in range(2):  # one signal at a time: signals sent together may merge
        seen = await lines()
        os.kill(pid, signal.SIGUSR1)
        while (got := await lines()) == seen:
            assert asyncio.get_running_loop().time() < deadline, got
            await asyncio.sleep(0.02)
    assert [line.split(" of ")[1] for line in got] == [str(pid)] * 2, got
    assert got[0].startswith("line ") and got[1].startswith("line "), got
    assert int(got[1].split()[1]) == int(got[0].split()[1]) + 1, got
    for query in ("lines=x", "lines=-1"):
        response = await c.get(f"/api/watchers/talker/tail?{query}", headers=BEARER)
        assert response.status == 400
    await c.post("/api/watchers/web/incr", headers=BEARER)
    await c.post("/api/watchers/web/decr", headers=BEARER)
    await wait_for(lambda: any(e["topic"] == "watcher.web.spawn"
                               for e in console.hub.endpoints[0].events),
                   what="the spawn event")
    events = await (await c.get("/api/events", headers=BEARER)).json()
    assert any(e["topic"] == "watcher.web.spawn" for e in events["events"])
    history = await (await c.get("/api/history", headers=BEARER)).json()
    assert history["status"] == "ok" and isinstance(history["history"], dict)
    assert (await c.get("/api/status?endpoint=5", headers=BEARER)).status == 404
    assert (await c.get("/api/status?endpoint=first", headers=BEARER)).status == 400


async def test_global_stop_start_and_reloadconfig(console: Console, daemon: Daemon) -> None:
    c = console.client
    assert (await c.post("/api/stop", headers=BEARER)).status == 200
    await wait_for(lambda: set(daemon.call({"command": "status"})["statuses"].values())
                   == {"stopped"}, what="every watcher stopped")
    assert (await c.post("/api/start", headers=BEARER)).status == 200
    await wait_for(lambda: daemon.call({"command": "status", "properties": {
        "name": "web"}})["status"] == "active", what="web active again")
    response = await c.post("/api/reloadconfig", headers=BEARER)
    assert response.status == 200, await response.text()
    assert (await c.get("/api/reloadconfig", headers=BEARER)).status in (404, 405)


async def test_no_state_changes_by_get(console: Console, daemon: Daemon) -> None:
    before = daemon.pids("web")
    for path in ("/api/watchers/web/stop", "/api/watchers/web/incr", "/api/stop",
                 f"/api/watchers/web/processes/{before[0]}/kill"):
        response = await console.client.get(path, headers=BEARER)
        assert response.status in (404, 405), path
    assert daemon.pids("web") == before


async def test_names_and_output_are_escaped_in_pages(console: Console,
                                                     daemon: Daemon) -> None:
    await console.login()
    reply = daemon.call({"command": "add", "properties": {
        "name": EVIL, "cmd": SLEEPER, "start": False}})
    assert reply["status"] == "ok", reply
    try:
        await wait_for(lambda: EVIL in console.hub.endpoints[0].watchers,
                       what="the console to see the watcher")
        page = await (await console.client.get("/")).text()
        assert EVIL not in page
        assert "&lt;img src=x onerror=&#34;window.__xss=1&#34;&gt;" in page
        from urllib.parse import quote

        page = await (await console.client.get(f"/watchers/{quote(EVIL, safe='')}")).text()
        assert EVIL not in page and "&lt;img" in page
    finally:
        daemon.call({"command": "rm", "properties": {"name": EVIL}})


# -- the WebSocket --------------------------------------------------------------------------

async def receive_until(ws: aiohttp.ClientWebSocketResponse, what: str,
                        check: Any, within: float = 10.0) -> dict[str, Any]:
    async with asyncio.timeout(within):
        while True:
            message = await ws.receive_json()
            if check(message):
                return dict(message)
    raise AssertionError(what)  # pragma: no cover


async def test_the_feed_follows_a_killed_process_and_its_replacement(
        console: Console, daemon: Daemon) -> None:
    ws = await console.client.ws_connect("/ws", headers=BEARER)
    await ws.send_json({"type": "view", "page": "watcher", "endpoint": 0, "watcher": "web"})

    def web_pids(message: dict[str, Any]) -> list[int]:
        if message.get("type") != "status":
            return []
        ws_ = message["endpoint"]["watchers"]
        return [p["pid"] for p in ws_[0]["processes"]] if ws_ else []

    first = await receive_until(ws, "the watcher's status", lambda m: len(web_pids(m)) == 2)
    victim = web_pids(first)[0]
    os.kill(victim, signal.SIGKILL)
    await receive_until(ws, "the status without the killed pid and with a new one",
                        lambda m: len(web_pids(m)) == 2 and victim not in web_pids(m))
    await ws.close()


async def test_the_feed_follows_output_and_actions_need_csrf(
        console: Console, daemon: Daemon) -> None:
    csrf = await console.login()
    ws = await console.client.ws_connect("/ws", headers={"Origin": console.origin})
    await ws.send_json({"type": "follow", "endpoint": 0, "watcher": "talker", "lines": 5})
    await receive_until(ws, "the last lines", lambda m: m.get("type") == "lines")
    [pid] = daemon.pids("talker")
    os.kill(pid, signal.SIGUSR1)
    chunk = await receive_until(ws, "the new line", lambda m: m.get("type") == "output")
    assert chunk["pid"] == pid and chunk["stream"] == "stdout" and "line" in chunk["data"]
    before = len(daemon.pids("web"))
    await ws.send_json({"type": "action", "id": 1, "endpoint": 0, "watcher": "web",
                        "action": "incr"})
    reply = await receive_until(ws, "a reply", lambda m: m.get("type") == "reply")
    assert reply["status"] == "error" and "CSRF" in reply["reason"]
    assert len(daemon.pids("web")) == before
    await ws.send_json({"type": "action", "id": 2, "endpoint": 0, "watcher": "web",
                        "action": "incr", "csrf": csrf})
    reply = await receive_until(ws, "a reply", lambda m: m.get("type") == "reply")
    assert reply["status"] == "ok", reply
    await wait_for(lambda: len(daemon.pids("web")) == before + 1, what="the new process")
    await ws.send_json({"type": "action", "id": 3, "endpoint": 0, "watcher": "web",
                        "action": "decr", "csrf": csrf})
    await receive_until(ws, "a reply", lambda m: m.get("type") == "reply")
    await ws.close()


# -- read-only, fleet -----------------------------------------------------------------------

async def test_readonly_refuses_every_change_and_shows_no_controls(daemon: Daemon) -> None:
    async with open_console([daemon.endpoint], readonly=True) as console:
        csrf = await console.login()
        c = console.client
        before = daemon.pids("web")
        for path in ("/api/watchers/web/stop", "/api/stop", "/api/watchers",
                     f"/api/watchers/web/processes/{before[0]}/kill"):
            response = await c.post(path, headers=BEARER)
            assert response.status == 403, path
            response = await c.post(path, headers={"Origin": console.origin,
                                                   "X-CSRF-Token": csrf})
            assert response.status == 403, path
        page = await (await c.get("/")).text()
        assert "data-action=" not in page and "data-global=" not in page
        assert 'data-readonly="true"' in page
        ws = await c.ws_connect("/ws", headers={"Origin": console.origin})
        await ws.send_json({"type": "action", "id": 1, "endpoint": 0, "watcher": "web",
                            "action": "stop", "csrf": csrf})
        reply = await receive_until(ws, "a reply", lambda m: m.get("type") == "reply")
        assert reply["status"] == "error" and "read-only" in reply["reason"]
        await ws.close()
        assert daemon.pids("web") == before


async def test_two_circusd_in_one_console(daemon: Daemon, second: Daemon,
                                          where: Path) -> None:
    absent = f"ipc://{where}/absent"
    async with open_console([daemon.endpoint, second.endpoint, absent]) as console:
        await wait_for(lambda: console.hub.endpoints[1].connected, what="the second circusd")
        data = await (await console.client.get("/api/status", headers=BEARER)).json()
        first, other, gone = data["endpoints"]
        assert {w["name"] for w in other["watchers"]} == {"other"}
        assert "web" in {w["name"] for w in first["watchers"]}
        assert gone["connected"] is False and "no socket file" in gone["error"], gone
        response = await console.client.post("/api/watchers/other/incr?endpoint=1",
                                             headers=BEARER)
        assert response.status == 200
        await wait_for(lambda: len(second.pids("other")) == 2, what="other's second process")
        response = await console.client.post("/api/watchers/other/incr", headers=BEARER)
        assert response.status == 404  # endpoint 0 has no watcher "other"
        await console.client.post("/api/watchers/other/decr?endpoint=1", headers=BEARER)
        # without circusd-stats, an open page still gets CPU and memory (from status)
        ws = await console.client.ws_connect("/ws", headers=BEARER)

        def measured() -> bool:
            snap = console.hub.endpoints[1].snapshot()
            return any(p["mem"] for w in snap["watchers"] for p in w["processes"])

        await wait_for(measured, what="figures without circusd-stats", timeout=10)
        await ws.close()
        page = await (await console.client.get("/", headers=BEARER)).text()
        assert page.count('class="endpoint"') == 3


def test_the_console_never_imports_the_arbiter() -> None:
    import subprocess
    import sys

    code = ("import sys, circus.web.app, circus.cli.httpd, circus.web.api, circus.web.pages; "
            "print(json.dumps([m for m in sys.modules if m in ('circus.arbiter', "
            "'circus.watcher', 'circus.controller')]))")
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True,
                         text=True, check=True).stdout
    assert json.loads(out) == []


def test_circusd_runs_the_console_as_a_singleton_watcher(circusd: Any, short_tmp: Path
                                                          ) -> None:
    import socket
    import urllib.request

    from tests.conftest import wait_until

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    d = circusd(f"[watcher:web]\ncmd = {SLEEPER}\n",
                circus_extra=f"httpd = true\nhttpd_host = 127.0.0.1\nhttpd_port = {port}\n"
                             f"httpd_token_file = console-token\n")
    token_file = short_tmp / "console-token"
    [pid] = wait_until(lambda: d.pids("circushttpd"), what="the circushttpd watcher")
    wait_until(token_file.exists, what="the console to write its token file")
    token = token_file.read_text().strip()

    def listed() -> list[str]:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/status",
                                         headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                data = json.loads(response.read())
        except OSError:
            return []
        return [w["name"] for w in data["endpoints"][0]["watchers"]]

    names = wait_until(lambda: "web" in listed() and listed(), what="the console to answer",
                       timeout=20)
    assert "circushttpd" in names
    reply = d.call({"command": "status", "properties": {"name": "circushttpd"}})
    assert reply["status"] == "active"
    d.stop()
    wait_until(lambda: not pid_alive(pid), what="the console to stop with circusd")


def test_a_non_loopback_bind_still_needs_the_token_and_warns(short_tmp: Path) -> None:
    import urllib.error
    import urllib.request

    from tests.e2e.web_support import Httpd

    httpd = Httpd(short_tmp, [f"ipc://{short_tmp}/absent"], "--host", "0.0.0.0")
    try:
        assert "reachable from other hosts over plain HTTP" in httpd.log_text()
        assert httpd.base.startswith("http://127.0.0.1:")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(httpd.base + "/api/status", timeout=5)
        assert refused.value.code == 401
        refused.value.close()
        request = urllib.request.Request(httpd.base + "/api/status",
                                          headers={"Authorization": f"Bearer {httpd.token}"})
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200
    finally:
        httpd.stop()
    assert httpd.proc.returncode == 0


async def test_a_circusd_that_goes_away_is_shown_and_picked_up_again(where: Path) -> None:
    body = f"[watcher:back]\ncmd = {SLEEPER}\n"
    d = await asyncio.to_thread(start_daemon, where, body, 2)
    try:
        async with open_console([d.endpoint], answer_within=1.0) as console:
            endpoint = console.hub.endpoints[0]
            await wait_for(lambda: "back" in endpoint.watchers, what="the watcher")
            ws = await console.client.ws_connect("/ws", headers=BEARER)  # a page is open
            await asyncio.to_thread(d.close)
            await wait_for(lambda: not endpoint.connected, what="the console to see it gone",
                           timeout=15)
            assert endpoint.error
            d = await asyncio.to_thread(start_daemon, where, body, 2)
            await wait_for(lambda: endpoint.connected and "back" in endpoint.watchers,
                           what="the console to pick it up again", timeout=15)
            await ws.close()
    finally:
        d.close()
