"""The readiness benchmark's pure parts: its figures, its section of BENCHMARKS.md, how a
run's report is written into the file, and how a run's metrics and targets are chosen."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from benchmarks import readiness, report
from benchmarks.run import choose, make_plan

MAIN = "# Benchmarks\n\nThe main report.\n\n### 7. Scale curve\n\nold tables\n"
OLD_READY = f"{report.READINESS_BEGIN}\n\n### 8. Readiness\n\nold figures\n\n{report.READINESS_END}"
SCALE = f"{report.SCALE_BEGIN}\n\n## At N = 10,000\n\nscale figures\n\n{report.SCALE_END}"


def window(percent: float, rate: float, seconds: float = 10.0, **more: float) -> dict[str, float]:
    return {
        **readiness.window_figures(percent / 100 * seconds, int(rate * seconds), seconds),
        **more,
    }


def results(
    sessions: list[dict[str, Any]], only: list[str], targets: list[str] | None = None
) -> dict[str, Any]:
    plan = make_plan("full", targets or ["ours"], only, None, None)
    plan.sleep_cmd = "sleep 90000"
    return {
        "started": "2026-12-05 08:00 UTC",
        "duration": 240.0,
        "seed": 1,
        "interrupted": False,
        "machine": {"cpu": "a CPU", "nproc": "2", "kernel": "Linux", "python": "CPython",
                    "memory": "1 GiB", "load": "0.5 0.5 0.5"},
        "versions": {"ours": "0.20.0 (git abc)"},
        "notes": {"ours": ""},
        "plan": asdict(plan),
        "sessions": sessions,
    }


def ready_session(samples: list[float], rnd: int = 0) -> dict[str, Any]:
    return {"target": "ours", "kind": "ready", "n": 20, "round": rnd, "ready": samples}


def cpu_session(kind: str, cpu: dict[str, float], rnd: int = 0) -> dict[str, Any]:
    target = "floor" if kind == "connfloor" else "ours"
    return {"target": target, "kind": kind, "n": 1000, "round": rnd, "cpu": cpu}


def full_readiness() -> dict[str, Any]:
    """Two rounds: 100 latencies (1..100 µs), and CPU windows with known medians."""
    latencies = [i * 1e-6 for i in range(1, 101)]
    sessions = [
        ready_session(latencies[:50], 0),
        ready_session(latencies[50:], 1),
        cpu_session("health", window(1.5, 1000.0), 0),
        cpu_session("health", window(2.5, 1000.0), 1),
        cpu_session("nohealth", window(0.0, 0.0), 0),
        cpu_session("nohealth", window(0.0, 0.0), 1),
        cpu_session("connfloor", window(1.0, 1000.0), 0),
        cpu_session("connfloor", window(1.0, 1000.0), 1),
    ]
    return results(sessions, ["readiness"])


# -- percentiles and figures ------------------------------------------------------------------


def test_percentile_interpolates_between_the_closest_ranks() -> None:
    values = [4.0, 1.0, 3.0, 2.0]
    assert report.percentile(values, 0) == 1.0
    assert report.percentile(values, 50) == pytest.approx(2.5)
    assert report.percentile(values, 100) == 4.0
    assert report.percentile(list(range(1, 101)), 99) == pytest.approx(99.01)
    assert report.percentile([7.0], 99) == 7.0


def test_readiness_figures_pool_the_latencies_and_take_medians_of_the_windows() -> None:
    figures = report.readiness_figures(full_readiness())
    assert figures["ready_count"] == 100
    assert figures["ready_p50"] == pytest.approx(50.5e-6)
    assert figures["ready_p99"] == pytest.approx(99.01e-6)
    assert figures["ready_max"] == pytest.approx(100e-6)
    assert figures["health_percent"] == pytest.approx(2.0)  # the median of 1.5 and 2.5
    assert figures["health_rate"] == pytest.approx(1000.0)
    assert figures["nohealth_percent"] == 0.0
    assert figures["checks_percent"] == pytest.approx(2.0)
    assert figures["check_cpu"] == pytest.approx(20e-6)  # 2 % of a core over 1,000 checks/s
    assert figures["connection_cpu"] == pytest.approx(10e-6)
    assert figures["health_vs_floor"] == pytest.approx(2.0)
    assert figures["checks_vs_floor"] == pytest.approx(2.0)


def test_readiness_figures_leave_out_what_was_not_measured() -> None:
    failed = {"target": "ours", "kind": "health", "n": 1000, "round": 0, "error": "cpu: boom"}
    figures = report.readiness_figures(results([failed], ["readiness"]))
    assert figures == {}


def test_window_figures() -> None:
    figures = readiness.window_figures(0.25, 12_000, 10.0)
    assert figures["cpu_percent"] == pytest.approx(2.5)
    assert figures["per_second"] == pytest.approx(1200.0)
    assert figures["accepted"] == 12_000
    assert 0 < figures["tick"] <= 0.01


def test_armed_pids_are_read_from_the_armed_files(tmp_path: Path) -> None:
    for name in ("armed-12", "armed-345", "stamp-12", ".stamp-7", "armed-x", "armed-"):
        (tmp_path / name).touch()
    assert readiness.armed_pids(tmp_path) == {12, 345}


def test_read_stamp_reads_the_time_written(tmp_path: Path) -> None:
    (tmp_path / "stamp-42").write_text(repr(1234.5678))
    assert readiness.read_stamp(tmp_path, 42, timeout=1.0) == 1234.5678


# -- the section ----------------------------------------------------------------------------


def test_the_section_is_numbered_marked_and_says_it_is_ours_only() -> None:
    text = report.render_readiness(full_readiness())
    assert text.startswith(report.READINESS_BEGIN + "\n")
    assert text.rstrip("\n").endswith(report.READINESS_END)
    assert "### 8. Readiness and health checks" in text
    assert "Circus 0.19 and supervisord have no readiness" in text
    assert "| 100 | 50 µs | 99 µs | 100 µs |" in text


def test_the_section_shows_the_cpu_table_the_ratio_and_the_goal() -> None:
    text = report.render_readiness(full_readiness())
    rows = [line for line in text.splitlines() if line.startswith("| ours") or
            line.startswith("| floor")]
    assert rows[0] == "| ours, `health = tcp:` every 1 s | 2.00 % | 200 ms | 1,000 | ×2 |"
    # no CPU tick in the window: shown as below the resolution, 1 tick in 10 s
    assert rows[1] == "| ours, no health check | < 0.10 % | < 10 ms | 0 | < ×0.1 |"
    assert rows[2] == "| floor: 1,000 connect + close a second | 1.00 % | 100 ms | 1,000 |  |"
    assert "20 µs of CPU per check, ×2 the floor (10 µs per bare connection)" in text
    assert "**not met** (2.00 %)" in text


def test_the_goal_is_met_below_two_percent() -> None:
    data = full_readiness()
    for s in data["sessions"]:
        if s["kind"] == "health":
            s["cpu"] = window(1.2, 1000.0)
    assert "**met** (1.20 %)" in report.render_readiness(data)


def test_the_section_says_when_the_floor_alone_is_above_the_goal() -> None:
    data = full_readiness()
    assert "The floor alone" not in report.render_readiness(data)
    for s in data["sessions"]:
        if s["kind"] == "connfloor":
            s["cpu"] = window(3.0, 1000.0)
    text = report.render_readiness(data)
    assert "making the same connections, takes 3.00 %: more than the goal" in text


def test_the_section_lists_its_failures_and_restarts() -> None:
    data = full_readiness()
    data["sessions"] = [s for s in data["sessions"] if s["kind"] != "ready"]
    data["sessions"].append({"target": "ours", "kind": "ready", "n": 20, "round": 0,
                             "error": "ready: TargetFailed: no ready event"})
    data["sessions"][0]["cpu"]["replaced"] = 3.0
    next(s for s in data["sessions"] if s["kind"] == "connfloor")["cpu"]["failed"] = 2.0
    text = report.render_readiness(data)
    assert "2 of the floor's connections failed" in text
    assert "| failed | — | — | — |" in text
    assert "- **ours** (ready N=20): ready: TargetFailed: no ready event" in text
    assert "3 of the checked processes were replaced" in text


def test_render_of_a_readiness_run_alone_is_its_section() -> None:
    data = full_readiness()
    assert report.render(data) == report.render_readiness(data)


# -- writing the file ------------------------------------------------------------------------


def test_a_readiness_run_alone_replaces_only_its_section() -> None:
    old = f"{MAIN}\n{OLD_READY}\n\n{SCALE}\n"
    new = report.update_markdown(old, full_readiness())
    section = report.render_readiness(full_readiness()).strip("\n")
    assert new == f"{MAIN}\n{section}\n\n{SCALE}\n"


def test_a_readiness_run_alone_adds_its_section_before_the_scale_section() -> None:
    old = f"{MAIN}\n{SCALE}\n"
    new = report.update_markdown(old, full_readiness())
    section = report.render_readiness(full_readiness()).strip("\n")
    assert new == f"{MAIN}\n{section}\n\n{SCALE}\n"


def test_a_readiness_run_alone_starts_a_file() -> None:
    new = report.update_markdown("", full_readiness())
    assert new.startswith(report.SCALE_FILE_HEAD)
    assert report.marked_section(new, report.READINESS_BEGIN, report.READINESS_END)


def spawn_only() -> dict[str, Any]:
    session = {"target": "ours", "kind": "sleepers", "n": 100, "round": 0,
               "spawn": {"all": 0.5, "first": 0.1}}
    return results([session], ["spawn"])


def test_a_run_without_readiness_keeps_the_readiness_and_scale_sections() -> None:
    old = f"{MAIN}\n{OLD_READY}\n\n{SCALE}\n"
    new = report.update_markdown(old, spawn_only())
    assert new == f"{report.render_main(spawn_only())}\n{OLD_READY}\n\n{SCALE}\n"
    assert "old tables" not in new  # the main report itself is rewritten


def test_a_run_with_readiness_and_more_writes_both() -> None:
    data = spawn_only()
    data["plan"]["only"] = ["spawn", "readiness"]
    data["sessions"] += full_readiness()["sessions"]
    new = report.update_markdown(f"{MAIN}\n{OLD_READY}\n\n{SCALE}\n", data)
    section = report.render_readiness(data).strip("\n")
    assert new == f"{report.render_main(data)}\n{section}\n\n{SCALE}\n"
    # the readiness sessions stay out of the main report's tables and failures
    assert "### 8." not in report.render_main(data)
    assert report.render(data) == report.render_main(data) + "\n" + section + "\n"


def test_report_writes_a_saved_run_into_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saved, target = tmp_path / "run.json", tmp_path / "BENCHMARKS.md"
    saved.write_text(json.dumps(full_readiness()))
    target.write_text(f"{MAIN}\n{OLD_READY}\n\n{SCALE}\n")
    assert report.main([str(saved), "--markdown", str(target)]) == 0
    section = report.render_readiness(full_readiness()).strip("\n")
    assert target.read_text() == f"{MAIN}\n{section}\n\n{SCALE}\n"
    assert capsys.readouterr().out == section + "\n"
    assert report.main([str(saved), "--markdown"]) == 2


def test_splice_section_replaces_appends_or_inserts() -> None:
    begin, end = "<!-- x:begin -->", "<!-- x:end -->"
    assert report.splice_section("a\n", begin, end, f"{begin}\n1\n{end}\n") == (
        f"a\n\n{begin}\n1\n{end}\n"
    )
    text = f"a\n{begin}\n1\n{end}\nb\n"
    assert report.splice_section(text, begin, end, f"{begin}\n2\n{end}") == (
        f"a\n{begin}\n2\n{end}\nb\n"
    )
    assert report.splice_section("a\nB\n", begin, end, f"{begin}\n{end}", before="B") == (
        f"a\n{begin}\n{end}\n\nB\n"
    )
    assert report.marked_section("no markers", begin, end) == ""


# -- choosing what to run ------------------------------------------------------------------------


def test_readiness_alone_runs_on_ours_alone() -> None:
    assert choose("full", ["readiness"], None) == (["readiness"], ["ours"])


def test_readiness_is_part_of_quick_and_full() -> None:
    for mode in ("quick", "full"):
        only, targets = choose(mode, None, None)
        assert "readiness" in only and "fds" not in only
        assert targets == ["ours", "circus019", "supervisord", "floor"]


def test_readiness_without_ours_is_refused_or_dropped() -> None:
    with pytest.raises(ValueError, match="measures ours only"):
        choose("full", ["readiness"], ["floor"])
    only, targets = choose("quick", None, ["floor"])
    assert "readiness" not in only and targets == ["floor"]


def test_readiness_is_not_a_scale_metric() -> None:
    with pytest.raises(ValueError, match="not measured in scale mode"):
        choose("scale", ["readiness"], None)
