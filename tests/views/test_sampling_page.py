"""AppTest of the temperature & sampling page: distribution, toy table, stepping, bad input."""

import torch

from lmviz.forward import trace as tracing
from lmviz.analyses.sampling import lecture_number
from tests import bounds
from tests.views import app, frame_with, run_page

PROMPT = "This weekend I plan to"
LECTURE_ROWS = {
    "x": ["1", "-4", "2", "4", "3"],
    "σ_1(x)": [".0321", ".0002", ".0871", ".6438", ".2368"],
    "σ_0.3(x)": [".0000", ".0000", ".0012", ".9643", ".0344"],
    "σ_10(x)": [".1893", ".1148", ".2092", ".2555", ".2312"],
}


def page(**state):
    return run_page("sampling", PROMPT, **state)


def test_default_page_distribution_table_and_lecture_table(smollm):
    at = page()
    assert not at.exception and not at.error
    assert at.metric[0].value == "·visit"
    table = frame_with(at, "p final")
    ids = torch.tensor([smollm.tokenizer(PROMPT)["input_ids"]])
    with torch.no_grad():
        logits = smollm.model(ids).logits[0, -1].float()  # a plain forward pass
    # the page samples from the trace's last logits: the same pass, the head on one row (tests/bounds.py)
    error = smollm.head.error_bound(tracing.trace(smollm, PROMPT).hidden[-1, -1:]).max()
    eps = bounds.log_softmax_bound(logits, error) + bounds.log_softmax_bound(logits)
    log_p = torch.log_softmax(logits.double(), -1)
    shown_ids = torch.tensor(table["id"].tolist())
    bounds.assert_top_k(shown_ids, log_p[shown_ids], log_p, eps)
    p = log_p[shown_ids].exp()
    assert ((torch.tensor(table["p final"].tolist()).double() - p).abs() <= bounds.prob_bound(p, eps)).all()
    assert set(table["status"]) == {"kept"}
    toy = at.dataframe[-2].value  # the lecture's table, then its shifted copy
    for row, values in LECTURE_ROWS.items():
        assert toy.loc[row].tolist() == values
    assert len(at.get("plotly_chart")) == 3  # distribution, sweep, toy bars


def test_filters_grey_out_and_temperature_zero_says_greedy(smollm):
    at = page(sampling_temperature=0.7, sampling_top_k=5)
    assert not at.exception
    status = frame_with(at, "status")["status"].tolist()
    assert status[:5] == ["kept"] * 5 and set(status[5:]) == {"removed by top-k"}
    at = page(sampling_temperature=0.0)
    assert not at.exception
    assert any("greedy" in info.value for info in at.info)
    assert frame_with(at, "p final")["p final"].tolist()[:2] == [1.0, 0.0]


def test_top_k_above_vocabulary_is_clamped_with_a_note(smollm):
    at = page(sampling_top_k=100000)
    assert not at.exception
    assert any("more than the 49,152 tokens" in info.value for info in at.info)
    assert at.number_input(key="sampling_top_k").value == 100000  # what the user typed stays


def test_stepping_greedy_and_sampled_side_by_side(smollm):
    at = page(sampling_temperature=0.8, sampling_top_p=0.9)
    at.button[0].click().run()  # generate next token
    at.button[1].click().run()  # +10
    assert not at.exception
    steps = [df.value for df in at.dataframe if "step" in df.value.columns]
    assert [len(s) for s in steps] == [11, 11]
    ids = torch.tensor([smollm.tokenizer(PROMPT)["input_ids"]])
    greedy = smollm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=11, do_sample=False,
                                   pad_token_id=smollm.tokenizer.eos_token_id)[0, ids.shape[1]:].tolist()
    with smollm.lock:
        from lmviz.tokens import display_tokens

        assert steps[0]["token"].tolist() == display_tokens(smollm.tokenizer, greedy)
    assert steps[0]["rank"].tolist() == [1] * 11
    assert at.slider(key="sampling_inspect").value == 11
    assert "torch.manual_seed(0)" in at.code[0].value and "top_k=0" in at.code[0].value
    at.button[2].click().run()  # reset
    assert not at.exception and not [df for df in at.dataframe if "step" in df.value.columns]


def test_bad_toy_input_stays_and_only_the_panel_complains(smollm):
    at = page(sampling_toy_logits="1, x, 3")
    assert not at.exception
    assert "'x' is not a number" in at.error[0].value
    assert at.text_input(key="sampling_toy_logits").value == "1, x, 3"
    assert at.metric[0].value == "·visit"  # the rest of the page still works
    at = page(sampling_toy_shift=25.0, sampling_toy_temps="1")
    shifted = at.dataframe[-1].value
    assert shifted.loc["x + c"].tolist() == ["26", "21", "27", "29", "28"]
    assert shifted.loc["σ_1(x + c)"].tolist() == LECTURE_ROWS["σ_1(x)"]


def test_out_of_range_url_values_fall_back_to_defaults(smollm):
    at = app("sampling")
    at.session_state["text"] = PROMPT
    at.query_params["sampling_temperature"] = "-3"
    at.query_params["sampling_top_p"] = "abc"
    at.run()
    assert not at.exception
    assert at.slider(key="sampling_temperature").value == 1.0
    assert at.slider(key="sampling_top_p").value == 1.0


def test_masked_model_gets_a_warning(tiny_dirs):
    at = app("sampling")
    at.session_state["text"] = "hello"
    at.session_state["model_choice"] = "Other (type a name or folder)…"
    at.session_state["model_other"] = tiny_dirs["bert"]
    at.run()
    assert not at.exception
    assert "masked model" in at.warning[0].value


def test_lecture_number_format():
    assert [lecture_number(v) for v in (0.032052, 0.0, 1.0, 0.96433)] == [".0321", ".0000", "1.0000", ".9643"]


def test_what_if_two_branches(smollm):
    """Fork the model's path at step 3, then fork that branch at step 6: a tree of three branches whose
    columns show each branch's tokens and log-probabilities (the backend's, tested in tests/test_whatif.py),
    kept in the URL so the view can be shared."""
    from lmviz.analyses import whatif

    at = run_page("sampling", "This weekend I plan to", sampling_steps=8)
    at.number_input(key="sampling_fork_step").set_value(3).run()
    [fork] = [b for b in at.button if b.label == "Continue from here"]
    fork.click().run()
    at.selectbox(key="sampling_fork_from").set_value(1).run()
    at.number_input(key="sampling_fork_step").set_value(6).run()
    [fork] = [b for b in at.button if b.label == "Continue from here"]
    fork.click().run()
    assert not at.exception and not at.error
    branches = at.session_state["sampling_branches"]
    assert len(branches) == 3 and branches[2][:3] == branches[1][:3] and len(branches[2]) == 6
    assert at.query_params["sampling_branches"] == whatif.encode_branches(branches[1:])
    [frame] = [d.value for d in at.dataframe if any("log P" in str(c) for c in d.value.columns)]
    for column, forced in zip(frame.columns, branches):
        branch = whatif.branch(smollm, "This weekend I plan to", forced, 8)
        assert column == f"{'greedy' if not forced else column.split(' (')[0]} (log P {branch.logprob:.2f})"
        assert frame[column].iloc[-1].endswith(f"{branch.logprobs[-1]:.2f}")
    shared = run_page("sampling", "This weekend I plan to", sampling_steps=8,
                      query={"sampling_branches": at.query_params["sampling_branches"]})
    assert shared.session_state["sampling_branches"] == branches  # the link opens the same tree
