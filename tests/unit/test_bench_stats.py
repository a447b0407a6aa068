"""The circusd-stats benchmark's pure parts: its section of BENCHMARKS.md (medians, a
failure), how a run writes it into the file or keeps it, and how its targets are chosen."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import pytest

from benchmarks import report, stats
from benchmarks.run import choose, make_plan

HEAD = "# Benchmarks\n\nThe main report.\n"
READY = f"{report.READINESS_BEGIN}\n\n### 8. Readiness\n\nready figures\n\n{report.READINESS_END}"
SCALE = f"{report.SCALE_BEGIN}\n\n## At N = 10,000\n\nscale figures\n\n{report.SCALE_END}"


def results(sessions: list[dict[str, Any]], only: list[str]) -> dict[str, Any]:
    plan = make_plan("full", ["ours", "circus019"], only, None, None)
    return {"started": "2026-12-05 08:00 UTC", "duration": 300.0, "seed": 1,
            "interrupted": False, "machine": {"load": "1.0 1.0 1.0", "load_end": "2 2 2"},
            "versions": {}, "notes": {}, "plan": asdict(plan), "sessions": sessions}


def on(target: str, cpu: float, rnd: int, **more: float) -> dict[str, Any]:
    figures = {"seconds": 30.0, "quiet_cpu_percent": 0.0, "stats_cpu_percent": cpu,
               "daemon_cpu_percent": 0.1, "stats_rss_bytes": 21.0 * 2**20,
               "messages_per_s": 1001.0, "pids_in_aggregate": 1000, **more}
    return {"target": target, "kind": "stats", "n": 1000, "round": rnd, "stats": figures}


def off(target: str, cpu: float, rnd: int) -> dict[str, Any]:
    return {"target": target, "kind": "stats-off", "n": 1000, "round": rnd,
            "stats": {"seconds": 30.0, "daemon_cpu_percent": cpu}}


def test_the_section_gives_medians_per_target_and_the_failures() -> None:
    sessions = [on("ours", c, r) for r, c in enumerate((0.9, 0.5, 0.7))]
    sessions += [off("ours", 0.0, r) for r in range(3)]
    sessions += [on("circus019", c, r, quiet_cpu_percent=15.0)
                 for r, c in enumerate((16.0, 17.0))]
    sessions.append({"target": "circus019", "kind": "stats", "n": 1000, "round": 2,
                     "error": "stats: TargetFailed: no circusd-stats child within 30s"})
    text = stats.render(results(sessions, ["stats"]), report.LABELS)
    assert text.startswith(stats.STATS_BEGIN) and text.rstrip().endswith(stats.STATS_END)
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert rows[1] == ("| ours | 0.70 % | 0.00 % | 21.0 MiB | 0.10 % | 0.00 % | 1,001 "
                       "| 1,000 |")
    assert rows[2].startswith("| Circus 0.19 | 16.50 % | 15.00 % |")
    assert rows[2].endswith("| — | 1,001 | 1,000 |")  # no stats-off session: no figure
    assert "- failed: Circus 0.19 (stats, round 3): stats: TargetFailed" in text


def test_a_stats_run_replaces_only_its_section_and_other_runs_keep_it() -> None:
    first = report.update_markdown(f"{HEAD}\n{READY}\n\n{SCALE}\n",
                                   results([on("ours", 0.5, 0)], ["stats"]))
    assert first.index(READY) < first.index(stats.STATS_BEGIN) < first.index(SCALE)
    again = report.update_markdown(first, results([on("ours", 0.25, 0)], ["stats"]))
    assert "0.25 %" in again and "0.50 %" not in again
    assert again.count(stats.STATS_BEGIN) == 1
    section = report.marked_section(again, stats.STATS_BEGIN, stats.STATS_END)
    assert again.replace(section, "") == first.replace(
        report.marked_section(first, stats.STATS_BEGIN, stats.STATS_END), "")
    # a readiness run alone keeps it too, in place
    ready_alone = report.update_markdown(again, results([], ["readiness"]))
    assert section in ready_alone


@pytest.mark.parametrize(("only", "targets", "expected"), [
    (["stats"], None, (["stats"], ["ours", "circus019"])),
    (["stats"], ["ours"], (["stats"], ["ours"])),
])
def test_stats_is_measured_when_named_on_ours_and_circus019(
        only: list[str], targets: list[str] | None,
        expected: tuple[list[str], list[str]]) -> None:
    assert choose("full", only, targets) == expected
    assert "stats" not in choose("full", None, None)[0]
    with pytest.raises(ValueError, match="ours and circus019"):
        choose("full", ["stats"], ["supervisord"])
