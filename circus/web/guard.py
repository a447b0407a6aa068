"""The rules every request passes, in this order (one middleware, :func:`guard`):

1. ``Host`` must name an allowed host (the bind address, ``localhost``, ``127.0.0.1``,
   ``[::1]``, and each ``--allowed-host``): a page on a rebound DNS name gets 421.
2. Who asks: ``Authorization: Bearer <token>`` or the session cookie. ``/api/*`` and
   ``/ws`` answer 401 to nobody; a page shows the login form (or, for ``?token=`` with the
   right token, opens a session and redirects to the same page without the token).
3. A request that may change something (any method but GET, HEAD, OPTIONS) needs an
   ``Origin`` (or, lacking one, ``Referer``) of this very host when it comes with the
   cookie, and the session's CSRF token (``X-CSRF-Token`` or the form field ``csrf``); a
   bearer-token call needs neither, but a foreign ``Origin`` is refused all the same.
   In ``--readonly`` mode such requests are refused (403), login and logout aside.
4. Every response carries the security headers of :data:`SECURITY_HEADERS`.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlencode, urlsplit

from aiohttp import web

from circus.web.auth import COOKIE, Auth, Session

if TYPE_CHECKING:
    from circus.web.app import Settings

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
# pages and paths reachable without logging in
PUBLIC_PREFIXES = ("/static/",)
PUBLIC_PATHS = frozenset({"/login", "/favicon.ico"})


@dataclass(frozen=True)
class Identity:
    """How a request proved itself: ``bearer`` (the token) or ``session`` (the cookie)."""

    kind: str
    session: Session | None = None

    @property
    def user(self) -> str:
        return self.session.user if self.session is not None else "token"


def split_host(value: str) -> tuple[str, str | None]:
    """``("example.org", "8080")`` from a ``Host`` value; IPv6 without its brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else None
    if value.count(":") == 1:
        host, _, port = value.partition(":")
        return host, port
    return value, None


def host_allowed(value: str | None, allowed: frozenset[str]) -> bool:
    if not value:
        return False
    host, _port = split_host(value)
    return host in allowed


def origin_matches(origin: str, host_header: str) -> bool:
    """The origin (``scheme://host[:port]``) names the host the request was sent to."""
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    if parts.netloc.lower() == host_header.lower():
        return True
    # behind a proxy that passes $host (no port): the host names alone
    host, port = split_host(host_header)
    return port is None and (parts.hostname or "").lower() == host


def same_origin(request: web.Request, required: bool) -> bool:
    """The request's ``Origin`` (or ``Referer``) names this host; with *required* it must
    be there."""
    origin = request.headers.get("Origin")
    if origin is None:
        referer = request.headers.get("Referer")
        if referer:
            p = urlsplit(referer)
            origin = f"{p.scheme}://{p.netloc}"
    if origin is None:
        return not required
    return origin_matches(origin, request.host)


def identify(request: web.Request, auth: Auth) -> Identity | None:
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and auth.token_ok(value.strip()):
            return Identity("bearer")
        return None
    session = auth.session(request.cookies.get(COOKIE))
    return Identity("session", session) if session is not None else None


IDENTITY = web.RequestKey("identity", Identity)


def identity(request: web.Request) -> Identity:
    return request[IDENTITY]


def set_session_cookie(request: web.Request, response: web.StreamResponse,
                       session: Session) -> None:
    response.set_cookie(COOKIE, session.id, httponly=True, samesite="Strict", path="/",
                        secure=is_secure(request))


def is_secure(request: web.Request) -> bool:
    """Served over TLS, here or by the proxy in front (``X-Forwarded-Proto: https``, which
    can only make the cookie stricter)."""
    return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


def refuse(request: web.Request, status: int, reason: str) -> web.Response:
    if request.path.startswith("/api/") or request.path == "/ws" or \
            "application/json" in request.headers.get("Accept", ""):
        return web.json_response({"status": "error", "reason": reason}, status=status)
    return web.Response(status=status, text=reason + "\n")


async def csrf_token_of(request: web.Request) -> str:
    token = request.headers.get("X-CSRF-Token")
    if token is None and request.content_type in ("application/x-www-form-urlencoded",
                                                  "multipart/form-data"):
        form = await request.post()
        value = form.get("csrf")
        token = value if isinstance(value, str) else None
    return token or ""


def make_guard(settings: Settings, login_page: Handler) -> Callable[..., Awaitable[
        web.StreamResponse]]:
    auth = settings.auth
    allowed = settings.allowed_hosts

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not host_allowed(request.headers.get("Host"), allowed):
            return refuse(request, 421, "this host name is not served here (Host not allowed)")
        path = request.path
        ident = identify(request, auth)
        if ident is None and "Authorization" in request.headers:
            return refuse(request, 401, "authentication required: the bearer token is wrong")
        is_api = path.startswith("/api/") or path == "/ws"
        public = path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)
        if ident is None and not public:
            if is_api:
                response = refuse(request, 401, "authentication required")
                response.headers["WWW-Authenticate"] = 'Bearer realm="circushttpd"'
                return response
            token = request.query.get("token")
            if request.method == "GET" and token is not None and auth.token_ok(token):
                query = {k: v for k, v in request.query.items() if k != "token"}
                target = path + ("?" + urlencode(query) if query else "")
                response = web.Response(status=303, headers={"Location": target})
                set_session_cookie(request, response, auth.open_session("token"))
                return response
            return await login_page(request)
        if ident is not None:
            request[IDENTITY] = ident
        if request.method not in SAFE_METHODS:
            cookie = ident is not None and ident.kind == "session"
            if not same_origin(request, required=cookie or ident is None):
                return refuse(request, 403, "cross-origin request refused (Origin)")
            if cookie and path != "/login":
                assert ident is not None and ident.session is not None
                if not hmac.compare_digest((await csrf_token_of(request)).encode(),
                                           ident.session.csrf.encode()):
                    return refuse(request, 403, "the CSRF token is missing or wrong")
            if settings.readonly and path not in ("/login", "/logout"):
                return refuse(request, 403, "this console is read-only")
        return await handler(request)

    return guard


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
