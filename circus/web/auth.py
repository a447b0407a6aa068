"""Who may use the console: the login token, the password file, sessions.

Authentication is always on. The *token* is random per start (or read from a file); it is
accepted as ``Authorization: Bearer <token>`` on the API, and the login URL
``/?token=<token>`` turns it into a session. A *password file* (optional) holds lines
``user:scrypt$<n>$<r>$<p>$<salt hex>$<hash hex>``, made by ``circushttpd --hash-password
USER``. A session is a random id in an HttpOnly cookie; each has its own CSRF token, which
every state-changing request made with the cookie must carry.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

COOKIE = "circus_session"
SESSION_TTL = 12 * 3600.0  # seconds a session lives without use
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


class AuthConfigError(ValueError):
    """A token file or password file that cannot be used (the message names it)."""


def new_token() -> str:
    return secrets.token_urlsafe(32)


def read_token_file(path: str) -> str:
    """The token in *path*: its first line, stripped. A missing file is created with a new
    random token (mode 0600), so that a service and its user can share it."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        token = new_token()
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise AuthConfigError(f"--token-file {path}: {exc.strerror or exc}") from None
        with os.fdopen(fd, "w") as fh:
            fh.write(token + "\n")
        return token
    except OSError as exc:
        raise AuthConfigError(f"--token-file {path}: {exc.strerror or exc}") from None
    token = text.strip().splitlines()[0].strip() if text.strip() else ""
    if len(token) < 16:
        raise AuthConfigError(f"--token-file {path}: the token should have at least 16 "
                              f"characters, it has {len(token)}")
    return token


def hash_password(password: str, salt: bytes | None = None) -> str:
    """The password-file form of *password*: ``scrypt$n$r$p$salt$hash``."""
    salt = salt if salt is not None else os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                            maxmem=64 * 1024 * 1024)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r),
                             p=int(p), maxmem=64 * 1024 * 1024)
    except ValueError:
        return False
    return hmac.compare_digest(got.hex(), digest)


def read_password_file(path: str) -> dict[str, str]:
    """``{user: stored hash}`` from *path*; a bad line is an error naming ``path:line``."""
    users: dict[str, str] = {}
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise AuthConfigError(f"--password-file {path}: {exc.strerror or exc}") from None
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, stored = line.partition(":")
        if not sep or not user or not stored.startswith("scrypt$") or stored.count("$") != 5:
            raise AuthConfigError(f"{path}:{number}: expected user:scrypt$..., made by "
                                  f"circushttpd --hash-password USER")
        users[user] = stored
    return users


@dataclass
class Session:
    id: str
    csrf: str
    user: str
    last_used: float = field(default_factory=time.monotonic)


class Auth:
    """The token, the users of the password file, and the open sessions."""

    def __init__(self, token: str, users: dict[str, str] | None = None) -> None:
        self.token = token
        self.users = users or {}
        self.sessions: dict[str, Session] = {}

    def token_ok(self, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(str(token).encode(), self.token.encode())

    def password_ok(self, user: str, password: str) -> bool:
        stored = self.users.get(user)
        if stored is None:
            check_password(password, hash_password("x"))  # the same time for unknown users
            return False
        return check_password(password, stored)

    def open_session(self, user: str) -> Session:
        self._expire()
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), user)
        self.sessions[session.id] = session
        return session

    def session(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        session = self.sessions.get(session_id)
        if session is None:
            return None
        now = time.monotonic()
        if now - session.last_used > SESSION_TTL:
            del self.sessions[session_id]
            return None
        session.last_used = now
        return session

    def close_session(self, session_id: str | None) -> None:
        if session_id:
            self.sessions.pop(session_id, None)

    def _expire(self) -> None:
        now = time.monotonic()
        for sid in [s.id for s in self.sessions.values() if now - s.last_used > SESSION_TTL]:
            del self.sessions[sid]
