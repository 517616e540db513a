"""AppTest of the logit-lens page: heatmap, seed-style tables, watched tokens, URL settings, bad input."""

import torch

from lmviz.forward import trace as tracing
from lmviz.tokens import display_token
from tests.views import run_page

PROMPT = "This weekend I plan to"


def page(text=PROMPT, query=None, **state):
    return run_page("lens", text, query=query, **state)


def test_default_page_matches_the_model(smollm):
    at = page()
    assert not at.exception and not at.error
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Output's top-1 after the last token"] == "·visit"
    # lmviz's head against the model's logits at the last position: within the head's rounding bound (as
    # verified on every trace), shown with 2 significant digits
    t = tracing.trace(smollm, PROMPT)
    bound = smollm.head.error_bound(t.hidden[-1, -1:]).max()
    assert float(metrics["max |lens(last) − model logits|"]) <= float(bound) * 1.05
    assert len(at.get("plotly_chart")) == 2  # the heatmap and the watched-token trajectories
    table = at.dataframe[0].value  # by layer, the output layer: rows = rank, columns = positions
    ids = smollm.tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        top = smollm.model(ids).logits[0].topk(10, dim=-1).indices  # (pos, 10)
    expected = [[display_token(smollm.tokenizer, i) for i in row] for row in top.tolist()]
    assert table.shape == (10, 5)
    assert [table[column].tolist() for column in table.columns] == expected
    assert list(table.columns) == ["0 This", "1 ·weekend", "2 ·I", "3 ·plan", "4 ·to"]
    assert at.query_params["lens_stat"] == "top1_prob" and at.query_params["lens_normalized"] == "True"


def test_raw_mode_by_position_from_the_url(smollm):
    query = {"lens_normalized": "False", "lens_table": "by position", "lens_pos": "2", "lens_values": "id",
             "lens_stat": "entropy", "lens_k": "4"}
    at = page(query=query)
    assert not at.exception and not at.error
    assert at.selectbox(key="lens_stat").value == "entropy"
    assert at.toggle(key="lens_normalized").value is False
    assert any("Raw" in caption.value for caption in at.caption)
    table = at.dataframe[0].value  # rows = layers 0..30, columns = rank
    ids = smollm.tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        hidden = smollm.model(ids, output_hidden_states=True).hidden_states
        expected = [smollm.model.lm_head(h[0, 2]).topk(4).indices.tolist() for h in hidden]  # seed 004, raw
    assert table.shape == (31, 4)
    assert table.values.tolist() == expected


def test_widgets_rerun_and_stride_keeps_the_last_layer(smollm):
    at = page()
    at.number_input(key="lens_stride").set_value(7).run()
    assert not at.exception
    at.selectbox(key="lens_stat").set_value("next_token_rank").run()
    assert not at.exception and at.query_params["lens_stride"] == "7"
    at.radio(key="lens_watch_value").set_value("rank").run()
    assert not at.exception and not at.error


def test_watched_token_that_is_not_one_token(smollm):
    at = page(lens_watch="Paris, photosynthesisly", lens_space=True)
    assert not at.exception
    assert "not a single token" in at.error[0].value and "tokenizes as" in at.error[0].value
    assert len(at.get("plotly_chart")) == 1  # the heatmap still shows; no trajectories without watched tokens
    assert at.text_input(key="lens_watch").value == "Paris, photosynthesisly"  # what the user typed stays


def test_single_token_empty_text_and_wrong_model_kind(smollm, tiny_dirs, tiny_bert):
    at = page(text="Hello")
    assert not at.exception and "single token" in at.info[0].value
    assert at.dataframe[0].value.shape == (10, 1)
    at = page(text="   ")
    assert not at.exception and "Type a text" in at.info[0].value
    at = page(text="Paris is", model_choice="Other (type a name or folder)…", model_other=tiny_dirs["bert"])
    assert not at.exception and "causal" in at.warning[0].value


def test_long_text_is_truncated_with_a_notice(tiny_gpt2, tiny_dirs):
    at = page(text="Paris is nice. " * 100, model_choice="Other (type a name or folder)…",
              model_other=tiny_dirs["gpt2"], lens_watch="", lens_window=(0, 500))
    assert not at.exception and not at.error
    assert "only the first 128" in at.warning[0].value
    assert at.slider(key="lens_window").value == (0, 127)  # the window from before is cut to the new text
    assert any("last 60 positions" in caption.value for caption in at.caption)


def test_a_long_text_computes_only_the_positions_shown(smollm):
    """At 300 tokens the page projects the heatmap's window (and one position for the tables), never the
    whole lens, until "Compute every layer × position" is clicked; then the CSV holds every position."""
    from lmviz.forward.cache import CACHE

    text = " ".join(f"Item {i} is on shelf {i % 7}." for i in range(40))
    n_pos = tracing.trace(smollm, text).n_tokens
    assert n_pos > 250
    at = page(text=text, lens_table="by position")
    assert not at.exception and not at.error

    def windows():
        return sorted(key[-1] for key in list(CACHE._entries) if key[0] == "lens" and key[3] == text)

    # the heatmap's window; the table's position, and the watched tokens' (the same, with watched ids)
    assert windows() == [(n_pos - 24, n_pos), (n_pos - 1, n_pos), (n_pos - 1, n_pos)]
    labels = lambda: [button.proto.label for button in at.get("download_button")]  # noqa: E731
    assert not any(label.startswith("Download every") for label in labels())  # the whole lens is not computed
    compute = next(button for button in at.button if button.label.startswith("Compute every layer"))
    compute.click().run()
    assert not at.exception and (0, n_pos) in windows()
    assert "Download every layer × position × rank (CSV)" in labels()
