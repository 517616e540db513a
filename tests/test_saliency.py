"""Token knockout and gradient saliency against references computed here on the plain transformers model.

Knockout's reference hides token i with a hand-built 4-d attention mask (causal, and key i masked for every
query), one unbatched pass per position; lmviz instead batches copies of the text with a 2-d mask and explicit
position ids. The gradients' reference is torch.autograd.grad of the model called with inputs_embeds, one α at
a time. Both sides run float64 (tests/bounds.py: differently batched float64 passes agree within FLOAT64_SLACK
relative), so each comparison allows FLOAT64_SLACK times the size of what it compares, counted once for every
float64 pass that enters the number.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lmviz.analyses import saliency
from lmviz.cli import main
from lmviz.errors import LmvizError
from lmviz.model import models
from tests import architecture_zoo, bounds, tiny_models
from tests.test_cli import same_tokens, shown_with_dots

TEXT = "the capital of france is"
GERMANY = "The capital of Germany is"


def f_of(logits: torch.Tensor, target: int, contrast: int | None) -> torch.Tensor:
    return logits[..., target] - (0 if contrast is None else logits[..., contrast])


@torch.no_grad()
def reference_knockout(model, ids: list[int], target: int, contrast: int | None = None):
    """(F(x), (pos−1,) scores, largest |logit| seen), one pass per hidden position with a 4-d mask."""
    n = len(ids)
    x = torch.tensor([ids])
    clean = model(input_ids=x).logits[0, -1]
    scores, largest = [], float(clean.abs().max())
    for hidden in range(n - 1):
        allowed = torch.ones(n, n, dtype=torch.bool).tril()
        allowed[:, hidden] = False
        mask = torch.zeros(1, 1, n, n, dtype=model.dtype).masked_fill(~allowed, torch.finfo(model.dtype).min)
        knocked = model(input_ids=x, attention_mask=mask).logits[0, -1]
        largest = max(largest, float(knocked.abs().max()))
        scores.append(f_of(clean, target, contrast) - f_of(knocked, target, contrast))
    return float(f_of(clean, target, contrast)), torch.stack(scores).double(), largest


def assert_knockout_exact(lm, text: str, target: str | None = None, contrast: str | None = None) -> None:
    result = saliency.knockout(lm, text, target, contrast)
    ids = lm.tokenizer(text)["input_ids"]
    assert list(result.input_ids) == ids and len(result.scores) == len(ids) - 1
    value, expected, largest = reference_knockout(lm.model, ids, result.target_id, result.contrast_id)
    if target is None:  # the default target is the unmodified run's top token
        with torch.no_grad():
            assert result.target_id == int(lm.model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
    # each score is two F's, each up to two logits, each from a pass batched differently from the reference's
    tolerance = 4 * bounds.FLOAT64_SLACK * (1 + largest)
    assert abs(result.value - value) <= tolerance
    error = (torch.tensor(result.scores, dtype=torch.float64) - expected).abs().max()
    assert error <= tolerance, f"max error {error:.2e} > {tolerance:.2e}"
    assert expected.abs().max() > 1e3 * tolerance  # hiding a token does change F: the comparison means something


@pytest.mark.parametrize("fixture, target, contrast", [
    ("tiny_llama_f64", None, None), ("tiny_llama_f64", "5", "7"), ("tiny_gpt2_f64", None, None),
    ("tiny_gpt2_f64", "9", None),
])
def test_knockout_equals_a_hand_masked_pass_per_position(fixture, target, contrast, request):
    assert_knockout_exact(request.getfixturevalue(fixture), TEXT, target, contrast)


@pytest.mark.parametrize("batch_tokens", [7, 20])  # one copy per pass; passes of 2 copies and a last of 1
def test_knockout_in_chunks(batch_tokens, tiny_llama_f64, monkeypatch):
    monkeypatch.setattr(saliency, "BATCH_TOKENS", batch_tokens)
    assert len(tiny_llama_f64.tokenizer(TEXT)["input_ids"]) == 7
    assert_knockout_exact(tiny_llama_f64, TEXT, "5")


def test_knockout_on_smollm_equals_a_hand_masked_pass(smollm_f64):
    assert_knockout_exact(smollm_f64, GERMANY)
    assert_knockout_exact(smollm_f64, GERMANY, "Berlin", "Hamburg")


@pytest.mark.parametrize("fixture", ["tiny_llama_f64", "tiny_gpt2_f64"])
@torch.no_grad()
def test_a_hidden_token_changes_nothing_before_it(fixture, request):
    """The batch knockout runs (key r hidden in row r, positions unchanged), run on the plain model: the logits
    before r are the unmodified run's; from r on they differ."""
    model = request.getfixturevalue(fixture).model
    ids = request.getfixturevalue(fixture).tokenizer(TEXT)["input_ids"]
    n = len(ids)
    clean = model(input_ids=torch.tensor([ids])).logits[0]
    mask, position_ids = saliency.knockout_inputs(n, list(range(n - 1)))
    assert (position_ids == torch.arange(n)).all()
    knocked = model(input_ids=torch.tensor([ids] * (n - 1)), attention_mask=mask, position_ids=position_ids).logits
    tolerance = bounds.FLOAT64_SLACK * (1 + float(clean.abs().max()))
    for row in range(n - 1):
        assert ((knocked[row, :row] - clean[:row]).abs() <= tolerance).all()
        assert (knocked[row, row:] - clean[row:]).abs().amax(-1).min() > 1e3 * tolerance


def reference_gradients(model, ids: list[int], target: int, contrast: int | None, alphas: list[float]):
    """(e (pos, d), mean over the alphas of ∂F/∂e at α·e (pos, d)), one α per pass, in float64."""
    with torch.no_grad():
        embeds = model.get_input_embeddings()(torch.tensor([ids]))
    total = torch.zeros_like(embeds[0])
    for alpha in alphas:
        x = (alpha * embeds).requires_grad_()
        (grad,) = torch.autograd.grad(f_of(model(inputs_embeds=x).logits[0, -1], target, contrast), x)
        total += grad[0]
    return embeds[0], total / len(alphas)


@pytest.mark.parametrize("fixture", ["tiny_llama_f64", "tiny_gpt2_f64"])
@pytest.mark.parametrize("method, steps, contrast", [
    ("gradient", 64, None), ("input_x_gradient", 64, "7"), ("integrated_gradients", 8, None),
    ("integrated_gradients", 5, "7"),
])
def test_gradients_equal_autograd_by_hand(fixture, method, steps, contrast, request, monkeypatch):
    monkeypatch.setattr(saliency, "BATCH_TOKENS", 14)  # two steps per pass: 5 steps run as 2, 2 and 1
    lm = request.getfixturevalue(fixture)
    result = saliency.saliency(lm, TEXT, method, steps, target="5", contrast=contrast)
    ids = lm.tokenizer(TEXT)["input_ids"]
    contrast_id = None if contrast is None else int(contrast)
    alphas = [(k - 0.5) / steps for k in range(1, steps + 1)] if method == "integrated_gradients" else [1.0]
    embeds, grad = reference_gradients(lm.model, ids, 5, contrast_id, alphas)
    expected = grad.norm(dim=-1) if method == "gradient" else (embeds * grad).sum(-1)
    got = torch.tensor(result.scores, dtype=torch.float64)
    assert got.shape == (len(ids),) and result.target_id == 5 and result.contrast_id == contrast_id
    size = (embeds * grad).abs().sum(-1) + grad.norm(dim=-1)  # bounds |Σ_d e·g| and ‖g‖ alike
    assert (got - expected).abs().max() <= bounds.FLOAT64_SLACK * (1 + float(size.max()))
    assert result.steps == (steps if method == "integrated_gradients" else None)
    with torch.no_grad():
        value = f_of(lm.model(inputs_embeds=embeds[None]).logits[0, -1], 5, contrast_id)
        zero = f_of(lm.model(inputs_embeds=torch.zeros_like(embeds)[None]).logits[0, -1], 5, contrast_id)
    if method == "gradient":
        assert result.completeness_gap is None and result.adds_up is None
    else:
        gap = abs(float(expected.sum() - (value - zero))) / abs(float(value - zero))
        assert result.completeness_gap == pytest.approx(gap, rel=1e-6)
        assert result.adds_up == (gap <= saliency.COMPLETENESS_LIMIT)
    knocked = np.array(saliency.knockout(lm, TEXT, "5", contrast).scores)
    assert result.knockout_correlation == pytest.approx(
        saliency.rank_correlation(expected[:-1].numpy(), np.abs(knocked) if method == "gradient" else knocked))


@pytest.mark.parametrize("fixture", ["tiny_gemma3", "gemma"])
@torch.no_grad()
def test_gemma_input_embeddings_reproduce_the_input_ids_pass(fixture, request):
    """Gemma's embedding module already multiplies by sqrt(d_model), so passing its output as inputs_embeds
    (what the gradients differentiate) is the same pass as input_ids: the same logits, bit for bit."""
    lm = request.getfixturevalue(fixture)
    ids = torch.tensor([lm.tokenizer(GERMANY)["input_ids"]])
    module = lm.model.get_input_embeddings()
    embeds = module(ids)
    scale = torch.tensor(lm.model.config.get_text_config().hidden_size ** 0.5, dtype=embeds.dtype)
    torch.testing.assert_close(embeds, module.weight[ids] * scale, rtol=2 * bounds.U32, atol=0)
    assert torch.equal(lm.model(inputs_embeds=embeds).logits, lm.model(input_ids=ids).logits)


def test_integrated_gradients_converge_on_a_smooth_path(tiny_gpt2_f64):
    """GPT-2 adds position embeddings before its first norm, so F(α·e) is smooth on [0, 1]; the midpoint rule's
    error falls like 1/N²: four times the steps, about a sixteenth of the gap."""
    gaps = [saliency.saliency(tiny_gpt2_f64, TEXT, "integrated_gradients", steps).completeness_gap
            for steps in (2, 8, 32, 128)]
    assert all(before > 8 * after for before, after in zip(gaps, gaps[1:])), gaps
    assert gaps[-1] < saliency.COMPLETENESS_LIMIT / 100


@pytest.mark.parametrize("steps", [16, 64, 256])
def test_integrated_gradients_do_not_add_up_on_smollm(smollm, steps):
    """SmolLM2's F jumps from F(0) = 0 to about 16 within α < 10⁻⁴ (module docstring), so no number of steps
    closes the gap: measured 99%, 168% and 136% at 16, 64 and 256 steps; the result says so."""
    result = saliency.saliency(smollm, GERMANY, "integrated_gradients", steps)
    assert result.completeness_gap > 0.5 and result.adds_up is False
    assert len(result.scores) == 5 and all(np.isfinite(result.scores))


def test_rank_correlation():
    # ties get their average rank: a → 1, 2.5, 2.5, 4; Pearson of those ranks with 1..4 is 4.5 / sqrt(4.5 · 5)
    assert saliency.rank_correlation([1, 2, 2, 3], [10, 20, 30, 40]) == pytest.approx(4.5 / (4.5 * 5) ** 0.5)
    rng = np.random.default_rng(0)
    for _ in range(20):  # without ties: Spearman's formula 1 − 6 Σ d² / (n (n² − 1))
        a, b = rng.normal(size=9), rng.normal(size=9)
        d = np.argsort(np.argsort(a)) - np.argsort(np.argsort(b))
        assert saliency.rank_correlation(a, b) == pytest.approx(1 - 6 * (d ** 2).sum() / (9 * 80))
    assert saliency.rank_correlation([3, 1, 2], np.exp([3, 1, 2])) == pytest.approx(1.0)
    assert saliency.rank_correlation([1, 2, 3], [5, 5, 5]) is None
    assert saliency.rank_correlation([1], [2]) is None


def test_cli_json_round_trip(tiny_dirs, capsys):
    from transformers import AutoTokenizer

    directory = tiny_dirs["llama"]
    lm = models.load(directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    assert main(["knockout", TEXT, "--model", directory, "--target", "5", "--contrast", "7", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    expected = saliency.knockout(lm, TEXT, "5", "7")
    assert out["target_id"] == 5 and out["contrast_id"] == 7 and out["value"] == expected.value
    assert out["scores"] == list(expected.scores) and len(out["scores"]) == len(out["tokens"]) - 1
    assert same_tokens(tokenizer, out["input_ids"], out["tokens"]) and shown_with_dots(out["tokens"], out["display"])
    assert same_tokens(tokenizer, out["target_id"], out["target_token"])

    assert main(["saliency", TEXT, "--model", directory, "--method", "integrated_gradients", "--steps", "8",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    expected = saliency.saliency(lm, TEXT, "integrated_gradients", 8)
    assert out["target_id"] == expected.target_id and out["contrast_id"] is None and out["steps"] == 8
    assert out["scores"] == list(expected.scores) and len(out["scores"]) == len(out["tokens"])
    assert out["completeness_gap"] == expected.completeness_gap and out["adds_up"] == expected.adds_up
    assert out["knockout_correlation"] == expected.knockout_correlation
    assert same_tokens(tokenizer, out["input_ids"], out["tokens"]) and shown_with_dots(out["tokens"], out["display"])

    for argv in (["knockout", TEXT], ["saliency", TEXT, "--method", "gradient"]):
        assert main([*argv, "--model", directory]) == 0
        assert "·capital" in capsys.readouterr().out  # the readable table lists the tokens


def test_refusals_are_one_line(tiny_dirs, tiny_llama, tiny_gpt2, tiny_bert, tmp_path, capsys):
    cases = [
        (lambda: saliency.knockout(tiny_gpt2, "a"), "one token"),
        (lambda: saliency.saliency(tiny_gpt2, "a", "gradient"), "one token"),
        (lambda: saliency.saliency(tiny_llama, TEXT, "attention"), "must be one of"),
        (lambda: saliency.saliency(tiny_llama, TEXT, "integrated_gradients", 0), "steps"),
        (lambda: saliency.knockout(tiny_llama, TEXT, "5", "5"), "same token"),
        (lambda: saliency.knockout(tiny_llama, TEXT, str(10**6)), "outside"),
        (lambda: saliency.knockout(tiny_llama, "a b " * 100), "at most 128"),
        (lambda: saliency.knockout(tiny_bert, "the capital of france"), "causal"),
        (lambda: saliency.saliency(tiny_bert, "the capital of france", "gradient"), "causal"),
    ]
    bloom = models.load(str(architecture_zoo.build("bloom", tmp_path / "bloom", tiny_models.byte_level_tokenizer())))
    cases.append((lambda: saliency.knockout(bloom, TEXT), "position_ids"))  # ALiBi: positions come from the mask
    for call, words in cases:
        with pytest.raises(LmvizError, match=words) as error:
            call()
        assert "\n" not in str(error.value)
    assert main(["saliency", TEXT, "--model", tiny_dirs["llama"], "--method", "bogus"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lmviz: ") and "bogus" in err[0]
