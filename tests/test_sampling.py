"""lmviz.analyses.sampling against independent computations: the lecture's printed table, transformers'
logits processors, plain torch softmax/entropy, and model.generate(do_sample=...) itself."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
from transformers import (
    LogitsProcessorList,
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)

from lmviz.analyses import sampling
from lmviz.forward import decoding
from lmviz.present.tables import sampling as tables
from lmviz.forward import trace as tracing
from lmviz.forward.cache import CACHE
from lmviz.cli import main
from lmviz.errors import LmvizError
from lmviz.analyses.sampling import SamplingSettings
from tests import bounds

PROMPT = "This weekend I plan to"

# Seed 003, "Softmax Temperature": the table as printed on the slide.
LECTURE = {
    1.0: [".0321", ".0002", ".0871", ".6438", ".2368"],
    0.3: [".0000", ".0000", ".0012", ".9643", ".0344"],
    10.0: [".1893", ".1148", ".2092", ".2555", ".2312"],
}


def vocab_order(dist: sampling.Distribution, values: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(values)
    out[dist.token_ids] = values
    return out


def next_logits(lm, text: str = PROMPT) -> tuple[torch.Tensor, torch.Tensor]:
    """Input ids and the last-position logits lmviz samples from, after checking them against a plain forward
    pass (not through lmviz) within the rounding bound of the head. Both sides of every comparison below then
    start from the same logits, so a filter's boundary can't move between them."""
    ids = torch.tensor([lm.tokenizer(text)["input_ids"]])
    with torch.no_grad():
        plain = lm.model(ids).logits[0, -1].float()
    t = tracing.trace(lm, text)
    bound = lm.head.error_bound(t.hidden[-1, -1:])[0]
    assert ((t.last_logits - plain).abs() <= bound).all()
    return ids, t.last_logits


def assert_softmax_close(got: torch.Tensor, scores: torch.Tensor) -> None:
    """got (float32, vocabulary order) against softmax(scores) in float64: zero where a score is -inf, and
    within twice the float32 softmax bound elsewhere (lmviz's rounding and the reference's)."""
    kept = torch.isfinite(scores)
    assert (got[~kept] == 0).all()
    p = torch.softmax(scores[kept].double(), -1)
    eps = 2 * bounds.log_softmax_bound(scores[kept])
    assert ((got[kept].double() - p).abs() <= bounds.prob_bound(p, eps)).all()


# ------------------------------------------------------------------ toy mode


def test_toy_reproduces_the_lecture_table_digit_for_digit():
    toy = sampling.toy_softmax([1, -4, 2, 4, 3], [1, 0.3, 10])
    for t, row in zip(toy.temperatures, toy.probs.tolist()):
        assert [sampling.lecture_number(p) for p in row] == LECTURE[t]
    frame = tables.toy_table(toy)
    assert frame.loc["σ_0.3(x)"].tolist() == LECTURE[0.3]
    assert frame.loc["x"].tolist() == ["1", "-4", "2", "4", "3"]


def test_toy_against_plain_softmax_and_shift_invariance():
    x = torch.tensor([1.0, -4.0, 2.0, 4.0, 3.0], dtype=torch.float64)
    toy = sampling.toy_softmax(x.tolist(), [0.5, 2.0, 7.0], shift=123.25)
    for t, row, shifted in zip([0.5, 2.0, 7.0], toy.probs, toy.shifted_probs):
        expected = torch.exp(x / t) / torch.exp(x / t).sum()
        assert torch.allclose(row, expected, rtol=1e-12, atol=0)
        assert torch.allclose(shifted, expected, rtol=1e-12, atol=0)
    assert toy.max_shift_change < 1e-12
    shifted_row = tables.toy_table(toy, shifted=True).loc["x + c"].tolist()
    assert shifted_row == ["124.25", "119.25", "125.25", "127.25", "126.25"]


def test_toy_temperature_zero_is_greedy_not_a_division():
    toy = sampling.toy_softmax([1, -4, 2, 4, 3], [0])
    assert toy.probs[0].tolist() == [0.0, 0.0, 0.0, 1.0, 0.0]


@pytest.mark.parametrize("text, message", [
    ("1, x, 3", "'x' is not a number"),
    ("1, nan", "finite"),
    ("inf, 2", "finite"),
    ("", "Type the logits"),
    (" , ; ", "Type the logits"),
])
def test_bad_logit_vectors(text, message):
    with pytest.raises(LmvizError, match=message):
        sampling.parse_numbers(text)


def test_parse_numbers_accepts_brackets_spaces_semicolons():
    assert sampling.parse_numbers("[1, -4 2; 4.5e0 ,3]") == [1.0, -4.0, 2.0, 4.5, 3.0]


def test_nan_or_inf_logits_are_refused():
    for bad in (float("nan"), float("inf"), float("-inf")):
        with pytest.raises(LmvizError, match="finite"):
            sampling.distribution(torch.tensor([1.0, bad, 2.0]), SamplingSettings())


# ------------------------------------------------------------------ settings


@pytest.mark.parametrize("kwargs, message", [
    ({"temperature": -0.5}, "Temperature must be 0"),
    ({"temperature": float("nan")}, "finite"),
    ({"temperature": 1e-7}, "too close to 0"),
    ({"top_p": 0.0}, "top-p must be in"),
    ({"top_p": 1.5}, "top-p must be in"),
    ({"top_k": 0}, "top-k must be a whole number of at least 1"),
    ({"top_k": -3}, "top-k must be"),
    ({"top_k": 2.5}, "top-k must be"),
    ({"min_p": 1.5}, "min-p must be in"),
    ({"typical_p": 0}, "typical-p must be in"),
    ({"repetition_penalty": 0}, "must be positive"),
    ({"temperature": "warm"}, "must be a number"),
])
def test_bad_settings_raise_clear_errors(kwargs, message):
    with pytest.raises(LmvizError, match=message):
        SamplingSettings(**kwargs)


def test_top_k_above_vocabulary_is_clamped_and_said(tiny_gpt2):
    ids, logits = next_logits(tiny_gpt2)
    dist = sampling.distribution(logits, SamplingSettings(top_k=10**6), ids[0])
    assert dist.settings.top_k == logits.numel()
    assert any("more than the" in note and "keeps every token" in note for note in dist.notes)
    assert dist.n_kept == logits.numel()
    assert_softmax_close(vocab_order(dist, dist.probs), logits)


# ------------------------------------------------- distribution vs transformers


SETTINGS_CASES = [
    SamplingSettings(),
    SamplingSettings(temperature=0.7),
    SamplingSettings(temperature=0.7, top_k=50, top_p=0.9),
    SamplingSettings(temperature=1.3, top_p=0.8, min_p=0.05),
    SamplingSettings(temperature=0.9, typical_p=0.7),
    SamplingSettings(temperature=1.1, top_k=200, repetition_penalty=1.4),
]


def transformers_scores(settings: SamplingSettings, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """The processed scores, with the processor list written out by hand in generate()'s order."""
    processors = LogitsProcessorList()
    if settings.repetition_penalty != 1:
        processors.append(RepetitionPenaltyLogitsProcessor(settings.repetition_penalty))
    if settings.temperature != 1:
        processors.append(TemperatureLogitsWarper(settings.temperature))
    if settings.top_k:
        processors.append(TopKLogitsWarper(settings.top_k))
    if settings.top_p < 1:
        processors.append(TopPLogitsWarper(settings.top_p))
    if settings.min_p > 0:
        processors.append(MinPLogitsWarper(settings.min_p))
    if settings.typical_p < 1:
        processors.append(TypicalLogitsWarper(settings.typical_p))
    return processors(ids, logits.unsqueeze(0).clone())[0]


@pytest.mark.parametrize("settings", SETTINGS_CASES, ids=lambda s: s.describe())
def test_distribution_equals_transformers_processors_on_the_embedded_model(smollm, settings):
    ids, logits = next_logits(smollm)
    dist = sampling.next_token(smollm, PROMPT, settings)
    assert dist.vocab_size == 49152 and len(dist) == 49152  # the full vocabulary, no top-50 shortcut
    expected_scores = transformers_scores(settings, ids, logits)
    expected = torch.softmax(expected_scores.double(), -1)
    assert_softmax_close(vocab_order(dist, dist.probs), expected_scores)
    assert torch.equal(vocab_order(dist, dist.probs) > 0, torch.isfinite(expected_scores))
    assert dist.n_kept == int(torch.isfinite(expected_scores).sum())
    # a distribution: its float32 probabilities add up to 1 within their own rounding and the sum's
    eps = 2 * bounds.log_softmax_bound(expected_scores[torch.isfinite(expected_scores)])
    assert abs(float(dist.probs.double().sum()) - 1.0) <= float(torch.expm1(eps)) + bounds.sum_bound(len(dist))
    # the model's own distribution and log-probabilities, untouched by the settings
    assert_softmax_close(vocab_order(dist, dist.model_probs), logits)
    model_eps = 2 * bounds.log_softmax_bound(logits)
    assert ((vocab_order(dist, dist.model_logprobs).double() - torch.log_softmax(logits.double(), -1)).abs()
            <= model_eps).all()
    # entropy and effective vocabulary of the final distribution, in float64 here
    p = expected
    assert abs(dist.entropy - float(-torch.special.xlogy(p, p).sum())) <= float(bounds.entropy_bound(p, eps))
    cumulative = torch.sort(p, descending=True).values.cumsum(0)
    assert abs(dist.effective_vocab - (int((cumulative < 0.9).sum()) + 1)) <= 1


def test_which_filter_removed_each_token(smollm):
    ids, logits = next_logits(smollm)
    dist = sampling.next_token(smollm, PROMPT, SamplingSettings(temperature=0.7, top_k=50, top_p=0.9))
    removed = vocab_order(dist, dist.removed_by.long())
    top50 = torch.topk(logits, 50).indices
    outside = torch.ones_like(logits, dtype=torch.bool)
    outside[top50] = False
    assert (removed[outside] == sampling.TOP_K).all()  # everything past rank 50: top-k
    # inside the top 50, plain torch top-p: keep the best tokens until their mass reaches 0.9
    p = torch.softmax(logits[top50] / 0.7, -1)
    order = torch.argsort(p, descending=True)
    mass_before = torch.cumsum(p[order], 0) - p[order]
    keep = top50[order][mass_before < 0.9]
    assert set(torch.nonzero(removed == sampling.NOT_REMOVED).flatten().tolist()) == set(keep.tolist())
    assert set(torch.nonzero(removed == sampling.TOP_P).flatten().tolist()) == set(top50.tolist()) - set(keep.tolist())
    assert dist.status()[0] == "kept" and dist.status()[-1] == "removed by top-k"
    # ranks follow the logits, and temperature did not change them
    assert torch.equal(dist.token_ids[:50], torch.sort(logits, descending=True, stable=True).indices[:50])
    assert dist.rank[:5].tolist() == [1, 2, 3, 4, 5]


def test_min_p_and_typical_p_attribution(smollm):
    ids, logits = next_logits(smollm)
    dist = sampling.next_token(smollm, PROMPT, SamplingSettings(min_p=0.2))
    p = torch.softmax(logits, -1)
    removed = vocab_order(dist, dist.removed_by.long())
    assert torch.equal(removed == sampling.MIN_P, p < 0.2 * p.max())
    dist = sampling.next_token(smollm, PROMPT, SamplingSettings(typical_p=0.5))
    scores = TypicalLogitsWarper(0.5)(ids, logits.unsqueeze(0).clone())[0]
    assert torch.equal(vocab_order(dist, dist.removed_by.long()) == sampling.TYPICAL_P, torch.isneginf(scores))


def test_repetition_penalty_against_plain_torch(tiny_llama):
    ids, logits = next_logits(tiny_llama, "the capital of the capital")
    dist = sampling.next_token(tiny_llama, "the capital of the capital", SamplingSettings(repetition_penalty=1.5))
    penalized = logits.clone()
    seen = torch.unique(ids[0])
    penalized[seen] = torch.where(logits[seen] < 0, logits[seen] * 1.5, logits[seen] / 1.5)
    assert_softmax_close(vocab_order(dist, dist.probs), penalized)
    assert_softmax_close(vocab_order(dist, dist.tempered_probs), penalized)


def test_temperature_zero_is_greedy(smollm):
    ids, logits = next_logits(smollm)
    dist = sampling.next_token(smollm, PROMPT, SamplingSettings(temperature=0, top_k=5, top_p=0.5))
    winner = int(torch.argmax(logits))
    assert dist.top_id == winner
    assert smollm.tokenizer.decode([winner]) == " visit"
    assert vocab_order(dist, dist.probs)[winner] == 1 and float(dist.probs.sum()) == 1
    assert dist.entropy == 0 and dist.effective_vocab == 1 and dist.n_kept == 1
    assert (dist.removed_by[1:] == sampling.GREEDY).all()
    assert "greedy" in dist.notes[0] and "do_sample=False" in dist.notes[0]
    assert torch.isfinite(dist.model_probs).all()


def test_top_keeps_rows_and_full_vocabulary_summaries(smollm):
    dist = sampling.next_token(smollm, PROMPT, SamplingSettings(temperature=0.8))
    last = int(dist.token_ids[-1])
    cut = dist.top(10, include=(last,))
    assert len(cut) == 11 and int(cut.token_ids[-1]) == last and cut.rank[-1] == 49152
    assert cut.entropy == dist.entropy and cut.n_kept == dist.n_kept
    frame = tables.distribution_table(cut, sampling.label_tokens(smollm, cut.token_ids.tolist()))
    assert frame["token"].iloc[0] == "·visit" and frame["rank"].tolist()[:3] == [1, 2, 3]


def test_masked_model_is_refused(tiny_bert):
    with pytest.raises(LmvizError, match="causal"):
        sampling.next_token(tiny_bert, "hello", SamplingSettings())


# --------------------------------------------------------------------- sweep


def test_sweep_against_a_loop_of_plain_softmaxes(smollm):
    _, logits = next_logits(smollm)
    temps = sampling.temperatures(0.05, 10.0, 50)
    assert temps.shape == (50,) and math.isclose(float(temps[0]), 0.05) and math.isclose(float(temps[-1]), 10.0)
    assert torch.allclose(temps[1:] / temps[:-1], temps[1:2] / temps[0:1])  # log-spaced
    sweep = sampling.temperature_sweep(logits, temps)
    for i, t in enumerate(temps.tolist()):
        p = torch.softmax(logits.double() / t, -1)
        eps = 2 * bounds.log_softmax_bound(logits / t)  # the sweep's float32 rounding and the division's
        assert abs(float(sweep.entropy[i]) - float(-torch.special.xlogy(p, p).sum())) <= float(bounds.entropy_bound(p, eps))
        assert abs(float(sweep.top_prob[i]) - float(p.max())) <= float(bounds.prob_bound(p.max(), eps))
        cumulative = torch.sort(p, descending=True).values.cumsum(0)
        assert abs(int(sweep.effective_vocab[i]) - (int((cumulative < 0.9).sum()) + 1)) <= 1
    assert (sweep.entropy.diff() > 0).all() and (sweep.top_prob.diff() < 0).all()
    assert float(sweep.entropy[-1]) < sweep.max_entropy == math.log(49152)


def test_sweep_bad_ranges():
    with pytest.raises(LmvizError):
        sampling.temperatures(1.0, 0.5)
    with pytest.raises(LmvizError):
        sampling.temperature_sweep(torch.randn(10), torch.tensor([0.0, 1.0]))


# ------------------------------------------------------- step-by-step generation


def generate_reference(lm, n: int, seed: int | None, **kwargs) -> list[int]:
    """transformers' own generate, with arguments written out here."""
    ids = torch.tensor([lm.tokenizer(PROMPT)["input_ids"]])
    if seed is not None:
        torch.manual_seed(seed)
    out = lm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                            pad_token_id=lm.tokenizer.eos_token_id, **kwargs)
    return out[0, ids.shape[1]:].tolist()


def test_greedy_steps_equal_generate(smollm):
    generation = sampling.generate(smollm, PROMPT, SamplingSettings(temperature=0), steps=8)
    assert generation.token_ids == generate_reference(smollm, 8, None, do_sample=False)
    assert generation.seed is None and generation.steps[0].token == "·visit"
    assert all(step.rank == 1 and step.prob == 1.0 for step in generation.steps)
    assert generation.text == PROMPT + smollm.tokenizer.decode(generation.token_ids)


@pytest.mark.parametrize("settings, seed, steps, reference", [
    # seed 0 at T 0.8 / top-p 0.9 ends its answer with <|im_end|> after 21 tokens: the end-of-sequence path
    (SamplingSettings(temperature=0.8, top_p=0.9), 0, 40, dict(temperature=0.8, top_k=0, top_p=0.9)),
    (SamplingSettings(temperature=1.2, top_k=40, min_p=0.05), 3, 10, dict(temperature=1.2, top_k=40, min_p=0.05)),
    (SamplingSettings(repetition_penalty=1.3), 7, 10, dict(top_k=0, repetition_penalty=1.3)),
], ids=["T0.8-p0.9-until-eos", "T1.2-k40-minp", "T1-penalty"])
def test_seeded_sampling_equals_generate(smollm, settings, seed, steps, reference):
    CACHE.forget("generation")
    generation = sampling.generate(smollm, PROMPT, settings, steps=steps, seed=seed)
    expected = generate_reference(smollm, steps, seed, do_sample=True, **reference)
    assert generation.token_ids == expected
    stopped_early = len(expected) < steps
    assert generation.finished == stopped_early == (expected[-1] in decoding.eos_ids(smollm.model))
    for step in generation.steps:  # every chosen token was possible, and its rank/probability recorded
        row = step.distribution.row_of(step.token_id)
        assert step.distribution.removed_by[row] == sampling.NOT_REMOVED and step.prob > 0
        assert step.rank == int(step.distribution.rank[row])


@pytest.mark.parametrize("model", ["tiny_gpt2", "tiny_llama"])
def test_the_one_loop_equals_generate(request, model):
    """lmviz.forward.decoding.Decoding itself: the greedy chooser is generate(do_sample=False); a Sampler is
    generate(do_sample=True) after torch.manual_seed with the same seed, for a couple of settings."""
    lm = request.getfixturevalue(model)
    ids = lm.tokenizer(PROMPT)["input_ids"]

    def run(choose) -> list[int]:
        return [t.id for t in itertools.islice(decoding.Decoding(lm.model, ids, choose), 8)]

    assert run(decoding.greedy) == generate_reference(lm, 8, None, do_sample=False)
    for settings, seed in [(SamplingSettings(temperature=0.7, top_k=20), 3),
                           (SamplingSettings(top_p=0.8, repetition_penalty=1.2), 5)]:
        assert run(sampling.Sampler(settings, seed)) == generate_reference(lm, 8, seed, **settings.generate_kwargs())


def test_one_seed_check():
    assert decoding.check_seed(3) == decoding.check_seed(3.0) == 3 and decoding.check_seed(2**63 - 1) == 2**63 - 1
    for bad in (True, -1, 1.5, 2**63, "3", None):
        with pytest.raises(LmvizError, match="seed must be"):
            decoding.check_seed(bad)


def test_step_distributions_equal_generate_scores(smollm):
    settings = SamplingSettings(temperature=0.9, top_k=30)
    generation = sampling.generate(smollm, PROMPT, settings, steps=4, seed=11, keep=30)
    ids = torch.tensor([smollm.tokenizer(PROMPT)["input_ids"]])
    torch.manual_seed(11)
    out = smollm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=True,
                                temperature=0.9, top_k=30, output_scores=True, return_dict_in_generate=True,
                                pad_token_id=smollm.tokenizer.eos_token_id)
    for step, scores in zip(generation.steps, out.scores):
        probs = torch.softmax(scores[0], -1)
        dist = step.distribution
        assert torch.equal(probs[dist.token_ids], dist.probs)  # bit for bit: the same processors on the same logits
        assert math.isclose(step.prob, float(probs[step.token_id]), rel_tol=0, abs_tol=0)


def test_same_seed_same_text_and_continuing_equals_starting_over(smollm):
    settings = SamplingSettings(temperature=1.0, top_p=0.95)
    CACHE.forget("generation")
    first = sampling.generate(smollm, PROMPT, settings, steps=4, seed=5)
    continued = sampling.generate(smollm, PROMPT, settings, steps=8, seed=5)  # goes on from step 4
    CACHE.forget("generation")
    fresh = sampling.generate(smollm, PROMPT, settings, steps=8, seed=5)
    assert continued.token_ids[:4] == first.token_ids
    assert continued.token_ids == fresh.token_ids
    assert [s.prob for s in continued.steps] == [s.prob for s in fresh.steps]
    other = sampling.generate(smollm, PROMPT, settings, steps=8, seed=6)
    assert other.token_ids != fresh.token_ids


def test_generation_bad_input(smollm, tiny_bert):
    for kwargs, message in [
        (dict(steps=0), "between 1 and"),
        (dict(steps=sampling.MAX_STEPS + 1), "between 1 and"),
        (dict(seed=-1), "seed must be"),
        (dict(seed=1.5), "seed must be"),
    ]:
        with pytest.raises(LmvizError, match=message):
            sampling.generate(smollm, PROMPT, SamplingSettings(), **kwargs)
    with pytest.raises(LmvizError, match="empty"):
        sampling.generate(smollm, "  ", SamplingSettings(temperature=0), steps=2)
    with pytest.raises(LmvizError, match="causal"):
        sampling.generate(tiny_bert, "hello", SamplingSettings(temperature=0), steps=2)


def test_generate_on_a_tiny_gpt2_matches_too(tiny_gpt2):
    ids = torch.tensor([tiny_gpt2.tokenizer(PROMPT)["input_ids"]])
    torch.manual_seed(2)
    out = tiny_gpt2.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=True,
                                   top_k=0, temperature=1.5, pad_token_id=tiny_gpt2.tokenizer.eos_token_id)
    generation = sampling.generate(tiny_gpt2, PROMPT, SamplingSettings(temperature=1.5), steps=8, seed=2)
    assert generation.token_ids == out[0, ids.shape[1]:].tolist()


def test_generate_kwargs_reproduce_generate_defaults_trap():
    kwargs = SamplingSettings(temperature=0.5).generate_kwargs()
    assert kwargs["do_sample"] is True and kwargs["top_k"] == 0  # generate() would otherwise use top_k=50
    assert SamplingSettings(temperature=0).generate_kwargs()["do_sample"] is False


# ----------------------------------------------------------------------- CLI


def test_cli_toy_logits_json(capsys):
    assert main(["sample", "--logits", "1,-4,2,4,3", "--temperature", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [sampling.lecture_number(p) for p in result["probs"]] == LECTURE[1.0]
    assert main(["sample", "--logits=-4,1", "--temperature", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["probs"] == [0.0, 1.0]


def test_cli_text_json_kept_tokens_most_probable_first(smollm, capsys):
    argv = ["sample", PROMPT, "--temperature", "0.7", "--top-k", "50", "--top-p", "0.9", "--min-p", "0.01", "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    ids, logits = next_logits(smollm)
    scores = LogitsProcessorList([TemperatureLogitsWarper(0.7), TopKLogitsWarper(50), TopPLogitsWarper(0.9),
                                  MinPLogitsWarper(0.01)])(ids, logits.unsqueeze(0).clone())[0]
    probs = torch.softmax(scores.double(), -1)
    kept = torch.nonzero(torch.isfinite(scores)).flatten()
    expected_ids = kept[torch.argsort(probs[kept], descending=True, stable=True)].tolist()
    assert result["token_ids"] == expected_ids
    assert result["tokens"][0] == " visit"
    eps = 2 * bounds.log_softmax_bound(scores[kept])
    got = torch.tensor(result["probs"], dtype=torch.float64)
    assert ((got - probs[expected_ids]).abs() <= bounds.prob_bound(probs[expected_ids], eps)).all()
    assert abs(sum(result["probs"]) - 1.0) <= float(torch.expm1(eps)) + bounds.sum_bound(len(expected_ids))
    assert result["probs"] == sorted(result["probs"], reverse=True)


def test_cli_typical_p_json_lists_only_kept_tokens(smollm, capsys):
    """Typical-p can remove the most probable token, so the kept tokens are not the first rows by rank:
    --json must list exactly the tokens transformers' TypicalLogitsWarper keeps, their probabilities summing to 1."""
    assert main(["sample", PROMPT, "--typical-p", "0.2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    ids, logits = next_logits(smollm)
    scores = TypicalLogitsWarper(mass=0.2)(ids, logits.unsqueeze(0).clone())[0]
    assert torch.isneginf(scores[int(logits.argmax())])  # the top token (" visit") is removed: the case at issue
    probs = torch.softmax(scores.double(), -1)
    kept = torch.nonzero(torch.isfinite(scores)).flatten()
    expected_ids = kept[torch.argsort(probs[kept], descending=True, stable=True)].tolist()
    assert result["token_ids"] == expected_ids and result["kept"] == len(expected_ids) == 33
    assert result["tokens"] == [smollm.tokenizer.decode([i]) for i in expected_ids]
    eps = 2 * bounds.log_softmax_bound(scores[kept])
    got = torch.tensor(result["probs"], dtype=torch.float64)
    assert ((got - probs[expected_ids]).abs() <= bounds.prob_bound(probs[expected_ids], eps)).all()
    assert abs(sum(result["probs"]) - 1.0) <= float(torch.expm1(eps)) + bounds.sum_bound(len(expected_ids))


def test_cli_readable_output(smollm, capsys):
    assert main(["sample", PROMPT, "--temperature", "0"]) == 0
    out = capsys.readouterr().out
    assert "1 of 49,152 tokens" in out and "·visit" in out and "greedy" in out


@pytest.mark.parametrize("argv", [
    ["sample", PROMPT, "--temperature", "-1"],
    ["sample", PROMPT, "--top-p", "1.5"],
    ["sample", PROMPT, "--top-p", "0"],
    ["sample", PROMPT, "--top-k", "0"],
    ["sample", "--logits", "1,x,3"],
    ["sample", "--logits", "1,nan"],
    ["sample", "--logits", "1,2", PROMPT],
    ["sample"],
])
def test_cli_bad_input_exit_2(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lmviz: ")
