"""The bad-input table of docs/bad-input.md, page by page: a clear message, no traceback, the text kept."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from tests.views import app, run_page

PAGES = ["home", "lens", "sampling", "beam", "loss", "heads", "attention"]
TEXT = "Paris is the capital of France"


@pytest.fixture(scope="module")
def bad_models(tmp_path_factory, tiny_dirs) -> dict[str, str]:
    root = tmp_path_factory.mktemp("bad-models")
    bin_only = root / "bin-only"
    model = AutoModelForCausalLM.from_pretrained(tiny_dirs["gpt2"])
    model.config.save_pretrained(bin_only)
    torch.save(model.state_dict(), bin_only / "pytorch_model.bin")
    remote = root / "remote-code"
    remote.mkdir()
    (remote / "config.json").write_text(
        '{"model_type": "evil-arch", "auto_map": {"AutoModelForCausalLM": "evil.EvilForCausalLM"}}'
    )
    return {"bin-only": str(bin_only), "remote-code": str(remote)}


@pytest.mark.parametrize("page", PAGES)
def test_model_problems_are_explained(page, bad_models, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cases = {
        "nobody/nothing": "not embedded",
        bad_models["remote-code"]: "never runs",
        bad_models["bin-only"]: "only safetensors",
    }
    for name, expected in cases.items():
        at = run_page(page, TEXT, model=name)
        assert not at.exception, (page, name)
        assert expected in at.error[0].value, (page, name)
        assert at.session_state["text"] == TEXT


@pytest.mark.parametrize("page", ["lens", "sampling", "beam", "loss", "attention"])
def test_masked_model_on_a_causal_page(page, tiny_dirs):
    at = run_page(page, TEXT, model=tiny_dirs["bert"])
    assert not at.exception
    assert "needs a causal model" in at.warning[0].value


BAD_URL = {"text": "This weekend I plan to", "lens_k": "999", "sampling_temperature": "-3", "beam_beams": "1000",
           "heads_k": "999", "heads_mask_k": "nan", "heads_seed": "-1", "heads_metric": "x", "heads_pooling": "x",
           "lens_stat": "x", "beam_lp": "inf", "loss_max_length": "0", "loss_view": "x", "lens_window": "(0, 99999)",
           "beam_frame": "599", "lens_layer": "99", "lens_pos": "99", "loss_stride": "-5", "att_layer": "99",
           "att_head": "-1", "att_stat": "x", "att_position": "99", "att_upto": "31", "att_mode": "x"}
# what each page's controls hold after BAD_URL: the defaults (SmolLM2, 5 tokens, 30 layers)
DEFAULTS = {
    "home": {},
    "lens": {"lens_k": 10, "lens_stat": "top1_prob", "lens_window": (0, 4), "lens_layer": 30},  # lens_pos: only in the by-position table
    "sampling": {"sampling_temperature": 1.0},
    "beam": {"beam_beams": 3, "beam_lp": 1.0},
    "loss": {"loss_view": "Token by token", "loss_max_length": 1024, "loss_stride": 512},
    "heads": {"heads_k": 10, "heads_mask_k": 5, "heads_seed": 0, "heads_metric": "dot", "heads_pooling": "last"},
    "attention": {"att_stat": "previous", "att_position": 4, "att_upto": 30, "att_mode": "zero"},
}


@pytest.mark.parametrize("page", PAGES)
def test_out_of_range_url_values_fall_back_to_defaults(page, smollm):
    at = app(page)
    at.query_params.update(BAD_URL)
    at.run()
    assert not at.exception and not at.error
    for key, default in DEFAULTS[page].items():
        value = at.session_state[key]
        assert (tuple(value) if isinstance(value, list) else value) == default, (page, key, value)
    assert at.session_state["text"] == "This weekend I plan to"


@pytest.mark.parametrize("page", ["lens", "sampling", "beam", "loss", "heads", "attention"])
def test_every_chart_can_be_downloaded_as_html(smollm, page):
    """Every plotly chart on a page comes with its "⬇ HTML" export (PNG is the chart's own camera button)."""
    at = run_page(page, "This weekend I plan to")
    assert not at.exception
    charts = at.get("plotly_chart")
    exports = [b for b in at.get("download_button") if b.proto.label == "⬇ HTML"]
    assert len(charts) >= 1 and len(exports) == len(charts)


def test_presenter_mode_from_the_url_and_its_share_code(smollm, monkeypatch):
    """?present=1 turns presenter mode on and stays in the URL; the QR code is a PNG of the view's URL with
    every setting, at the address the class can reach ($LMVIZ_PUBLIC_URL)."""
    import ui

    monkeypatch.setenv("LMVIZ_PUBLIC_URL", "http://192.168.1.20:8501")
    at = run_page("lens", "This weekend I plan to", query={"present": "1"})
    assert not at.exception and at.toggle(key="present").value is True
    assert at.query_params["present"] == "1" and at.query_params["lens_k"] == "10"
    assert len(at.get("image")) == 1 and "Scan to open this view" in str(at.get("image")[0].proto)
    png = ui.qr_png("http://192.168.1.20:8501/lens?present=1&lens_k=10")
    assert png.startswith(b"\x89PNG") and len(png) > 300
    at.toggle(key="present").set_value(False).run()
    assert "present" not in at.query_params and not at.get("image")
