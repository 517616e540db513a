"""AppTest of the loss & perplexity page: every view, numbers against plain torch, bad input."""

import math

import pytest
import torch
import torch.nn.functional as F

from lmviz.app import ui
from lmviz.analyses import loss
from tests import bounds
from tests.views import run_page

TEXT = "This weekend I plan to visit"
LONG_SAMPLE = "Long sample (Pride and Prejudice, ch. 1–3)"


def page(text=TEXT, model_dir=None, **state):
    return run_page("loss", text, model_dir, **state)


def token_nll(model, tokenizer, text):
    return token_nll_and_bound(model, tokenizer, text)[0]


def token_nll_and_bound(model, tokenizer, text):
    """Per-token NLL from a plain pass in float64, and how far lmviz's may be: the same pass, its head
    recomputed from the last hidden state (another order) and a float32 log-softmax (tests/bounds.py)."""
    ids = torch.tensor([tokenizer(text)["input_ids"]])
    with torch.no_grad():
        output = model(ids, output_hidden_states=True)
    logits = output.logits[0, :-1].double()
    unembed = model.get_output_embeddings()
    error = bounds.linear_bound(output.hidden_states[-1][0, :-1], unembed.weight, unembed.bias).amax(-1)
    return F.cross_entropy(logits, ids[0, 1:], reduction="none"), bounds.log_softmax_bound(logits, error)


def shown(value: float, digits: int = 4) -> float:
    """Half a unit in the last place of `value` printed with `digits` significant digits (the cards' .4g)."""
    return 0.5 * 10 ** (math.floor(math.log10(abs(value))) - digits + 1) if value else 0.0


def html_bodies(at):
    return [element.proto.body for element in at.get("html")]


def test_token_view_numbers_match_torch(smollm):
    at = page()
    assert not at.exception and not at.error
    frame = next(df.value for df in at.dataframe if "nll (nats)" in df.value.columns)
    expected, bound = token_nll_and_bound(smollm.model, smollm.tokenizer, TEXT)
    assert frame["token"].tolist() == ["This", "·weekend", "·I", "·plan", "·to", "·visit"]
    assert ((torch.tensor(frame["nll (nats)"][1:].tolist()) - expected).abs() <= bound).all()
    assert frame["rank"].tolist()[-1] == 1
    cards = {m.label: m.value for m in at.metric}
    assert cards["Tokens scored"] == "5"
    mean, worst = float(expected.mean()), float(bound.max())
    assert abs(float(cards["Mean NLL = H"]) - mean) <= worst + shown(mean)
    perplexity = math.exp(mean)
    assert abs(float(cards["Perplexity (base e)"].replace(",", "")) - perplexity) <= perplexity * math.expm1(worst) + shown(perplexity)
    assert cards["Perplexity (base e)"] == cards["Perplexity (base 2)"]
    assert any("visit" in body and "top guess" in body for body in html_bodies(at))
    assert sum(b.proto.label.startswith("Download") for b in at.get("download_button")) == 1  # + charts' HTML


def test_long_sample_uses_sliding_windows(tiny_dirs, tiny_gpt2):
    at = page(model_dir=tiny_dirs["gpt2"], loss_source=LONG_SAMPLE, loss_max_length=64, loss_stride=32,
              loss_check=False)
    assert not at.exception and not at.error
    frame = next(df.value for df in at.dataframe if "window" in df.value.columns)
    ids = loss.encode(tiny_gpt2, loss.sample_texts()["long"])
    assert len(frame) == len(ids) and frame["window"].max() > 50
    assert any("windows" in caption.value and "exactly once" in caption.value for caption in at.caption)


def test_two_texts_view_with_the_class_pair(smollm):
    at = page(loss_view="Two texts")
    assert not at.exception and not at.error
    assert at.text_area(key="loss_text_a").value == loss.sample_texts()["normal"]
    table = next(df.value for df in at.dataframe if "B − A" in df.value.columns).set_index("metric")
    for column, text in (("A", loss.sample_texts()["normal"]), ("B", loss.sample_texts()["scrambled"])):
        expected, bound = token_nll_and_bound(smollm.model, smollm.tokenizer, text)
        assert abs(table.loc["Mean NLL = H", column] - float(expected.mean())) <= float(bound.max())
    assert table.loc["Mean NLL = H", "B"] > table.loc["Mean NLL = H", "A"]  # scrambled is more surprising


def test_two_models_view_with_different_vocabularies(tiny_dirs, tiny_gpt2, tiny_llama_bos):
    text = "The capital of France is Paris, and naïve café too."
    at = page(text=text, model_dir=tiny_dirs["gpt2"], loss_view="Two models", loss_model_b=ui.OTHER_MODEL)
    assert not at.exception and any("Pick or type a second" in info.value for info in at.info)
    at = page(text=text, model_dir=tiny_dirs["gpt2"], loss_view="Two models", loss_model_b=ui.OTHER_MODEL,
              loss_model_b_other=tiny_llama_bos.name)
    assert not at.exception and not at.error
    words = next(df.value for df in at.dataframe if "word" in df.value.columns)
    assert len(words) == len(text.split())
    nll_b, bound_b = token_nll_and_bound(tiny_llama_bos.model, tiny_llama_bos.tokenizer, text)
    total_bound = float(bound_b.sum())
    assert abs(words["nll B (nats)"].sum() - float(nll_b.sum())) <= total_bound  # words add up to the text
    cards = {m.label: m.value for m in at.metric}
    bits_b = float(nll_b.sum()) / math.log(2) / len(text.encode())
    assert abs(float(cards["Bits per byte, B"]) - bits_b) <= total_bound / math.log(2) / len(text.encode()) + 5e-5
    assert any("naïve" in body for body in html_bodies(at))


def test_two_models_default_to_smollm2_and_gemma(smollm, gemma):
    """Out of the box the comparison is SmolLM2 (A, the sidebar's default) against Gemma-3 270M (B): two
    tokenizers, so per word and in bits per byte, each against a plain float64 computation."""
    text = "The capital of France is Paris, and the capital of Italy is Rome."
    at = page(text=text, loss_view="Two models")
    assert not at.exception and not at.error
    assert at.selectbox(key="loss_model_b").value == "gemma3-270m"
    cards = {m.label: m.value for m in at.metric}
    for lm, side in ((smollm, "A"), (gemma, "B")):
        ids = lm.tokenizer(text)["input_ids"]
        nll, bound = token_nll_and_bound(lm.model, lm.tokenizer, text)
        n_bytes = len(text.encode()) - len(lm.tokenizer.decode(ids[:1], skip_special_tokens=True).encode())
        bits = float(nll.sum()) / math.log(2) / n_bytes
        assert abs(float(cards[f"Bits per byte, {side}"]) - bits) <= float(bound.sum()) / math.log(2) / n_bytes + 5e-5
    words = next(df.value for df in at.dataframe if "word" in df.value.columns)
    assert "".join(words["word"]).replace("·", " ") == text  # the words, with visible spaces, tile the text


def test_two_models_with_a_masked_model_b(tiny_dirs, tiny_bert):
    at = page(model_dir=tiny_dirs["gpt2"], loss_view="Two models", loss_model_b=ui.OTHER_MODEL,
              loss_model_b_other=tiny_dirs["bert"])
    assert not at.exception
    assert "masked model" in at.error[0].value


def test_layer_view_last_row_is_the_text_loss(tiny_dirs, tiny_llama):
    at = page(text="The capital of France is Paris.", model_dir=tiny_dirs["llama"], loss_view="By layer")
    assert not at.exception and not at.error
    frame = next(df.value for df in at.dataframe if "cross-entropy (nats)" in df.value.columns)
    assert len(frame) == tiny_llama.n_layers + 1
    expected, bound = token_nll_and_bound(tiny_llama.model, tiny_llama.tokenizer, "The capital of France is Paris.")
    assert abs(frame["cross-entropy (nats)"].iloc[-1] - float(expected.mean())) <= float(bound.max())


def test_context_view(tiny_dirs, tiny_gpt2):
    text = "Perplexity is the exponential of the mean negative log-likelihood. A language model predicts tokens."
    at = page(text=text, model_dir=tiny_dirs["gpt2"], loss_view="Context length")
    assert not at.exception and not at.error
    frame = next(df.value for df in at.dataframe if "window length" in df.value.columns)
    expected, bound = token_nll_and_bound(tiny_gpt2.model, tiny_gpt2.tokenizer, text)
    assert frame["window length"].iloc[0] == 2
    assert abs(frame["cross-entropy (nats)"].iloc[-1] - float(expected.mean())) <= float(bound.max())
    assert len(at.get("plotly_chart")) == 1


@pytest.mark.parametrize("state,message", [
    ({"loss_stride": 0}, "stride must be a positive"),
    ({"loss_max_length": 1}, "at least 2"),
    ({"loss_max_length": 500, "loss_stride": 100}, "above the model's context of 128"),
])
def test_bad_window_settings_are_explained_and_kept(tiny_dirs, state, message):
    at = page(model_dir=tiny_dirs["gpt2"], **state)
    assert not at.exception
    assert message in at.error[0].value
    for key, value in state.items():
        assert at.number_input(key=key).value == value


def test_one_token_text_and_masked_model(tiny_dirs):
    at = page(text="A", model_dir=tiny_dirs["gpt2"])
    assert not at.exception and "nothing to score" in at.error[0].value
    assert at.session_state["text"] == "A"  # (AppTest drops the sidebar of a switched-to page from its tree)
    at = page(model_dir=tiny_dirs["bert"])
    assert not at.exception and "needs a causal" in at.warning[0].value


def test_two_texts_with_an_empty_text(tiny_dirs):
    at = page(model_dir=tiny_dirs["gpt2"], loss_view="Two texts", loss_text_b="   ")
    assert not at.exception and "empty" in at.error[0].value
    assert at.text_area(key="loss_text_b").value == "   "
