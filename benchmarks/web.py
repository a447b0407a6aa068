"""The web console with 1,000 processes: page load, death to page, circushttpd's CPU.

    python -m benchmarks.web [--n 1000] [--kills 30] [--window 15] [--repeats 5]
                             [--json out.json] [--markdown BENCHMARKS.md]

One circusd (ours, ipc:// endpoints in a temp dir) runs N ``sleep`` children in one watcher,
with circusd-stats; one circushttpd serves it; Debian's Chromium (``/usr/bin/chromium``,
driven by Playwright) opens the pages. Measured, in this order:

* **page load**: from ``goto`` to the page complete and live: the watcher page with its N
  process rows drawn and its WebSocket open, and the dashboard; median of ``--repeats``;
* **death to page**: a random process of the watcher is killed (SIGKILL) while its page is
  open; a MutationObserver in the page records (wall clock) when its row goes and when the
  row of its replacement appears. ``--kills`` samples, one at a time;
* **circushttpd's CPU** (user + system from ``/proc/PID/stat``) over ``--window`` seconds:
  with no page open, with the dashboard open, with the watcher page open (N rows, the
  figures of every process each second).

With ``--markdown`` the report replaces the section between ``<!-- web:begin -->`` and
``<!-- web:end -->`` of that file (or goes in front of the scale section); the other
benchmark runs keep it. Every process is stopped by its recorded pid.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import procfs, report

CHROMIUM = "/usr/bin/chromium"
WEB_BEGIN, WEB_END = report.WEB_BEGIN, report.WEB_END

OBSERVER = """() => {
  window.__gone = {}; window.__came = {};
  const body = document.querySelector('table.processes tbody');
  new MutationObserver((records) => {
    const t = performance.timeOrigin + performance.now();
    for (const r of records) {
      for (const n of r.removedNodes)
        if (n.dataset && n.dataset.pid) window.__gone[n.dataset.pid] = t;
      for (const n of r.addedNodes)
        if (n.dataset && n.dataset.pid && n.isConnected) window.__came[n.dataset.pid] = t;
    }
  }).observe(body, {childList: true});
}"""


def wait(check: Any, what: str, timeout: float, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Setup:
    """circusd with N sleepers and circusd-stats, and circushttpd serving it."""

    def __init__(self, where: Path, n: int) -> None:
        self.where = where
        self.endpoint = f"ipc://{where}/c"
        ini = where / "circus.ini"
        ini.write_text(
            f"[circus]\nendpoint = {self.endpoint}\npubsub_endpoint = ipc://{where}/p\n"
            f"statsd = true\nstats_endpoint = ipc://{where}/s\n\n"
            f"[watcher:sleepers]\ncmd = sleep 987654\nnumprocesses = {n}\n")
        env = dict(os.environ, XDG_RUNTIME_DIR=str(where))
        with open(where / "circusd.log", "wb") as out:
            self.circusd = subprocess.Popen(
                [sys.executable, "-m", "circus.cli.circusd", str(ini)], stdout=out,
                stderr=subprocess.STDOUT, cwd=where, env=env, start_new_session=True)
        self.children: dict[int, int] = {}
        self.httpd: subprocess.Popen[bytes] | None = None

    def start_console(self) -> None:
        with open(self.where / "httpd.log", "wb") as out:
            self.httpd = subprocess.Popen(
                [sys.executable, "-m", "circus.cli.httpd", "--endpoint", self.endpoint,
                 "--port", "0", "--token-file", str(self.where / "token")],
                stdout=out, stderr=subprocess.STDOUT, cwd=self.where, start_new_session=True)
        match = wait(lambda: re.search(r"http://\S+/\?token=\S+",
                                       (self.where / "httpd.log").read_text()),
                     "circushttpd's login URL", 30)
        self.login_url = match.group(0)
        self.base = self.login_url.split("/?token=")[0]

    def pids(self) -> list[int]:
        import zmq

        ctx: zmq.Context[Any] = zmq.Context.instance()
        sock = ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.connect(self.endpoint)
        try:
            sock.send(json.dumps({"id": os.urandom(8).hex(), "command": "list",
                                  "properties": {"name": "sleepers"}}).encode())
            if not sock.poll(10_000):
                return []
            return list(json.loads(sock.recv()).get("pids", []))
        finally:
            sock.close()

    def record_children(self) -> None:
        self.children.update(procfs.snapshot(procfs.children_of(self.circusd.pid)))

    def close(self) -> None:
        for proc in (self.httpd, self.circusd):
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        procfs.kill_leftovers(self.children)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def cpu_over(pid: int, seconds: float) -> float:
    """Percent of one core *pid* used over *seconds*."""
    before, t0 = procfs.cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return 100.0 * (procfs.cpu_seconds(pid) - before) / (time.monotonic() - t0)


def run(n: int, kills: int, window: float, repeats: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    started = time.monotonic()
    results: dict[str, Any] = {"n": n, "machine": procfs.machine_info(),
                               "date": datetime.datetime.now(datetime.UTC).strftime(
                                   "%Y-%m-%d %H:%M UTC")}
    with tempfile.TemporaryDirectory(prefix="cwb", dir="/tmp") as tmp:
        setup = Setup(Path(tmp), n)
        try:
            wait(lambda: len(setup.pids()) == n, f"circusd to run {n} processes", 300, 0.5)
            setup.record_children()
            setup.start_console()
            assert setup.httpd is not None
            httpd_pid = setup.httpd.pid
            results["cpu_no_page"] = cpu_over(httpd_pid, window)
            args = ["--no-sandbox"] if os.geteuid() == 0 else []
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
                # string predicates are eval()ed, which the console's CSP forbids
                ctx = browser.new_context(viewport={"width": 1280, "height": 900},
                                          bypass_csp=True)
                page = ctx.new_page()
                page.set_default_timeout(60_000)
                page.goto(setup.login_url)
                watcher_url = setup.base + "/watchers/sleepers?endpoint=0"
                loads: dict[str, list[float]] = {"watcher": [], "dashboard": []}
                for _ in range(repeats):
                    for kind, url in (("watcher", watcher_url), ("dashboard", setup.base)):
                        t0 = time.monotonic()
                        page.goto(url)
                        page.wait_for_function("document.getElementById('live')"
                                               ".textContent === 'live'")
                        if kind == "watcher":
                            page.wait_for_function(
                                f"document.querySelectorAll('tr.process').length === {n}")
                        loads[kind].append(time.monotonic() - t0)
                results["load"] = {k: statistics.median(v) for k, v in loads.items()}
                results["html_bytes"] = len(page.context.request.get(watcher_url).body())
                results["cpu_dashboard"] = cpu_over(httpd_pid, window)
                page.goto(watcher_url)
                page.wait_for_function(
                    f"document.querySelectorAll('tr.process').length === {n}")
                results["cpu_watcher"] = cpu_over(httpd_pid, window)
                page.evaluate(OBSERVER)
                gone, came = [], []
                rnd = random.Random(1)
                for _ in range(kills):
                    pids = setup.pids()
                    victim = rnd.choice(pids)
                    before = set(pids)
                    t0 = time.time() * 1000
                    os.kill(victim, signal.SIGKILL)
                    page.wait_for_function(
                        f"window.__gone['{victim}'] !== undefined && "
                        f"document.querySelectorAll('tr.process').length === {n}")
                    new = wait(lambda b=before: set(setup.pids()) - b, "the replacement", 10)
                    setup.record_children()
                    [pid] = list(new)
                    page.wait_for_function(f"window.__came['{pid}'] !== undefined")
                    marks = page.evaluate(f"[window.__gone['{victim}'], window.__came['{pid}']]")
                    gone.append(marks[0] - t0)
                    came.append(marks[1] - t0)
                    time.sleep(rnd.uniform(0.1, 0.3))  # spread the kills over the timers
                results["death"] = {
                    "gone": {"p50": percentile(gone, .5), "p95": percentile(gone, .95),
                             "max": max(gone)},
                    "came": {"p50": percentile(came, .5), "p95": percentile(came, .95),
                             "max": max(came)},
                    "samples": kills}
                browser.close()
            results["httpd_rss"] = procfs.rss_bytes(httpd_pid)
        finally:
            setup.record_children()
            setup.close()
    results["seconds"] = time.monotonic() - started
    return results


def render(r: dict[str, Any]) -> str:
    m = r["machine"]
    d = r["death"]
    n = f"{r['n']:,}"
    lines = [
        WEB_BEGIN, "",
        "### 10. The web console (circushttpd)",
        "",
        f"Written by `make bench-web` (`python -m benchmarks.web --markdown BENCHMARKS.md`), "
        f"which replaces only this section; the other runs keep it. Ours only (Circus 0.19's "
        f"circus-web runs on Python 2 only). One circusd runs {n} `sleep` children in one "
        f"watcher, with circusd-stats; one circushttpd serves it; Debian's Chromium, driven "
        f"by Playwright on the same machine, opens the pages.",
        "",
        f"Run on {r['date']} in {r['seconds'] / 60:.1f} min; {m['cpu']}, {m['nproc']} cores, "
        f"{m['kernel']}, CPython {sys.version.split()[0]}; load {m['load']}.",
        "",
        "| measure | figure |",
        "|---|---|",
        f"| watcher page load, {n} process rows drawn and live (median) | "
        f"{r['load']['watcher'] * 1000:.0f} ms ({r['html_bytes'] / 1024:.0f} KiB of HTML) |",
        f"| dashboard load, live (median) | {r['load']['dashboard'] * 1000:.0f} ms |",
        f"| kill -9 to the row gone from the open page: p50 / p95 / max | "
        f"{d['gone']['p50']:.0f} / {d['gone']['p95']:.0f} / {d['gone']['max']:.0f} ms |",
        f"| kill -9 to the replacement's row shown: p50 / p95 / max | "
        f"{d['came']['p50']:.0f} / {d['came']['p95']:.0f} / {d['came']['max']:.0f} ms |",
        f"| circushttpd's CPU, no page open | {r['cpu_no_page']:.2f} % |",
        f"| circushttpd's CPU, the dashboard open | {r['cpu_dashboard']:.2f} % |",
        f"| circushttpd's CPU, the watcher page open ({n} rows, figures each second) | "
        f"{r['cpu_watcher']:.2f} % |",
        f"| circushttpd's resident memory at the end | "
        f"{r['httpd_rss'] / 1048576:.1f} MiB |",
        "",
        f"Death to page: {d['samples']} kills, one at a time, of a random process while its "
        "watcher page is open; a MutationObserver in the page stamps (wall clock) the removal "
        "of its row and the arrival of its replacement's, against the clock read just before "
        "`kill`. The path: circusd's `reap` event, circushttpd's `status` read ~30 ms later, "
        "the WebSocket, the page's update. CPU: user + system time of circushttpd's process "
        "from `/proc/PID/stat` over each window, as % of one core.",
        "",
        WEB_END,
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.web",
                                     description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--kills", type=int, default=30)
    parser.add_argument("--window", type=float, default=15.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    if not os.path.exists(CHROMIUM):
        print(f"benchmarks.web: no {CHROMIUM} (apt-get install chromium)", file=sys.stderr)
        return 2
    results = run(args.n, args.kills, args.window, args.repeats)
    text = render(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    if args.markdown:
        old = args.markdown.read_text() if args.markdown.exists() else ""
        args.markdown.write_text(report.splice_section(
            old, WEB_BEGIN, WEB_END, text, before=report.SCALE_BEGIN))
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
