"""AppTest of the beam search page: the tree, the replay slider, the tables, the URL, bad input."""

import json

import pytest
import torch

from tests import bounds
from tests.views import frame_with, run_page

PROMPT = "This weekend I plan to"


def run(text: str = PROMPT, model: str | None = None, query: dict | None = None, **state):
    return run_page("beam", text, model, query, **state)


def figure(at) -> dict:
    charts = at.get("plotly_chart")
    assert len(charts) == 1
    return json.loads(charts[0].proto.spec)


def test_page_matches_generate_on_embedded_model(smollm):
    at = run(beam_beams=3, beam_new=5, beam_lp=0.5, beam_es="never")
    assert not at.exception and not at.error
    ids = torch.tensor([smollm.tokenizer(PROMPT)["input_ids"]])
    with torch.no_grad():
        out = smollm.model.generate(
            ids, num_beams=3, num_return_sequences=3, do_sample=False, max_new_tokens=5, length_penalty=0.5,
            early_stopping="never", output_scores=True, return_dict_in_generate=True,
        )
    final = frame_with(at, "ended")
    assert final["rank"].tolist() == [1, 2, 3]
    for shown, row, score in zip(final.iloc[:, -1].tolist(), out.sequences, out.sequences_scores.tolist()):
        continuation = [t for t in row[ids.shape[1]:].tolist()]
        n = len(continuation)
        bound = bounds.continuation_bound(smollm.model, ids[0].tolist(), continuation) / n**0.5
        assert abs(shown - score) <= bound + 2 * bounds.U32 * abs(score)  # and the table's float32
    texts = [smollm.tokenizer.decode(row[ids.shape[1]:]).replace(" ", "·") for row in out.sequences]
    assert final["continuation"].tolist() == texts
    comparison = frame_with(at, "method")
    assert comparison["method"].tolist()[1] == "beam search (3 beams), #1"
    assert comparison["log-prob (sum)"].tolist()[1] == pytest.approx(final["log-prob (sum)"][0])
    names = {trace.get("name") for trace in figure(at)["data"]}
    assert {"prompt", "kept (a running beam)", "pruned", "winning path"} <= names
    assert "not neutral" in " ".join(m.value for m in at.markdown)
    assert at.query_params["beam_beams"] == "3" and at.query_params["beam_es"] == "never"
    assert sum(b.proto.label.startswith("Download") for b in at.get("download_button")) == 1  # + charts' HTML


def test_replay_slider_steps_through_expand_evaluate_prune(smollm):
    at = run(beam_beams=2, beam_new=3)
    slider = at.select_slider(key="beam_frame")
    assert slider.value == 9  # 3 steps x (expand, evaluate, prune); a new search starts at its end
    at = slider.set_value(1).run()  # step 1: expand
    assert not at.exception
    spec = figure(at)
    names = {trace.get("name") for trace in spec["data"]}
    assert "candidate (not judged yet)" in names and "kept (a running beam)" not in names
    assert at.query_params["beam_frame"] == "1"
    at = at.select_slider(key="beam_frame").set_value(3).run()  # step 1: prune
    names = {trace.get("name") for trace in figure(at)["data"]}
    assert "kept (a running beam)" in names and "candidate (not judged yet)" not in names
    assert "winning path" not in names  # only the finished search highlights the winner


def test_url_values_out_of_range_fall_back_to_defaults(smollm):
    at = run(query={"beam_beams": "99", "beam_lp": "abc", "beam_es": "sometimes", "beam_new": "2"})
    assert not at.exception and not at.error
    assert at.session_state["beam_beams"] == 3 and at.session_state["beam_lp"] == 1.0
    assert at.session_state["beam_es"] == "false" and at.session_state["beam_new"] == 2


def test_too_many_new_tokens_for_the_context_is_a_message(tiny_dirs):
    long_text = "Paris " * 115  # the tiny GPT-2 takes 128 tokens
    at = run(long_text, tiny_dirs["gpt2"], beam_new=20)
    assert not at.exception
    assert "new tokens fit" in at.error[0].value
    assert at.session_state["text"] == long_text  # what the user typed stays


def test_masked_model_and_empty_text(tiny_dirs):
    at = run("hello", tiny_dirs["bert"])
    assert not at.exception and "causal" in at.warning[0].value
    at = run("   ", tiny_dirs["gpt2"])
    assert not at.exception and "Type a text" in at.info[0].value
