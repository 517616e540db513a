"""Ablation against a forward pass patched by hand on a second, plain transformers copy of the model.

The reference zeroes (or replaces by its mean) a head's slice of the output projection's input, or a
block's output, with hooks written here for each family; the distribution after the last token and
the text's loss are computed from its logits in float64. Both passes run the same kernels on the same
patched values, so the numbers agree up to float64 rounding of the same float32 logits; the tolerances
allow for float32 log-softmax rounding (tests/bounds.py) all the same.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from transformers import AutoModelForCausalLM

from lmviz.analyses import ablation
from lmviz.model import embedded, interventions, models
from lmviz.errors import LmvizError
from lmviz.model.interventions import Component
from tests import bounds

TEXT = "The capital of France is Paris. The capital of Germany is"


def patched_logits(model, ids: list[int], family: str, component: Component, mode: str) -> torch.Tensor:
    """(pos, vocab) float32 logits of the model with `component` ablated by hooks written here."""
    layers = model.transformer.h if family == "gpt2" else model.model.layers
    layer = layers[component.layer]
    if component.kind == "head":
        module = layer.attn.c_proj if family == "gpt2" else layer.self_attn.o_proj
        width = module.weight.shape[0 if family == "gpt2" else 1] // model.config.num_attention_heads
        part = slice(component.head * width, (component.head + 1) * width)
    else:
        module = (layer.attn if family == "gpt2" else layer.self_attn) if component.kind == "attn" else layer.mlp
    seen = {}

    def record(mod, args, output=None):  # the clean pass: the component's mean over positions
        value = args[0] if component.kind == "head" else (output[0] if isinstance(output, tuple) else output)
        seen["mean"] = value[0].double().mean(0).float()

    if mode == "mean":
        handle = (module.register_forward_pre_hook(record) if component.kind == "head"
                  else module.register_forward_hook(record))
        with torch.no_grad():
            model(input_ids=torch.tensor([ids]))
        handle.remove()

    def head_hook(mod, args):
        x = args[0].clone()
        x[..., part] = 0 if mode == "zero" else seen["mean"][part]
        return (x,)

    def block_hook(mod, args, output):
        tensor = output[0] if isinstance(output, tuple) else output
        new = torch.zeros_like(tensor) if mode == "zero" else seen["mean"].expand_as(tensor).clone()
        return (new, *output[1:]) if isinstance(output, tuple) else new

    handle = (module.register_forward_pre_hook(head_hook) if component.kind == "head"
              else module.register_forward_hook(block_hook))
    try:
        with torch.no_grad():
            return model(input_ids=torch.tensor([ids])).logits[0].float()
    finally:
        handle.remove()


def assert_ablation_exact(lm, model, family: str, component: Component, mode: str) -> None:
    result = ablation.ablate(lm, TEXT, component, mode)
    ids = lm.tokenizer(TEXT)["input_ids"]
    with torch.no_grad():
        clean = model(input_ids=torch.tensor([ids])).logits[0].float()
    patched = patched_logits(model, ids, family, component, mode)
    eps_after = float(bounds.log_softmax_bound(patched).max())
    eps_before = float(bounds.log_softmax_bound(clean).max())
    after = torch.log_softmax(patched.double(), -1)
    before = torch.log_softmax(clean.double(), -1)
    top = torch.topk(after[-1], 5)
    # the top tokens after the ablation, up to ties closer than rounding
    for token_id, prob in zip(result.top_ids[:5], result.top_probs[:5]):
        assert float(after[-1, token_id]) >= float(top.values[-1]) - 2 * eps_after
        assert abs(prob - float(after[-1, token_id].exp())) <= float(bounds.prob_bound(torch.tensor(prob), eps_after))
    p = before[-1].exp()
    kl = float((p * (before[-1] - after[-1])).sum())
    assert abs(result.kl - kl) <= 2 * (eps_before + eps_after)  # Σ p·|Δ log| with Σ p = 1
    nll_after = -after[:-1].gather(1, torch.tensor(ids[1:])[:, None]).mean()
    nll_before = -before[:-1].gather(1, torch.tensor(ids[1:])[:, None]).mean()
    assert abs(result.loss_after - float(nll_after)) <= eps_after
    assert abs(result.loss_before - float(nll_before)) <= eps_before


@pytest.mark.parametrize("component,mode", [
    (Component("head", 29, 1), "zero"), (Component("head", 23, 4), "mean"),
    (Component("attn", 23), "zero"), (Component("mlp", 28), "mean"),
])
def test_smollm_ablation_equals_hand_patched(smollm, smollm_reference, component, mode):
    assert_ablation_exact(smollm, smollm_reference, "llama", component, mode)


@pytest.fixture(scope="module")
def smollm_reference(smollm):
    return AutoModelForCausalLM.from_pretrained(embedded.cache_dir() / f"{models.DEFAULT_MODEL}-float32").eval()


@pytest.mark.parametrize("component", [Component("head", 1, 0), Component("mlp", 0), Component("attn", 1)])
def test_tiny_gpt2_ablation_equals_hand_patched(tiny_dirs, component):
    lm = models.load(tiny_dirs["gpt2"])
    model = AutoModelForCausalLM.from_pretrained(tiny_dirs["gpt2"]).eval()
    for mode in ("zero", "mean"):
        assert_ablation_exact(lm, model, "gpt2", component, mode)


def test_ablating_a_head_that_matters_changes_the_prediction(smollm):
    """Zeroing the attention block that carries 'Germany' to the last position moves the prediction."""
    result = ablation.ablate(smollm, TEXT, Component("attn", 23), "zero")
    assert result.before_tokens[0] == "·Berlin" and result.kl > 0.1
    assert result.after_of_before[0] < result.before_probs[0] / 2


def test_concurrent_ablations_are_independent(smollm):
    """Eight threads ablate eight different heads on the one shared model at once (the hooks read each
    thread's own edits): every result equals that head's ablation run alone, bit for bit."""
    ids = torch.tensor([smollm.tokenizer(TEXT)["input_ids"]])
    heads = [Component("head", layer, layer % 9) for layer in range(8)]
    alone = {c: interventions.run(smollm, ids, edits=(interventions.Edit(c.site),), logits_at=-1) for c in heads}
    plain = interventions.run(smollm, ids, logits_at=-1)
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda c: (c, interventions.run(smollm, ids, edits=(interventions.Edit(c.site),),
                                                                 logits_at=-1)), heads * 3))
    for component, logits in together:
        assert torch.equal(logits, alone[component])
    assert all(not torch.equal(alone[c], plain) for c in heads)  # each edit did change the output
    assert torch.equal(interventions.run(smollm, ids, logits_at=-1), plain)  # and nothing stays behind


def test_bad_components_are_refused(smollm):
    with pytest.raises(LmvizError, match="outside"):
        ablation.ablate(smollm, TEXT, Component("head", 30, 0))
    with pytest.raises(LmvizError, match="outside"):
        ablation.ablate(smollm, TEXT, Component("head", 0, 9))
    with pytest.raises(LmvizError, match="mode"):
        ablation.ablate(smollm, TEXT, Component("mlp", 0), "random")
    with pytest.raises(LmvizError):
        Component("head", 0)
