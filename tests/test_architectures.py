"""The architecture matrix: every causal-LM model type in transformers, built tiny, exact or refused.

For each type that builds tiny here (tests/architecture_zoo.py), loaded through
lmviz.model.models.load like any saved folder, either

- lmviz refuses it with a one-line LmvizError (on load, or for the lens), or
- the logit lens equals a reference that knows nothing of the architecture but
  its blocks: the model itself, run with its last block's output replaced by
  the trace's hidden[i] (cross-checked against transformers' hidden_states in
  tests/test_trace.py), so that whatever the model does after its blocks (norm,
  projection, scale, cap) turns layer i into logits; the loss equals the
  model's own `labels=` loss; and beam search equals `generate()`.

Nothing else is allowed: no wrong numbers, no other exception. The counts are
printed at the end of the run (see conftest.py). Marked `matrix`: deselect with
`-m "not matrix"` for a quick run.
"""

from __future__ import annotations

import math

import pytest
import torch

from lmviz.analyses import beam, lens, loss
from lmviz.model import models
from lmviz.forward import trace as tracing
from lmviz.errors import LmvizError
from tests import architecture_zoo, bounds, tiny_models

TEXT = "The capital of France is Paris, and the capital of England is"
RESULTS: dict[str, str] = {}  # model_type -> "exact" | "refused: …" | "not built: …"
PARTS: dict[str, str] = {}  # model_type -> "exact" | "refused: …": attention patterns and attribution


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_models.byte_level_tokenizer()


@torch.no_grad()
def reference_lens_logits(lm: models.LoadedModel, t: tracing.Trace, layer: int) -> torch.Tensor:
    """(pos, vocab) the model's own logits with its last block's output replaced by the trace's hidden[layer]
    (for the last layer: the model's logits as they are)."""
    if layer == t.n_layers:
        return lm.model(input_ids=t.input_ids[None]).logits[0].float()

    def replace(module, args, output):
        state = t.hidden[layer][None].to(t.hidden.dtype)
        return (state,) + tuple(output[1:]) if isinstance(output, tuple) else state

    handle = lm.arch.blocks[-1].register_forward_hook(replace)
    try:
        return lm.model(input_ids=t.input_ids[None]).logits[0].float()
    finally:
        handle.remove()


def assert_lens_exact(lm: models.LoadedModel) -> None:
    t = tracing.trace(lm, TEXT)
    result = lens.run_logit_lens(lm, t, k=5)
    next_ids = t.input_ids[1:]
    for layer in range(t.n_layers + 1):
        ref = reference_lens_logits(lm, t, layer)  # (pos, vocab) float32
        last = t.head_input if t.head_input is not None else t.hidden[-1]
        normed = lm.head.norm(t.hidden[layer]) if layer < t.n_layers else last
        logit_error = lm.head.error_bound(normed).amax(-1).double()  # (pos,)
        eps = bounds.log_softmax_bound(ref, logit_error) + bounds.log_softmax_bound(ref)  # ours and the reference
        ref_logp = torch.log_softmax(ref.double(), -1)
        top1 = result.top_ids[layer, :, 0]
        # lmviz's top-1 is the reference's argmax, up to logits closer than rounding
        assert (ref_logp.gather(1, top1[:, None])[:, 0] >= ref_logp.amax(-1) - 2 * eps).all(), layer
        p_ref = ref_logp.gather(1, top1[:, None])[:, 0].exp()
        assert ((result.top_probs[layer, :, 0].double() - p_ref).abs() <= bounds.prob_bound(p_ref, eps)).all()
        h_ref = -(ref_logp.exp() * ref_logp).sum(-1)
        assert ((result.entropy[layer].double() - h_ref).abs() <= bounds.entropy_bound(ref_logp.exp(), eps)).all()
        nll_ref = -ref_logp[:-1].gather(1, next_ids[:, None])[:, 0]
        assert ((result.next_token_nll[layer, :-1].double() - nll_ref).abs() <= eps[:-1]).all(), layer


def assert_loss_exact(lm: models.LoadedModel) -> None:
    report = loss.loss_report(lm, TEXT, cross_check=True)
    ids = report.input_ids
    with torch.no_grad():
        logits = lm.model(input_ids=ids[None]).logits[0].float()  # (pos, vocab)
    # every NLL against float64 cross-entropy of the model's own logits
    eps = bounds.log_softmax_bound(logits[:-1])  # (pos - 1,)
    nll = torch.nn.functional.cross_entropy(logits[:-1].double(), ids[1:], reduction="none")
    assert ((report.nll - nll).abs() <= eps).all()
    # and transformers' own labels= loss (float32: its mean of n - 1 terms adds a sum's rounding)
    if lm.arch.labels_shift is not None:
        assert report.model_loss is not None
        slack = float(eps.max()) * 2 + bounds.sum_bound(len(ids), report.mean_nll)
        assert abs(report.mean_nll - report.model_loss) <= slack


def assert_beam_equals_generate(lm: models.LoadedModel) -> None:
    tree = beam.beam_search(lm, "The capital of", num_beams=2, max_new_tokens=3, length_penalty=1.0)
    prompt = torch.tensor([tracing.encode(lm, "The capital of")])
    with torch.no_grad():
        # lmviz's beam search applies no generation-config score settings (the page lists the ones it
        # ignores, e.g. BART's forced_eos_token_id), so generate() runs with them neutral too
        neutral = {name: value for name, value in beam._SCORE_SETTINGS if name in beam.ignored_settings_names(lm)}
        settings = dict(num_beams=2, num_return_sequences=2, do_sample=False, max_new_tokens=3, length_penalty=1.0,
                        early_stopping=False, output_scores=True, return_dict_in_generate=True, **neutral)
        try:
            out = lm.model.generate(prompt, **settings)
        except ValueError as error:  # e.g. RWKV: generate() can't reorder its state for beams; use no cache
            if "cache" not in str(error):
                raise
            out = lm.model.generate(prompt, use_cache=False, **settings)
    rows = out.sequences[:, prompt.shape[1]:].tolist()
    assert len(tree.final) == len(rows) == 2
    for hypothesis, row, score in zip(tree.final, rows, out.sequences_scores.tolist()):
        assert list(hypothesis.token_ids) == row[: hypothesis.length]
        with torch.no_grad():  # the logits along this hypothesis size the rounding of its summed log-probs
            logits = lm.model(input_ids=torch.tensor([prompt[0].tolist() + row])).logits[0].float()
        eps = 2 * float(bounds.log_softmax_bound(logits).sum()) / hypothesis.length
        assert abs(hypothesis.score - score) <= eps


def assert_parts_exact_or_refused(lm: models.LoadedModel, directory) -> str:
    """Attention patterns equal the model's own eager output_attentions (a fresh eager copy of the saved
    folder), and the attribution's parts sum to the logit within the bound lmviz derives; or a one-line
    refusal from both. Returns the outcome for the summary."""
    from transformers import AutoModelForCausalLM

    from lmviz.analyses import attention, attribution

    if lm.arch.decomposition is None:
        assert "\n" not in lm.arch.decomposition_refusal
        with pytest.raises(LmvizError):
            attention.attention(lm, TEXT)
        with pytest.raises(LmvizError):
            attribution.attribute(lm, TEXT)
        return f"refused: {lm.arch.decomposition_refusal}"
    outcomes = []
    try:
        patterns = attention.attention(lm, TEXT)
    except LmvizError as error:
        assert "\n" not in str(error)
        outcomes.append(f"attention refused: {error}")
    else:
        eager = AutoModelForCausalLM.from_pretrained(directory, attn_implementation="eager").eval()
        with torch.no_grad():
            expected = eager(input_ids=torch.tensor([list(patterns.input_ids)]), output_attentions=True).attentions
        start, stop = patterns.queries
        for layer, probs in enumerate(expected):
            assert (patterns.patterns[layer] - probs[0, :, start:stop, :stop]).abs().max() <= 16 * 2.0**-24, layer
    try:
        result = attribution.attribute(lm, TEXT)
    except LmvizError as error:
        assert "\n" not in str(error)
        outcomes.append(f"attribution refused: {error}")
    else:
        partly = assert_parts_sum_to_the_logit(lm, directory, result)
        if partly:
            outcomes.append(partly)
    return "exact" if not outcomes else "refused: " + "; ".join(outcomes)


def assert_parts_sum_to_the_logit(lm: models.LoadedModel, directory, result) -> str | None:
    """The attribution's parts sum to the logit of transformers' own forward pass, not to lmviz's.

    In float64: lmviz loads the folder in float64 and splits the same logit; transformers runs a fresh float64
    copy (the same attention implementation, so both passes take the same steps). Their blocks are the same
    computation, so the parts' sum and transformers' logit differ by float64 rounding (bounds.FLOAT64_SLACK,
    relative to the sizes involved) plus the model's final norm: transformers' norms compute in float32 even
    in a float64 model (RMSNorm's `.to(torch.float32)`), while the parts use it exactly, so its output is off
    by float32 rounding: bounds.linear_bound of the vector the unembedding reads (captured with a plain
    forward hook) and the target's row, times the model's logit scale (fitted on the whole row). A final
    soft-cap (config.final_logit_softcapping) is 1-Lipschitz, so it never widens the gap.

    In float32, against the model's own float32 logit, within the rounding bound lmviz states for its sum.
    Returns a note where lmviz refuses float64 (then transformers must fail there too), else None."""
    from transformers import AutoModelForCausalLM

    from lmviz.analyses import attribution

    cap = getattr(lm.model.config.get_text_config(), "final_logit_softcapping", None)

    def capped(total: float) -> float:
        return cap * math.tanh(total / cap) if cap else total

    ids = torch.tensor([tracing.encode(lm, TEXT)])
    position, target = result.position, result.target_id
    with torch.no_grad():
        own = lm.model(input_ids=ids).logits[0, position, target].item()
    assert abs(capped(result.total) - own) <= result.bound

    lm64 = models.load(str(directory), dtype="float64")
    try:
        exact = attribution.attribute(lm64, TEXT, position=position, target=target)
    except LmvizError as error:  # e.g. MoE experts run by torch._grouped_mm, which has no float64
        with pytest.raises(RuntimeError):  # only where transformers itself can't run it in float64
            AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float64)(input_ids=ids)
        return f"attribution refused in float64 (checked in float32 only): {error}"
    reference = AutoModelForCausalLM.from_pretrained(
        directory, dtype=torch.float64, attn_implementation=lm64.model.config._attn_implementation).eval()
    head = reference.get_output_embeddings()
    seen = []
    handle = head.register_forward_pre_hook(lambda module, args: seen.append(args[0][0, position]))
    try:
        with torch.no_grad():
            row = reference(input_ids=ids).logits[0, position]  # (vocab,)
    finally:
        handle.remove()
    with torch.no_grad():
        raw = head(seen[0])  # (vocab,) before any scale or cap
    logit = float(row[target])
    uncapped = cap * torch.atanh((row / cap).clamp(-1 + 1e-15, 1 - 1e-15)) if cap else row
    scale = abs(float(uncapped @ raw / (raw @ raw)))  # e.g. Cohere's logit_scale, Granite's 1/logits_scaling
    bias = head.bias[target:target + 1] if head.bias is not None else None
    rounding = scale * float(bounds.linear_bound(seen[0], head.weight[target:target + 1], bias)[0])
    size = (abs(exact.embed) + float(exact.attn.abs().sum() + exact.heads.abs().sum() + exact.head_bias.abs().sum())
            + float(exact.mlp.abs().sum()) + abs(exact.constant) + abs(logit))
    gap = abs(capped(exact.total) - logit)
    assert gap <= rounding + bounds.FLOAT64_SLACK * (1 + size), (gap, rounding)
    return None


@pytest.mark.matrix
@pytest.mark.parametrize("model_type", architecture_zoo.causal_model_types())
def test_architecture_is_exact_or_refused(model_type, tokenizer, tmp_path):
    try:
        directory = architecture_zoo.build(model_type, tmp_path / model_type, tokenizer)
    except architecture_zoo.CannotBuild as reason:
        RESULTS[model_type] = f"not built: {reason}"
        pytest.skip(f"{model_type} does not build tiny here: {reason}")
    try:
        lm = models.load(str(directory))
    except LmvizError as error:
        assert "\n" not in str(error)
        RESULTS[model_type] = f"refused on load: {error}"
        return
    try:
        if lm.arch.refusal:
            assert "\n" not in lm.arch.refusal and model_type in lm.arch.refusal
            with pytest.raises(LmvizError):
                lens.logit_lens(lm, tracing.trace(lm, TEXT))
            RESULTS[model_type] = f"refused: {lm.arch.refusal}"
            return
        assert_lens_exact(lm)
        assert_loss_exact(lm)
        assert_beam_equals_generate(lm)
        RESULTS[model_type] = "exact"
        PARTS[model_type] = assert_parts_exact_or_refused(lm, directory)
    finally:
        models.forget(str(directory))
