"""Real-browser fixtures: one `streamlit run app.py` server per session, Debian's chromium via playwright.

Screenshots go to test-artifacts/screenshots/ (git-ignored).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, extra_env: dict | None = None, args: tuple = (), wrapper=(),
                 command: tuple = (sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py")),
                 cwd: Path = ROOT) -> subprocess.Popen:
    """`streamlit run app.py` (or another `command` that serves the app, run in `cwd`) on a local port;
    returns once /_stcore/health answers. wrapper: a command that runs it, e.g. ("taskset", "-c", "0")
    to pin it to a core."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(extra_env or {})}
    process = subprocess.Popen(
        [*wrapper, *command, "--server.port", str(port), "--server.headless", "true",
         "--server.address", "127.0.0.1", *args],
        cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.time() + 600  # a liveness limit, not a speed requirement
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError("streamlit exited: " + process.stderr.read().decode()[-2000:])
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return process
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError("streamlit did not start within 90 s")


@pytest.fixture(scope="session")
def server_url(smollm):
    """Base URL of a running app (the embedded model is converted before the server starts)."""
    port = free_port()
    process = start_server(port)
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs it with apt-get")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    yield context.new_page()
    context.close()


IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'


def wait_idle(page, timeout: float = 600) -> None:
    """Wait until the app has run its script to the end and stayed idle for a moment. The timeout only
    keeps a hung app from hanging the suite: a slow machine waits, it doesn't fail."""
    page.wait_for_selector('[data-testid="stSidebarUserContent"] textarea', timeout=timeout * 1000)
    deadline = time.time() + timeout
    quiet_since = None
    while time.time() < deadline:
        if page.locator(IDLE).count() == 0:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.time()
        elif time.time() - quiet_since > 0.7:
            return
        time.sleep(0.1)
    raise TimeoutError("the app kept running")


def screenshot(page, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def assert_no_error_box(page) -> None:
    """No exception box and no traceback anywhere in the page."""
    errors = page.locator('[data-testid="stException"]')
    assert errors.count() == 0, errors.first.inner_text()[-2000:]
    assert "Traceback" not in page.inner_text("body")
