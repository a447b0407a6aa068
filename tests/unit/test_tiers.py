"""Tiers of control (circus/tiers.py) and CURVE keys (circus/curve.py), without a daemon."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import zmq

from circus import curve
from circus.commands import REGISTRY, command_class
from circus.tiers import REDACTED, Tier, redact, secret_name

READER = {"status", "list", "listpids", "numprocesses", "numwatchers", "stats", "dstats",
          "options", "get", "globaloptions", "listsockets", "tail", "listen", "wait"}
OPERATOR = {"start", "stop", "restart", "reload", "signal", "kill", "incr", "decr"}


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_command_names_its_tier(name: str) -> None:
    cls = command_class(name)
    assert cls is not None
    assert "tier" in vars(cls), f"{cls.__name__} does not say which tier may run it"
    expected = Tier.READER if name in READER else (
        Tier.OPERATOR if name in OPERATOR else Tier.ADMIN)
    assert cls.tier is expected


def test_a_command_that_forgets_its_tier_is_admin_only() -> None:
    from circus.commands.base import Command

    class Forgetful(Command):
        """A command without a tier."""

        name = "forgetful"

    assert Forgetful.tier is Tier.ADMIN
    assert not Tier.OPERATOR.covers(Forgetful.tier)
    assert Tier.ADMIN.covers(Tier.READER) and not Tier.READER.covers(Tier.OPERATOR)


@pytest.mark.parametrize("name,secret", [
    ("DB_PASSWORD", True), ("API_TOKEN", True), ("AWS_SECRET_ACCESS_KEY", True),
    ("SSH_KEY", True), ("client_secret", True), ("PATH", False), ("KEYBOARD", False),
    ("PORT", False), ("MONKEY_COUNT", False),
])
def test_secret_names(name: str, secret: bool) -> None:
    assert secret_name(name) is secret


def test_redact_reaches_every_env() -> None:
    reply = {"options": {"env": {"DB_PASSWORD": "x", "HOME": "/"}, "cmd": "run"},
             "list": [{"env": {"TOKEN": "t"}}]}
    assert redact(reply) == {"options": {"env": {"DB_PASSWORD": REDACTED, "HOME": "/"},
                                         "cmd": "run"},
                             "list": [{"env": {"TOKEN": REDACTED}}]}
    assert reply["options"]["env"]["DB_PASSWORD"] == "x"  # a copy


def test_keygen_writes_a_private_pair(tmp_path: Path) -> None:
    public, secret = curve.keygen("me", tmp_path / "keys")
    assert os.stat(secret).st_mode & 0o777 == 0o600
    pub, sec = curve.load_secret(secret)
    assert curve.load_public(public) == pub and len(sec) == 40
    with pytest.raises(ValueError, match="exists already"):
        curve.keygen("me", tmp_path / "keys")
    with pytest.raises(ValueError, match="invalid key name"):
        curve.keygen("../x", tmp_path)


def test_a_secret_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    _, secret = curve.keygen("me", tmp_path)
    os.chmod(secret, 0o640)
    with pytest.raises(ValueError, match=f"{secret} is readable by group or others"):
        curve.load_secret(secret)
    public = tmp_path / "me.key"
    os.chmod(secret, 0o600)
    with pytest.raises(ValueError, match="no secret key"):
        shutil.copy(public, tmp_path / "pub_only")
        os.chmod(tmp_path / "pub_only", 0o600)
        curve.load_secret(tmp_path / "pub_only")


def test_the_key_ring_follows_its_directories(tmp_path: Path) -> None:
    dirs = {tier: tmp_path / tier.value for tier in Tier}
    for d in dirs.values():
        d.mkdir()
    pub, _ = curve.keygen("alice", tmp_path / "clients")
    ring = curve.KeyRing({t: str(d) for t, d in dirs.items()})
    ring.refresh()
    key = curve.load_public(pub)
    assert ring.lookup(key) is None
    shutil.copy(pub, dirs[Tier.READER])
    assert ring.refresh()
    entry = ring.lookup(key)
    assert entry is not None and (entry.name, entry.tier) == ("alice", Tier.READER)
    shutil.copy(pub, dirs[Tier.ADMIN])  # in two tiers: the higher one
    ring.refresh()
    assert ring.lookup(key).tier is Tier.ADMIN  # type: ignore[union-attr]
    assert not ring.refresh()  # nothing changed: nothing read
    (dirs[Tier.ADMIN] / "alice.key").unlink()
    (dirs[Tier.READER] / "alice.key").unlink()
    ring.refresh()
    assert ring.lookup(key) is None


def test_circusctl_keys_come_from_options_environment_or_default(tmp_path: Path) -> None:
    _, secret = curve.keygen("me", tmp_path)
    server_pub, _ = curve.keygen("server", tmp_path)
    assert curve.cli_keys(None, None, {"XDG_CONFIG_HOME": str(tmp_path / "none")}) is None
    keys = curve.cli_keys(None, None, {"CIRCUSCTL_CURVE_KEY": secret,
                                       "CIRCUSCTL_SERVER_KEY": server_pub})
    assert keys is not None and keys.server == curve.load_public(server_pub)
    with pytest.raises(ValueError, match="--server-key"):
        curve.cli_keys(secret, None, {})
    xdg = tmp_path / "xdg" / "circus"
    xdg.mkdir(parents=True)
    shutil.copy(secret, xdg / "client.key_secret")
    shutil.copy(server_pub, xdg / "server.key")
    found = curve.cli_keys(None, None, {"XDG_CONFIG_HOME": str(tmp_path / "xdg")})
    assert found is not None and found.public == curve.load_secret(secret)[0]


def test_an_old_libzmq_refuses_curve(monkeypatch: pytest.MonkeyPatch) -> None:
    # an old libzmq cannot be loaded next to this one: its version is what is checked
    monkeypatch.setattr(zmq, "zmq_version_info", lambda: (4, 3, 1))
    problem = curve.libzmq_problem()
    assert problem is not None and "CVE-2019-13132" in problem and "4.3.2" in problem
    with pytest.raises(ValueError, match="CVE-2019-13132"):
        curve.ServerKeys.load({"curve_secret_key": "/nonexistent"})
    with pytest.raises(ValueError, match="CVE-2019-13132"):  # a client refuses it too
        curve.client_keys("/nonexistent.key_secret", "/nonexistent.key")


def test_the_internal_key_travels_in_the_environment(tmp_path: Path) -> None:
    curve.keygen("server", tmp_path)
    keys = curve.ServerKeys.load({"curve_secret_key": str(tmp_path / "server.key_secret")})
    assert keys is not None
    client = curve.internal_keys({curve.INTERNAL_ENV: keys.internal_env()})
    assert client is not None and client.server == keys.public
    entry = keys.ring.lookup(client.public)
    assert entry is not None and entry.tier is Tier.ADMIN and entry.name == "circusd"
    assert curve.internal_keys({}) is None


def test_a_key_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    curve.keygen("server", tmp_path / "server")
    admin = tmp_path / "admin"
    admin.mkdir(mode=0o755)
    options = {"curve_secret_key": str(tmp_path / "server" / "server.key_secret"),
               "curve_admin_keys": str(admin)}
    assert curve.check_server_options(options) is None
    admin.chmod(0o777)
    problem = curve.check_server_options(options)
    assert problem is not None and problem.startswith("curve_admin_keys\t")
    assert f"{admin} is writable by group or others" in problem
    assert curve.check_server_options({"curve_reader_keys": str(admin)}) is not None
