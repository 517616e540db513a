"""Neurons against a hand computation, and their sum against direct logit attribution's MLP part.

The reference reads the MLP's hidden vector (the output projection's input) and the last block's output with
plain torch hooks on the modules written down in tests/test_interventions.PARTS, writes each family's norms
out by hand in float64 (RMSNorm with gain w or 1 + w, LayerNorm), and computes neuron n's contribution as
a_n × (column n through the post-norm and final norm, their scales held at the actual values) · W_U[target].
Both sides compute in float64 from the same float32 (or float64) numbers, so they agree to ~1e-15 relative;
1e-9 is allowed. The sum of the contributions and the bias must meet attribution's MLP part within the bound
the result states (lmviz.analyses.neurons._bound), and that bound must be small beside the parts.
"""

from __future__ import annotations

import pytest
import torch
from transformers import MixtralConfig, MixtralForCausalLM

from lmviz.analyses import attribution, neurons
from lmviz.errors import LmvizError
from lmviz.model import models
from tests.test_interventions import PARTS, HandHooks, part

TEXT = "The capital of France is Paris, and the capital of England is"


def block(lm, layer: int) -> torch.nn.Module:
    return lm.model.get_submodule(PARTS[lm.model.config.model_type]["blocks"])[layer]


def norm_by_hand(module: torch.nn.Module, at: torch.Tensor, kind: str):
    """The norm `module` as a linear map v -> L(v) with its scale held at `at` (float64), and its bias."""
    at = at.double()
    weight = module.weight.detach().double()
    if kind == "layernorm":
        scale = (at.var(unbiased=False) + module.eps).rsqrt()
        return (lambda v: (v - v.mean(-1, keepdim=True)) * scale * weight), module.bias.detach().double()
    eps = getattr(module, "variance_epsilon", getattr(module, "eps", None))
    scale = (at.pow(2).mean() + eps).rsqrt()
    gain = 1 + weight if kind == "rms1p" else weight
    return (lambda v: v * scale * gain), torch.zeros_like(weight)


FINAL = {"llama": ("model.norm", "rms"), "gpt2": ("transformer.ln_f", "layernorm"),
         "gemma3_text": ("model.norm", "rms1p")}


@torch.no_grad()
def neurons_by_hand(lm, layer: int, position: int, target: int) -> tuple[torch.Tensor, float, torch.Tensor, float]:
    """(contributions (d_mlp,), bias part, columns through the norms (d_mlp, d)) in float64, and how far
    lmviz's may be off relatively (0 but for a post-norm, see below)."""
    model_type = lm.model.config.model_type
    projection = part(lm, layer, "neurons")
    with HandHooks() as hooks:
        hooks.read_input(projection, "a")
        hooks.read_output(part(lm, layer, "mlp"), "raw")
        hooks.read_output(block(lm, lm.n_layers - 1), "h")
        lm.model(input_ids=torch.tensor([lm.tokenizer(TEXT)["input_ids"]]), use_cache=False)
    a, raw, h = (hooks.seen[key][0, position].double() for key in ("a", "raw", "h"))
    weight = projection.weight.detach().double()
    columns = weight.T if isinstance(projection, torch.nn.Linear) else weight  # (d_mlp, d): GPT-2's Conv1D is (in, out)
    bias = projection.bias.detach().double() if projection.bias is not None else torch.zeros(columns.shape[1],
                                                                                             dtype=torch.float64)
    rho = 0.0
    if model_type == "gemma3_text":  # the post-feedforward norm, held at the MLP's own output
        post, post_bias = norm_by_hand(part(lm, layer, "mlp_out"), raw, "rms1p")
        # lmviz holds it at the output recomputed from the neurons alone, which may differ from the pass's by a
        # float32 product's rounding e = (d_mlp + 2)·u·(|W||a| + |b|): its scale moves by a factor
        # ≤ 2‖e‖/‖raw‖
        e = (columns.shape[0] + 2) * 2.0**-24 * (a.abs() @ columns.abs() + bias.abs())
        rho = float(2 * e.norm() / (raw.norm() - 2 * e.norm()))
        columns, bias = post(columns), post(bias) + post_bias
    name, kind = FINAL[model_type]
    final, _ = norm_by_hand(lm.model.get_submodule(name), h, kind)
    unembed = lm.model.get_output_embeddings().weight.detach().double()[target]
    through = final(columns)
    return a * (through @ unembed), float(final(bias) @ unembed), through, rho


@pytest.mark.parametrize(("model", "layer", "position"), [
    ("tiny_llama_f64", 1, 5), ("tiny_gpt2", 0, -1), ("tiny_gemma3", 2, 4),
])
def test_contributions_equal_a_hand_computation(model, layer, position, request):
    lm = request.getfixturevalue(model)
    result = neurons.neurons(lm, TEXT, layer, position, top=5, k_tokens=3)
    expected, bias, through, rho = neurons_by_hand(lm, layer, result.position, result.target_id)
    scale = float(expected.abs().max())
    assert ((result.contributions - expected).abs() <= rho * expected.abs() + 1e-9 * scale).all()
    assert abs(result.bias - bias) <= rho * abs(bias) + 1e-9 * scale
    assert list(result.top) == expected.abs().argsort(descending=True, stable=True)[:5].tolist()
    assert [row["index"] for row in result.rows()] == list(result.top)
    # what the top neuron's column promotes and suppresses, through the same norms and the whole unembedding
    logits = lm.model.get_output_embeddings().weight.detach().double() @ through[result.top[0]] * lm.head.factor
    effects = result.top_tokens[0]
    assert list(effects.promoted_ids) == logits.topk(3).indices.tolist()
    assert list(effects.suppressed_ids) == (-logits).topk(3).indices.tolist()
    assert effects.promoted_values[0] == pytest.approx(float(logits.max()), rel=1e-5)
    assert effects.suppressed_values[0] == pytest.approx(float(logits.min()), rel=1e-5)


@pytest.mark.parametrize(("model", "layer"), [
    ("tiny_llama", 2), ("tiny_gpt2", 1), ("tiny_gemma3", 1), ("tiny_llama_f64", 0), ("smollm", 12),
])
def test_contributions_sum_to_the_mlp_part_within_the_bound(model, layer, request):
    lm = request.getfixturevalue(model)
    result = neurons.neurons(lm, TEXT, layer, target=attribution.resolve_target(lm, " London")
                             if model == "smollm" else None)
    split = attribution.attribute(lm, TEXT, None, result.target_id)
    assert result.mlp_part == float(split.mlp[layer])  # the part the attribution page reports for this block
    assert abs(result.total - result.mlp_part) <= result.bound
    magnitude = float(result.contributions.abs().sum()) + abs(result.bias)
    # a bound that says something: under 1% of the parts' total size (Higham's worst case, ~1e5 times what
    # rounding does in practice), or ~1e-12 of it for a float64 model
    assert result.bound <= (1e-2 if lm.model.dtype == torch.float32 else 1e-9) * magnitude
    assert (neurons.mlp_post_norm(lm, layer) is not None) == (lm.model.config.model_type == "gemma3_text")
    if model == "smollm":  # SmolLM2's 1,536 neurons: a few carry much of the part
        assert result.d_mlp == 1536 and len(result.top) == neurons.TOP


def test_refusals_are_one_line(tiny_llama, tiny_bert):
    torch.manual_seed(0)
    config = MixtralConfig(vocab_size=tiny_llama.vocab_size, hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, num_local_experts=4,
                           max_position_embeddings=128)
    mixtral = models.describe("tiny mixtral", MixtralForCausalLM(config).eval(), tiny_llama.tokenizer, "causal")
    cases = [
        (tiny_bert, dict(), "causal"),
        (mixtral, dict(), "can't read the neurons"),
        (tiny_llama, dict(layer=-1), r"Layer -1 is outside .*\(0\.\.2\)"),
        (tiny_llama, dict(layer=3), r"Layer 3 is outside .*\(0\.\.2\)"),
        (tiny_llama, dict(top=0), "between 1 and 64 neurons"),
        (tiny_llama, dict(top=65), "between 1 and 64 neurons"),
        (tiny_llama, dict(k_tokens=0), "tokens per neuron"),
        (tiny_llama, dict(position=99), "Position 99 is outside"),
        (tiny_llama, dict(target=10**6), "outside .* vocabulary"),
        (tiny_llama, dict(text=" "), "empty"),
    ]
    for lm, change, message in cases:
        arguments = dict(text=TEXT, layer=1) | change
        with pytest.raises(LmvizError, match=message) as error:
            neurons.neurons(lm, **arguments)
        assert "\n" not in str(error.value)
