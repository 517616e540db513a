"""What-if generation: take another token at any step, continue from there, and compare the branches.

A branch is the prompt continued by some tokens chosen by hand (`forced`: the
path to the fork, then the alternative) and then greedily, token after token,
by the model alone (temperature 1, no filters: the argmax of its logits), to a
given length: the one decoding loop (`lmviz.forward.decoding.Decoding`) with the
greedy chooser after forced tokens. Every token carries its log-probability
and rank under the model given everything before it, so two branches compare
by the sum of their log-probabilities: how likely the model finds each whole
continuation.

Branches share their prefixes, so together they form a tree (`WhatIfTree`):
one node per distinct prefix, drawn like the beam search tree.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from lmviz.forward import decoding
from lmviz.forward import trace as tracing
from lmviz.forward.cache import cached
from lmviz.errors import LmvizError
from lmviz.model.models import LoadedModel
from lmviz.analyses.sampling import MAX_STEPS
from lmviz.tokens import display_token, token_text


@dataclass(frozen=True)
class Branch:
    """The prompt continued: `forced` tokens chosen by hand, then the model's greedy choices."""

    prompt_ids: tuple[int, ...]  # (prompt,)
    token_ids: tuple[int, ...]  # (new,) generated ids, the forced ones first
    tokens: tuple[str, ...]  # (new,) display strings
    logprobs: tuple[float, ...]  # (new,) log P(token | everything before) under the model, T = 1
    ranks: tuple[int, ...]  # (new,) 1 = the model's top choice there
    forced: int  # how many leading tokens were chosen by hand
    text: str  # the generated ids decoded together
    ended: bool  # an end-of-sequence token came before the length asked for

    @property
    def logprob(self) -> float:
        """Sum of the log-probabilities of the generated tokens: log P(continuation | prompt)."""
        return float(sum(self.logprobs))


def branch(lm: LoadedModel, text: str, forced: tuple[int, ...] = (), steps: int = 10) -> Branch:
    """The cached branch of `text` that takes the tokens `forced` first, then continues greedily to `steps`
    generated tokens in all (fewer if the model ends the text)."""
    lm.require_causal("continuing a text")
    steps = int(steps)
    forced = tuple(int(t) for t in forced)
    if not 1 <= steps <= MAX_STEPS or len(forced) > steps:
        raise LmvizError(f"A branch is 1 to {MAX_STEPS} tokens long and at least as long as its chosen tokens.")
    if any(not 0 <= t < lm.vocab_size for t in forced):
        raise LmvizError(f"A chosen token is outside {lm.name}'s vocabulary (0..{lm.vocab_size - 1}).")
    prompt_ids = tracing.encode(lm, text)
    if len(prompt_ids) + steps > tracing.max_tokens(lm):
        raise tracing.too_long(lm, len(prompt_ids) + steps)
    return cached("what-if", lm, (tuple(prompt_ids), forced, steps), lambda: _run(lm, prompt_ids, forced, steps))


def _run(lm: LoadedModel, prompt_ids: list[int], forced: tuple[int, ...], steps: int) -> Branch:
    tokens = list(itertools.islice(decoding.Decoding(lm.model, prompt_ids, decoding.greedy, forced), steps))
    ids = [t.id for t in tokens]
    with lm.lock:
        shown = tuple(display_token(lm.tokenizer, t) for t in ids)
        text = "".join(token_text(lm.tokenizer, t) for t in ids)
    return Branch(tuple(prompt_ids), tuple(ids), shown, tuple(t.logprob for t in tokens),
                  tuple(t.rank for t in tokens), len(forced), text, len(ids) < steps)


@dataclass(frozen=True)
class Node:
    """One prefix of one or more branches: the token that ends it. Fields as the beam tree's nodes, so
    the same layout draws both."""

    id: int
    parent: int | None  # None for the prompt
    step: int  # tokens generated so far, this one included
    token_id: int | None
    token: str
    logprob: float  # log P(token | parent prefix)
    cumulative: float  # log P(prefix | prompt)
    rank: int | None
    branches: tuple[int, ...]  # indices of the branches through this node
    chosen: bool  # picked by hand (a fork), not by the model


@dataclass(frozen=True)
class WhatIfTree:
    prompt: str
    branches: tuple[Branch, ...]
    nodes: tuple[Node, ...]  # nodes[0] is the prompt


def tree(text: str, branches: list[Branch]) -> WhatIfTree:
    """Merge branches that share a prefix into one tree."""
    by_prefix: dict[tuple[int, ...], int] = {(): 0}
    rows = [dict(id=0, parent=None, step=0, token_id=None, token=text, logprob=0.0, cumulative=0.0, rank=None,
                 branches=[], chosen=False)]
    for index, b in enumerate(branches):
        rows[0]["branches"].append(index)
        cumulative = 0.0
        for step, (token, shown, logprob, rank) in enumerate(zip(b.token_ids, b.tokens, b.logprobs, b.ranks), 1):
            cumulative += logprob
            prefix = b.token_ids[:step]
            if prefix not in by_prefix:
                by_prefix[prefix] = len(rows)
                rows.append(dict(id=len(rows), parent=by_prefix[prefix[:-1]], step=step, token_id=token, token=shown,
                                 logprob=logprob, cumulative=cumulative, rank=rank, branches=[],
                                 chosen=step <= b.forced and rank != 1))
            rows[by_prefix[prefix]]["branches"].append(index)
    nodes = tuple(Node(**{**row, "branches": tuple(row["branches"])}) for row in rows)
    return WhatIfTree(text, tuple(branches), nodes)


@dataclass(frozen=True)
class Alternative:
    token_id: int
    token: str  # display string
    prob: float  # P(token | prompt + prefix) under the model, T = 1


def alternatives(lm: LoadedModel, text: str, prefix: tuple[int, ...], k: int = 10) -> tuple[Alternative, ...]:
    """The model's k most probable next tokens after the prompt and `prefix`: what a fork can take."""
    prompt_ids = tracing.encode(lm, text)
    prefix = tuple(int(t) for t in prefix)

    def compute() -> tuple[Alternative, ...]:
        _, log_probs = decoding.Decoder(lm.model, torch.tensor([prompt_ids + list(prefix)])).step()
        top = torch.topk(log_probs[0].exp(), k)
        with lm.lock:
            return tuple(Alternative(int(i), display_token(lm.tokenizer, int(i)), float(p))
                         for p, i in zip(top.values, top.indices))
    return cached("what-if alternatives", lm, (tuple(prompt_ids), prefix, k), compute)


def encode_branches(branches: list[tuple[int, ...]]) -> str:
    """Branches for a URL: '.'-joined ids, '|' between branches ('' for the model's own path)."""
    return "|".join(".".join(str(t) for t in forced) for forced in branches)


def decode_branches(raw: str) -> list[tuple[int, ...]]:
    """The inverse of encode_branches; the model's own path always comes first."""
    branches = [tuple(int(t) for t in part.split(".") if t) for part in raw.split("|")]
    return [()] + [b for b in branches if b]
