"""circus-top against the real circusd and circusd-stats: the Textual view driven headless
by its Pilot (sorting, the filter, killing a process after confirmation, --readonly), and
the command itself (``--once``, in a pty without Textual)."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import pid_alive, python_cmd, wait_for, wait_until
from tests.e2e.conftest import Daemon

pytest.importorskip("textual", reason="circus-top's view needs the 'top' extra (Textual)")

from textual.widgets import RichLog  # noqa: E402

from circus.top.app import Confirm, TopApp  # noqa: E402
from circus.top.model import parse_size  # noqa: E402

TALKER = python_cmd(
    "import itertools, os, time; "
    "[print(f'line {n} of {os.getpid()}', flush=True) or time.sleep(0.2) "
    "for n in itertools.count()]")
SPINNER = python_cmd("while True: pass")


def start(circusd: Callable[..., Daemon], short_tmp: Path) -> tuple[Daemon, str]:
    stats = f"ipc://{short_tmp}/stats"
    d = circusd(
        f"[watcher:web]\ncmd = {TALKER}\nnumprocesses = 3\n\n"
        f"[watcher:spin]\ncmd = {SPINNER}\nnumprocesses = 1\n",
        circus_extra=f"statsd = true\nstats_endpoint = {stats}\n")
    return d, stats


def table_pids(app: TopApp, watcher: str) -> list[int]:
    section = app.sections.get(watcher)
    if section is None:
        return []
    return [int(str(key.value)) for key in section.table.rows]


def column(app: TopApp, watcher: str, key: str) -> list[str]:
    """The cells of one column of a watcher's table ([] while it is not shown)."""
    section = app.sections.get(watcher)
    if section is None:
        return []
    return [str(section.table.get_cell(row, key)) for row in section.table.rows]


async def test_sort_filter_and_kill_with_confirmation(
        circusd: Callable[..., Daemon], short_tmp: Path) -> None:
    d, stats = start(circusd, short_tmp)
    web = wait_until(lambda: len(d.pids("web")) == 3 and d.pids("web"), what="3 web workers")
    [spin] = d.pids("spin")
    app = TopApp(stats, d.endpoint, status_interval=0.3, refresh_interval=0.2)
    async with app.run_test(size=(160, 60)) as pilot:
        def ready() -> bool:
            return (sorted(table_pids(app, "web")) == sorted(web)
                    and "-" not in column(app, "web", "cpu")
                    and "-" not in column(app, "web", "wid")
                    and table_pids(app, "spin") == [spin]
                    and column(app, "spin", "cpu")[0] != "-"
                    # "starting" until min_uptime (1 s) has passed
                    and column(app, "web", "health") == ["running"] * 3)

        await wait_for(ready, what="every process with figures, wids and running", timeout=20,
                       interval=0.05)
        assert sorted(int(w) for w in column(app, "web", "wid")) == [1, 2, 3]

        # sorting: by CPU (the default, largest first), then by memory, both numerically;
        # the "circus" section has circusd and circusd-stats, of different sizes
        await wait_for(lambda: [c for c in column(app, "spin", "cpu")
                                if c != "-" and float(c) > 20],
                       what="the spinner's CPU above 20 %", timeout=30)
        await wait_for(lambda: len(table_pids(app, "circus")) == 2, what="circus' two")
        for key, parse in (("cpu", float), ("rss", parse_size)):
            if key != app.sort_key:
                await pilot.press("M")
            assert (app.sort_key, app.sort_reverse) == (key, True)
            for name in ("web", "circus"):
                values = [parse(v) for v in column(app, name, key)]
                assert values == sorted(values, reverse=True), (key, name, values)
        await pilot.press("M")  # again: smallest first
        await pilot.pause()
        values = [parse_size(v) for v in column(app, "circus", "rss")]
        assert values == sorted(values)

        # the filter
        await pilot.press("slash", *"spin")
        await wait_for(lambda: list(app.sections) == ["spin"], what="only spin shown")
        await pilot.press("enter", "escape")
        await wait_for(lambda: set(app.sections) >= {"web", "spin", "circus"}
                       and sorted(table_pids(app, "web")) == sorted(web),
                       what="every watcher back")

        # the output of the selected process
        victim = web[0]
        assert app.select(victim)
        log = app.query_one("#tail", RichLog)
        await wait_for(lambda: any(f"of {victim}" in line.text for line in log.lines),
                       what=f"the output of {victim} in the pane", timeout=10)

        # k asks first; "n" leaves the process alone
        await pilot.press("k")
        await wait_for(lambda: isinstance(app.screen, Confirm), what="the question")
        await pilot.press("n")
        await wait_for(lambda: not isinstance(app.screen, Confirm), what="no question")
        assert pid_alive(victim) and victim in d.pids("web")

        # k, y: killed, and the view shows the process circusd starts in its place
        await pilot.press("k")
        await wait_for(lambda: isinstance(app.screen, Confirm), what="the question")
        await pilot.press("y")
        await wait_for(lambda: not pid_alive(victim), what=f"{victim} killed", timeout=10)

        def replaced() -> list[int]:
            shown = table_pids(app, "web")
            return [p for p in shown if p not in web] if (
                len(shown) == 3 and victim not in shown) else []

        [new] = await wait_for(replaced, what="the replacement in the view", timeout=15)
        assert new in d.pids("web")


async def test_readonly_refuses_the_keys_that_act(
        circusd: Callable[..., Daemon], short_tmp: Path) -> None:
    d, stats = start(circusd, short_tmp)
    web = wait_until(lambda: len(d.pids("web")) == 3 and d.pids("web"), what="3 web workers")
    app = TopApp(stats, d.endpoint, readonly=True, status_interval=0.3,
                 refresh_interval=0.2)
    async with app.run_test(size=(160, 60)) as pilot:
        await wait_for(lambda: sorted(table_pids(app, "web")) == sorted(web),
                       what="the web workers", timeout=20)
        assert app.select(web[0])
        for key in ("k", "r", "s", "minus", "plus"):
            await pilot.press(key)
            await pilot.pause(0.05)
            assert not isinstance(app.screen, Confirm), key
        assert "read-only" in app.sub_title
    assert d.pids("web") == web


def test_once_prints_every_process_with_its_wid(
        circusd: Callable[..., Daemon], short_tmp: Path) -> None:
    d, stats = start(circusd, short_tmp)
    web = wait_until(lambda: len(d.pids("web")) == 3 and d.pids("web"), what="3 web workers")
    wait_until(lambda: d.call({"command": "status", "properties": {"name": "web", "details": True}}
                              )["details"]["web"]["health"] == "running",
               what="web running", timeout=15)
    res = subprocess.run([sys.executable, "-m", "circus.cli.top", "--once", "--endpoint",
                          stats, "--control", d.endpoint, "--sort", "pid"],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    start_at = next(i for i, line in enumerate(lines) if line.startswith("web  "))
    assert "3/3 processes" in lines[start_at]
    rows = [line.split() for line in lines[start_at + 2:start_at + 5]]
    assert [int(r[0]) for r in rows] == sorted(web)  # --sort pid: smallest first
    assert sorted(int(r[1]) for r in rows) == [1, 2, 3]
    assert all(r[7] == "running" for r in rows)


def test_without_textual_the_view_says_so_in_one_line(short_tmp: Path) -> None:
    """In a terminal (a pty), with Textual hidden from the import system."""
    code = ("import sys; sys.modules['textual'] = None\n"
            "from circus.cli.top import main; sys.exit(main(['--endpoint', "
            f"'ipc://{short_tmp}/none', '--control', '']))")
    primary, secondary = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=secondary, stdout=secondary,
                            stderr=secondary, close_fds=True)
    os.close(secondary)
    out = b""
    try:
        while True:
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # EIO: the child has closed its side
                break
            if not chunk:
                break
            out += chunk
        assert proc.wait(timeout=20) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(primary)
    lines = out.decode(errors="replace").strip().splitlines()
    assert lines == ["circus-top: the live view needs Textual: pip install 'circus[top]' "
                     "(or use --once)"]


def test_circusctl_stats_watch_prints_a_table_every_second(
        circusd: Callable[..., Daemon]) -> None:
    d = circusd(f"[watcher:web]\ncmd = {TALKER}\nnumprocesses = 2\n")
    web = wait_until(lambda: len(d.pids("web")) == 2 and d.pids("web"), what="2 workers")
    lines: list[str] = []
    with subprocess.Popen([sys.executable, "-m", "circus.cli.circusctl", "--endpoint",
                           d.endpoint, "stats", "web", "--watch"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            while sum(line.startswith("Every 1s: circusctl stats web") for line in lines) < 3:
                line = proc.stdout.readline()
                assert line, f"circusctl ended: {proc.wait(timeout=10)} {lines}"
                lines.append(line.rstrip("\n"))
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    headers = [i for i, line in enumerate(lines) if line.split()[:2] == ["PID", "CMD"]]
    assert len(headers) >= 2
    for at in headers[:2]:
        assert lines[at].split() == ["PID", "CMD", "USER", "NICE", "RSS", "VMS", "CPU%",
                                     "MEM%", "TIME"]
        assert sorted(int(lines[at + k].split()[0]) for k in (1, 2)) == sorted(web)
