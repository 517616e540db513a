"""The Experiments page (AppTest): its numbers are the backend's (tested against forwards patched by hand
in tests/test_patching.py), its settings live in the URL, a ready-made pair fills the boxes, and texts of
different lengths get one clear line with both tokenizations."""

import pytest

from lmviz.analyses import patching
from tests.views import run_page

IOI = patching.EXAMPLES[0]


def markdown(at) -> str:
    return "\n".join(m.value for m in at.markdown)


def test_the_patching_tab_shows_the_backends_cells(smollm):
    at = run_page("experiments", "unused")
    assert not at.exception and not at.error
    result = patching.patch(smollm, IOI.clean, IOI.corrupted, IOI.answer, IOI.wrong, "resid")
    assert f"**{result.clean.logit_diff[0]:.2f}** on the clean text" in markdown(at)
    layer, column = at.session_state["exp_layer"], at.session_state["exp_column"]
    assert f"**{result.values()[layer, column]:.3f}**" in markdown(at)
    # the page opens on the strongest cell: the second name, early
    assert result.tokens[column] == "·John" and result.values()[layer, column] > 0.95
    tokens = at.dataframe[0].value
    assert list(tokens.loc["clean"]) == list(result.tokens)
    # the chosen cell's next tokens: the corrupted run patched by hand with the clean stream entering that block
    import torch

    model, encode = smollm.model, lambda text: smollm.tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        clean_states = model(encode(IOI.clean), output_hidden_states=True).hidden_states[layer]

        def patch(module, args, kwargs):
            hidden = (args[0] if args else kwargs["hidden_states"]).clone()
            hidden[:, column] = clean_states[:, column]
            return ((hidden, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": hidden})

        handle = model.model.layers[layer].register_forward_pre_hook(patch, with_kwargs=True)
        try:
            probs = model(encode(IOI.corrupted)).logits[0, -1].double().softmax(-1)
        finally:
            handle.remove()
    top = probs.topk(8)
    table = next(frame.value for frame in at.dataframe if "next token (patched run)" in frame.value.columns)
    assert list(table["next token (patched run)"]) == [smollm.tokenizer.convert_ids_to_tokens(i).replace("Ġ", "·")
                                                       for i in top.indices.tolist()]
    # two float32 runs of the model agree within ~1e-4 in a logit, and p moves by at most twice that (p <= 1)
    assert max(abs(a - b) for a, b in zip(table["p"], top.values.tolist())) < 2e-4


def test_settings_come_from_and_go_to_the_url(smollm):
    query = {"exp_site": "head", "exp_mode": "noise", "exp_metric": "prob", "exp_layer": "23", "exp_column": "3"}
    at = run_page("experiments", "unused", query=query)
    assert not at.exception and not at.error
    result = patching.patch(smollm, IOI.clean, IOI.corrupted, IOI.answer, IOI.wrong, "head", "noise")
    assert f"**{result.values('prob')[23, 3]:.3f}**" in markdown(at)
    assert all(at.query_params[key] == value for key, value in query.items())


def test_a_ready_made_pair_fills_the_boxes(smollm):
    at = run_page("experiments", "unused")
    at.selectbox(key="exp_example").set_value("Factual recall").run()
    assert not at.exception and not at.error
    fact = patching.EXAMPLES[1]
    assert at.session_state["exp_clean"] == fact.clean and at.session_state["exp_answer"] == fact.answer
    assert at.query_params["exp_corrupted"] == fact.corrupted


def test_texts_of_different_lengths_show_both_tokenizations(smollm):
    longer = IOI.corrupted.replace("Mary gave", "Mary Ann gave")
    at = run_page("experiments", "unused", exp_corrupted=longer)
    assert not at.exception
    assert "same number" in at.error[0].value and "both tokenizations" in at.error[0].value
    rows = at.dataframe[0].value
    assert rows.shape[1] == len(patching.trace_module.encode(smollm, longer))
    assert rows.loc["clean"].iloc[-1] == ""  # the shorter text's row ends early
    assert at.session_state["exp_corrupted"] == longer  # what was typed stays


@pytest.mark.parametrize("tab", ["Patch lens", "Attribution patching", "Paths"])
def test_the_other_tabs(smollm, tab):
    query = {"exp_recv_layer": "2", "exp_recv_head": "4"} if tab == "Paths" else {}  # few senders: a quick test
    at = run_page("experiments", "unused", query=query, exp_tab=tab)
    assert not at.exception and not at.error
    if tab == "Patch lens":
        assert len(at.get("plotly_chart")) == 2 and "resid of layer" in markdown(at)
    elif tab == "Attribution patching":
        result = patching.attribution_patch(smollm, IOI.clean, IOI.corrupted, IOI.answer, IOI.wrong)
        assert f"Pearson r = {result.correlation:.3f}" in markdown(at)
    else:
        at.button[0].click().run()
        assert not at.exception and len(at.get("plotly_chart")) == 2
        receiver = (at.session_state["exp_recv_layer"], at.session_state["exp_recv_head"])
        assert receiver == (2, 4)
        paths = patching.receiver_paths(smollm, IOI.clean, IOI.corrupted, IOI.answer, IOI.wrong, receiver, "q")
        assert f"Into L{receiver[0]}.H{receiver[1]}" in at.get("plotly_chart")[1].proto.spec
        assert paths.values().shape == (receiver[0], 9)


def test_which_tokens_mattered_shows_knockout_beside_the_estimate(smollm):
    at = run_page("experiments", "unused", exp_tab="Which tokens mattered")
    assert not at.exception and not at.error
    from lmviz.analyses import saliency

    estimate = saliency.saliency(smollm, IOI.clean, "integrated_gradients", 64, IOI.answer, IOI.wrong)
    exact = saliency.knockout(smollm, IOI.clean, IOI.answer, IOI.wrong)
    spec = at.get("plotly_chart")[0].proto.spec
    assert f"rank correlation with knockout {estimate.knockout_correlation:.2f}" in spec
    assert f"{exact.scores[9]}"[:8] in spec  # the second name's knockout score is drawn
    if estimate.adds_up is False:  # a gap above the limit is said, not just drawn
        assert f"by {estimate.completeness_gap:.0%}" in at.warning[0].value


def test_steering_shows_each_scale_beside_the_model_as_it_is(smollm):
    at = run_page("experiments", "unused", exp_tab="Steering", exp_steer_scales="2", exp_steer_tokens=8)
    assert not at.exception and not at.error
    from lmviz.analyses import steering

    result = steering.steer(smollm, "I think that you are", steering.DEFAULT_LAYER, " hate", " love", (2.0,), 8)
    table = at.dataframe[-1].value
    assert list(table["continuation"]) == [result.unsteered.text, result.sweep[0].text]
    at.text_input(key="exp_steer_scales").set_value("two").run()
    assert "numbers separated by commas" in at.error[0].value and at.session_state["exp_steer_scales"] == "two"
