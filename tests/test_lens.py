"""The logit lens against an independent computation written here with plain transformers and torch.

The reference below loads each model again with transformers, runs it with
output_hidden_states=True, builds the FULL (layer+1, pos, vocab) logits the
slow way (the final norm by its attribute name per architecture, lm_head,
Gemma's soft-capping from the config) and computes every statistic in float64.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pandas as pd
import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from lmviz import cli
from lmviz.analyses import lens
from lmviz.model import models
from lmviz.present.tables import lens as tables
from lmviz.forward import trace as tracing
from lmviz.model.head import Head
from lmviz.errors import LmvizError
from tests import bounds

TEXT = "The capital of France is Paris, and the capital of England is"

FINAL_NORM = {  # written out per architecture, independently of lmviz.model.models.FINAL_NORM_PATHS
    "gpt2": lambda m: m.transformer.ln_f,
    "llama": lambda m: m.model.norm,
    "gemma3_text": lambda m: m.model.norm,
    "gpt_neox": lambda m: m.gpt_neox.final_layer_norm,
    "stablelm": lambda m: m.model.norm,
}


class ShiftedLlama(LlamaForCausalLM):
    """Adds 1 to every logit after the head: no final norm, scale or cap explains that."""

    def forward(self, *args, **kwargs):
        output = super().forward(*args, **kwargs)
        output.logits = output.logits + 1.0
        return output


@torch.no_grad()
def own_logits(lm, t) -> torch.Tensor:
    """(pos, vocab) the model's logits from a plain forward pass, not through lmviz."""
    return lm.model(t.input_ids[None]).logits[0].float()


@torch.no_grad()
def reference(model, input_ids: torch.Tensor, normalize: bool, watched=(), k: int = 10) -> dict:
    """Every lens statistic, from full logits, in float64; with `logit_error` (layer+1, pos), the bound on
    how far lmviz's float32 logits may be from these (same products, another order: see tests/bounds.py)."""
    out = model(input_ids[None], output_hidden_states=True)
    hidden = out.hidden_states  # tuple of L+1 tensors (1, pos, d); the last one already normed
    norm = FINAL_NORM[model.config.model_type](model)
    cap = getattr(model.config, "final_logit_softcapping", None)
    unembed = model.lm_head if hasattr(model, "lm_head") else model.embed_out

    def head(h):
        logits = unembed(h)
        return torch.tanh(logits / cap) * cap if cap else logits

    inputs = [norm(h) if normalize else h for h in hidden[:-1]] + [hidden[-1]]
    rows = [head(h) for h in inputs[:-1]]
    rows.append(out.logits if normalize else head(hidden[-1]))
    logits = torch.cat(rows).double()  # (layer+1, pos, vocab)
    bound = Head(nn.Identity(), unembed, softcap=cap).error_bound
    logit_error = torch.cat([bound(h).amax(-1) for h in inputs]).double()
    logp = torch.log_softmax(logits, dim=-1)
    final = torch.log_softmax(out.logits[0].double(), dim=-1)  # (pos, vocab)
    next_ids = input_ids[1:]
    target = logits[:, :-1].gather(-1, next_ids.view(1, -1, 1).expand(logits.shape[0], -1, 1))  # (layer+1, pos-1, 1)
    gap = 2 * logit_error[..., None]  # logits closer than lmviz's rounding allows count as ties
    watched = list(watched)
    w_logits = logits[..., watched]  # (layer+1, pos, w)
    top = torch.topk(logits, k, dim=-1)
    return {
        "logits": logits,
        "logit_error": logit_error,
        "top_ids": top.indices,
        "top_probs": logp.gather(-1, top.indices).exp(),
        "entropy": -(logp.exp() * logp).sum(-1),
        "kl": (final.exp() * (final - logp)).sum(-1),
        "nll": -logp[:, :-1].gather(-1, next_ids.view(1, -1, 1).expand(logp.shape[0], -1, 1))[..., 0],
        "rank_low": (logits[:, :-1] > target + gap[:, :-1]).sum(-1),
        "rank_high": (logits[:, :-1] > target - gap[:, :-1]).sum(-1),
        "watched_probs": logp[..., watched].exp(),
        "watched_rank_low": (logits.unsqueeze(-2) > (w_logits + gap).unsqueeze(-1)).sum(-1),
        "watched_rank_high": (logits.unsqueeze(-2) > (w_logits - gap).unsqueeze(-1)).sum(-1),
    }


def assert_matches(result: lens.LensResult, ref: dict) -> None:
    """lmviz's lens against the float64 reference, every tolerance from tests/bounds.py."""
    n = ref["logits"].shape[0]
    assert result.top_ids.shape == ref["top_ids"].shape and result.n_layers == n - 1
    error = ref["logit_error"]  # (layer+1, pos)
    eps = bounds.log_softmax_bound(ref["logits"], error)  # (layer+1, pos): log-probabilities
    # top-k: same tokens in the same order, unless two logits are within rounding of each other
    top_logits = ref["logits"].gather(-1, result.top_ids)
    assert ((top_logits - ref["logits"].gather(-1, ref["top_ids"])).abs() <= 2 * error[..., None]).all()
    assert (result.top_ids == ref["top_ids"]).float().mean() > 0.99
    assert ((result.top_probs.double() - ref["top_probs"]).abs() <= bounds.prob_bound(ref["top_probs"], eps[..., None])).all()
    p = ref["logits"].softmax(-1)
    assert ((result.entropy.double() - ref["entropy"]).abs() <= bounds.entropy_bound(p, eps)).all()
    vocab = ref["logits"].shape[-1]
    kl_bound = 2 * (eps + eps[-1:]) + bounds.sum_bound(vocab, 1.0) * (1 + ref["logits"].abs().amax(-1))
    assert ((result.kl_to_final.double() - ref["kl"].clamp_min(0)).abs() <= kl_bound).all()
    assert ((result.next_token_nll[:, :-1].double() - ref["nll"]).abs() <= eps[:, :-1]).all()
    assert torch.isnan(result.next_token_nll[:, -1]).all() and (result.next_token_rank[:, -1] == -1).all()
    rank = result.next_token_rank[:, :-1]
    assert ((ref["rank_low"] <= rank) & (rank <= ref["rank_high"])).all()
    watched_bound = bounds.prob_bound(ref["watched_probs"], eps[..., None])
    assert ((result.watched_probs.double() - ref["watched_probs"]).abs() <= watched_bound).all()
    assert ((ref["watched_rank_low"] <= result.watched_ranks) & (result.watched_ranks <= ref["watched_rank_high"])).all()
    assert result.max_final_error <= float(error[-1].max())


def assert_top_ids(top_ids: torch.Tensor, logits: torch.Tensor, error: torch.Tensor) -> None:
    """top_ids (pos, k) are the k best of logits (pos, vocab), in order, up to logits within 2·error of each other."""
    best = logits.topk(top_ids.shape[-1], -1).values
    assert ((logits.gather(-1, top_ids) - best).abs() <= 2 * error[:, None]).all()


def reference_model(directory: str):
    return AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gemma3", "neox"])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("tiles", [{}, {"rows_per_block": 8, "vocab_block": 50}])
def test_tiny_models_match_reference(arch, normalize, tiles, request, tiny_dirs, tiny_lens_dirs):
    lm = request.getfixturevalue(f"tiny_{arch}")
    directory = {**tiny_dirs, **tiny_lens_dirs}[arch]
    t = tracing.trace(lm, TEXT)
    watched = lens.resolve_watched(lm, [" Paris", " capital", "is"])
    result = lens.run_logit_lens(lm, t, k=7, normalize=normalize, watched_ids=watched, **tiles)
    assert result.normalized is normalize and result.k == 7
    ref = reference(reference_model(directory), t.input_ids, normalize, watched, k=7)
    assert_matches(result, ref)


@torch.no_grad()
def test_gemma_soft_capping_is_applied(tiny_gemma3):
    t = tracing.trace(tiny_gemma3, TEXT)
    assert tiny_gemma3.head.softcap == 0.5
    assert own_logits(tiny_gemma3, t).abs().max() < 0.5  # the model's logits are capped …
    result = lens.run_logit_lens(tiny_gemma3, t, k=3)
    h = tiny_gemma3.model.model.norm(t.hidden[0])
    uncapped = torch.log_softmax(h @ tiny_gemma3.model.lm_head.weight.T, -1)
    # … and so is the lens at layer 0: without the cap its probabilities would differ
    assert (result.top_probs[0] - uncapped.gather(-1, result.top_ids[0]).exp()).abs().max() > 1e-3


def test_last_row_is_the_models_own_output(tiny_llama):
    t = tracing.trace(tiny_llama, TEXT)
    result = lens.run_logit_lens(tiny_llama, t, k=5)
    logits = own_logits(tiny_llama, t)
    error = tiny_llama.head.error_bound(t.hidden[-1]).amax(-1)  # (pos,)
    assert_top_ids(result.top_ids[-1], logits, error)
    assert (result.kl_to_final[-1] == 0).all()
    final = torch.log_softmax(logits.double(), -1)
    eps = bounds.log_softmax_bound(logits, error)
    assert ((result.entropy[-1].double() - -(final.exp() * final).sum(-1)).abs()
            <= bounds.entropy_bound(final.exp(), eps)).all()


def test_norm_applied_exactly_once(tiny_neox):
    """Normalizing the already-normed last hidden state again gives different logits: the lens must not."""
    t = tracing.trace(tiny_neox, TEXT)
    twice = tiny_neox.head.logits(t.hidden[-1], normalize=True)
    logits = own_logits(tiny_neox, t)
    assert (twice - logits).abs().max() > 1e-2
    result = lens.run_logit_lens(tiny_neox, t, k=3)
    error = tiny_neox.head.error_bound(t.hidden[-1]).amax(-1)
    assert_top_ids(result.top_ids[-1], logits, error)


def test_non_linear_head_goes_through_the_module(tiny_dirs, tiny_llama):
    """A head that is not a plain nn.Linear is called whole; the numbers are the same."""
    head = dataclasses.replace(tiny_llama.head, unembed=nn.Sequential(tiny_llama.head.unembed))
    wrapped = dataclasses.replace(tiny_llama, arch=dataclasses.replace(tiny_llama.arch, head=head))
    t = tracing.trace(tiny_llama, TEXT)
    watched = lens.resolve_watched(tiny_llama, [" Paris"])
    for normalize in (True, False):
        result = lens.run_logit_lens(wrapped, t, k=4, normalize=normalize, watched_ids=watched)
        assert_matches(result, reference(reference_model(tiny_dirs["llama"]), t.input_ids, normalize, watched, k=4))


@pytest.mark.parametrize("normalize", [True, False])
def test_embedded_model_matches_reference(smollm, normalize):
    """SmolLM2 (30 layers, 49k vocabulary), through its own transformers modules."""
    t = tracing.trace(smollm, "This weekend I plan to")
    watched = lens.resolve_watched(smollm, [" visit", " go"])
    result = lens.run_logit_lens(smollm, t, k=10, normalize=normalize, watched_ids=watched)
    model = smollm.model  # LlamaForCausalLM: reference() reaches model.model.norm and model.lm_head itself
    assert_matches(result, reference(model, t.input_ids, normalize, watched))
    assert result.token(result.top_ids[-1, -1, 0]) == "·visit"
    assert tables.lens_table(result).iloc[0].tolist()[-1] == "·visit"


@pytest.mark.parametrize("normalize", [True, False])
def test_gemma_matches_reference(gemma, normalize):
    """Gemma-3 270M (18 layers, a 262,144-token vocabulary, scaled embeddings) through its own modules."""
    t = tracing.trace(gemma, "The capital of France is")
    watched = lens.resolve_watched(gemma, [" Paris", " London"])
    result = lens.run_logit_lens(gemma, t, k=10, normalize=normalize, watched_ids=watched)
    assert_matches(result, reference(gemma.model, t.input_ids, normalize, watched))
    assert result.n_layers == 18 and result.k == 10


def test_cli_lens_on_gemma_equals_a_plain_lens_of_the_gguf(gemma, gemma_gguf, capsys):
    """`python -m lmviz lens TEXT --model gemma3-270m --json` against a lens written with plain transformers
    on the GGUF file itself (assembled from its packages and dequantized by transformers, not by lmviz)."""
    model, tokenizer = gemma_gguf
    text = "The capital of France is"
    assert cli.main(["lens", text, "--model", "gemma3-270m", "--k", "5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    assert out["input_ids"] == ids[0].tolist()
    ref = reference(model, ids[0], normalize=True, k=5)
    top_probs = torch.tensor(out["top_probs"], dtype=torch.float64)
    eps = bounds.log_softmax_bound(ref["logits"], ref["logit_error"])  # (layer+1, pos)
    assert ((top_probs - ref["top_probs"]).abs() <= bounds.prob_bound(ref["top_probs"], eps[..., None])).all()
    # the same top ids, in order, except where two logits are closer than rounding allows
    top_ids = torch.tensor(out["top_ids"])  # (layer+1, pos, k)
    best = ref["logits"].topk(5, dim=-1).values
    assert ((ref["logits"].gather(-1, top_ids) - best).abs() <= 2 * ref["logit_error"][..., None]).all()


def test_raw_mode_reproduces_seed_004_tables(smollm):
    """Seed 004: pd.DataFrame([[tokenizer.decode(x) for x in y] for y in lm_head(hs[i]).topk(k=10).indices[0]]).T"""
    tokenizer, model = smollm.tokenizer, smollm.model
    input_ids = tokenizer("This weekend I plan to", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        hidden_states = model(input_ids, output_hidden_states=True).hidden_states
    result = lens.run_logit_lens(smollm, tracing.trace(smollm, "This weekend I plan to"), k=10, normalize=False)
    for layer in (0, 15, -1):
        with torch.no_grad():
            logits = model.lm_head(hidden_states[layer])
        seed_ids = pd.DataFrame([[int(x) for x in y] for y in logits.topk(k=10).indices[0]]).T
        seed_text = pd.DataFrame([[tokenizer.decode(x) for x in y] for y in logits.topk(k=10).indices[0]]).T
        ours_ids = tables.lens_table(result, layer=layer, values="id")
        ours_text = tables.lens_table(result, layer=layer, show_whitespace=False)
        assert ours_ids.values.tolist() == seed_ids.values.tolist()
        assert ours_text.shape == seed_text.shape == (10, 5)
        readable = seed_text.map(lambda s: "\ufffd" not in s).values  # decode() loses partial UTF-8 bytes; we keep them
        assert (ours_text.values[readable] == seed_text.values[readable]).all()


def test_frames(tiny_gpt2):
    t = tracing.trace(tiny_gpt2, TEXT)
    result = lens.run_logit_lens(tiny_gpt2, t, k=4)
    by_layer = tables.lens_table(result, layer=1)
    assert by_layer.shape == (4, t.n_tokens) and by_layer.index.name == "rank"
    assert by_layer.iloc[0, 2] == result.token(result.top_ids[1, 2, 0])
    by_pos = tables.lens_table(result, position=3, values="prob")
    assert by_pos.shape == (3, 4) and by_pos.index.name == "layer"
    assert torch.equal(torch.tensor(by_pos.values.tolist()), result.top_probs[:, 3])
    both = tables.lens_table(result, position=-1, values="token+prob")
    assert both.iloc[2, 0].endswith(f"{float(result.top_probs[2, -1, 0]):.3f}")
    long = tables.lens_long_table(result)
    assert len(long) == 3 * t.n_tokens * 4
    row = long[(long.layer == 2) & (long.position == 1) & (long["rank"] == 0)].iloc[0]
    assert row.token_id == result.top_ids[2, 1, 0] and row.next_token == t.tokens[2]
    with pytest.raises(LmvizError, match="layers 0 to 2"):
        tables.lens_table(result, layer=3)
    with pytest.raises(LmvizError, match="positions 0 to"):
        tables.lens_table(result, position=99)


def test_layer_rows_keep_the_last_layer():
    assert lens.layer_rows(30, 4) == [0, 4, 8, 12, 16, 20, 24, 28, 30]
    assert lens.layer_rows(30, 5) == [0, 5, 10, 15, 20, 25, 30]
    assert lens.layer_rows(2, 1) == [0, 1, 2]
    with pytest.raises(LmvizError):
        lens.layer_rows(30, 0)


def test_watched_tokens(tiny_gpt2):
    assert lens.parse_watched(" Paris, London,, ·is") == [" Paris", " London", " is"]
    assert lens.parse_watched("Paris, ·is", leading_space=False) == ["Paris", " is"]
    ids = lens.resolve_watched(tiny_gpt2, [" Paris", " capital", " Paris"])
    assert [tiny_gpt2.tokenizer.decode([i]) for i in ids] == [" Paris", " capital"]  # repeats dropped
    with pytest.raises(LmvizError, match=r"'·London' is not a single token .* tokenizes as '·Lon' \+ 'don'"):
        lens.resolve_watched(tiny_gpt2, [" London"])
    t = tracing.trace(tiny_gpt2, TEXT)
    with pytest.raises(LmvizError, match="outside the vocabulary"):
        lens.run_logit_lens(tiny_gpt2, t, watched_ids=[10**6])


def test_bad_inputs(tiny_gpt2, tiny_llama, tiny_bert, tiny_lens_dirs):
    t = tracing.trace(tiny_gpt2, TEXT)
    for k in (0, 101):
        with pytest.raises(LmvizError, match="k must be"):
            lens.logit_lens(tiny_gpt2, t, k=k)
    with pytest.raises(LmvizError, match="another model"):
        lens.logit_lens(tiny_llama, t)
    with pytest.raises(LmvizError, match="causal"):
        lens.logit_lens(tiny_bert, tracing.trace(tiny_bert, TEXT))
    with pytest.raises(LmvizError, match="causal"):
        lens.logit_lens(tiny_bert, tracing.trace(tiny_bert, TEXT))


def test_a_head_lmviz_cannot_reproduce_is_refused(tiny_dirs):
    """A model whose logits are not its head's output (here: shifted by 1) gets no lens at all."""
    lm = models.describe("shifted", ShiftedLlama.from_pretrained(tiny_dirs["llama"]),
                         models.load(tiny_dirs["llama"]).tokenizer, "causal")
    assert lm.arch.refusal and "ShiftedLlama" in lm.arch.refusal and "\n" not in lm.arch.refusal
    t = tracing.trace(lm, TEXT)
    assert t.own_logits is not None  # its own logits are kept: sampling and loss still work
    with pytest.raises(LmvizError, match="can't reproduce the logits of ShiftedLlama"):
        lens.logit_lens(lm, t)


def test_stablelm_is_exact_without_a_table(tiny_lens_dirs):
    """An architecture nobody wrote down: its final norm is found on the model and verified."""
    lm = models.load(tiny_lens_dirs["stablelm"])
    assert lm.arch.refusal is None and lm.head.norm is lm.model.model.norm
    t = tracing.trace(lm, TEXT)
    assert_matches(lens.run_logit_lens(lm, t, k=5), reference(reference_model(tiny_lens_dirs["stablelm"]),
                                                              t.input_ids, True, k=5))


def test_single_token_and_truncated_text(tiny_gpt2):
    one = lens.run_logit_lens(tiny_gpt2, tracing.trace(tiny_gpt2, "is"), k=3)
    assert one.n_tokens == 1 and torch.isnan(one.next_token_nll).all() and (one.next_token_rank == -1).all()
    long = tracing.trace(tiny_gpt2, "Paris is nice. " * 80, truncate=True)
    result = lens.run_logit_lens(tiny_gpt2, long, k=3)
    assert result.n_tokens == 128 and result.truncated_from > 128


def test_cache_returns_the_same_result(tiny_gpt2, monkeypatch):
    t = tracing.trace(tiny_gpt2, "cache the lens")
    first = lens.logit_lens(tiny_gpt2, t, k=3)
    monkeypatch.setattr(lens, "run_logit_lens", lambda *a, **k: pytest.fail("recomputed"))
    assert lens.logit_lens(tiny_gpt2, t, k=3) is first


def test_cli_lens_json(tiny_dirs, capsys):
    code = cli.main(["lens", TEXT, "--model", tiny_dirs["llama"], "--k", "3", "--raw", "--watch", "Paris", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    model = reference_model(tiny_dirs["llama"])
    ids = torch.tensor(out["input_ids"])
    ref = reference(model, ids, normalize=False, k=3)
    assert out["normalized"] is False and len(out["tokens"]) == len(ids)
    assert torch.tensor(out["top_ids"]).shape == (4, len(ids), 3)
    for layer in range(4):
        assert_top_ids(torch.tensor(out["top_ids"][layer]), ref["logits"][layer], ref["logit_error"][layer])
    eps = bounds.log_softmax_bound(ref["logits"], ref["logit_error"])
    got = torch.tensor(out["top_probs"]).double()
    assert ((got - ref["top_probs"]).abs() <= bounds.prob_bound(ref["top_probs"], eps[..., None])).all()
    entropy_bound = bounds.entropy_bound(ref["logits"].softmax(-1), eps)
    assert ((torch.tensor(out["entropy"]).double() - ref["entropy"]).abs() <= entropy_bound).all()
    assert out["next_token_nll"][0][-1] is None and out["watched"]["tokens"] == [" Paris"]
    assert math.isfinite(out["max_final_error"])


def test_cli_lens_table_and_errors(tiny_dirs, capsys):
    assert cli.main(["lens", "Paris is", "--model", tiny_dirs["gpt2"], "--k", "2"]) == 0
    out = capsys.readouterr().out
    assert "layer" in out and "(output)" in out
    assert cli.main(["lens", "  ", "--model", tiny_dirs["gpt2"]]) == 2
    assert "empty" in capsys.readouterr().err
    assert cli.main(["lens", "Paris", "--model", tiny_dirs["gpt2"], "--watch", "Paris London"]) == 2
    assert "not a single token" in capsys.readouterr().err
    assert cli.main(["lens", "Paris " * 300, "--model", tiny_dirs["gpt2"], "--k", "1", "--json"]) == 0
    captured = capsys.readouterr()
    assert "truncated" in captured.err and json.loads(captured.out)["truncated_from"] > 128


def window_of(ref: dict, first: int, end: int) -> dict:
    """The reference restricted to positions first .. end-1 (next-token entries stop one short at the text's end)."""
    per_position = {key: value[:, first:end] for key, value in ref.items()
                    if key not in ("nll", "rank_low", "rank_high")}
    return {**per_position, **{key: ref[key][:, first:end] for key in ("nll", "rank_low", "rank_high")}}


@pytest.mark.parametrize("window", [(6, 15), (2, 5), (0, 1)])
def test_a_window_of_positions_equals_that_part_of_the_whole_lens(tiny_dirs, tiny_llama, window):
    """Only the positions asked for are computed (what a heatmap shows), and they equal the full reference."""
    t = tracing.trace(tiny_llama, TEXT)
    watched = lens.resolve_watched(tiny_llama, [" Paris"])
    ref = reference(reference_model(tiny_dirs["llama"]), t.input_ids, True, watched, k=5)
    first, end = window if window != (6, 15) else (6, t.n_tokens)  # one window that reaches the text's end
    result = lens.run_logit_lens(tiny_llama, t, k=5, watched_ids=watched, positions=(first, end),
                                 rows_per_block=8, vocab_block=50)
    assert result.first_position == first and result.n_tokens == end - first
    assert result.tokens == t.tokens[first:end]
    part = window_of(ref, first, end)
    if end == t.n_tokens:
        assert_matches(result, part)
    else:  # every position has a next token: compare all columns
        eps = bounds.log_softmax_bound(part["logits"], part["logit_error"])
        assert ((result.next_token_nll.double() - part["nll"]).abs() <= eps).all()
        assert ((result.top_probs.double() - part["top_probs"]).abs()
                <= bounds.prob_bound(part["top_probs"], eps[..., None])).all()
    assert list(tables.lens_table(result).columns) == list(range(first, end))


def test_positions_must_be_a_window_of_the_text(tiny_llama):
    t = tracing.trace(tiny_llama, TEXT)
    for window in [(3, 3), (-1, 2), (0, t.n_tokens + 1)]:
        with pytest.raises(LmvizError, match="not a window"):
            lens.logit_lens(tiny_llama, t, positions=window)
    with pytest.raises(LmvizError, match="A:B"):
        lens.parse_positions("3-7")


def test_cli_positions_window(tiny_dirs, capsys):
    code = cli.main(["lens", TEXT, "--model", tiny_dirs["llama"], "--k", "2", "--positions", "2:6", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["positions"] == [2, 6] and torch.tensor(out["top_ids"]).shape == (4, 4, 2)  # [layer][A..B-1][k]
    assert len(out["next_token_nll"][0]) == 4 and None not in out["next_token_nll"][0]  # 6 has a next token
    assert cli.main(["lens", TEXT, "--model", tiny_dirs["llama"], "--positions", "5:2"]) == 2
    assert "not a window" in capsys.readouterr().err


def test_window_figures_and_tables_equal_those_of_the_whole_lens(tiny_llama):
    """A window's heatmap, tables and trajectories name the same text positions, next tokens and values as
    the whole lens's: also at the window's last column, whose next token lies outside the window."""
    from lmviz.present.plots import lens as plots

    t = tracing.trace(tiny_llama, TEXT)
    watched = lens.resolve_watched(tiny_llama, [" Paris"])
    whole = lens.logit_lens(tiny_llama, t, k=3, watched_ids=watched)
    part = lens.logit_lens(tiny_llama, t, k=3, watched_ids=watched, positions=(4, 9))
    positions, layers = [5, 6, 7, 8], [0, 1, 3]
    assert [part.next_token(p) for p in positions] == [whole.next_token(p) for p in positions]
    assert whole.next_token(t.n_tokens - 1) is None and part.next_token(8) == t.tokens[9]
    for stat in lens.STATISTICS:
        a, b = plots.heatmap(whole, stat, positions, layers), plots.heatmap(part, stat, positions, layers)
        assert a.data[0].x == b.data[0].x and a.data[0].text == b.data[0].text
        assert a.data[0].customdata == b.data[0].customdata
    pd.testing.assert_frame_equal(tables.lens_table(whole, position=6), tables.lens_table(part, position=6))
    pd.testing.assert_frame_equal(tables.lens_table(whole)[positions], tables.lens_table(part)[positions])
    pd.testing.assert_frame_equal(tables.watched_table(whole, 8), tables.watched_table(part, 8))
    full_rows = tables.lens_long_table(whole)
    pd.testing.assert_frame_equal(tables.lens_long_table(part).reset_index(drop=True),
                                  full_rows[full_rows.position.between(4, 8)].reset_index(drop=True))
    assert plots.trajectories(whole, 7).data[0].y == plots.trajectories(part, 7).data[0].y
    with pytest.raises(LmvizError, match="covers positions 4 to 8"):
        tables.lens_table(part, position=2)


def test_progress_is_reported_per_block_of_positions(tiny_llama):
    t = tracing.trace(tiny_llama, TEXT)
    calls = []
    lens.run_logit_lens(tiny_llama, t, k=2, progress=lambda done, total: calls.append((done, total)),
                        rows_per_block=8)  # 8 rows of (layer+1) per block
    per_block = 8 // (tiny_llama.n_layers + 1)
    total = -(-t.n_tokens // per_block)
    assert total > 1 and calls == [(i, total) for i in range(1, total + 1)]
    assert not lens.is_cached(tiny_llama, t, k=2)
    lens.logit_lens(tiny_llama, t, k=2)
    assert lens.is_cached(tiny_llama, t, k=2) and not lens.is_cached(tiny_llama, t, k=2, positions=(0, 3))
