"""Plugins given to an in-process arbiter: ``get_arbiter(plugins=...)`` as the seed documents."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import pytest

from circus import get_arbiter
from tests.conftest import pid_alive, wait_until


@pytest.fixture
def udp() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.1)
    yield sock
    sock.close()


def test_get_arbiter_runs_plugins_as_watchers(endpoints: tuple[str, str],
                                              udp: socket.socket) -> None:
    port = udp.getsockname()[1]
    arbiter = get_arbiter(
        [{"name": "web", "cmd": "sleep 3600"}],
        controller=endpoints[0],
        pubsub_endpoint=endpoints[1],
        background=True,
        check_delay=0.5,
        plugins=[{"name": "statsd", "use": "circus.plugins.statsd.StatsdEmitter",
                  "host": "127.0.0.1", "port": port, "application_name": "lib"}],
    )
    assert [w.name for w in arbiter.watchers] == ["web", "plugin:statsd"]
    plugin = arbiter.get_watcher("plugin:statsd")
    assert plugin.singleton and plugin.priority == 1
    arbiter.start()
    try:
        from circus.client import CircusClient

        with CircusClient(endpoint=endpoints[0]) as client:
            pid = wait_until(lambda: next(iter(arbiter.get_watcher("plugin:statsd").pids), 0),
                             what="the plugin process")
            received: list[bytes] = []

            def counted() -> bool:
                client.send_message("incr", name="web")
                deadline = time.monotonic() + 0.3
                while time.monotonic() < deadline:
                    with contextlib.suppress(TimeoutError):
                        received.append(udp.recv(4096))
                return b"circus.lib.watcher.web.spawn:1|c" in received

            wait_until(counted, what="a statsd packet", timeout=15)
    finally:
        arbiter.stop()
    assert not pid_alive(pid)


def test_a_bad_plugin_is_refused_at_once(endpoints: tuple[str, str]) -> None:
    from circus.errors import ConfigError

    with pytest.raises(ConfigError, match=r"\[plugin:x\] port"):
        get_arbiter([], controller=endpoints[0], pubsub_endpoint=endpoints[1],
                    plugins=[{"name": "x", "use": "circus.plugins.statsd.StatsdEmitter",
                              "port": "eighty"}])
