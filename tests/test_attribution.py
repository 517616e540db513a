"""Direct logit attribution against a decomposition hooked by hand onto a second, plain transformers copy
of each model, with each family's norms written out here in float64.

The reference knows the families by name (which module is the attention, its output projection, the
MLP, a post-norm, the final norm and its formula); lmviz finds them on the model itself. Both record
the same float32 activations (the same kernels on the same weights: checked bit for bit), so the
blocks' parts agree to float64 rounding; the heads' parts differ by lmviz calling the float32 output
projection, bounded by a dot product's rounding.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from lmviz.analyses import attribution
from lmviz.model import embedded, models
from lmviz.errors import LmvizError

TEXT = "The capital of France is Paris. The capital of Germany is"
U = 2.0**-24

FAMILIES = {  # where the parts are, written out by hand for the reference
    "llama": dict(layers="model.layers", attn="self_attn", proj="self_attn.o_proj", mlp="mlp", final="model.norm",
                  norm="rms"),
    "gemma": dict(layers="model.layers", attn="self_attn", proj="self_attn.o_proj", mlp="post_feedforward_layernorm",
                  post="post_attention_layernorm", final="model.norm", norm="rms1"),
    "gpt2": dict(layers="transformer.h", attn="attn", proj="attn.c_proj", mlp="mlp", final="transformer.ln_f",
                 norm="layer"),
}


def get(module, path: str):
    for name in path.split("."):
        module = getattr(module, name)
    return module


def frozen(kind: str, norm, x: torch.Tensor):
    """(scale-fixed linear map, bias) of a norm at x, float64, written out per family."""
    x = x.double()
    w = norm.weight.detach().double()
    eps = getattr(norm, "variance_epsilon", None) or getattr(norm, "eps", None)
    if kind == "layer":
        s = 1 / torch.sqrt(x.var(unbiased=False) + eps)
        return (lambda c: (c - c.mean(-1, keepdim=True)) * s * w), norm.bias.detach().double()
    s = 1 / torch.sqrt(x.pow(2).mean() + eps)
    gain = 1 + w if kind == "rms1" else w
    return (lambda c: c * s * gain), torch.zeros_like(w)


def reference(model, family: str, ids: list[int], position: int, target: int) -> dict:
    """Hand-hooked decomposition: parts of the target's logit (before any soft-cap), float64."""
    spec = FAMILIES[family]
    layers = get(model, spec["layers"])
    seen: dict[str, torch.Tensor] = {}
    handles = []

    def keep(name, index=0, take_input=False):
        def hook(module, args, output):
            value = args[0] if take_input else (output[index] if isinstance(output, tuple) else output)
            seen[name] = value[0, position].detach().double()
        return hook

    for i, layer in enumerate(layers):
        handles.append(layer.register_forward_hook(keep(f"out{i}")))
        handles.append(get(layer, spec["attn"]).register_forward_hook(keep(f"attn{i}")))
        handles.append(get(layer, spec["proj"]).register_forward_pre_hook(
            lambda module, args, i=i: seen.__setitem__(f"heads{i}", args[0][0, position].detach().double())))
        handles.append(get(layer, spec["mlp"]).register_forward_hook(keep(f"mlp{i}")))
        if "post" in spec:
            handles.append(get(layer, spec["post"]).register_forward_hook(keep(f"post{i}")))
    handles.append(layers[0].register_forward_pre_hook(
        lambda module, args, kwargs: seen.__setitem__("embed", (args[0] if args else kwargs["hidden_states"])[0, position].detach().double()),
        with_kwargs=True))
    try:
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0, position].double()
    finally:
        for handle in handles:
            handle.remove()
    n_layers = len(layers)
    residual = seen[f"out{n_layers - 1}"]
    linear, bias = frozen(spec["norm"], get(model, spec["final"]), residual)
    direction = model.get_output_embeddings().weight[target].detach().double()
    n_heads = model.config.num_attention_heads
    attn, mlp, heads, head_bounds, bias_bounds = [], [], [], [], []
    for i in range(n_layers):
        write = seen[f"post{i}"] if "post" in spec else seen[f"attn{i}"]
        attn.append(float(linear(write) @ direction))
        mlp.append(float(linear(seen[f"mlp{i}"]) @ direction))
        proj = get(layers[i], spec["proj"])
        weight = proj.weight.detach().double()
        weight = weight if isinstance(proj, torch.nn.Linear) else weight.T  # GPT-2's Conv1D is (in, out)
        x = seen[f"heads{i}"]
        width = x.shape[0] // n_heads
        inner = (lambda c: c) if "post" not in spec else frozen("rms1", get(layers[i], spec["post"]), seen[f"attn{i}"])[0]
        row, row_bound = [], []
        for h in range(n_heads):
            part = slice(h * width, (h + 1) * width)
            row.append(float(linear(inner(weight[:, part] @ x[part])) @ direction))
            # lmviz calls the float32 projection: a dot product of length d_in, (d_in + 2)·u·Σ|w||x|
            rounding = (x.shape[0] + 2) * U * (weight[:, part].abs() @ x[part].abs())
            row_bound.append(float(linear(inner(rounding)).abs() @ direction.abs()) * 2 + 1e-12)
        heads.append(row)
        head_bounds.append(row_bound)
        if getattr(proj, "bias", None) is not None:  # the model's float32 projection rounds its bias too
            bias_bounds.append(float(linear(inner(4 * U * proj.bias.detach().double().abs())).abs() @ direction.abs()))
        else:
            bias_bounds.append(0.0)
    return dict(embed=float(linear(seen["embed"]) @ direction), attn=attn, mlp=mlp, heads=heads,
                head_bounds=head_bounds, bias_bounds=bias_bounds, residual=residual, logit=float(logits[target]),
                normed_logit=float(linear(residual) @ direction + bias @ direction))


def assert_attribution_exact(lm: models.LoadedModel, model, family: str, position=None, target=None, text=TEXT):
    result = attribution.attribute(lm, text, position, target)
    ids = lm.tokenizer(text)["input_ids"]
    ref = reference(model, family, ids, result.position, result.target_id)
    # the same activations, bit for bit: lmviz's recording and the hand-hooked copy
    assert torch.equal(attribution.position_parts(lm, text, result.position).residuals[-1].double(), ref["residual"])
    scale = abs(ref["embed"]) + sum(map(abs, ref["attn"])) + sum(map(abs, ref["mlp"])) + 1.0
    float64 = 64 * 2.0**-53 * scale  # float64 rounding of sums of these parts
    assert abs(result.embed - ref["embed"]) <= float64
    assert (result.attn - torch.tensor(ref["attn"], dtype=torch.float64)).abs().max() <= float64
    assert (result.mlp - torch.tensor(ref["mlp"], dtype=torch.float64)).abs().max() <= float64
    assert ((result.heads - torch.tensor(ref["heads"], dtype=torch.float64)).abs() <= torch.tensor(ref["head_bounds"], dtype=torch.float64) + float64).all()
    # heads (and the projection's bias) sum to their block
    head_sum_bound = (torch.tensor(ref["head_bounds"], dtype=torch.float64).sum(1)
                      + torch.tensor(ref["bias_bounds"], dtype=torch.float64) + float64)
    assert ((result.heads.sum(1) + result.head_bias - result.attn).abs() <= head_sum_bound).all()
    # the parts sum to the model's own logit, within the rounding lmviz derives (and states on the page)
    if not lm.head.softcap:
        assert result.logit == pytest.approx(ref["logit"], abs=0.0)
    assert abs(result.total - result.logit) <= result.bound
    assert abs(result.total - ref["normed_logit"] * lm.head.factor) <= result.bound
    return result


def test_smollm_attribution_equals_hand_hooked(smollm):
    model = AutoModelForCausalLM.from_pretrained(embedded.cache_dir() / f"{models.DEFAULT_MODEL}-float32").eval()
    result = assert_attribution_exact(smollm, model, "llama")
    assert result.target_token == "·Berlin" and result.layer == smollm.n_layers
    assert_attribution_exact(smollm, model, "llama", position=5, target=int(smollm.tokenizer(" Paris")["input_ids"][0]))
    # the bound that the page states is far below the parts' size, yet the sum stays inside it
    assert result.bound < 0.05 and abs(result.total - result.logit) < result.bound


def test_gemma_attribution_equals_hand_hooked(gemma, gemma_gguf):
    """Gemma norms the attention's and the MLP's outputs before adding them (post-norms, gain 1 + w)."""
    model, _ = gemma_gguf
    decomposition = gemma.arch.require_decomposition()
    assert decomposition.attn_post_norm(0) is gemma.model.model.layers[0].post_attention_layernorm
    assert_attribution_exact(gemma, model, "gemma")


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_tiny_attribution_equals_hand_hooked(name, tiny_dirs):
    lm = models.load(tiny_dirs[name])
    model = AutoModelForCausalLM.from_pretrained(tiny_dirs[name]).eval()
    assert_attribution_exact(lm, model, name, position=3)


def test_biases_are_parts_no_head_owns(tiny_dirs):
    """GPT-2 with non-zero biases (a fresh init has zeros): the final LayerNorm's bias becomes the constant,
    the output projection's bias the rest of each attention block beside its heads."""
    from transformers import AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_dirs["gpt2"]).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        model.transformer.ln_f.bias.normal_()
        for block in model.transformer.h:
            block.attn.c_proj.bias.normal_()
    lm = models.describe("gpt2 with biases", model, AutoTokenizer.from_pretrained(tiny_dirs["gpt2"]), "causal")
    result = assert_attribution_exact(lm, model, "gpt2", position=3)
    assert result.constant != 0 and bool((result.head_bias != 0).all())


def test_soft_capped_logits_are_split_before_the_cap(tiny_gemma3):
    result = attribution.attribute(tiny_gemma3, TEXT)
    cap = tiny_gemma3.head.softcap
    assert cap and abs(result.total - result.logit) <= result.bound
    own = float(attribution.position_parts(tiny_gemma3, TEXT, result.position).logits[result.target_id])
    assert abs(cap * torch.tanh(torch.tensor(result.total / cap)).item() - own) <= result.bound


def test_lens_layers_split_the_lens_logit(smollm):
    """Below the output, the parts of blocks 0 .. layer-1 sum to the logit lens's logit at that layer."""
    from lmviz.analyses import lens
    from lmviz.forward import trace

    t = trace.trace(smollm, TEXT)
    for layer in (0, 12, 29):
        result = attribution.attribute(smollm, TEXT, layer=layer)
        lens_logit = float(smollm.head.logits(t.hidden[layer][-1:])[0, result.target_id])
        assert abs(result.logit - lens_logit) <= 1e-6 * max(1.0, abs(lens_logit))  # the same head on the same state
        assert abs(result.total - result.logit) <= result.bound
        assert result.attn.shape == (layer,) and result.heads.shape == (layer, 9)
    assert lens.logit_lens(smollm, t)  # the lens page's numbers come from the same verified head


def test_targets_and_bad_input(smollm):
    paris = attribution.resolve_target(smollm, "Paris")
    assert smollm.tokenizer.decode([paris]) == " Paris"
    assert attribution.resolve_target(smollm, "·Paris") == paris == attribution.resolve_target(smollm, str(paris))
    assert smollm.tokenizer.decode([attribution.resolve_target(smollm, ",")]) in (",", " ,")
    with pytest.raises(LmvizError, match="not a single token"):
        attribution.resolve_target(smollm, "antidisestablishmentarianism")
    with pytest.raises(LmvizError, match="outside the text"):
        attribution.attribute(smollm, TEXT, position=99)
    with pytest.raises(LmvizError, match="vocabulary"):
        attribution.attribute(smollm, TEXT, target=10**7)


def test_unsplittable_blocks_are_refused_in_one_line(tiny_bert):
    with pytest.raises(LmvizError) as error:
        attribution.attribute(tiny_bert, "a [MASK] b")
    assert "\n" not in str(error.value)


def test_numbers_that_int_cannot_read_are_read_as_text(smollm):
    for typed in ("²", "-²", "١٢"):  # str.isdigit() is True for these, int() fails on the first two
        try:
            token_id = attribution.resolve_target(smollm, typed)
        except LmvizError:
            continue
        assert 0 <= token_id < smollm.vocab_size


def test_in_float64_the_logit_is_the_models_own_and_the_parts_meet_the_bound(smollm_f64):
    """The logit the parts are held against stays in the model's dtype (it used to be rounded to float32),
    and the bound allows for the one step a float64 model still takes in float32: transformers' norms upcast,
    so the final norm rounds like float32 (here the parts miss the logit by ~1e-6)."""
    text = "The capital of Germany is"
    split = attribution.attribute(smollm_f64, text)
    with torch.no_grad():  # transformers' own float64 forward
        own = smollm_f64.model(input_ids=torch.tensor([smollm_f64.tokenizer(text).input_ids])).logits[0, -1]
    assert own.dtype == torch.float64 and split.logit == float(own[split.target_id])
    assert abs(split.total - split.logit) <= split.bound
