"""The web console in a real browser: Debian's Chromium driven by Playwright, against a real
circushttpd serving two real circusd (one browser, one console, two daemons per module).

Set ``CIRCUS_WEB_SHOTS=docs/img`` to write the screenshots docs/web.md shows; otherwise
they go to the module's temp dir (taken all the same, so the pages render).
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.conftest import pid_alive, wait_until
from tests.e2e.conftest import Daemon
from tests.e2e.web_support import SLEEPER, TALKER, Httpd, short_dir, start_daemon

CHROMIUM = "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    pytest.skip(f"no {CHROMIUM} (Debian's chromium package) for Playwright to drive",
                allow_module_level=True)

from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright  # noqa: E402

EVIL = "<img src=x onerror=\"window.__xss=1\">"


@pytest.fixture(scope="module")
def where() -> Iterator[Path]:
    with short_dir() as path:
        yield path


@pytest.fixture(scope="module")
def daemons(where: Path) -> Iterator[tuple[Daemon, Daemon]]:
    first = start_daemon(where, f"[watcher:web]\ncmd = {SLEEPER}\nnumprocesses = 2\n\n"
                                f"[watcher:talker]\ncmd = {TALKER}\nnumprocesses = 1\n")
    second = start_daemon(where, f"[watcher:other]\ncmd = {SLEEPER}\nnumprocesses = 1\n", n=1)
    reply = first.call({"command": "add", "properties": {"name": EVIL, "cmd": SLEEPER,
                                                         "start": True}})
    assert reply["status"] == "ok", reply
    yield first, second
    first.close()
    second.close()


@pytest.fixture(scope="module")
def httpd(where: Path, daemons: tuple[Daemon, Daemon]) -> Iterator[Httpd]:
    server = Httpd(where, [daemons[0].endpoint, daemons[1].endpoint])
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=args)
        yield b
        b.close()


@pytest.fixture(scope="module")
def context(browser: Browser, httpd: Httpd) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    ctx.set_default_timeout(10_000)
    yield ctx
    ctx.close()


@pytest.fixture(scope="module")
def shots(where: Path) -> Path:
    target = Path(os.environ.get("CIRCUS_WEB_SHOTS") or where / "shots")
    target.mkdir(parents=True, exist_ok=True)
    return target


@pytest.fixture
def page(context: BrowserContext, httpd: Httpd) -> Iterator[Page]:
    p = context.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    if not context.cookies():
        p.goto(httpd.login_url)
    yield p
    p.close()
    assert errors == [], errors


def watcher_url(httpd: Httpd, name: str, endpoint: int = 0) -> str:
    return f"{httpd.base}/watchers/{quote(name, safe='')}?endpoint={endpoint}"


def test_log_in_with_the_token_url_and_see_both_circusd(
        browser: Browser, httpd: Httpd, shots: Path) -> None:
    ctx = browser.new_context(viewport={"width": 1280, "height": 720})
    try:
        p = ctx.new_page()
        p.goto(httpd.base + "/")
        expect(p.locator("form[action='/login']").first).to_be_visible()
        assert p.locator("[data-watcher]").count() == 0
        p.goto(httpd.login_url)
        assert p.url == httpd.base + "/"  # the token is gone from the address bar
        sections = p.locator("section.endpoint")
        expect(sections).to_have_count(2)
        first, second = sections.nth(0), sections.nth(1)
        for name in ("web", "talker"):
            expect(first.locator(f"tr[data-watcher='{name}']")).to_have_count(1)
        expect(second.locator("tr[data-watcher='other']")).to_have_count(1)
        expect(first.locator(".conn")).to_have_text("connected")
        expect(second.locator(".conn")).to_have_text("connected")
        expect(p.locator("#live")).to_have_text("live")
        expect(first.locator("tr[data-watcher='web'] .procs")).to_have_text("2/2")
        # the charts draw once figures come (from status: no circusd-stats here)
        expect(first.locator("tr[data-watcher='web'] .mem")).to_contain_text("MB",
                                                                              timeout=8000)
        expect(first.locator("tr[data-watcher='web'] .chart canvas")).to_have_count(1)
        for tr in p.locator("tr.watcher").all():  # a few points of each chart, once a second
            expect(tr.locator("td.chart")).to_have_attribute(
                "data-points", re.compile(r"^([3-9]|\d\d+)$"), timeout=8000)
        p.screenshot(path=str(shots / "web-dashboard.png"))
    finally:
        ctx.close()


def test_a_process_killed_from_outside_goes_and_its_replacement_appears(
        page: Page, httpd: Httpd, daemons: tuple[Daemon, Daemon]) -> None:
    daemon = daemons[0]
    page.goto(watcher_url(httpd, "web"))
    rows = page.locator("table.processes tr.process")
    expect(rows).to_have_count(2)
    page.evaluate("window.__same_page = true")
    before = daemon.pids("web")
    victim = int(rows.first.get_attribute("data-pid") or 0)
    assert victim in before
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 2.0

    def left_ms() -> float:
        return max(deadline - time.monotonic(), 0.001) * 1000

    expect(page.locator(f"tr[data-pid='{victim}']")).to_have_count(0, timeout=left_ms())
    [new] = wait_until(lambda: [p for p in daemon.pids("web") if p not in before],
                       what="circusd's replacement", timeout=left_ms() / 1000)
    expect(page.locator(f"tr[data-pid='{new}']")).to_have_count(1, timeout=left_ms())
    expect(rows).to_have_count(2, timeout=left_ms())
    assert page.evaluate("window.__same_page") is True  # no reload


def test_the_kill_and_stop_buttons_work(page: Page, httpd: Httpd,
                                        daemons: tuple[Daemon, Daemon], shots: Path) -> None:
    daemon = daemons[0]
    page.goto(watcher_url(httpd, "web"))
    rows = page.locator("table.processes tr.process")
    expect(rows).to_have_count(2)
    victim = int(rows.first.get_attribute("data-pid") or 0)
    rows.first.locator("button[data-kill]").click()
    wait_until(lambda: not pid_alive(victim), what="the process killed from the page")
    expect(page.locator(f"tr[data-pid='{victim}']")).to_have_count(0)
    expect(rows).to_have_count(2)
    page.screenshot(path=str(shots / "web-watcher.png"), full_page=False)
    page.locator(".summary button[data-action='stop']").click()
    wait_until(lambda: daemon.call({"command": "status", "properties": {"name": "web"}})[
        "status"] == "stopped", what="the watcher stopped from the page")
    expect(rows).to_have_count(0)
    expect(page.locator(".summary .health")).to_have_text("stopped")
    page.locator(".summary button[data-action='start']").click()
    expect(rows).to_have_count(2)
    assert len(daemon.pids("web")) == 2


def test_a_printed_line_shows_in_the_log_pane_within_a_second(
        page: Page, httpd: Httpd, daemons: tuple[Daemon, Daemon], shots: Path) -> None:
    [pid] = daemons[0].pids("talker")
    page.goto(watcher_url(httpd, "talker"))
    expect(page.locator("#log .line").first).to_have_text("ready")
    expect(page.locator("#log-state")).to_have_text("following")
    before = page.locator("#log .line").count()
    os.kill(pid, signal.SIGUSR1)
    line = page.locator("#log .line").nth(before)
    expect(line).to_contain_text(f"of {pid}", timeout=1000)
    # search filters the pane; pause holds new lines back until resumed
    page.fill("#log-search", "ready")
    expect(page.locator("#log .line:visible")).to_have_count(1)
    page.fill("#log-search", "")
    page.click("#log-pause")
    count = page.locator("#log .line").count()
    os.kill(pid, signal.SIGUSR1)
    expect(page.locator("#log-state")).to_contain_text("1 new lines held")
    assert page.locator("#log .line").count() == count
    page.click("#log-pause")
    expect(page.locator("#log .line")).to_have_count(count + 1)
    page.screenshot(path=str(shots / "web-log.png"), full_page=False)


def test_a_hostile_watcher_name_is_shown_as_text(page: Page, httpd: Httpd) -> None:
    page.goto(httpd.base + "/")
    rows = page.locator("tr.watcher")
    expect(rows.filter(has_text=EVIL)).to_have_count(1)
    link = rows.filter(has_text=EVIL).locator("td.name a")
    assert link.text_content() == EVIL
    assert page.locator("tr.watcher img").count() == 0
    link.click()
    expect(page.locator(".wname")).to_have_text(EVIL)
    expect(page.locator("table.processes tr.process")).to_have_count(1)
    assert page.evaluate("window.__xss") is None
    assert page.locator("main img").count() == 0


def test_the_add_form_starts_a_watcher(page: Page, httpd: Httpd,
                                       daemons: tuple[Daemon, Daemon], shots: Path) -> None:
    daemon = daemons[1]
    page.goto(httpd.base + "/add?endpoint=1")
    cmd, args = SLEEPER.split(" ", 1)
    page.fill("input[name=name]", "fromform")
    page.fill("input[name=cmd]", cmd)
    page.fill("input[name=args]", args)
    page.fill("input[name=numprocesses]", "2")
    page.fill("textarea[name=env]", "GREETING=hello")
    page.screenshot(path=str(shots / "web-add.png"), full_page=False)
    page.click("#add-form button[type=submit]")
    page.wait_for_load_state()
    refused = page.locator("p.error").all_text_contents()
    assert not refused, refused
    page.wait_for_url("**/watchers/fromform?endpoint=1")
    expect(page.locator("table.processes tr.process")).to_have_count(2)
    pids = daemon.pids("fromform")
    assert len(pids) == 2
    from tests.conftest import proc_environ

    assert proc_environ(pids[0])["GREETING"] == "hello"


def test_the_events_feed_is_live_and_filterable(page: Page, httpd: Httpd,
                                                daemons: tuple[Daemon, Daemon],
                                                shots: Path) -> None:
    page.goto(httpd.base + "/events")
    expect(page.locator("#live")).to_have_text("live")
    assert daemons[1].call({"command": "incr", "properties": {"name": "other"}})["status"] \
        == "ok"
    expect(page.locator("#events tr[data-topic='watcher.other.spawn']").first).to_be_visible()
    page.fill("#event-filter", "watcher.other.")
    for topic in page.locator("#events tr:visible td.topic").all_text_contents():
        assert topic.startswith("watcher.other."), topic
    page.screenshot(path=str(shots / "web-events.png"), full_page=False)
    daemons[1].call({"command": "decr", "properties": {"name": "other"}})


def test_an_option_is_edited_and_typed_as_circusctl_types_it(
        page: Page, httpd: Httpd, daemons: tuple[Daemon, Daemon]) -> None:
    daemon = daemons[1]
    page.goto(watcher_url(httpd, "other", 1))
    field = page.locator("#options input[name='graceful_timeout']")
    field.fill("12.5")
    page.click("#options button[type=submit]")
    expect(page.locator("#options-state")).to_have_text("saved: graceful_timeout")
    options = daemon.call({"command": "options", "properties": {"name": "other"}})["options"]
    assert options["graceful_timeout"] == 12.5
    field.fill("soon")
    page.click("#options button[type=submit]")
    expect(page.locator("#notice")).to_contain_text("graceful_timeout")
    options = daemon.call({"command": "options", "properties": {"name": "other"}})["options"]
    assert options["graceful_timeout"] == 12.5
