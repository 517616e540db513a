"""One text under two models: per token when the tokenizers agree, else per word.

Two tokenizers cut a text differently, so their per-token losses can't be
lined up. Words can: each token is mapped to the word (character span) it
starts in, and a word's NLL is the sum of its tokens'. Bits per byte (total
NLL / ln 2 / bytes) compares the models on the text as a whole, whatever their
vocabularies.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from typing import Sequence

import torch

from lmviz.errors import LmvizError
from lmviz.analyses.loss import LN2, LossReport


def word_spans(text: str) -> list[tuple[int, int]]:
    """The text cut into words with the whitespace that follows each (the first also keeps any leading
    whitespace), so the spans tile the whole text: [(start, end), ...]."""
    starts = [match.start() for match in re.finditer(r"\S+", text)]
    if not starts:
        return []
    starts[0] = 0
    return [(start, end) for start, end in zip(starts, starts[1:] + [len(text)])]


def token_words(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]]) -> list[int]:
    """The word (index into spans) of every token: the one holding the token's last character; -1 for a
    token with no characters (a special token)."""
    starts = [start for start, _ in spans]
    return [bisect.bisect_right(starts, end - 1) - 1 if end > start else -1 for start, end in offsets]


@dataclass(frozen=True, eq=False)
class ModelComparison:
    """One text under two models. Dimensions: word = whitespace-separated words of the text (each with the
    whitespace after it); tok = tokens, only when both tokenizers cut the text the same way.

    A word's NLL is the sum of the NLL of the tokens ending in it, so word totals add up to the text's total
    under either tokenizer. A word counts as `complete` for a model when all its tokens were scored (the
    first word is not, for a model without a BOS token). Differences are B - A: positive = B more surprised.
    """

    text: str
    model_a: str
    model_b: str
    words: tuple[str, ...]  # (word,) the text of each word, whitespace included: they join back to the text
    nll_a: torch.Tensor  # (word,) float64 nats under A; NaN where no token of A was scored
    nll_b: torch.Tensor  # (word,) float64 nats under B
    complete_a: torch.Tensor  # (word,) bool, every token of A ending in this word was scored
    complete_b: torch.Tensor  # (word,) bool
    tokens_per_word_a: torch.Tensor  # (word,) int64
    tokens_per_word_b: torch.Tensor  # (word,) int64
    same_tokens: bool  # both tokenizers cut the text into the same pieces
    token_nll_a: torch.Tensor | None  # (tok - 1,) per scored token, when same_tokens
    token_nll_b: torch.Tensor | None
    tokens: tuple[str, ...] | None  # (tok,) display strings, when same_tokens
    bits_per_byte_a: float
    bits_per_byte_b: float
    perplexity_a: float  # per token of A's own tokenizer: not comparable across vocabularies
    perplexity_b: float

    @property
    def both(self) -> torch.Tensor:
        """(word,) bool: words complete under both models, the ones the totals below compare."""
        return self.complete_a & self.complete_b

    @property
    def diff(self) -> torch.Tensor:
        """(word,) NLL_B - NLL_A in nats; NaN where a word is not complete under both."""
        return torch.where(self.both, self.nll_b - self.nll_a, torch.full_like(self.nll_a, float("nan")))

    @property
    def common_bits_a(self) -> float:
        """Total bits A spends on the words both models scored fully."""
        return float(self.nll_a[self.both].sum()) / LN2

    @property
    def common_bits_b(self) -> float:
        return float(self.nll_b[self.both].sum()) / LN2


def _per_word(report: LossReport, spans: Sequence[tuple[int, int]]) -> tuple[torch.Tensor, ...]:
    """(word,) summed NLL, complete flag, token count of one report."""
    owner = token_words(report.offsets, spans)
    n = len(spans)
    nll = torch.zeros(n, dtype=torch.float64)
    scored_any = torch.zeros(n, dtype=torch.bool)
    complete = torch.ones(n, dtype=torch.bool)
    count = torch.zeros(n, dtype=torch.long)
    for position, word in enumerate(owner):
        if word < 0:
            continue
        count[word] += 1
        if position == 0:
            complete[word] = False
        else:
            nll[word] += report.nll[position - 1]
            scored_any[word] = True
    nll[~scored_any] = float("nan")
    complete &= scored_any
    return nll, complete, count


def compare_models(a: LossReport, b: LossReport) -> ModelComparison:
    """Line up the reports of one text under two models, per word (and per token when they agree)."""
    if a.text != b.text:
        raise LmvizError("The two reports are of different texts; compare one text under two models.")
    spans = word_spans(a.text)
    nll_a, complete_a, count_a = _per_word(a, spans)
    nll_b, complete_b, count_b = _per_word(b, spans)
    same = a.pieces == b.pieces and a.offsets == b.offsets
    return ModelComparison(
        text=a.text, model_a=a.model_name, model_b=b.model_name,
        words=tuple(a.text[s:e] for s, e in spans),
        nll_a=nll_a, nll_b=nll_b, complete_a=complete_a, complete_b=complete_b,
        tokens_per_word_a=count_a, tokens_per_word_b=count_b,
        same_tokens=same,
        token_nll_a=a.nll if same else None, token_nll_b=b.nll if same else None,
        tokens=a.tokens if same else None,
        bits_per_byte_a=a.bits_per_byte, bits_per_byte_b=b.bits_per_byte,
        perplexity_a=a.perplexity, perplexity_b=b.perplexity,
    )
