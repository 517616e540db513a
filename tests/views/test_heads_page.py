"""AppTest of the heads & embeddings page, whatever kind of model the sidebar holds."""

import importlib.util

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer, BertForMaskedLM, BertForSequenceClassification

from lmviz.tokens import display_token
from tests import bounds
from tests.views import frame_with, run_page


def run(text: str, model: str | None = None, **state):
    return run_page("heads", text, model, **state)


def test_causal_model_tied_table_and_classification(smollm):
    at = run("This weekend I plan to")
    assert not at.exception and not at.error
    assert [m.value for m in at.metric][:4] == ["yes", "49,152 × 576", "49,152 × 576", f"{49152 * 576:,}"]
    table = frame_with(at, "own rank")
    ids = torch.tensor([[1348, 16138, 339, 1252, 288]])
    with torch.no_grad():
        top = smollm.model.lm_head(smollm.model.model.embed_tokens(ids)).topk(10).indices[0]
    expected = [[smollm.tokenizer.decode([int(i)]).replace(" ", "·") for i in row] for row in top]
    assert table[[str(j) for j in range(1, 11)]].values.tolist() == expected
    assert any("not even its own nearest token" in info.value for info in at.info)
    assert any("needs a masked LM" in info.value for info in at.info)  # the masked tab explains itself
    classes = frame_with(at, "loss if this label were true")
    assert classes["label"].tolist() == ["negative", "positive"]
    # the page's default head: random, seed 0, pooled from the last token's final hidden state
    from lmviz.analyses import classification

    head = classification.random_head(smollm, ["negative", "positive"], "last", seed=0)
    pooled = classification.pooled_hidden(smollm, "This weekend I plan to", "last")
    bound = bounds.linear_bound(pooled, head.weight, head.bias)
    assert ((torch.tensor(classes["logit"].tolist()) - torch.tensor(classes["pooled @ W.T + b"].tolist())).abs()
            <= bound).all()
    logits = torch.tensor(classes["logit"].tolist())
    eps = bounds.log_softmax_bound(logits)
    assert abs(classes["probability"].sum() - 1) <= 2 * float(torch.expm1(eps)) + bounds.sum_bound(2)
    assert len(at.get("plotly_chart")) == 2


def test_masked_model_shows_every_section(tiny_dirs):
    text = "the capital of [MASK] is paris"
    at = run(text, tiny_dirs["bert"])
    assert not at.exception and not at.error
    reference = BertForMaskedLM.from_pretrained(tiny_dirs["bert"]).eval()
    anatomy = frame_with(at, "path")
    assert "cls.predictions.decoder" in anatomy["path"].tolist()
    predictions = frame_with(at, "log-probability")
    tokenizer = AutoTokenizer.from_pretrained(tiny_dirs["bert"])
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = reference(input_ids=ids).logits[0, 4]
    assert predictions["id"].tolist() == logits.topk(5).indices.tolist()
    losses = frame_with(at, "per_example_loss")
    positions = losses["masked_lm_position"].tolist()
    masked, labels = ids.clone(), torch.full_like(ids, -100)
    masked[0, positions] = tokenizer.mask_token_id
    labels[0, positions] = ids[0, positions]
    with torch.no_grad():
        expected = float(reference(input_ids=masked, labels=labels).loss)
    shown = {m.label: float(m.value) for m in at.metric if "loss" in m.label.lower() or "way" in m.label}
    with torch.no_grad():  # the same pass; float32 log-softmax on both sides, float32 means; shown to 6 decimals
        eps = 2 * float(bounds.log_softmax_bound(reference(input_ids=masked).logits[0]).max())
    slack = eps + bounds.sum_bound(len(positions), expected) + 5e-7
    assert abs(shown["The model's own loss"] - expected) <= slack
    assert abs(shown["CrossEntropyLoss(ignore_index=-100)"] - expected) <= slack
    assert shown["Seed's way (BERT's TensorFlow code)"] <= shown["The model's own loss"]
    assert len(at.get("plotly_chart")) == 3  # neighbours, one mask, classes


def test_masked_model_text_without_mask_keeps_other_sections(tiny_dirs):
    at = run("the capital of france is paris", tiny_dirs["bert"])
    assert not at.exception
    assert any("no [MASK] token" in error.value for error in at.error)
    assert frame_with(at, "per_example_loss") is not None  # the loss masks tokens itself
    assert frame_with(at, "own rank") is not None
    assert at.session_state["text"] == "the capital of france is paris"


def test_classifier_model(tiny_classifier_dirs):
    at = run("this is an example", tiny_classifier_dirs["bert"])
    assert not at.exception and not at.error
    assert any("no output embeddings" in info.value for info in at.info)
    classes = frame_with(at, "loss if this label were true")
    reference = BertForSequenceClassification.from_pretrained(tiny_classifier_dirs["bert"]).eval()
    ids = AutoTokenizer.from_pretrained(tiny_classifier_dirs["bert"])("this is an example", return_tensors="pt")
    with torch.no_grad():
        logits = reference(**ids).logits[0]
    assert classes["label"].tolist() == ["negative", "positive"]
    assert torch.tensor(classes["logit"].tolist()).equal(logits)  # the same forward pass, shown as it is
    unnamed = run("this is an example", tiny_classifier_dirs["bert_unnamed"])
    assert any("names no labels" in warning.value for warning in unnamed.warning)


def test_cosine_untied_and_bad_examples(tiny_dirs):
    at = run("Paris with my friends", tiny_dirs["llama"], heads_metric="cosine", heads_source="fitted",
             heads_examples="good: fine\nthis line has no label")
    assert not at.exception
    assert any("does not tie" in warning.value for warning in at.warning)
    assert any("Line 2" in error.value for error in at.error)
    reference = AutoModelForCausalLM.from_pretrained(tiny_dirs["llama"])
    tokenizer = AutoTokenizer.from_pretrained(tiny_dirs["llama"])
    ids = torch.tensor(tokenizer("Paris with my friends")["input_ids"])
    with torch.no_grad():
        e, w = reference.model.embed_tokens(ids), reference.lm_head.weight
        best = (F.normalize(e, dim=-1) @ F.normalize(w, dim=-1).T).argmax(-1)
    table = frame_with(at, "own rank")
    assert table["1"].tolist() == [display_token(tokenizer, int(i)) for i in best]  # \xNN for partial bytes
    assert at.text_area(key="heads_examples").value == "good: fine\nthis line has no label"


@pytest.mark.skipif(importlib.util.find_spec("antiberty") is None, reason="antiberty==0.1.3 is not installed")
def test_antiberty_button_points_the_sidebar_at_the_offline_masked_lm(smollm):
    at = run("This weekend I plan to")
    at.button[0].click().run()
    assert not at.exception
    assert at.session_state["model_choice"] == "antiberty"
    assert "[MASK]" in at.session_state["text"]
    assert "Masked LM" in [tab.label for tab in at.tabs] and not at.warning  # the page now runs on a masked LM
