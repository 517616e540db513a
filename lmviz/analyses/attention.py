"""Attention patterns: where every head of every layer looks, and what kind of head it is.

One eager forward pass (`lmviz.model.interventions.run(..., eager=True)`) gives, per
layer, the probabilities each head puts on every earlier key: exactly what the
model's `output_attentions` returns, grouped-query attention included (the key
heads are repeated for their query heads before the softmax, as the model does).

The pass reduces each layer as it comes, so a long text never holds every
layer's (head, query, key) tensor at once. It keeps:

- the patterns of the queries in a window (as the lens page, at most 60 rows),
  over all keys up to the window's end;
- five numbers per (layer, head), averaged over queries 1..n-1 (query 0 can only
  look at itself): the entropy of the row (nats), the probability on the first
  token, on the previous token, on the query itself, and an induction score:
  the probability on the token right after an earlier copy of the query's
  token (the "A B … A → B" pattern; never the query itself), averaged over
  queries that have such a token (NaN when none has).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lmviz.model import interventions
from lmviz.forward import trace as trace_module
from lmviz.forward.cache import cached
from lmviz.errors import LmvizError
from lmviz.model.models import LoadedModel
from lmviz.tokens import display_tokens

MAX_WINDOW = 60  # query rows kept at once, as the lens heatmap
DEFAULT_WINDOW = 24
PATTERN_BUDGET = 256 * 2**20  # bytes of one layer's (head, query, key) float32 probabilities

STATISTICS = {
    "entropy": "entropy of the attention row (nats): low = focused, high = spread",
    "first": "attention to the first token (a 'sink' many heads park on)",
    "previous": "attention to the previous token",
    "self": "attention to the query's own token",
    "induction": "attention to the token after an earlier copy of the query's token (A B … A → B)",
}


@dataclass(frozen=True)
class AttentionResult:
    """Attention probabilities of one text. Dimension names: layer, head, query, key."""

    model_name: str
    text: str
    input_ids: tuple[int, ...]  # (pos,)
    tokens: tuple[str, ...]  # (pos,) display strings
    queries: tuple[int, int]  # the window [start, stop) of query positions kept in `patterns`
    patterns: torch.Tensor  # (layer, head, stop-start, stop) float32: query window x keys 0..stop-1
    stats: dict[str, torch.Tensor]  # name -> (layer, head) float64, see STATISTICS

    @property
    def n_layers(self) -> int:
        return int(self.patterns.shape[0])

    @property
    def n_heads(self) -> int:
        return int(self.patterns.shape[1])

    def pattern(self, layer: int, head: int) -> torch.Tensor:
        """(query, key) of one head: rows are the window's queries, columns keys 0..stop-1."""
        return self.patterns[layer, head]

    def row(self, layer: int, head: int, query: int) -> torch.Tensor:
        """(key,) where one head looks from text position `query` (inside the window)."""
        start, stop = self.queries
        if not start <= query < stop:
            raise LmvizError(f"Query {query} is outside the window {start}..{stop - 1}.")
        return self.patterns[layer, head, query - start, : query + 1]


def max_attention_tokens(lm: LoadedModel) -> int:
    """Longest text whose eager attention fits: one layer's (head, pos, pos) probabilities stay within
    PATTERN_BUDGET (2,730 tokens for SmolLM2's 9 heads), and within what lmviz traces at once."""
    n_heads = lm.arch.require_decomposition(additive=False).n_heads
    return max(1, min(trace_module.max_tokens(lm), int(math.isqrt(PATTERN_BUDGET // (4 * n_heads)))))


def default_window(n_tokens: int, width: int = DEFAULT_WINDOW) -> tuple[int, int]:
    """The last `width` query positions."""
    return max(0, n_tokens - width), n_tokens


def _check_window(window: tuple[int, int] | None, n_tokens: int, widest: int | None = MAX_WINDOW) -> tuple[int, int]:
    start, stop = default_window(n_tokens) if window is None else (int(window[0]), int(window[1]))
    if not 0 <= start < stop <= n_tokens:
        raise LmvizError(f"Query positions {start}..{stop - 1} are outside the text (0..{n_tokens - 1}).")
    if widest is not None and stop - start > widest:
        raise LmvizError(f"Show at most {MAX_WINDOW} query positions at once (asked for {stop - start}).")
    return start, stop


def induction_targets(ids: list[int]) -> list[list[int]]:
    """For every query position q, the keys j+1 < q right after an earlier copy j of ids[q] (the query itself
    is never one: in "!!!" that would score a head that looks at itself)."""
    seen: dict[int, list[int]] = {}
    targets = []
    for q, token in enumerate(ids):
        targets.append([j + 1 for j in seen.get(token, ()) if j + 1 < q])
        seen.setdefault(token, []).append(q)
    return targets


def induction_mask(ids: list[int]) -> torch.Tensor:
    """(query, key) bool: True at the keys right after an earlier copy of the query's token."""
    mask = torch.zeros(len(ids), len(ids), dtype=torch.bool)
    for q, keys in enumerate(induction_targets(ids)):
        mask[q, keys] = True
    return mask


def _statistics(probs: torch.Tensor, induction: torch.Tensor) -> dict[str, torch.Tensor]:
    """(head, query, key) probabilities of one layer -> name -> (head,) float64 means over queries 1..n-1;
    `induction` is induction_mask(ids)."""
    p = probs.double()
    n = p.shape[1]
    if n < 2:
        return {name: torch.full((p.shape[0],), math.nan, dtype=torch.float64) for name in STATISTICS}
    rows = torch.arange(1, n)
    entropy = -torch.special.xlogy(p, p).sum(-1)  # (head, query); 0·log 0 = 0
    scored = induction[1:].any(-1)  # (query-1,) queries with an earlier copy of their token
    after_copy = (p[:, 1:] * induction[1:]).sum(-1)  # (head, query-1)
    return {
        "entropy": entropy[:, 1:].mean(-1),
        "first": p[:, 1:, 0].mean(-1),
        "previous": p[:, rows, rows - 1].mean(-1),
        "self": p[:, rows, rows].mean(-1),
        "induction": after_copy[:, scored].mean(-1) if bool(scored.any())
        else torch.full((p.shape[0],), math.nan, dtype=torch.float64),
    }


def run_attention(lm: LoadedModel, text: str, window: tuple[int, int] | None = None,
                  widest: int | None = MAX_WINDOW) -> AttentionResult:
    """One uncached eager pass over `text` (see the module docstring); widest=None lifts the window's limit
    (the CLI's whole (query, key) matrices)."""
    parts = lm.arch.require_decomposition(additive=False)
    ids = trace_module.encode(lm, text)
    limit = max_attention_tokens(lm)
    if len(ids) > limit:
        raise LmvizError(f"The text is {len(ids)} tokens long; attention patterns of {lm.name} are computed for "
                         f"at most {limit} tokens (one layer's patterns must fit {PATTERN_BUDGET // 2**20} MB). "
                         "Shorten it.")
    start, stop = _check_window(window if window is not None or widest else (0, len(ids)), len(ids), widest)
    n_layers = len(parts.attentions)
    patterns = torch.full((n_layers, parts.n_heads, stop - start, stop), math.nan)
    stats = {name: torch.full((n_layers, parts.n_heads), math.nan, dtype=torch.float64) for name in STATISTICS}
    induction = induction_mask(ids)
    seen = set()

    def reduce(layer: int, probs: torch.Tensor) -> None:
        probs = probs.float().cpu()
        patterns[layer] = probs[:, start:stop, :stop]
        for name, values in _statistics(probs, induction).items():
            stats[name][layer] = values
        seen.add(layer)

    try:
        interventions.run(lm, torch.tensor([ids]), eager=True, logits_at=-1,
                          record=interventions.Recording(on_attention=reduce))
    except Exception as error:  # noqa: BLE001 - transformers' eager attention of this model is broken
        raise LmvizError(f"{type(lm.model).__name__} ('{lm.arch.model_type}') fails with eager attention "
                         f"({type(error).__name__}), so lmviz can't show its attention probabilities.") from None
    if len(seen) != n_layers:
        raise LmvizError(f"The attention of {type(lm.model).__name__} ('{lm.arch.model_type}') does not return its "
                         "probabilities in eager mode, so lmviz can't show its attention patterns.")
    with lm.lock:
        tokens = tuple(display_tokens(lm.tokenizer, ids))
    return AttentionResult(lm.name, text, tuple(ids), tokens, (start, stop), patterns, stats)


def attention(lm: LoadedModel, text: str, window: tuple[int, int] | None = None) -> AttentionResult:
    """The cached AttentionResult of `text` for the query window (default: the last 24 positions)."""
    n_tokens = len(trace_module.encode(lm, text))
    key = (text, _check_window(window, n_tokens))
    return cached("attention", lm, key, lambda: run_attention(lm, text, key[1]))
