"""The metrics' bookkeeping (CPU time of processes that have exited) and how circusd
starts circusd-stats for ``prometheus_port``."""

from __future__ import annotations

from circus.stats.launch import stats_watcher_confs
from circus.stats.metrics import Figures


def test_cpu_time_of_exited_processes_stays_with_its_watcher() -> None:
    figures = Figures()
    figures.update("Web App", 10, 2.0, 1000, 100.0)
    figures.update("Web App", 10, 3.5, 1200, 100.0)
    figures.update("Web App", 10, 3.0, 1300, 100.0)  # never backwards
    figures.update("worker", 11, 1.0, 500, 100.0)
    by_pid, dead = figures.view()
    assert (by_pid[10].cpu_seconds, by_pid[10].rss) == (3.5, 1300)
    figures.gone(10)
    figures.gone(10)  # a kill event, then the reap: counted once
    figures.update("worker", 11, 0.2, 500, 200.0)  # pid 11 reused by a new process
    by_pid, dead = figures.view()
    assert dead == {"web_app": 3.5, "worker": 1.0}
    assert set(by_pid) == {11} and by_pid[11].cpu_seconds == 0.2


def test_prometheus_port_alone_runs_circusd_stats_with_metrics() -> None:
    assert stats_watcher_confs(False, "ipc://c", "ipc://p", None) == []
    [conf] = stats_watcher_confs(False, "ipc://c", "ipc://p", None,
                                 prometheus_host="0.0.0.0", prometheus_port=9187)
    args = conf["args"]
    assert args[args.index("--prometheus-port") + 1] == "9187"
    assert args[args.index("--prometheus-host") + 1] == "0.0.0.0"
    [conf] = stats_watcher_confs(True, "ipc://c", "ipc://p", None)
    assert "--prometheus-port" not in conf["args"]
