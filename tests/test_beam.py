"""Beam search: finished hypotheses, order and scores equal generate(num_beams=...); the recorded tree is
checked against full forward passes computed here; greedy and sampling equal generate(); bad input."""

from __future__ import annotations

import json

import pytest
import torch

from lmviz.analyses import beam
from lmviz.present.tables import beam as tables
from lmviz.cli import main
from lmviz.errors import LmvizError
from tests import bounds

PROMPT = "This weekend I plan to"
CAPITAL = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"


# ------------------------------------------------------------------ independent references


def prompt_ids(lm, text: str) -> list[int]:
    return lm.tokenizer(text)["input_ids"]


@torch.no_grad()
def generate_beams(lm, text, num_beams, max_new_tokens, length_penalty, early_stopping):
    """transformers' own beam search: (generated rows, padded to one width; sequences_scores)."""
    ids = torch.tensor([prompt_ids(lm, text)])
    out = lm.model.generate(
        ids, num_beams=num_beams, num_return_sequences=num_beams, do_sample=False, max_new_tokens=max_new_tokens,
        length_penalty=length_penalty, early_stopping=early_stopping,
        output_scores=True, return_dict_in_generate=True,
    )
    return out.sequences[:, ids.shape[1]:].tolist(), out.sequences_scores.tolist()


@torch.no_grad()
def token_logprobs(lm, prefix: list[int], continuation: list[int]) -> list[float]:
    """log P(each continuation token | everything before it), from one full forward pass (no cache)."""
    ids = torch.tensor([prefix + continuation])
    logits = lm.model(input_ids=ids).logits[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    start = len(prefix) - 1
    return [float(logp[start + i, token]) for i, token in enumerate(continuation)]


def assert_logprobs(lm, prefix: list[int], continuation: list[int], logprobs) -> None:
    """Each step's log-probability against one pass without a cache. Only for float64 models: a cached and an
    uncached float32 pass are different computations with no useful bound (tests/bounds.py), so the float64
    parametrizations check this, within lmviz's float32 log-softmax bound."""
    if lm.model.dtype != torch.float64:
        return
    with torch.no_grad():
        logits = lm.model(input_ids=torch.tensor([prefix + continuation])).logits[0].double()
    eps = bounds.float32_nll_bound(logits[len(prefix) - 1: len(prefix) - 1 + len(continuation)])
    expected = token_logprobs(lm, prefix, continuation)
    assert all(abs(got - want) <= float(e) for got, want, e in zip(logprobs, expected, eps))


def assert_matches_generate(lm, text, num_beams, max_new_tokens, length_penalty, early_stopping):
    tree = beam.beam_search(lm, text, num_beams, max_new_tokens, length_penalty, early_stopping)
    rows, scores = generate_beams(lm, text, num_beams, max_new_tokens, length_penalty, early_stopping)
    eos = lm.model.generation_config.eos_token_id
    eos = eos if isinstance(eos, list) else [eos]
    padding = {eos[0], lm.model.generation_config.pad_token_id}
    assert len(tree.final) == len(rows) == num_beams
    assert len(rows[0]) == max(h.length for h in tree.final)  # generate pads to the longest hypothesis
    for hypothesis, row, score in zip(tree.final, rows, scores):  # same order, best first
        n = hypothesis.length
        assert list(hypothesis.token_ids) == row[:n]
        assert set(row[n:]) <= padding  # generate pads a shorter hypothesis
        bound = bounds.continuation_bound(lm.model, prompt_ids(lm, text), row[:n])
        assert abs(hypothesis.score - score) <= bound / n**length_penalty
        if lm.model.dtype == torch.float64:  # and from scratch, one pass without a cache (float64: see bounds.py)
            total = sum(token_logprobs(lm, prompt_ids(lm, text), row[:n]))
            assert abs(hypothesis.logprob - total) <= bound
            assert abs(hypothesis.score - total / n**length_penalty) <= bound / n**length_penalty
        assert hypothesis.ended == ("eos" if row[n - 1] in eos else "max_new_tokens")
        assert n == max_new_tokens or row[n - 1] in eos
    assert [h.score for h in tree.final] == sorted((h.score for h in tree.final), reverse=True)
    return tree


@torch.no_grad()
def greedy_tokens(lm, text: str, steps: int) -> list[int]:
    """What greedy decoding (generate) emits: tokens that really come up, to use as EOS."""
    ids = torch.tensor([prompt_ids(lm, text)])
    out = lm.model.generate(ids, do_sample=False, num_beams=1, max_new_tokens=steps)
    return out[0, ids.shape[1]:].tolist()


@torch.no_grad()
def eos_choice(lm, text: str, mode: str):
    """An EOS id (or list) that gets hit: "greedyN" = greedy's N-th token; "pair" = the 2nd and 3rd most
    likely tokens after greedy's first two, so several beams finish at once and the search stops early."""
    greedy = greedy_tokens(lm, text, 3)
    if mode.startswith("greedy"):
        return greedy[int(mode[-1]) - 1]
    logits = lm.model(input_ids=torch.tensor([prompt_ids(lm, text) + greedy[:2]])).logits[0, -1]
    return torch.topk(logits, 3).indices.tolist()[1:]


def likely_token(lm, text: str, step: int) -> int:
    return greedy_tokens(lm, text, step)[step - 1]


# ------------------------------------------------------------------ equality with generate()

SETTINGS = [  # (beams, new tokens, length penalty, early stopping)
    (3, 6, 1.0, False),
    (4, 7, 0.0, "never"),
    (2, 6, 2.0, True),
    (5, 6, -0.5, False),
    (3, 7, 2.0, "never"),
    (4, 8, 1.0, True),
    (3, 8, 0.0, False),
]
EOS_MODES = ["greedy1", "greedy2", "greedy3", "pair"]


@pytest.mark.parametrize("model", ["tiny_gpt2", "tiny_llama", "tiny_gpt2_f64", "tiny_llama_f64"])
@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: "K{}-M{}-lp{}-es{}".format(*s))
def test_matches_generate_without_eos_hits(request, model, settings):
    assert_matches_generate(request.getfixturevalue(model), PROMPT, *settings)


@pytest.mark.parametrize("model", ["tiny_gpt2", "tiny_llama"])
@pytest.mark.parametrize("eos_mode", EOS_MODES)
@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: "K{}-M{}-lp{}-es{}".format(*s))
def test_matches_generate_when_eos_is_hit(request, monkeypatch, model, eos_mode, settings):
    """EOS set to tokens that come up, so hypotheses really finish (and searches stop) early."""
    lm = request.getfixturevalue(model)
    monkeypatch.setattr(lm.model.generation_config, "eos_token_id", eos_choice(lm, PROMPT, eos_mode))
    assert_matches_generate(lm, PROMPT, *settings)


def test_eos_cases_exercise_every_rule(tiny_gpt2, tiny_llama, monkeypatch):
    """The EOS cases above are not vacuous: EOS-ended winners, early stops by both rules, pushed-out hypotheses."""
    seen = set()
    for lm in (tiny_gpt2, tiny_llama):
        for eos in [eos_choice(lm, PROMPT, mode) for mode in EOS_MODES]:
            monkeypatch.setattr(lm.model.generation_config, "eos_token_id", eos)
            for settings in SETTINGS:
                tree = beam.beam_search(lm, PROMPT, *settings)
                if any(h.ended == "eos" for h in tree.final):
                    seen.add("eos in final")
                if tree.steps < tree.max_new_tokens:
                    seen.add("early_stopping=True stop" if tree.early_stopping is True else "no-improvement stop")
                if any(n.status == beam.FINISHED and n.final_rank is None for n in tree.nodes):
                    seen.add("pushed out")
                if any(n.status == beam.PRUNED and "only the first" in n.reason for n in tree.nodes):
                    seen.add("eos outside the first K")
    assert seen == {"eos in final", "early_stopping=True stop", "no-improvement stop", "pushed out",
                    "eos outside the first K"}


@pytest.mark.parametrize("settings", [
    (3, 8, 1.0, False),
    (4, 6, 0.0, "never"),
    (2, 8, 2.0, True),
    (5, 6, -0.5, False),
], ids=lambda s: "K{}-M{}-lp{}-es{}".format(*s))
def test_matches_generate_on_embedded_model(smollm, settings):
    assert_matches_generate(smollm, PROMPT, *settings)


@pytest.mark.parametrize("settings", [(3, 12, 1.0, False), (3, 12, 0.0, True), (4, 12, 2.0, "never")],
                         ids=lambda s: "K{}-M{}-lp{}-es{}".format(*s))
def test_matches_generate_on_embedded_model_with_real_eos(smollm, settings):
    """A chat prompt the model answers in a few words and closes with its own EOS (<|im_end|>)."""
    tree = assert_matches_generate(smollm, CAPITAL, *settings)
    assert tree.final[0].ended == "eos" and tree.final[0].token_ids[-1] == 2
    assert "Paris" in tree.final[0].text


@pytest.mark.parametrize("settings", [(3, 8, 1.0, False), (4, 6, 0.0, "never")],
                         ids=lambda s: "K{}-M{}-lp{}-es{}".format(*s))
def test_matches_generate_on_gemma(gemma, settings):
    """The second embedded architecture: Gemma-3's sliding-window layers and 262k vocabulary."""
    assert_matches_generate(gemma, "The capital of France is", *settings)


# ------------------------------------------------------------------ the recorded tree


@torch.no_grad()
def test_tree_candidates_are_the_best_continuations(tiny_llama_f64, monkeypatch):
    """Every step's ranked candidates against full passes without a cache (float64, so the cache can't matter;
    lmviz's float32 log-softmax within tests/bounds.py); near-ties may come in either order."""
    """Recomputed here without a cache: at every step the 2K ranked candidates are the best
    (beam, token) continuations of the K running beams; the K best that did not end are kept."""
    lm = tiny_llama_f64
    eos = likely_token(lm, PROMPT, 2)
    monkeypatch.setattr(lm.model.generation_config, "eos_token_id", eos)
    K, M = 3, 6
    tree = beam.beam_search(lm, PROMPT, K, M, 1.0, False, alternatives=4)
    prefix = prompt_ids(lm, PROMPT)
    assert tree.nodes[0].parent is None and tree.candidates_per_step == 2 * K
    running = [tree.nodes[0]]
    for step in range(1, tree.steps + 1):
        continuations = []  # (cumulative, parent id, token, logprob)
        for node in running:
            path = [tree.nodes[i].token_id for i in tree.path(node.id)[1:]]
            logits = lm.model(input_ids=torch.tensor([prefix + path])).logits[0, -1].double()
            logp = torch.log_softmax(logits, -1)
            eps = float(bounds.float32_nll_bound(logits))
            for token in range(logp.shape[0]):
                # the cumulative log-probability carries every earlier step's rounding too
                continuations.append((node.cumulative + float(logp[token]), node.id, token, float(logp[token]),
                                      eps * step))
        continuations.sort(key=lambda c: -c[0])
        ranked = sorted((n for n in tree.nodes if n.step == step and n.rank is not None), key=lambda n: n.rank)
        assert len(ranked) == 2 * K
        for i, (node, (cumulative, parent, token, logprob, eps)) in enumerate(zip(ranked, continuations)):
            neighbours = [continuations[j][0] for j in (i - 1, i + 1) if 0 <= j < len(continuations)]
            if all(abs(cumulative - other) > 2 * eps for other in neighbours):
                assert (node.parent, node.token_id) == (parent, token)
            assert abs(node.cumulative - cumulative) <= eps
            assert abs(node.score - cumulative / step) <= eps / step
            if (node.parent, node.token_id) == (parent, token):
                assert abs(node.logprob - logprob) <= eps / step
        not_ended = [n for n in ranked if n.token_id != eos]
        kept = [n for n in ranked if n.status == beam.KEPT]
        if step < M:
            assert kept == not_ended[:K]
        for node in ranked:
            if node.token_id == eos and node.rank >= K:
                assert node.status == beam.PRUNED
        running = kept
    winner = tree.nodes[tree.final[0].node_id]
    assert winner.final_rank == 0 and winner.status == beam.FINISHED
    assert tree.winning_path()[0] == 0 and tree.winning_path()[-1] == winner.id


@torch.no_grad()
def test_alternatives_are_each_beams_most_probable_tokens(tiny_gpt2):
    tree = beam.beam_search(tiny_gpt2, PROMPT, 2, 3, 0.0, False, alternatives=5)
    prefix = prompt_ids(tiny_gpt2, PROMPT)
    for node in tree.nodes:
        if node.status != beam.KEPT or node.step == tree.steps:
            continue
        path = [tree.nodes[i].token_id for i in tree.path(node.id)[1:]]
        logp = torch.log_softmax(tiny_gpt2.model(input_ids=torch.tensor([prefix + path])).logits[0, -1].float(), -1)
        top5 = set(torch.topk(logp, 5).indices.tolist())
        recorded = {n.token_id for n in tree.nodes if n.parent == node.id}
        assert top5 <= recorded


def test_json_round_trip_and_cache(tiny_gpt2):
    tree = beam.beam_search(tiny_gpt2, PROMPT, 3, 4, 1.0, "never")
    assert beam.beam_search(tiny_gpt2, PROMPT, 3, 4, 1.0, "never") is tree  # cached
    data = json.loads(json.dumps(tree.to_dict()))
    assert len(data["nodes"]) == len(tree.nodes) and data["nodes"][5]["id"] == 5
    assert [h["token_ids"] for h in data["final"]] == [list(h.token_ids) for h in tree.final]
    assert data["early_stopping"] == "never" and data["num_beams"] == 3


# ------------------------------------------------------------------ greedy and sampling


@pytest.mark.parametrize("model", ["tiny_gpt2", "tiny_llama", "smollm", "tiny_gpt2_f64", "tiny_llama_f64"])
def test_greedy_equals_generate(request, model):
    lm = request.getfixturevalue(model)
    ids = torch.tensor([prompt_ids(lm, PROMPT)])
    with torch.no_grad():
        expected = lm.model.generate(ids, do_sample=False, num_beams=1, max_new_tokens=8)[0, ids.shape[1]:].tolist()
    run = beam.greedy(lm, PROMPT, 8)
    assert list(run.token_ids) == expected
    assert_logprobs(lm, ids[0].tolist(), expected, run.logprobs)
    assert run.logprob == pytest.approx(sum(run.logprobs))


@pytest.mark.parametrize("model", ["tiny_gpt2", "smollm", "tiny_gpt2_f64"])
@pytest.mark.parametrize("seed", [0, 7])
def test_sampling_equals_generate_with_the_same_seed(request, model, seed):
    lm = request.getfixturevalue(model)
    ids = torch.tensor([prompt_ids(lm, PROMPT)])
    torch.manual_seed(seed)
    with torch.no_grad():
        expected = lm.model.generate(
            ids, do_sample=True, num_beams=1, top_k=0, top_p=1.0, temperature=1.0, max_new_tokens=8,
        )[0, ids.shape[1]:].tolist()
    run = beam.sample(lm, PROMPT, 8, seed=seed)
    assert list(run.token_ids) == expected
    assert_logprobs(lm, ids[0].tolist(), expected, run.logprobs)
    assert run.seed == seed and run.method == "sample"


def test_greedy_stops_at_eos(tiny_llama, monkeypatch):
    eos = likely_token(tiny_llama, PROMPT, 3)
    monkeypatch.setattr(tiny_llama.model.generation_config, "eos_token_id", eos)
    run = beam.greedy(tiny_llama, PROMPT, 8)
    assert run.ended == "eos" and run.token_ids[-1] == eos and len(run.token_ids) <= 3


def test_comparison_table_scores_alike(tiny_gpt2):
    tree = beam.beam_search(tiny_gpt2, PROMPT, 3, 5, 1.0, False)
    greedy, sampled = beam.greedy(tiny_gpt2, PROMPT, 5), beam.sample(tiny_gpt2, PROMPT, 5, seed=3)
    table = tables.comparison_table(tree, greedy, sampled)
    assert table["log-prob (sum)"].tolist() == pytest.approx([greedy.logprob, tree.final[0].logprob, sampled.logprob])
    assert abs(table.iloc[1, -1] - tree.final[0].score) <= 2 * bounds.U32 * abs(tree.final[0].score)  # shown as float32
    final = tables.final_table(tree)
    assert final["rank"].tolist() == [1, 2, 3]


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_beams=0), "at least 1"),
    (dict(num_beams=-2), "at least 1"),
    (dict(num_beams=17), "At most 16 beams"),
    (dict(num_beams=2.5), "whole number"),
    (dict(max_new_tokens=0), "at least 1"),
    (dict(max_new_tokens=500), "At most 128 new tokens"),
    (dict(length_penalty=float("nan")), "finite"),
    (dict(length_penalty="long"), "must be a number"),
    (dict(early_stopping="maybe"), "true, false or never"),
    (dict(alternatives=-1), "Alternatives"),
])
def test_bad_settings(tiny_gpt2, kwargs, message):
    with pytest.raises(LmvizError, match=message):
        beam.beam_search(tiny_gpt2, PROMPT, **kwargs)


def test_bad_prompts(tiny_gpt2, tiny_bert):
    with pytest.raises(LmvizError, match="empty"):
        beam.beam_search(tiny_gpt2, "   ")
    long_prompt = "Paris " * 60  # the tiny GPT-2 takes 128 tokens
    n = len(prompt_ids(tiny_gpt2, long_prompt))
    with pytest.raises(LmvizError, match=f"at most {128 - n} new tokens fit"):
        beam.beam_search(tiny_gpt2, long_prompt, max_new_tokens=128 - n + 1)
    assert beam.beam_search(tiny_gpt2, long_prompt, 2, 128 - n).steps <= 128 - n  # exactly filling the context is fine
    with pytest.raises(LmvizError, match="causal"):
        beam.beam_search(tiny_bert, "hello")
    with pytest.raises(LmvizError, match="seed"):
        beam.sample(tiny_gpt2, PROMPT, 3, seed=-1)


def test_parse_early_stopping():
    assert [beam.parse_early_stopping(v) for v in ("true", "False", "never", True, False, "1")] == [
        True, False, "never", True, False, True]


# ------------------------------------------------------------------ command line


def test_cli_beam_json_matches_generate(tiny_dirs, tiny_gpt2, capsys):
    argv = ["beam", PROMPT, "--model", tiny_dirs["gpt2"], "--num-beams", "3", "--max-new-tokens", "5",
            "--length-penalty", "0.5", "--early-stopping", "never", "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    rows, scores = generate_beams(tiny_gpt2, PROMPT, 3, 5, 0.5, "never")
    for hypothesis, row in zip(result["final"], rows):
        assert hypothesis["token_ids"] == row[: len(hypothesis["token_ids"])]
    for hypothesis, row, score in zip(result["final"], rows, scores):
        n = len(hypothesis["token_ids"])
        assert abs(hypothesis["score"] - score) <= bounds.continuation_bound(tiny_gpt2.model, prompt_ids(tiny_gpt2, PROMPT), row[:n]) / n**0.5
    assert {"id", "parent", "step", "token_id", "logprob", "cumulative", "score", "status"} <= set(result["nodes"][1])
    assert main(["beam", PROMPT, "--model", tiny_dirs["gpt2"], "--num-beams", "2", "--max-new-tokens", "3"]) == 0
    assert "rank" in capsys.readouterr().out


@pytest.mark.parametrize("extra", [["--num-beams", "0"], ["--num-beams", "99"], ["--max-new-tokens", "0"],
                                   ["--early-stopping", "sometimes"], ["--max-new-tokens", "127"]])
def test_cli_beam_bad_input(tiny_dirs, capsys, extra):
    assert main(["beam", PROMPT, "--model", tiny_dirs["gpt2"], *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("lmviz: ") and "Traceback" not in "".join(err)


def test_a_prompt_longer_than_the_beam_page_takes_gets_one_line(smollm):
    from lmviz.forward.trace import encode

    text = " cat" * (beam.MAX_PROMPT_TOKENS + 1)
    assert len(encode(smollm, text)) > beam.MAX_PROMPT_TOKENS
    for run in (lambda: beam.beam_search(smollm, text), lambda: beam.greedy(smollm, text),
                lambda: beam.sample(smollm, text)):
        with pytest.raises(LmvizError, match=f"beam search here takes at most {beam.MAX_PROMPT_TOKENS}"):
            run()
