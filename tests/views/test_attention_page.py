"""The Attention & attribution page (AppTest): its numbers are the backend's (tested against references
in tests/test_attention.py, test_attribution.py and test_ablation.py), its settings live in the URL, the
lens opens it on a cell, and a model whose blocks can't be split gets one clear line."""

import pytest

from lmviz.analyses import ablation, attribution
from lmviz.model import models
from lmviz.model.interventions import Component
from tests import architecture_zoo, tiny_models
from tests.views import app, run_page

TEXT = "The capital of France is Paris. The capital of Germany is"


def metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_page_shows_the_backends_numbers(smollm):
    at = run_page("attention", TEXT)
    assert not at.exception and not at.error
    assert [h.value for h in at.header] == ["Where the heads look", "Which parts wrote the prediction",
                                           "Take a part out"]
    shown = metrics(at)
    result = attribution.attribute(smollm, TEXT)
    assert shown["Target"] == result.target_token == "·Berlin"
    assert shown["Logit (the model's logit)"] == f"{result.logit:.4f}"
    assert shown["Sum of the parts"] == f"{result.total:.4f}"
    effect = ablation.ablate(smollm, TEXT, Component("head", 0, 0), "zero")
    assert shown["KL(before ‖ after), next token"] == f"{effect.kl:.4g} nats"
    # the first head shown is the strongest 'previous token' head of this text
    assert (at.session_state["att_layer"], at.session_state["att_head"]) != (0, 0)


def test_settings_come_from_and_go_to_the_url(smollm):
    query = {"att_layer": "17", "att_head": "5", "att_stat": "induction", "att_position": "4",
             "att_target_kind": "actual next token", "att_ablate": "mlp", "att_ablate_layer": "28", "att_mode": "mean"}
    at = run_page("attention", TEXT, query=query)
    assert not at.exception and not at.error
    assert (at.session_state["att_layer"], at.session_state["att_head"]) == (17, 5)
    assert metrics(at)["Target"] == "·Paris"  # the token after position 4 ('·is')
    assert "mean-ablated" in at.get("plotly_chart")[-1].proto.spec
    assert all(at.query_params[key] == value for key, value in query.items())


def test_the_embeddings_alone(smollm):
    """Up to layer 0: only the embedding's part, no blocks and no heads (the lens's bottom row)."""
    at = run_page("attention", TEXT, att_upto=0)
    assert not at.exception and not at.error
    result = attribution.attribute(smollm, TEXT, layer=0)
    assert metrics(at)["Sum of the parts"] == f"{result.total:.4f}" and result.heads.shape == (0, 9)


def test_a_typed_target_and_a_bad_one(smollm):
    at = run_page("attention", TEXT, att_target_kind="a token I type", att_target_text="Paris")
    assert not at.exception and metrics(at)["Target"] == "·Paris"
    at.text_input(key="att_target_text").set_value("antidisestablishmentarianism").run()
    assert not at.exception and "not a single token" in at.error[0].value
    assert at.session_state["att_target_text"] == "antidisestablishmentarianism"  # what was typed stays


def test_the_lens_opens_attribution_for_a_cell(smollm):
    at = run_page("lens", TEXT)
    at.selectbox(key="lens_why_layer").set_value(20).run()
    [button] = [b for b in at.button if b.label.startswith("Which blocks wrote")]
    button.click().run()
    assert not at.exception and not at.error
    shown = metrics(at)
    assert "logit lens's logit at layer 20" in " ".join(shown)
    lens_top = attribution.attribute(smollm, TEXT, layer=20, target=int(at.session_state["att_target_text"]))
    assert shown["Sum of the parts"] == f"{lens_top.total:.4f}"


@pytest.fixture(scope="module")
def unsplittable(tmp_path_factory) -> str:
    """A tiny BLOOM: its attention adds the residual inside itself, so its blocks have no additive parts."""
    folder = tmp_path_factory.mktemp("bloom") / "bloom"
    return str(architecture_zoo.build("bloom", folder, tiny_models.byte_level_tokenizer()))


def test_a_model_whose_blocks_cant_be_split_is_refused_in_one_line(unsplittable):
    """BLOOM's attention patterns are shown; attribution and ablation are refused in one line."""
    lm = models.load(unsplittable)
    assert lm.arch.refusal is None and lm.arch.decomposition.additive_refusal
    at = run_page("attention", TEXT, model=unsplittable)
    assert not at.exception
    assert [h.value for h in at.header] == ["Where the heads look", "Which parts wrote the prediction"]
    assert len(at.get("plotly_chart")) == 3  # the head grid, one head's pattern, one query's lines
    assert "can't split" in at.error[0].value and "\n" not in at.error[0].value
    lens = run_page("lens", TEXT, model=unsplittable)  # the other pages still work
    assert not lens.exception and lens.get("plotly_chart")  # (its error box is about the default watched tokens)
    assert not [b for b in lens.button if "Which blocks" in b.label]


def test_page_is_listed_in_the_navigation(smollm):
    at = app()
    at.run()
    assert not at.exception
