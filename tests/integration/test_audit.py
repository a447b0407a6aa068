"""The audit trail and the asyncio clients with keys, in-process: an Arbiter in the test's
event loop, real children, real ZeroMQ sockets on ipc:// endpoints."""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from circus.arbiter import Arbiter
from circus.client import AsyncCircusClient
from circus.consumer import AsyncCircusConsumer
from circus.curve import client_keys, keygen
from circus.watcher import Watcher
from tests.conftest import python_cmd

SLEEPER = python_cmd("import time; time.sleep(600)")


@pytest.fixture
async def plain(endpoints: tuple[str, str]) -> AsyncIterator[Arbiter]:
    arb = Arbiter([Watcher("sleeper", SLEEPER, env={"API_TOKEN": "s3cret"})], *endpoints)
    await arb.open()
    try:
        yield arb
    finally:
        await arb.close()


async def test_a_local_user_is_audited_by_transport_and_uid(
        plain: Arbiter, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="circus.audit")
    async with AsyncCircusClient(endpoint=plain.endpoint) as client:
        assert (await client.send_message("status"))["status"] == "ok"
        reply = await client.send_message("set", name="sleeper", waiting=True,
                                          options={"env": {"API_TOKEN": "n3w"}})
        assert reply["status"] == "ok", reply
        missing = await client.send_message("stop", name="nosuch")
        assert missing["status"] == "error"
    lines = [r.getMessage() for r in caplog.records if r.name == "circus.audit"]
    assert len(lines) == 2, lines  # status is a reader's: not audited
    assert re.match(rf"audit: who=ipc:uid {os.geteuid()} \(\S+\) command=set ", lines[0])
    assert '"API_TOKEN": "<redacted>"' in lines[0] and "n3w" not in lines[0]
    assert lines[0].endswith("result=ok")
    assert "command=stop" in lines[1] and "result=error: program nosuch not found" in lines[1]


async def test_the_asyncio_client_and_consumer_take_keys(short_tmp: Path) -> None:
    for tier in ("admin", "reader"):
        (short_tmp / tier).mkdir()
    keygen("server", short_tmp)
    _, boss = keygen("boss", short_tmp / "admin")
    _, viewer = keygen("viewer", short_tmp / "reader")
    server = str(short_tmp / "server.key")
    arb = Arbiter([Watcher("sleeper", SLEEPER)], f"ipc://{short_tmp}/c", f"ipc://{short_tmp}/p",
                  curve_secret_key=str(short_tmp / "server.key_secret"),
                  curve_admin_keys=str(short_tmp / "admin"),
                  curve_reader_keys=str(short_tmp / "reader"))
    await arb.open()
    try:
        async with AsyncCircusConsumer(["watcher.sleeper."], endpoint=arb.pubsub_endpoint,
                                       curve_key=viewer, server_key=server) as events, \
                AsyncCircusClient(endpoint=arb.endpoint, curve_key=boss,
                                  server_key=server) as admin, \
                AsyncCircusClient(endpoint=arb.endpoint, keys=client_keys(viewer, server),
                                  timeout=2) as reader:
            refused = await reader.send_message("incr", name="sleeper")
            assert "needs the operator tier" in refused["reason"]
            waiter = asyncio.ensure_future(events.recv())
            try:
                for _ in range(50):  # the subscription takes a moment to arrive
                    reply = await admin.send_message("restart", name="sleeper", waiting=True)
                    assert reply["status"] == "ok", reply
                    done, _ = await asyncio.wait({waiter}, timeout=0.1)
                    if done:
                        break
                event = await asyncio.wait_for(waiter, 5)
            finally:
                waiter.cancel()
            assert event.watcher == "sleeper"
    finally:
        await arb.close()
