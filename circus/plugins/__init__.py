"""Plugins: programs that watch circusd's events and act on them through its commands.

::

    circusd ──PUB events──────────▶ CircusPlugin._receive ──▶ handle_recv(topic, msg)
       ▲                                                         │
       └──ROUTER (stop, restart, kill, stats…)◀── call / cast ◀──┘ (and periodic callbacks)

Each plugin is a process of its own, run by ``circus-plugin`` (circus/cli/plugin.py) under a
singleton watcher named ``plugin:NAME`` (circus/plugins/launch.py builds that watcher), and
talks to circusd through the same two sockets as any client. A plugin that crashes is
respawned like any process; it never takes circusd down.

Built in:

======================================================  ============================
``circus.plugins.flapping.Flapping``                    stop watchers whose processes keep dying
``circus.plugins.statsd.StatsdEmitter``                 a statsd counter per event
``circus.plugins.statsd.FullStats``                     statsd gauges of CPU and memory
``circus.plugins.watchdog.WatchDog``                    kill processes whose UDP heartbeat stops
``circus.plugins.resource_watcher.ResourceWatcher``     restart a watcher past CPU/memory limits
``circus.plugins.http_observer.HttpObserver``           restart a watcher when a URL fails
``circus.plugins.redis_observer.RedisObserver``         restart a watcher when Redis fails
``circus.plugins.command_reloader.CommandReloader``     restart a watcher when its program changes
======================================================  ============================
"""

from __future__ import annotations

from circus.plugins.base import CircusPlugin, EventFrame, PluginOption

__all__ = ["CircusPlugin", "EventFrame", "PluginOption", "main"]


def main(argv: list[str] | None = None) -> int:
    """The ``circus-plugin`` command (Circus 0.19 ran ``circus.plugins.main()``)."""
    from circus.cli.plugin import main as run

    return run(argv)
