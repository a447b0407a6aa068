"""benchmarks/web.py's report: its own section of BENCHMARKS.md, kept by the other runs."""

from __future__ import annotations

from typing import Any

from benchmarks import report, web
from tests.unit.test_bench_readiness import MAIN, OLD_READY, SCALE, spawn_only


def web_results() -> dict[str, Any]:
    death = {"p50": 41.0, "p95": 60.0, "max": 75.0}
    return {"n": 1000, "date": "2026-12-05 12:00 UTC", "seconds": 90.0,
            "machine": {"cpu": "cpu", "nproc": "2", "kernel": "Linux", "load": "0.1"},
            "load": {"watcher": 0.8, "dashboard": 0.2}, "html_bytes": 300_000,
            "death": {"gone": death, "came": death, "samples": 30},
            "cpu_no_page": 0.1, "cpu_dashboard": 1.5, "cpu_watcher": 4.0,
            "httpd_rss": 50 << 20}


def test_the_section_names_every_figure() -> None:
    text = web.render(web_results())
    assert text.startswith(report.WEB_BEGIN) and text.rstrip().endswith(report.WEB_END)
    for figure in ("800 ms (293 KiB of HTML)", "200 ms", "41 / 60 / 75 ms", "4.00 %",
                   "50.0 MiB", "1,000 process rows"):
        assert figure in text, figure


def test_the_section_goes_before_the_scale_section_and_other_runs_keep_it() -> None:
    section = web.render(web_results())
    old = f"{MAIN}\n{OLD_READY}\n\n{SCALE}\n"
    new = report.splice_section(old, report.WEB_BEGIN, report.WEB_END, section,
                                before=report.SCALE_BEGIN)
    assert new.index(report.WEB_BEGIN) < new.index(report.SCALE_BEGIN)
    rewritten = report.update_markdown(new, spawn_only())
    assert report.marked_section(rewritten, report.WEB_BEGIN, report.WEB_END) == \
        section.strip("\n")
    assert rewritten.index(report.WEB_BEGIN) < rewritten.index(report.SCALE_BEGIN)
    again = report.splice_section(rewritten, report.WEB_BEGIN, report.WEB_END, section)
    assert again.count(report.WEB_BEGIN) == 1
