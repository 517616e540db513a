"""SAEs in SAELens's folder format, the features analysis and steering with a latent, against references that
know nothing of lmviz.

The tests write their own SAE folders (random weights; SAELens 5- and 6-style cfg.json; float32, float16 and
bfloat16 storage). The references read the weights back with safetensors into plain torch tensors, take the
residual stream from transformers' `hidden_states` (or a plain hook for the last block's output, which
`hidden_states` gives after the final norm) and encode by hand in float64, as SAELens 5 and 6 define it.
lmviz encodes in float32, so activations may differ by a matrix product's rounding: at most
(d_in + 4)·u·(|x| + |b_dec|)·|W_enc| + |b_enc|) per pre-activation (Higham's γ; tests/bounds.py), and each
case checks that no top-k choice or JumpReLU threshold lies within that distance, so the two pick the same
latents. Splicing the reconstruction in and zeroing the site are checked against forward passes patched by
hand; steering against `generate()` with the vector added by a plain hook.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from lmviz.analyses import features as features_module
from lmviz.analyses import sae as saes
from lmviz.errors import LmvizError
from lmviz.forward.cache import is_cached_result
from tests.bounds import U32
from tests.test_interventions import PARTS, HandHooks
from tests.test_steering import GREEDY

TEXT = "The capital of France is Paris, and"
PROMPT = "I think that you are"


def write_sae(folder: Path, d_in: int, d_sae: int, architecture: str = "topk", hook: str = "blocks.1.hook_resid_pre",
              style: str = "v6", k: int | None = 6, dtype=torch.float32, seed: int = 0, apply_b_dec: bool = True,
              rescale: bool = False, scale: float = 1.0) -> Path:
    """An SAE folder with random weights, its cfg.json as SAELens 6 (hook_name in metadata, k at the top) or
    SAELens 5 (hook_name, hook_layer, activation_fn_str and activation_fn_kwargs at the top) writes it.
    `scale` is the size of the residual stream it will read (its biases and thresholds are set to match)."""
    generator = torch.Generator().manual_seed(seed)
    weights = {"W_enc": torch.randn(d_in, d_sae, generator=generator) / d_in**0.5,
               "b_enc": torch.randn(d_sae, generator=generator) * 0.3 * scale,
               "W_dec": torch.randn(d_sae, d_in, generator=generator) / d_in**0.5,
               "b_dec": torch.randn(d_in, generator=generator) * 0.2 * scale}
    if architecture == "jumprelu":  # some thresholds below 0: a JumpReLU still cuts at 0 there (relu first)
        weights["threshold"] = (torch.rand(d_sae, generator=generator) - 0.2) * 0.5 * scale
    layer = int(hook.split(".")[1])
    if style == "v6":
        cfg = {"architecture": architecture, "d_in": d_in, "d_sae": d_sae, "dtype": "float32", "device": "cpu",
               "apply_b_dec_to_input": apply_b_dec, "normalize_activations": "none", "reshape_activations": "none",
               "metadata": {"sae_lens_version": "6.18.0", "model_name": "tiny", "hook_name": hook,
                            "hook_head_index": None, "prepend_bos": True, "context_size": 128}}
        if architecture == "topk":
            cfg.update(k=k, rescale_acts_by_decoder_norm=rescale)
    else:
        topk = architecture == "topk"
        cfg = {"architecture": "standard" if topk else architecture, "d_in": d_in, "d_sae": d_sae,
               "dtype": str(dtype).removeprefix("torch."), "device": "cpu", "model_name": "tiny", "hook_name": hook,
               "hook_layer": layer, "hook_head_index": None, "activation_fn_str": "topk" if topk else "relu",
               "activation_fn_kwargs": {"k": k} if topk else {}, "apply_b_dec_to_input": apply_b_dec,
               "finetuning_scaling_factor": False, "sae_lens_training_version": "5.11.0", "prepend_bos": True,
               "dataset_path": "x", "dataset_trust_remote_code": True, "context_size": 128,
               "normalize_activations": "none", "neuronpedia_id": None, "model_from_pretrained_kwargs": {},
               "seqpos_slice": [None]}
    folder.mkdir(parents=True, exist_ok=True)
    save_file({name: w.to(dtype).contiguous() for name, w in weights.items()}, folder / "sae_weights.safetensors")
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return folder


def read_by_hand(folder: Path) -> tuple[dict, dict]:
    """(cfg, float64 weights) read with json and safetensors, nothing of lmviz."""
    cfg = json.loads((folder / "cfg.json").read_text())
    return cfg, {name: w.double() for name, w in load_file(folder / "sae_weights.safetensors").items()}


def encode_by_hand(folder: Path, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(f, decision, err): SAELens's encode in float64 of x (pos, d_in); `decision` is what chose the active
    latents (pre-activations; for topk after any rescale) and `err` bounds lmviz's float32 error in it."""
    cfg, w = read_by_hand(folder)
    meta = cfg.get("metadata", {})
    architecture = "topk" if cfg.get("activation_fn_str") == "topk" else cfg["architecture"]
    k = cfg.get("k") or cfg.get("activation_fn_kwargs", {}).get("k")
    x = x.double()
    sae_in = x - w["b_dec"] if cfg.get("apply_b_dec_to_input", True) else x
    pre = sae_in @ w["W_enc"] + w["b_enc"]
    err = (x.shape[-1] + 4) * U32 * ((x.abs() + w["b_dec"].abs()) @ w["W_enc"].abs() + w["b_enc"].abs())
    assert meta.get("hook_name", cfg.get("hook_name"))
    if architecture == "topk":
        if cfg.get("rescale_acts_by_decoder_norm"):
            norms = w["W_dec"].norm(dim=-1)
            pre, err = pre * norms, err * norms + (x.shape[-1] + 4) * U32 * pre.abs() * norms
        top = pre.topk(k, dim=-1)
        f = torch.zeros_like(pre).scatter_(-1, top.indices, top.values.clamp_min(0))
        ordered = pre.sort(dim=-1, descending=True).values
        margin = ordered[:, k - 1] - ordered[:, k]  # the k-th and (k+1)-th must not swap through rounding
        assert bool((margin > 2 * err.max(-1).values).all()), "the test's premise: a clear top-k choice"
    else:
        f = pre.clamp_min(0)
        if architecture == "jumprelu":
            f = f * (pre > w["threshold"])
            assert bool(((pre - w["threshold"]).abs() > err).all()), "the test's premise: no pre on a threshold"
    return f, pre, err


def block(lm, layer: int) -> torch.nn.Module:
    return lm.model.get_submodule(PARTS[lm.model.config.model_type]["blocks"])[layer]


def ids_of(lm, text: str = TEXT) -> torch.Tensor:
    return torch.tensor([lm.tokenizer(text)["input_ids"]])


@torch.no_grad()
def residual_by_hand(lm, hook: str, text: str = TEXT) -> torch.Tensor:
    """(pos, d_model) block l's input (hidden_states[l]) or output (hidden_states[l+1]; a plain hook for the
    last block, whose hidden_states entry has the final norm applied)."""
    layer, name = int(hook.split(".")[1]), hook.split(".")[2]
    index = layer + (name == "hook_resid_post")
    if index < lm.n_layers:
        return lm.model(input_ids=ids_of(lm, text), output_hidden_states=True).hidden_states[index][0]
    with HandHooks() as hooks:
        hooks.read_output(block(lm, layer), "x")
        lm.model(input_ids=ids_of(lm, text))
        return hooks.seen["x"][0]


@torch.no_grad()
def ce_by_hand(lm, hook: str, value: torch.Tensor | float) -> float:
    """Mean NLL of every token after the first with the site replaced by `value` at positions 1.. by a plain
    hook (a pre-hook on block l for its input, a forward hook for its output)."""
    layer, name = int(hook.split(".")[1]), hook.split(".")[2]

    def change(x):
        x[0, 1:] = torch.as_tensor(value, dtype=x.dtype)
    ids = ids_of(lm)
    with HandHooks() as hooks:
        (hooks.patch_input if name == "hook_resid_pre" else hooks.patch_output)(block(lm, layer), change)
        logits = lm.model(input_ids=ids, use_cache=False).logits[0].float()
    return float(torch.nn.functional.cross_entropy(logits[:-1], ids[0, 1:]))


CASES = [  # model, architecture, cfg style, site, stored dtype, apply_b_dec_to_input, rescale
    ("tiny_llama", "standard", "v6", "blocks.1.hook_resid_pre", torch.float32, True, False),
    ("tiny_llama", "topk", "v5", "blocks.2.hook_resid_post", torch.float16, True, False),  # the last block's output
    ("tiny_llama", "jumprelu", "v6", "blocks.0.hook_resid_post", torch.bfloat16, True, False),
    ("tiny_gpt2", "topk", "v6", "blocks.1.hook_resid_pre", torch.float32, True, True),
    ("tiny_gpt2", "jumprelu", "v5", "blocks.0.hook_resid_pre", torch.float32, False, False),
    ("tiny_gemma3", "standard", "v5", "blocks.1.hook_resid_post", torch.float16, True, False),
]


@pytest.mark.parametrize(("model", "architecture", "style", "hook", "dtype", "apply_b_dec", "rescale"), CASES)
def test_features_equal_an_independent_encode(model, architecture, style, hook, dtype, apply_b_dec, rescale,
                                              request, tmp_path):
    lm = request.getfixturevalue(model)
    x = residual_by_hand(lm, hook)
    scale = float(x[1:].double().norm(dim=-1).mean()) / lm.d_model**0.5  # the residual's typical entry
    folder = write_sae(tmp_path / "sae", lm.d_model, 48, architecture, hook, style, k=6, dtype=dtype,
                       apply_b_dec=apply_b_dec, rescale=rescale, scale=scale)
    sae = saes.load(folder, lm)
    assert (sae.hook, sae.d_in, sae.d_sae, sae.architecture) == (hook, lm.d_model, 48, architecture)
    assert sae.W_enc.dtype == torch.float32 and sae.stored_dtype == str(dtype).removeprefix("torch.")
    result = features_module.features(lm, TEXT, sae, k=5)
    f, _, err = encode_by_hand(folder, x)
    assert ((result.activations.double() - f).abs() <= err).all()
    active = f > 0
    assert 0 < int(active.sum()) < active.numel()  # the case shows both active and silent latents
    assert torch.equal(result.l0, active.sum(-1))
    for position in range(result.n_tokens):
        expected = [j for j in f[position].argsort(descending=True, stable=True).tolist()[:5] if f[position, j] > 0]
        assert [i for i, _ in result.top_features(position)] == expected
    # explained variance over positions 1.., by hand in float64
    cfg, w = read_by_hand(folder)
    norms = w["W_dec"].norm(dim=-1) if rescale else 1
    recon = (f / norms) @ w["W_dec"] + w["b_dec"]
    x64 = x.double()[1:]
    residual, spread = (x64 - recon[1:]).pow(2).sum(), (x64 - x64.mean(0)).pow(2).sum()
    assert (1 - result.explained_variance) == pytest.approx(float(residual / spread), rel=1e-4)
    # cross-entropy: clean, spliced and zeroed, against passes patched by hand
    assert result.ce_clean == pytest.approx(_clean_ce(lm), abs=1e-5)
    assert result.ce_zero == pytest.approx(ce_by_hand(lm, hook, 0.0), abs=1e-5)
    assert result.ce_sae == pytest.approx(ce_by_hand(lm, hook, recon[1:].float()), abs=1e-4)
    assert abs(result.ce_sae - result.ce_clean) > 1e-3 and abs(result.ce_zero - result.ce_clean) > 1e-3
    assert result.ce_recovered == pytest.approx((result.ce_zero - result.ce_sae) / (result.ce_zero - result.ce_clean))


@torch.no_grad()
def _clean_ce(lm) -> float:
    ids = ids_of(lm)
    logits = lm.model(input_ids=ids, use_cache=False).logits[0].float()
    return float(torch.nn.functional.cross_entropy(logits[:-1], ids[0, 1:]))


def test_v5_and_v6_folders_of_one_sae_read_the_same(tiny_llama, tmp_path):
    v5 = saes.load(write_sae(tmp_path / "v5", 32, 40, "topk", style="v5", k=7, seed=3), tiny_llama)
    v6 = saes.load(write_sae(tmp_path / "v6", 32, 40, "topk", style="v6", k=7, seed=3), tiny_llama)
    assert (v5.k, v5.hook, v5.layer, v5.architecture) == (v6.k, v6.hook, v6.layer, v6.architecture) == (
        7, "blocks.1.hook_resid_pre", 1, "topk")
    assert all(torch.equal(getattr(v5, n), getattr(v6, n)) for n in ("W_enc", "b_enc", "W_dec", "b_dec"))
    x = torch.randn(5, 32)
    assert torch.equal(v5.encode(x), v6.encode(x)) and int((v5.encode(x) > 0).sum(-1).max()) <= 7
    assert saes.load(tmp_path / "v5") is v5  # read once per version of its files


def test_latent_contributions_are_activation_times_direction(tiny_llama, tmp_path):
    """A latent's direct effect on a logit: activation × its W_dec row through the final RMSNorm, held at the
    final residual there (written out here), · W_U[target]."""
    sae = saes.load(write_sae(tmp_path / "sae", 32, 48, "standard", scale=0.05), tiny_llama)
    result = features_module.features(tiny_llama, TEXT, sae)
    split = features_module.contributions(tiny_llama, result, sae, position=3, target=7)
    h = residual_by_hand(tiny_llama, "blocks.2.hook_resid_post")[3].double()
    norm = tiny_llama.model.model.norm
    scale = (h.pow(2).mean() + norm.variance_epsilon).rsqrt()
    gain, unembed = norm.weight.detach().double(), tiny_llama.model.lm_head.weight.detach().double()
    read = unembed[7] * gain * scale  # (d,)
    _, w = read_by_hand(tmp_path / "sae")
    f = result.activations[3].double()
    expected = {j: float(f[j] * (w["W_dec"][j] @ read)) for j in torch.nonzero(f > 0)[:, 0].tolist()}
    assert sorted(split.latents.tolist()) == sorted(expected)
    for latent, value in zip(split.latents.tolist(), split.contributions.tolist()):
        assert value == pytest.approx(expected[latent], rel=1e-9, abs=1e-12)
    assert list(split.contributions.abs()) == sorted(split.contributions.abs().tolist(), reverse=True)
    default = features_module.contributions(tiny_llama, result, sae, position=3)
    assert default.target_id == int(result.predicted_ids[3])
    effects = saes.latent_tokens(tiny_llama, sae, split.latents[0].item(), result.final_residuals[3], k=4)
    assert saes.latent_tokens(tiny_llama, sae, [split.latents[0].item()], result.final_residuals[3], k=4) == (effects,)
    logits = unembed @ (w["W_dec"][split.latents[0]] * gain * scale)
    assert list(effects.promoted_ids) == logits.topk(4).indices.tolist()
    assert list(effects.suppressed_ids) == (-logits).topk(4).indices.tolist()
    assert effects.promoted_values[0] == pytest.approx(float(logits.max()), rel=1e-5)


def generate_steered(lm, hook: str, value: torch.Tensor | None, n: int) -> list[int]:
    """generate()'s greedy continuation of PROMPT with `value` added to block l's input (a pre-hook) or output
    (a forward hook) at every position."""
    layer, name = int(hook.split(".")[1]), hook.split(".")[2]
    ids = ids_of(lm, PROMPT)
    with HandHooks() as hooks:
        if value is not None:
            def add(x):
                x += value.to(x.dtype)
            (hooks.patch_input if name == "hook_resid_pre" else hooks.patch_output)(block(lm, layer), add)
        with torch.no_grad():
            out = lm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, **GREEDY)
    return out[0, ids.shape[1]:].tolist()


@pytest.mark.parametrize(("model", "hook", "latent", "alpha"), [
    ("tiny_llama", "blocks.1.hook_resid_pre", 5, 3.0),
    ("tiny_gpt2", "blocks.0.hook_resid_post", 11, -2.5),
])
def test_feature_steering_is_generate_with_the_direction_hooked_by_hand(model, hook, latent, alpha, request,
                                                                       tmp_path):
    lm = request.getfixturevalue(model)
    folder = write_sae(tmp_path / "sae", lm.d_model, 24, "standard", hook, "v6", dtype=torch.float16)
    sae = saes.load(folder, lm)
    result = features_module.steer_feature(lm, PROMPT, sae, latent, alpha, max_new_tokens=8)
    row = read_by_hand(folder)[1]["W_dec"][latent]
    assert result.vector_norm == pytest.approx(float(row.norm()), rel=1e-12)
    assert list(result.unsteered.token_ids) == generate_steered(lm, hook, None, 8)
    assert list(result.steered.token_ids) == generate_steered(lm, hook, alpha * row, 8)
    assert result.steered.token_ids != result.unsteered.token_ids  # the direction did something
    assert result.steered.added_norm == pytest.approx(abs(alpha) * result.vector_norm)
    # the unsteered continuation is the steering page's: one cache entry for both
    assert is_cached_result("steering", lm, (result.prompt_ids, 8))


def test_an_sae_sized_for_smollm(smollm, tmp_path, monkeypatch):
    """SmolLM2-sized (d_in 576, 1,152 latents, TopK 16) at block 8's input, found by the embedded name in a
    SAELens 5-style folder like the one lmviz ships: features against a float64 encode by hand, and steering
    against generate()."""
    monkeypatch.setattr(saes, "SAES", tmp_path)
    with pytest.raises(LmvizError, match="not installed"):
        saes.load(saes.DEFAULT_SAE)
    hook = "blocks.8.hook_resid_pre"
    x = residual_by_hand(smollm, hook)
    scale = float(x[1:].double().norm(dim=-1).mean()) / 576**0.5
    write_sae(tmp_path / saes.DEFAULT_SAE, 576, 1152, "topk", hook, "v5", k=16, dtype=torch.float16, scale=scale)
    sae = saes.load(saes.DEFAULT_SAE, smollm)
    assert (sae.name, sae.k) == (saes.DEFAULT_SAE, 16)
    result = features_module.features(smollm, TEXT, sae)
    f, _, err = encode_by_hand(tmp_path / saes.DEFAULT_SAE, x)
    assert ((result.activations.double() - f).abs() <= err).all() and bool((result.l0 == 16).all())
    assert result.ce_zero > result.ce_clean
    row = read_by_hand(tmp_path / saes.DEFAULT_SAE)[1]["W_dec"][3]
    steered = features_module.steer_feature(smollm, PROMPT, sae, 3, 40.0, max_new_tokens=4)
    assert list(steered.steered.token_ids) == generate_steered(smollm, hook, 40.0 * row, 4)
    assert steered.steered.token_ids != steered.unsteered.token_ids


# ---------------------------------------------------------------- refusals


def _base(tmp_path: Path) -> Path:
    return write_sae(tmp_path / "bad", 32, 16, "topk", "blocks.1.hook_resid_pre", "v6", k=4)


def _cfg(change):
    def apply(folder: Path):
        cfg = json.loads((folder / "cfg.json").read_text())
        change(cfg)
        (folder / "cfg.json").write_text(json.dumps(cfg))
    return apply


def _tensors(change):
    def apply(folder: Path):
        tensors = load_file(folder / "sae_weights.safetensors")
        change(tensors)
        save_file(tensors, folder / "sae_weights.safetensors")
    return apply


REFUSALS = [
    (lambda f: (f / "cfg.json").unlink(), "has no cfg.json"),
    (lambda f: (f / "sae_weights.safetensors").unlink(), "has no sae_weights.safetensors"),
    (lambda f: ((f / "sae_weights.safetensors").rename(f / "sae_weights.pt")), "safetensors only.*pickle"),
    (lambda f: (f / "cfg.json").write_text("{not json"), "cfg.json is not JSON"),
    (lambda f: (f / "cfg.json").write_text("[1, 2]"), "holds no JSON object"),
    (lambda f: (f / "sae_weights.safetensors").write_bytes(b"\x00" * 40), "not a readable safetensors file"),
    (_cfg(lambda c: c.update(architecture="gated")), "architecture 'gated' is not one lmviz applies"),
    (_cfg(lambda c: c["metadata"].update(hook_name="blocks.1.hook_mlp_out")), "hook_name 'blocks.1.hook_mlp_out'"),
    (_cfg(lambda c: c["metadata"].update(hook_name="blocks.1.attn.hook_z")), "hook_name 'blocks.1.attn.hook_z'"),
    (_cfg(lambda c: c["metadata"].pop("hook_name")), "hook_name None"),
    (_cfg(lambda c: c.update(hook_name="blocks.0.hook_resid_pre")), "hook_name is .* at the top but"),
    (_cfg(lambda c: c.update(hook_layer=2)), "hook_layer 2 disagrees"),
    (_cfg(lambda c: c["metadata"].update(hook_head_index=3)), "hook_head_index is set"),
    (_cfg(lambda c: c.update(normalize_activations="expected_average_only_in")), "normalize_activations is"),
    (_cfg(lambda c: c.update(normalize_activations="layer_norm")), "normalize_activations is 'layer_norm'"),
    (_cfg(lambda c: c.update(reshape_activations="hook_z")), "reshape_activations is 'hook_z'"),
    (_cfg(lambda c: c.update(finetuning_scaling_factor=True)), "finetuning_scaling_factor is set"),
    (_cfg(lambda c: c.update(apply_b_dec_to_input="yes")), "apply_b_dec_to_input must be true or false"),
    (_cfg(lambda c: c.update(dtype="int8")), "dtype 'int8' is not a floating-point"),
    (_cfg(lambda c: c.update(d_in=0)), "d_in must be a positive whole number"),
    (_cfg(lambda c: c.update(d_sae="16")), "d_sae must be a positive whole number"),
    (_cfg(lambda c: c.pop("k")), "k must be a whole number from 1 to d_sae"),
    (_cfg(lambda c: c.update(k=17)), r"k must be a whole number from 1 to d_sae \(16\)"),
    (_cfg(lambda c: c.update(activation_fn_kwargs={"k": 3})), "k is 4 but activation_fn_kwargs.k is 3"),
    (_cfg(lambda c: c.update(architecture="standard", activation_fn_str="tanh-relu")),
     "activation_fn 'tanh-relu' does not go with architecture 'standard'"),
    (_cfg(lambda c: c.update(architecture="standard", rescale_acts_by_decoder_norm=True)),
     "rescale_acts_by_decoder_norm True applies to a topk SAE only"),
    (_cfg(lambda c: c.update(architecture="jumprelu")), "has no threshold, which a jumprelu SAE needs"),
    (_tensors(lambda t: t.update(W_enc=t["W_enc"][:, :15].contiguous())),
     r"W_enc has shape \(32, 15\), not \(32, 16\)"),
    (_tensors(lambda t: t.pop("b_dec")), "has no b_dec"),
    (_tensors(lambda t: t.update(W_dec=t["W_dec"].to(torch.int32))), "W_dec is int32, not floating point"),
    (_tensors(lambda t: t["b_enc"].__setitem__(0, float("nan"))), "b_enc holds NaN"),
    (_tensors(lambda t: t.update(extra=torch.zeros(3))), "extra is not a weight of a topk SAE"),
    (_tensors(lambda t: t.update(scaling_factor=torch.full((16,), 2.0))), "scaling_factor is not all ones"),
]


@pytest.mark.parametrize(("break_it", "message"), REFUSALS)
def test_folders_lmviz_cannot_apply_are_refused_in_one_line(break_it, message, tmp_path):
    folder = _base(tmp_path)
    break_it(folder)
    with pytest.raises(LmvizError, match=message) as error:
        saes.load(folder)
    assert "\n" not in str(error.value)


def test_harmless_extras_are_read(tmp_path):
    folder = _base(tmp_path)
    _tensors(lambda t: t.update(scaling_factor=torch.ones(16)))(folder)  # SAELens wrote all-ones for a while
    _cfg(lambda c: c.update(hook_name="blocks.1.hook_resid_pre", hook_layer=1, activation_fn_kwargs={"k": 4}))(folder)
    assert saes.load(folder).k == 4


def test_refusals_against_the_model_and_the_request(tiny_llama, tiny_gpt2, tiny_bert, tmp_path):
    sae = saes.load(_base(tmp_path))
    deep = saes.load(write_sae(tmp_path / "deep", 32, 16, hook="blocks.7.hook_resid_post"))
    cases = [
        (lambda: saes.load("no-such-sae"), "No SAE named 'no-such-sae'"),
        (lambda: saes.load(" "), "Name an SAE"),
        (lambda: saes.load(write_sae(tmp_path / "narrow", 16, 8), tiny_gpt2),
         r"reads 16 numbers per position \(d_in\), but .* has 32 \(d_model\)"),
        (lambda: deep.check(tiny_llama), r"reads blocks.7.hook_resid_post, but .* has blocks 0..2"),
        (lambda: features_module.features(tiny_bert, TEXT, sae), "causal"),
        (lambda: features_module.features(tiny_llama, TEXT, sae, k=0), "between 1 and 16 latents"),
        (lambda: features_module.features(tiny_llama, "Paris " * 600, sae), "at most"),
        (lambda: features_module.features(tiny_llama, "", sae), "empty"),
        (lambda: features_module.contributions(tiny_llama, features_module.features(tiny_llama, TEXT, sae), sae, 99),
         "Position 99 is outside"),
        (lambda: features_module.contributions(tiny_llama, features_module.features(tiny_llama, TEXT, sae), sae,
                                               1, 10**6), "outside .* vocabulary"),
        (lambda: features_module.steer_feature(tiny_llama, PROMPT, sae, 16, 1.0), r"Latent 16 is outside .*0..15"),
        (lambda: features_module.steer_feature(tiny_llama, PROMPT, sae, -1, 1.0), "Latent -1 is outside"),
        (lambda: features_module.steer_feature(tiny_llama, PROMPT, sae, 1.5, 1.0), "Latent 1.5 is outside"),
        (lambda: features_module.steer_feature(tiny_llama, PROMPT, sae, 1, float("nan")), "finite"),
        (lambda: features_module.steer_feature(tiny_llama, PROMPT, sae, 1, "much"), "alpha must be a number"),
        (lambda: features_module.steer_feature(tiny_llama, PROMPT, sae, 1, 1.0, 0), "between 1 and"),
        (lambda: features_module.steer_feature(tiny_bert, PROMPT, sae, 1, 1.0), "causal"),
    ]
    for run, message in cases:
        with pytest.raises(LmvizError, match=message) as error:
            run()
        assert "\n" not in str(error.value)
