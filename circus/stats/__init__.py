"""circusd-stats: the figures of every process circusd runs, on a ZeroMQ PUB socket.

* ``streamer.StatsStreamer``: one thread and one poller. It asks circusd once for its
  watchers, pids and sockets, then follows the events (``spawn``, ``reap``, ``kill``,
  ``stop``) and publishes at each interval, while someone subscribes.
* ``collector.Collector``: reads one process's figures from ``/proc/<pid>/stat`` (a
  descriptor kept open and read again) and formats them as Circus 0.19 does.
* ``metrics``: Prometheus ``/metrics`` (``prometheus_port``), a collector that asks
  circusd for ``status`` at each scrape and takes CPU and memory from the loop's reads.
* ``launch``: the singleton watcher ``circusd-stats`` that circusd runs when ``statsd =
  true``, ``stats_endpoint`` or ``prometheus_port`` is set.

The command is ``circus/cli/stats.py``; what is published is in docs/stats.md.
"""
