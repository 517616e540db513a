"""Beam search's finished hypotheses, and beam against greedy and sampling."""

from __future__ import annotations

import pandas as pd

from lmviz.analyses import beam
from lmviz.tokens import visible


def final_table(tree: beam.BeamTree):
    """The returned hypotheses, best first, as a DataFrame (whitespace made visible)."""
    return pd.DataFrame([
        {
            "rank": rank + 1,
            "continuation": visible("".join(h.tokens)),
            "tokens": h.length,
            "ended": h.ended,
            "log-prob (sum)": h.logprob,
            f"score = log-prob / tokens^{tree.length_penalty:g}": h.score,
        }
        for rank, h in enumerate(tree.final)
    ])


def comparison_table(tree: beam.BeamTree, greedy_run: beam.Continuation, sampled: beam.Continuation):
    """Greedy, the beam search winner and a sampled continuation side by side, scored alike."""
    best = tree.final[0]
    lp = tree.length_penalty
    rows = [
        ("greedy", greedy_run.tokens, greedy_run.logprob, greedy_run.ended),
        (f"beam search ({tree.num_beams} beams), #1", best.tokens, best.logprob, best.ended),
        (f"sampling (seed {sampled.seed})", sampled.tokens, sampled.logprob, sampled.ended),
    ]
    return pd.DataFrame([
        {
            "method": method,
            "continuation": visible("".join(tokens)),
            "tokens": len(tokens),
            "ended": ended,
            "log-prob (sum)": logprob,
            "per token": logprob / len(tokens),
            f"score (length penalty {lp:g})": logprob / (len(tokens) ** lp),
        }
        for method, tokens, logprob, ended in rows
    ])
