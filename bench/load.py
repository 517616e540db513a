"""Many people at once: N browser sessions against one server, each on a page with its own text.

Starts `streamlit run app.py` on a free local port, opens N Playwright
contexts in one chromium (each a separate Streamlit session), loads the page
with a different text in each (via ?text=…), and waits until every session
has finished rendering. Prints p50/p95 time to a rendered page, the peak
RSS of the server process, and the server's CPU time per session: the
browsers run on the same cores as the server, so on a small machine the
wall-clock figures include the clients' own rendering. The baseline, measured in the same run, is one
session alone on the same server.

    .venv/bin/python bench/load.py --sessions 10 30 --page lens
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402

from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, IDLE, free_port, start_server  # noqa: E402

TEXTS = [
    "The capital of France is", "This weekend I plan to", "Once upon a time, there was a",
    "The quick brown fox jumps over the", "In 1969, the first person to walk on the Moon was",
    "To make a cup of tea, first", "The largest planet in the solar system is", "My favourite food is",
]


def rss_mb(pid: int) -> float:
    """Resident memory of a process, in MB (from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (from /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class PeakMemory(threading.Thread):
    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.running = pid, 0.0, True

    def run(self):
        while self.running:
            self.peak = max(self.peak, rss_mb(self.pid))
            time.sleep(0.1)


def render_times(browser, base: str, page: str, n: int, salt: str) -> list[float]:
    """Open n sessions at once; seconds from navigation to a finished render, per session."""
    contexts = [browser.new_context(viewport={"width": 1400, "height": 900}) for _ in range(n)]
    tabs = [context.new_page() for context in contexts]
    started = {}
    for i, tab in enumerate(tabs):
        text = f"{TEXTS[i % len(TEXTS)]} ({salt} {i})"
        url = f"{base}/{page}?" + urllib.parse.urlencode({"text": text})
        started[i] = time.perf_counter()
        tab.goto(url, wait_until="commit")
    done: dict[int, float] = {}
    deadline = time.time() + 600
    while len(done) < n and time.time() < deadline:
        for i, tab in enumerate(tabs):
            if i in done:
                continue
            ready = tab.locator('[data-testid="stSidebarUserContent"] textarea').count() > 0
            if ready and tab.locator(IDLE).count() > 0 and tab.locator('[data-testid="stMain"] h1').count() > 0:
                done[i] = time.perf_counter() - started[i]
        time.sleep(0.05)
    for context in contexts:
        context.close()
    if len(done) < n:
        raise RuntimeError(f"only {len(done)} of {n} sessions rendered within 600 s")
    return sorted(done.values())


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, nargs="+", default=[10, 30])
    parser.add_argument("--page", default="lens", help="url path of the page (empty for the home page)")
    args = parser.parse_args()
    port = free_port()
    server = start_server(port)
    base = f"http://127.0.0.1:{port}"
    memory = PeakMemory(server.pid)
    memory.start()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            render_times(browser, base, args.page, 1, "warm-up")  # loads the model
            alone = render_times(browser, base, args.page, 1, "alone")[0]
            print(f"page /{args.page}: one session alone renders in {alone:.2f} s (baseline)")
            for n in args.sessions:
                cpu_before = cpu_seconds(server.pid)
                times = render_times(browser, base, args.page, n, f"run{n}")
                server_cpu = cpu_seconds(server.pid) - cpu_before
                p50, p95 = percentile(times, 50), percentile(times, 95)
                print(f"N={n:3d}: p50 {p50:6.2f} s  p95 {p95:6.2f} s  ({p50 / alone:.1f}x / {p95 / alone:.1f}x alone)"
                      f"  peak server RSS {memory.peak:.0f} MB  server CPU {server_cpu / n:.2f} s/session")
            browser.close()
    finally:
        memory.running = False
        server.terminate()
        server.wait(timeout=20)


if __name__ == "__main__":
    main()
