"""circushttpd's token and password files, and its command line's refusals."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from circus.web.auth import (
    Auth,
    AuthConfigError,
    check_password,
    hash_password,
    read_password_file,
    read_token_file,
)
from circus.web.guard import host_allowed, origin_matches, split_host

HTTPD = [sys.executable, "-m", "circus.cli.httpd"]


def test_a_missing_token_file_is_created_private_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "token"
    token = read_token_file(str(path))
    assert len(token) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_token_file(str(path)) == token


def test_a_short_token_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("short\n")
    with pytest.raises(AuthConfigError, match="at least 16 characters"):
        read_token_file(str(path))


def test_passwords_are_salted_and_checked() -> None:
    one, two = hash_password("pw"), hash_password("pw")
    assert one != two and one.startswith("scrypt$")
    assert check_password("pw", one) and not check_password("PW", one)
    assert not check_password("pw", "garbage")


def test_a_bad_password_file_line_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_text(f"# users\nann:{hash_password('a')}\nbob:plaintext\n")
    with pytest.raises(AuthConfigError, match=f"{path}:3: expected user:scrypt"):
        read_password_file(str(path))
    path.write_text(f"ann:{hash_password('a')}\n")
    auth = Auth("x" * 20, read_password_file(str(path)))
    assert auth.password_ok("ann", "a") and not auth.password_ok("ann", "b")
    assert not auth.password_ok("nobody", "a")


def test_sessions_are_opened_found_and_closed() -> None:
    auth = Auth("x" * 20)
    session = auth.open_session("token")
    assert auth.session(session.id) is session and session.csrf != session.id
    auth.close_session(session.id)
    assert auth.session(session.id) is None and auth.session(None) is None
    assert auth.token_ok("x" * 20) and not auth.token_ok("y" * 20) and not auth.token_ok("")


def test_host_and_origin_rules() -> None:
    allowed = frozenset({"localhost", "127.0.0.1", "::1"})
    assert split_host("[::1]:8080") == ("::1", "8080")
    assert host_allowed("LOCALHOST:80", allowed) and host_allowed("[::1]", allowed)
    assert not host_allowed("attacker.example", allowed) and not host_allowed(None, allowed)
    assert origin_matches("http://127.0.0.1:8080", "127.0.0.1:8080")
    assert not origin_matches("http://127.0.0.1:9999", "127.0.0.1:8080")
    assert origin_matches("https://console.example", "console.example")  # behind a proxy
    assert not origin_matches("null", "127.0.0.1:8080")


def run(*args: str, stdin: str = "", env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HTTPD, *args], capture_output=True, text=True, input=stdin,
                          timeout=30, env=env)


def test_bad_arguments_get_one_line_and_status_2(tmp_path: Path) -> None:
    res = run("--endpoint", "localhost:5555")
    assert res.returncode == 2 and res.stderr.strip() == (
        "circushttpd: --endpoint localhost:5555: no transport; did you mean "
        "tcp://localhost:5555?")
    (tmp_path / "t").write_text("tiny")
    res = run("--token-file", str(tmp_path / "t"))
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "at least 16 characters" in res.stderr
    res = run("--port", "70000")
    assert res.returncode == 2 and "expected a port number" in res.stderr


def test_without_the_web_extra_a_clear_line(tmp_path: Path) -> None:
    # a directory first on the path whose aiohttp cannot be imported
    (tmp_path / "aiohttp.py").write_text("raise ImportError('No module named aiohttp')\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    res = run("--port", "0", env=env)
    assert res.returncode == 1
    assert res.stderr.startswith("circushttpd: the web console needs the 'web' extra "
                                 "(pip install 'circus[web]')"), res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr


def test_hash_password_prints_a_password_file_line() -> None:
    res = run("--hash-password", "ann", stdin="s3cret\n")
    assert res.returncode == 0, res.stderr
    user, _, stored = res.stdout.strip().partition(":")
    assert user == "ann" and check_password("s3cret", stored)


def test_a_bad_password_file_stops_circushttpd_naming_the_line(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("ann:secret\n")
    res = run("--password-file", str(users), "--port", "0")
    assert res.returncode == 2
    assert res.stderr.strip() == (f"circushttpd: {users}:1: expected user:scrypt$..., made "
                                  f"by circushttpd --hash-password USER")


def test_it_listens_on_loopback_unless_told_and_knows_what_loopback_is() -> None:
    from circus.cli.httpd import login_url, parser
    from circus.web.app import is_loopback

    assert parser().parse_args([]).host == "127.0.0.1"
    assert all(is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "[::1]", "127.1.2.3"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "example.org"))
    assert login_url("0.0.0.0", 80, "T") == "http://127.0.0.1:80/?token=T"
    assert login_url("::", 80, "T") == "http://[::1]:80/?token=T"
