"""Shared sockets through the library API: an in-process Arbiter with real children."""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

import pytest

from circus.arbiter import Arbiter
from circus.sockets import CircusSocket, SocketBindError
from circus.states import WatcherState
from circus.watcher import Watcher
from tests.conftest import PYTHON, pid_alive, wait_for

# accept one connection on the descriptor given as argv[1], answer with the pid, exit
ONE_SHOT = (
    "import os, select, socket, sys; s = socket.socket(fileno=int(sys.argv[1])); "
    "select.select([s], [], []); c, _ = s.accept(); c.sendall(str(os.getpid()).encode()); "
    "c.close()"
)




async def fetch(port: int) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        async with asyncio.timeout(10):
            return int(await reader.read())
    finally:
        writer.close()
        await writer.wait_closed()


def one_shot(name: str, **options: Any) -> Watcher:
    return Watcher(name, f"{PYTHON} -c '{ONE_SHOT}' $(circus.sockets.web)", use_sockets=True,
                   respawn=False, **options)


async def test_async_with_binds_before_the_watchers_and_closes_after(
    endpoints: tuple[str, str]
) -> None:
    web = CircusSocket("Web", host="127.0.0.1", port=0, backlog=16)
    watcher = one_shot("w")
    async with Arbiter([watcher], *endpoints, sockets=[web]) as arbiter:
        assert arbiter.sockets.get("web") is web and web.fd is not None
        assert watcher.sockets == {"web": web.fd}
        fd = web.fd
        pid = await fetch(web.port)
        assert pid in watcher.pids or not pid_alive(pid)
    assert web.fd is None
    with pytest.raises(OSError):
        os.fstat(fd)  # circusd's descriptor is closed


async def test_on_demand_through_the_library(endpoints: tuple[str, str]) -> None:
    watcher = one_shot("w", on_demand=True)
    sockets = [{"name": "web", "host": "127.0.0.1", "port": 0}]
    async with Arbiter([watcher], *endpoints, sockets=sockets) as arbiter:
        port = arbiter.sockets.get("web").port  # type: ignore[union-attr]
        assert watcher.state is WatcherState.STOPPED and watcher.pids == []
        first = await fetch(port)
        # respawn = false: the one-shot process exits, the watcher stops and waits again
        await wait_for(lambda: watcher.state is WatcherState.STOPPED and not pid_alive(first),
                       what="the watcher to stop")
        second = await fetch(port)
        assert second != first


async def test_a_bind_failure_leaves_nothing_open(endpoints: tuple[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        first = CircusSocket("ok", host="127.0.0.1", port=0)
        clash = CircusSocket("clash", host="127.0.0.1", port=port)
        watcher = Watcher("w", "sleep 3600")
        arbiter = Arbiter([watcher], *endpoints, sockets=[first, clash])
        with pytest.raises(SocketBindError, match=r"\[socket:clash\].*in use"):
            await arbiter.open()
    assert first.fd is None and watcher.pids == []  # the socket bound first is closed again
    # the control and event endpoints were released: another arbiter can take them
    async with Arbiter([], *endpoints, sockets=[first]):
        assert first.fd is not None
