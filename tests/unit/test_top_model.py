"""circus-top's model: the messages of the stats channel and of ``status --details`` (in
the forms circusd-stats and circusd send them), sorting, the filter and ``--once``'s text."""

from __future__ import annotations

from typing import Any

import pytest

from circus.top.model import COLUMN_KEYS, TopModel, order, parse_size, render_text


def stat(model: TopModel, watcher: str, pid: int, cpu: Any, rss: str = "10.00M",
         mem: Any = 0.5, age: float = 12.0, cmdline: str = "python", now: float = 100.0
         ) -> None:
    model.on_stat(f"stat.{watcher}.{pid}", {
        "pid": pid, "cpu": cpu, "mem": mem, "mem_info1": rss, "mem_info2": "200.00M",
        "ctime": "0:01.00", "username": "u", "nice": 0, "create_time": 1.0, "age": age,
        "cmdline": cmdline, "children": [], "subtopic": pid, "name": None}, now=now)


def status(**watchers: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "status": "ok",
        "statuses": {name: "active" for name in watchers},
        "details": {
            name: {"health": "running", "numprocesses": len(procs), "restarts": 1,
                   "reason": None, "processes": procs}
            for name, procs in watchers.items()
        },
    }


def test_cpu_sorts_as_numbers_not_text() -> None:
    model = TopModel()
    for pid, cpu in ((11, 9.5), (12, 10.2), (13, 100.0), (14, 0.0), (15, "N/A")):
        stat(model, "web", pid, cpu)
    [(_, rows)] = model.sections(key="cpu", reverse=True)
    assert [r.pid for r in rows] == [13, 12, 11, 14, 15]  # "N/A" last, whichever way
    [(_, rows)] = model.sections(key="cpu", reverse=False)
    assert [r.pid for r in rows] == [14, 11, 12, 13, 15]


def test_memory_sorts_by_bytes_across_units() -> None:
    model = TopModel()
    for pid, rss in ((1, "900.00K"), (2, "9.50M"), (3, "12.00M"), (4, "1.20G")):
        stat(model, "web", pid, 0.0, rss=rss)
    [(_, rows)] = model.sections(key="rss", reverse=True)
    assert [r.pid for r in rows] == [4, 3, 2, 1]
    assert parse_size("1.20G") == int(1.2 * (1 << 30))
    assert parse_size("512") == 512
    assert parse_size("N/A") is None


@pytest.mark.parametrize("key", COLUMN_KEYS)
def test_every_column_sorts_and_missing_values_come_last(key: str) -> None:
    model = TopModel()
    stat(model, "web", 5, 1.0)
    stat(model, "web", 3, 2.0)
    model.on_status(status(web=[{"pid": 5, "wid": 2, "uptime": 3.0, "restarts": 4,
                                 "health": "running"},
                                {"pid": 3, "wid": 1, "uptime": 9.0, "restarts": 0,
                                 "health": "starting"}]))
    stat(model, "web", 7, 0.5)  # not in status: no wid, restarts or health
    rows = list(model.rows["web"].values())
    for reverse in (False, True):
        ordered = order(rows, key, reverse)
        assert {r.pid for r in ordered} == {3, 5, 7}
        values = [r.value(key) for r in ordered if r.value(key) is not None]
        assert values == sorted(values, reverse=reverse, key=lambda v: (
            str(v).lower() if isinstance(v, str) else v))
        if any(r.value(key) is None for r in rows):
            assert ordered[-1].value(key) is None


def test_status_gives_wids_restarts_health_and_the_filter_finds_them() -> None:
    model = TopModel()
    stat(model, "web", 21, 1.0, cmdline="gunicorn")
    stat(model, "worker", 31, 3.0, cmdline="celery")
    model.on_status(status(
        web=[{"pid": 21, "wid": 1, "uptime": 5.0, "restarts": 2, "health": "running"}],
        worker=[{"pid": 31, "wid": 1, "uptime": 5.0, "restarts": 0, "health": "starting"},
                {"pid": 32, "wid": 2, "uptime": 1.0, "restarts": 0, "health": "starting"}]))
    row = model.rows["web"][21]
    assert (row.wid, row.restarts, row.health) == (1, 2, "running")
    assert model.rows["worker"][32].age == 1.0  # from status until figures come
    assert [i.name for i, _ in model.sections("celery")] == ["worker"]
    assert [[r.pid for r in rows] for _, rows in model.sections("starting")] == [[31, 32]]
    assert [i.name for i, _ in model.sections("WEB")] == ["web"]
    assert model.sections("nothing-like-this") == []


def test_processes_leave_after_the_timeout_unless_status_lists_them() -> None:
    model = TopModel(process_timeout=3.0)
    stat(model, "web", 1, 0.0, now=100.0)
    stat(model, "web", 2, 0.0, now=100.0)
    model.on_status(status(web=[{"pid": 2, "wid": 1, "uptime": 1.0, "restarts": 0,
                                 "health": "running"}]))
    model.expire(now=102.0)
    assert set(model.rows["web"]) == {1, 2}
    model.expire(now=104.0)
    assert set(model.rows["web"]) == {2}


def test_aggregates_make_the_sparkline_history() -> None:
    model = TopModel()
    stat(model, "web", 1, 20.0, rss="1.00M")
    stat(model, "web", 2, 30.0, rss="3.00M")
    model.on_stat("stat.web", {"pid": [1, 2], "cpu": 25.0, "mem": 1.0, "age": 12.0})
    model.on_stat("stat.sockets", {"addresses": [], "reads": 0})  # not a watcher
    info = model.watchers["web"]
    assert list(info.cpu_history) == [50.0]
    assert list(info.rss_history) == [float(4 << 20)]
    assert "sockets" not in model.watchers


def test_once_text_has_a_header_and_one_line_per_process() -> None:
    model = TopModel()
    stat(model, "web", 41, 12.5, rss="2.00M")
    model.on_status(status(web=[{"pid": 41, "wid": 1, "uptime": 5.0, "restarts": 0,
                                 "health": "running"}]))
    text = render_text(model)
    lines = text.splitlines()
    assert lines[0].startswith("web  running  1/1 processes")
    assert lines[1].split() == ["PID", "WID", "CPU%", "MEM", "MEM%", "AGE", "RESTARTS",
                                "HEALTH", "COMMAND"]
    assert lines[2].split()[:4] == ["41", "1", "12.5", "2.0M"]
    model.on_status({"status": "error", "reason": "timed out"})
    assert render_text(model).splitlines()[0] == "(no status from circusd: timed out)"


def test_a_bad_endpoint_is_one_line_and_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    from circus.cli.top import main

    assert main(["--once", "--endpoint", "nowhere", "--control", ""]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("circus-top: --endpoint 'nowhere': ")
    with pytest.raises(SystemExit) as exit_info:
        main(["--once", "--sort", "size"])
    assert exit_info.value.code == 2
