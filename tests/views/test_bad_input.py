"""The bad-input table of docs/bad-input.md, page by page: a clear message, no traceback, the text kept."""

import io
import urllib.parse

import pytest
import segno
import torch
from PIL import Image
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from transformers import AutoModelForCausalLM

from tests.views import app, run_page

PAGES = ["home", "lens", "sampling", "beam", "loss", "heads", "attention", "flow", "features"]
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
           "att_head": "-1", "att_stat": "x", "att_position": "99", "att_upto": "31", "att_mode": "x",
           "flow_pos": "99", "flow_tau": "-1", "feat_pos": "99", "feat_latent": "999999", "feat_alpha": "nan"}
# what each page's controls hold after BAD_URL: the defaults (SmolLM2, 5 tokens, 30 layers)
DEFAULTS = {
    "home": {},
    "lens": {"lens_k": 10, "lens_stat": "top1_prob", "lens_window": (0, 4), "lens_layer": 30},  # lens_pos: only in the by-position table
    "sampling": {"sampling_temperature": 1.0},
    "beam": {"beam_beams": 3, "beam_lp": 1.0},
    "loss": {"loss_view": "Token by token", "loss_max_length": 1024, "loss_stride": 512},
    "heads": {"heads_k": 10, "heads_mask_k": 5, "heads_seed": 0, "heads_metric": "dot", "heads_pooling": "last"},
    "attention": {"att_stat": "previous", "att_position": 4, "att_upto": 30, "att_mode": "zero"},
    "flow": {"flow_pos": 4},
    "features": {"feat_pos": 4},
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
    """?present=1 turns presenter mode on and stays in the URL; the page shows a QR code of the view's URL with
    every setting, at the address the class can reach ($LMVIZ_PUBLIC_URL), not the presenter's localhost."""
    images = {}  # media file id -> the bytes the page handed to st.image
    store = MemoryMediaFileStorage.load_and_get_id

    def keep(self, data, mimetype, kind, filename=None):
        file_id = store(self, data, mimetype, kind, filename)
        images[file_id] = data
        return file_id

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", keep)
    monkeypatch.setenv("LMVIZ_PUBLIC_URL", "http://192.168.1.20:8501")
    at = app("lens")
    at.context["url"] = "http://localhost:8501/lens?present=1"  # what the presenter's own browser shows
    at.session_state["text"] = "This weekend I plan to"
    at.query_params["present"] = "1"
    at.run()
    assert not at.exception and at.toggle(key="present").value is True
    assert at.query_params["present"] == "1" and at.query_params["lens_k"] == "10"
    [shown] = at.get("image")
    [image] = shown.proto.imgs
    assert image.caption == "Scan to open this view"
    png = images[image.url.rsplit("/", 1)[-1].split(".")[0]]
    # the URL a student's phone must open: the public address, the page's path, every setting of the page
    expected = "http://192.168.1.20:8501/lens?" + urllib.parse.urlencode(at.query_params)
    modules = _qr_modules(png)
    symbols = [segno.make(expected, error=level) for level in "lmqh"]  # whatever error level the page picked
    assert any(modules == [[bool(m) for m in row] for row in symbol.matrix] for symbol in symbols), expected
    at.toggle(key="present").set_value(False).run()
    assert "present" not in at.query_params and not at.get("image")


def _qr_modules(png: bytes) -> list[list[bool]]:
    """The dark (True) and light modules of the QR code in an image, read back by sampling each module's centre:
    the symbol is the box of dark pixels inside the quiet zone, and its top-left finder pattern starts with a
    run of 7 dark modules, which gives the module size (the page may scale the image by a fraction)."""
    image = Image.open(io.BytesIO(png)).convert("L")
    width, height = image.size
    pixels = image.load()
    dark = [[pixels[x, y] < 128 for x in range(width)] for y in range(height)]
    rows = [y for y in range(height) if any(dark[y])]
    columns = [x for x in range(width) if any(dark[y][x] for y in rows)]
    top, left, right = rows[0], columns[0], columns[-1]
    run = next(x for x in range(left, width) if not dark[top][x]) - left
    module = run / 7
    n = round((right - left + 1) / module)
    assert n >= 21 and abs(n * module - (right - left + 1)) < module / 2  # a square symbol of whole modules
    assert abs(rows[-1] - top + 1 - n * module) < module / 2
    return [[dark[int(top + (r + 0.5) * module)][int(left + (c + 0.5) * module)] for c in range(n)] for r in range(n)]
