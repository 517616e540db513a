"""Attention patterns against the model's own eager `output_attentions`, loaded by plain transformers.

The reference is a second copy of each model, loaded from the same weights with
attn_implementation="eager" and run with output_attentions=True: lmviz's eager
twin runs the same kernels on the same weights in the same process, so the
probabilities must agree to the last bit (compared with a tolerance of a few
float32 ulps of 1 all the same). The head statistics are recomputed here with
plain loops over the reference probabilities, in float64.
"""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from lmviz.analyses import attention
from lmviz.model import embedded, models
from lmviz.errors import LmvizError

TEXT = "The cat sat on the mat. The cat sat on the"
ULPS = 16 * 2.0**-24  # probabilities are at most 1: a few float32 roundings of 1


def eager_reference(directory: str):
    return AutoModelForCausalLM.from_pretrained(directory, attn_implementation="eager", dtype=torch.float32).eval()


def reference_attentions(model, ids: list[int]) -> list[torch.Tensor]:
    """(layer,) of (head, query, key) float64: the model's own output_attentions."""
    with torch.no_grad():
        output = model(input_ids=torch.tensor([ids]), output_attentions=True)
    return [a[0].double() for a in output.attentions]


def loop_statistics(probs: torch.Tensor, ids: list[int]) -> dict[str, list[float]]:
    """The five head statistics of one layer's (head, query, key) probabilities, written as plain loops."""
    n_heads, n = probs.shape[0], probs.shape[1]
    out = {name: [] for name in attention.STATISTICS}
    for h in range(n_heads):
        rows = range(1, n)
        out["entropy"].append(sum(-sum(float(p) * math.log(p) for p in probs[h, q, : q + 1] if p > 0) for q in rows)
                              / (n - 1))
        out["first"].append(sum(float(probs[h, q, 0]) for q in rows) / (n - 1))
        out["previous"].append(sum(float(probs[h, q, q - 1]) for q in rows) / (n - 1))
        out["self"].append(sum(float(probs[h, q, q]) for q in rows) / (n - 1))
        scores = []
        for q in rows:
            after_copies = [j + 1 for j in range(q - 1) if ids[j] == ids[q]]  # j + 1 < q: never the query
            if after_copies:
                scores.append(sum(float(probs[h, q, k]) for k in after_copies))
        out["induction"].append(sum(scores) / len(scores) if scores else math.nan)
    return out


def assert_attention_exact(lm: models.LoadedModel, reference, text: str = TEXT, window=None) -> None:
    result = attention.attention(lm, text, window)
    ids = list(result.input_ids)
    expected = reference_attentions(reference, ids)
    assert len(expected) == result.n_layers and expected[0].shape[0] == result.n_heads
    start, stop = result.queries
    for layer, probs in enumerate(expected):
        got = result.patterns[layer].double()
        assert (got - probs[:, start:stop, :stop]).abs().max() <= ULPS, layer
        stats = loop_statistics(probs, ids)
        for name, values in stats.items():
            ours = result.stats[name][layer]
            ref = torch.tensor(values, dtype=torch.float64)
            both_nan = ours.isnan() & ref.isnan()
            # float64 sums over at most n probabilities of float32 numbers that agree to ULPS: n·ULPS·|log p|
            assert (both_nan | ((ours - ref).abs() <= len(ids) * ULPS * 40)).all(), (layer, name)


def test_smollm_attention_equals_output_attentions(smollm):
    """Llama-family with grouped-query attention: 9 query heads share 3 key/value heads."""
    reference = eager_reference(str(embedded.cache_dir() / f"{models.DEFAULT_MODEL}-float32"))
    assert reference.config.num_key_value_heads < reference.config.num_attention_heads
    assert_attention_exact(smollm, reference)
    assert_attention_exact(smollm, reference, window=(3, 7))


def test_gemma_attention_equals_output_attentions(gemma, gemma_gguf):
    model, _ = gemma_gguf
    model.set_attn_implementation("eager")
    try:
        assert_attention_exact(gemma, model)
    finally:
        model.set_attn_implementation("sdpa")


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_tiny_attention_equals_output_attentions(name, tiny_dirs):
    lm = models.load(tiny_dirs[name])
    assert_attention_exact(lm, eager_reference(tiny_dirs[name]))


def test_twin_shares_weights_and_leaves_the_model_fast(smollm):
    from lmviz.model.interventions import eager_twin

    twin = eager_twin(smollm)
    assert twin is eager_twin(smollm)  # made once
    shared = {t.data_ptr() for t in smollm.model.parameters()}
    assert {t.data_ptr() for t in twin.parameters()} == shared  # no second copy of the weights
    assert smollm.model.config._attn_implementation != "eager" and twin.config._attn_implementation == "eager"


def test_induction_targets():
    assert attention.induction_targets([5, 6, 7, 5, 6]) == [[], [], [], [1], [2]]
    assert attention.induction_targets([5, 5, 5, 7]) == [[], [], [1], []]  # never the query itself


def test_bad_windows_are_refused(smollm):
    with pytest.raises(LmvizError, match="outside the text"):
        attention.attention(smollm, TEXT, (5, 99))
    with pytest.raises(LmvizError, match="at most 60"):
        attention.attention(smollm, " ".join(["word"] * 80), (0, 70))


def test_describing_a_model_again_renews_its_eager_twin(tiny_dirs):
    """A notebook that wraps the same module twice (models.describe) gets working patterns from the second
    wrapper: the twin is copied again with the hooks the model has now."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_dirs["llama"]).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_dirs["llama"])
    first = models.describe("first", model, tokenizer, "causal")
    assert attention.run_attention(first, TEXT).n_layers == model.config.num_hidden_layers
    second = models.describe("second", model, tokenizer, "causal")
    expected = reference_attentions(eager_reference(tiny_dirs["llama"]), list(attention.run_attention(second, TEXT).input_ids))
    got = attention.run_attention(second, TEXT, window=(0, 5))
    assert (got.patterns[-1].double() - expected[-1][:, :5, :5]).abs().max() <= ULPS
