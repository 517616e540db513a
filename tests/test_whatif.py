"""What-if branches against transformers' generate(): the model's own path is greedy decoding, a fork
continues as generate() does from the forked prefix, and every log-probability is the log-softmax of
generate()'s own logits at that step."""

import itertools

import pytest
import torch

from lmviz.analyses import whatif
from lmviz.forward import decoding
from lmviz.errors import LmvizError
from tests import bounds

TEXT = "This weekend I plan to"
NEUTRAL = dict(do_sample=False, repetition_penalty=1.0, no_repeat_ngram_size=0, top_k=None, top_p=None,
               temperature=None, output_logits=True, return_dict_in_generate=True)


def generate(lm, ids: list[int], steps: int):
    with torch.no_grad():
        return lm.model.generate(torch.tensor([ids]), max_new_tokens=steps, min_new_tokens=steps, **NEUTRAL)


def assert_branch_matches_generate(lm, branch: whatif.Branch) -> None:
    prefix = list(branch.prompt_ids) + list(branch.token_ids[:branch.forced])
    rest = len(branch.token_ids) - branch.forced
    if rest:
        out = generate(lm, prefix, rest)
        assert list(branch.token_ids[branch.forced:]) == out.sequences[0, len(prefix):].tolist()
        for step, logits in enumerate(out.logits):  # (1, vocab) raw logits of each generated step
            logp = torch.log_softmax(logits[0].double(), -1)
            eps = float(bounds.log_softmax_bound(logits[0].float()))
            token = branch.token_ids[branch.forced + step]
            assert abs(branch.logprobs[branch.forced + step] - float(logp[token])) <= eps
            assert branch.ranks[branch.forced + step] == 1 or float(logp.max() - logp[token]) <= 2 * eps


def test_the_models_own_path_is_greedy_decoding(smollm):
    main = whatif.branch(smollm, TEXT, (), 8)
    assert main.forced == 0 and len(main.token_ids) == 8 and set(main.ranks) == {1}
    assert_branch_matches_generate(smollm, main)
    assert main.logprob == pytest.approx(sum(main.logprobs)) and main.logprob < 0


def test_two_forks_form_a_tree(smollm):
    main = whatif.branch(smollm, TEXT, (), 8)
    swim = int(smollm.tokenizer(" swim")["input_ids"][0])
    first = whatif.branch(smollm, TEXT, main.token_ids[:2] + (swim,), 8)
    beach = int(smollm.tokenizer(" beach")["input_ids"][0])
    second = whatif.branch(smollm, TEXT, first.token_ids[:5] + (beach,), 8)
    for branch in (first, second):
        assert_branch_matches_generate(smollm, branch)
    assert first.token_ids[2] == swim and first.ranks[2] > 1 and second.token_ids[5] == beach
    # the forced tokens are scored too: the log-softmax of the full pass over prompt + branch
    with torch.no_grad():
        logits = smollm.model(input_ids=torch.tensor([list(second.prompt_ids) + list(second.token_ids)])).logits[0]
    n = len(second.prompt_ids)
    for step, token in enumerate(second.token_ids):
        row = logits[n - 1 + step].float()
        eps = 2 * float(bounds.log_softmax_bound(row))  # a full pass and a cached one: two roundings
        assert abs(second.logprobs[step] - float(torch.log_softmax(row.double(), -1)[token])) <= eps
    tree = whatif.tree(TEXT, [main, first, second])
    assert len(tree.nodes) == 1 + 8 + 6 + 3  # the prompt, greedy, branch 1 from step 3, branch 2 from step 6
    chosen = [(n.step, n.token_id) for n in tree.nodes if n.chosen]
    assert chosen == [(3, swim), (6, beach)]
    shared = [n for n in tree.nodes if n.branches == (0, 1, 2)]
    assert [n.step for n in shared] == [0, 1, 2]


def test_one_eos_rule(tiny_llama, monkeypatch):
    """A text ends at the first end-of-sequence id, chosen or forced, unless more forced tokens follow it."""
    ids = tiny_llama.tokenizer(TEXT)["input_ids"]

    def run(forced=()) -> list[decoding.Token]:
        return list(itertools.islice(decoding.Decoding(tiny_llama.model, ids, decoding.greedy, forced), 6))

    free = [t.id for t in run()]
    eos, other = free[1], next(t for t in range(10) if t not in free[:2])
    monkeypatch.setattr(tiny_llama.model.generation_config, "eos_token_id", eos)
    assert [(t.id, t.eos) for t in run()] == [(free[0], False), (eos, True)]  # greedy picks it: the end
    assert [(t.id, t.eos) for t in run((other, eos))] == [(other, False), (eos, True)]  # the fork's own token
    through = run((eos, other))  # the path to a fork may pass an EOS id
    assert [(t.id, t.eos) for t in through[:2]] == [(eos, False), (other, False)]


def test_alternatives_are_the_models_top_tokens(smollm):
    options = whatif.alternatives(smollm, TEXT, (), k=5)
    with torch.no_grad():
        logits = smollm.model(input_ids=torch.tensor([smollm.tokenizer(TEXT)["input_ids"]])).logits[0, -1].float()
    probs = torch.softmax(logits.double(), -1)
    eps = float(bounds.log_softmax_bound(logits))
    assert [o.token_id for o in options][:1] == [int(probs.argmax())]
    for option in options:
        assert abs(option.prob - float(probs[option.token_id])) <= float(bounds.prob_bound(probs[option.token_id], eps))


def test_branches_in_the_url_and_bad_requests(smollm):
    branches = [(), (1, 2, 3), (1, 2, 3, 4, 5)]
    assert whatif.decode_branches(whatif.encode_branches(branches[1:])) == branches
    assert whatif.decode_branches("") == [()]
    with pytest.raises(ValueError):
        whatif.decode_branches("1.x")
    with pytest.raises(LmvizError):
        whatif.branch(smollm, TEXT, (1, 2, 3), 2)
    with pytest.raises(LmvizError, match="vocabulary"):
        whatif.branch(smollm, TEXT, (10**7,), 4)
