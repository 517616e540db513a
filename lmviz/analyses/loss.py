"""Loss, cross-entropy, NLL and perplexity, token by token and side by side.

A causal LM gives, at every position, a distribution over the next token. The
loss of a text is how surprised the model is by the tokens that actually come:

    NLL_i  = -ln p(x_i | x_<i)                   nats, for every token after the first
    H      = (1/N) sum_i NLL_i                    mean NLL = cross-entropy against one-hot targets
    PPL    = e^H = 2^(H / ln 2)                   the same number in base e or base 2
    bits per byte = sum_i NLL_i / ln 2 / bytes    comparable across tokenizers

The first token is never scored: nothing comes before it (a tokenizer that
adds a BOS token makes the first *word* scoreable, because BOS is then the
unscored first token).

Text longer than the model's context is scored window by window
(`lmviz.analyses.windows`); one text under two models is compared in `lmviz.analyses.compare`.

Results are frozen dataclasses with shape comments:
- `LossReport`: per-token NLL, rank, top guess, context, and the aggregates (their formulas
  and explanations are presentation: `lmviz.present.tables.loss.loss_metrics`).
- `LayerLoss`: the cross-entropy of the logit-lens prediction at every layer.
- `ContextCurve`: loss against window length (how much context helps).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Sequence

import torch

from lmviz.forward import trace as tracing
from lmviz.forward.cache import cached
from lmviz.errors import LmvizError
from lmviz.model.models import LoadedModel
from lmviz.tokens import token_text, visible
from lmviz.forward.trace import encode, max_tokens, trace
from lmviz.analyses.windows import (
    TARGETS_PER_CHUNK,
    Window,
    WindowProgress,
    check_window,
    labels_loss,
    plan_windows,
    score_rows,
    score_windows,
)

LN2 = math.log(2.0)
RANK_BUCKETS = ((1, "top-1"), (10, "top-10"), (100, "top-100"), (None, "rest"))  # (upper rank, label)


def exp_or_inf(x: float) -> float:
    """e^x, or inf where it overflows a float (a perplexity over one very improbable word)."""
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


# ---------------------------------------------------------------- windows


# ---------------------------------------------------------------- the report


@dataclass(frozen=True, eq=False)
class LossReport:
    """How surprised a causal LM is by every token of a text.

    Dimensions: pos = all tokens of the text; scored = pos - 1, the tokens
    after the first, in order (scored index j is token j + 1). NLL is in nats
    (natural log); divide by ln 2 for bits.
    """

    model_name: str
    text: str
    input_ids: torch.Tensor  # (pos,) int64
    tokens: tuple[str, ...]  # (pos,) display strings ('·' for a space)
    pieces: tuple[str, ...]  # (pos,) exact text of each token
    offsets: tuple[tuple[int, int], ...]  # (pos,) character span [start, end) in text; (0, 0) for special tokens
    nll: torch.Tensor  # (scored,) float64 nats, -ln p(x_i | context)
    rank: torch.Tensor  # (scored,) int64, 1 + number of tokens the model scored strictly higher
    top_ids: torch.Tensor  # (scored,) int64, the model's most likely token
    top_probs: torch.Tensor  # (scored,) float64, its probability
    top_tokens: tuple[str, ...]  # (scored,) display strings of the top guesses
    context: torch.Tensor  # (scored,) int64, tokens the model saw before each scored token
    window_of: torch.Tensor  # (scored,) int64, which window scored it
    windows: tuple[Window, ...]
    max_length: int
    stride: int
    n_bytes: int  # UTF-8 bytes of the text the scored tokens cover
    n_words: int  # whitespace-separated words the scored tokens touch
    model_loss: float | None  # the model's own labels= loss over the same tokens (None: not computed)

    # ------------------------------------------------------------ per token

    @property
    def n_tokens(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def scored(self) -> int:
        """N: how many tokens were scored (every token after the first)."""
        return int(self.nll.shape[0])

    @property
    def targets(self) -> torch.Tensor:
        """(scored,) the ids that were scored: input_ids[1:]."""
        return self.input_ids[1:]

    @property
    def probs(self) -> torch.Tensor:
        """(scored,) p(x_i | context) = e^-NLL."""
        return torch.exp(-self.nll)

    @property
    def surprisal_bits(self) -> torch.Tensor:
        """(scored,) -log2 p(x_i | context) = NLL / ln 2."""
        return self.nll / LN2

    @property
    def correct(self) -> torch.Tensor:
        """(scored,) bool: the model's top guess was the actual token."""
        return self.rank == 1

    # ------------------------------------------------------------ aggregates

    @property
    def total_nll(self) -> float:
        return float(self.nll.sum())

    @property
    def log_likelihood(self) -> float:
        """sum_i ln p(x_i | context), nats (negative)."""
        return -self.total_nll

    @property
    def mean_nll(self) -> float:
        """H = cross-entropy of the one-hot targets under the model, nats per token."""
        return self.total_nll / self.scored

    @property
    def bits_per_token(self) -> float:
        return self.mean_nll / LN2

    @property
    def perplexity(self) -> float:
        """e^H."""
        return exp_or_inf(self.mean_nll)

    @property
    def perplexity_base2(self) -> float:
        """2^(H in bits): the same number as e^H."""
        return exp_or_inf(self.bits_per_token * math.log(2.0))

    @property
    def accuracy(self) -> float:
        return float(self.correct.double().mean())

    @property
    def bits_per_byte(self) -> float:
        return self.total_nll / LN2 / self.n_bytes if self.n_bytes else float("nan")

    @property
    def word_perplexity(self) -> float:
        """e^(total NLL / words): perplexity per word instead of per token."""
        return exp_or_inf(self.total_nll / self.n_words) if self.n_words else float("nan")

    def summary(self) -> dict[str, float | int | None]:
        """The aggregates by name (what the CLI's --json prints)."""
        keys = ["scored", "accuracy", "log_likelihood", "mean_nll", "perplexity", "perplexity_base2", "bits_per_token",
                "bits_per_byte", "word_perplexity"] + (["model_loss"] if self.model_loss is not None else [])
        return {key: getattr(self, key) for key in keys}

    # ------------------------------------------------------------ context

    @property
    def n_windows(self) -> int:
        return len(self.windows)

    def context_range(self) -> tuple[int, int]:
        """Fewest and most tokens of context any scored token had."""
        return int(self.context.min()), int(self.context.max())

    def rank_bucket(self) -> list[str]:
        """(scored,) the rank bucket of each scored token: top-1 / top-10 / top-100 / rest."""
        return [rank_bucket(r) for r in self.rank.tolist()]


    def to_json(self) -> dict:
        """Plain values for the CLI's --json."""
        return {
            "model": self.model_name, "text": self.text,
            "input_ids": self.input_ids.tolist(), "tokens": list(self.pieces), "display": list(self.tokens),
            "nll": self.nll.tolist(), "rank": self.rank.tolist(), "context": self.context.tolist(),
            "top_ids": self.top_ids.tolist(), "top_display": list(self.top_tokens),
            "max_length": self.max_length, "stride": self.stride, "windows": self.n_windows,
            "bytes": self.n_bytes, "words": self.n_words,
            **self.summary(),
            "model_loss": self.model_loss,
        }


def rank_bucket(rank: int) -> str:
    for upper, label in RANK_BUCKETS:
        if upper is None or rank <= upper:
            return label
    raise AssertionError("unreachable")


# ---------------------------------------------------------------- computing it


def default_max_length(lm: LoadedModel) -> int:
    """The window used when none is given: the model's context, capped like a trace ($LMVIZ_MAX_TOKENS)."""
    return max_tokens(lm)


def _offsets(lm: LoadedModel, text: str, ids: list[int]) -> tuple[tuple[int, int], ...]:
    """Character span of every token; (0, 0) for special tokens such as BOS."""
    with lm.lock:
        try:
            encoded = lm.tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
        except (NotImplementedError, ValueError, TypeError):
            encoded = None
    if encoded is None or list(encoded["input_ids"]) != list(ids) or "offset_mapping" not in encoded:
        raise LmvizError(f"The tokenizer of {lm.name} can't map its tokens back to characters (it is not a "
                         "'fast' tokenizer), which bits per byte and word comparisons need.")
    return tuple((int(a), int(b)) for a, b in encoded["offset_mapping"])


def _coverage(text: str, offsets: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """(UTF-8 bytes, words) of the text covered by the scored tokens (all but the first)."""
    covered = bytearray(len(text) + 1)
    for start, end in offsets[1:]:
        covered[start:end] = b"\x01" * (end - start)
    n_bytes = sum(len(char.encode("utf-8")) for char, hit in zip(text, covered) if hit)
    n_words = sum(1 for match in re.finditer(r"\S+", text) if any(covered[match.start():match.end()]))
    return n_bytes, n_words


def _compute_report(lm: LoadedModel, text: str, max_length: int, stride: int, cross_check: bool,
                    progress: WindowProgress | None) -> LossReport:
    ids_list = encode(lm, text)
    ids = torch.tensor(ids_list)
    windows = plan_windows(len(ids_list), max_length, stride)
    offsets = _offsets(lm, text, ids_list)
    if len(windows) == 1 and len(ids_list) <= max_tokens(lm):
        # One window holds the whole text: reuse the cached forward pass the other pages share.
        traced, last = trace(lm, text), len(ids_list) - 1  # row i of the logits predicts token i + 1
        nll, rank, top_id, top_p = (torch.cat(c) for c in zip(*[
            score_rows(tracing.logits(lm, traced, slice(i, min(last, i + TARGETS_PER_CHUNK))),
                    ids[i + 1:i + 1 + TARGETS_PER_CHUNK])
            for i in range(0, last, TARGETS_PER_CHUNK)]))
        if progress:
            progress(1, 1)
    else:
        nll, rank, top_id, top_p = score_windows(lm, ids, windows, progress)
    context = torch.cat([torch.arange(w.first, w.end) - w.begin for w in windows])
    window_of = torch.cat([torch.full((w.n_scored,), k) for k, w in enumerate(windows)])
    with lm.lock:
        pieces = tuple(token_text(lm.tokenizer, i) for i in ids_list)
        top_pieces = _pieces(lm, top_id.tolist())
    n_bytes, n_words = _coverage(text, offsets)
    return LossReport(
        model_name=lm.name, text=text, input_ids=ids,
        tokens=tuple(visible(p) for p in pieces), pieces=pieces, offsets=offsets,
        nll=nll, rank=rank, top_ids=top_id, top_probs=top_p,
        top_tokens=tuple(visible(top_pieces[i]) for i in top_id.tolist()),
        context=context, window_of=window_of, windows=tuple(windows),
        max_length=max_length, stride=stride, n_bytes=n_bytes, n_words=n_words,
        model_loss=labels_loss(lm, ids, windows) if cross_check else None,
    )


def _pieces(lm: LoadedModel, ids: Sequence[int]) -> dict[int, str]:
    return {i: token_text(lm.tokenizer, i) for i in set(ids)}


def loss_report(lm: LoadedModel, text: str, max_length: int | None = None, stride: int | None = None,
                cross_check: bool = True, progress: WindowProgress | None = None) -> LossReport:
    """Score every token of `text` after the first under the causal LM `lm` (cached per settings).

    max_length: most tokens per window (default: the model's context, capped at $LMVIZ_MAX_TOKENS).
    stride: new tokens per window (default max_length // 2). A text that fits in one window is scored
    in one pass, shared with the other pages through the trace cache.
    cross_check: also run the model with labels= (its own loss function) over the same windows and keep
    that loss in `model_loss`; this runs every window a second time.
    """
    lm.require_causal("next-token loss")
    max_length = int(max_length) if max_length is not None else default_max_length(lm)
    stride = int(stride) if stride is not None else max(1, max_length // 2)
    check_window(max_length, stride, lm.context_length)
    key = (text, max_length, stride, bool(cross_check))
    return cached("loss", lm, key, lambda: _compute_report(lm, text, max_length, stride, cross_check, progress))


# ---------------------------------------------------------------- (b) one text, two models


# ---------------------------------------------------------------- (c) loss by layer


@dataclass(frozen=True, eq=False)
class LayerLoss:
    """The cross-entropy of each layer's logit-lens prediction of the actual next token.

    Layer 0 is the embeddings, layer L the model's output (its own logits, so
    the last row equals the text's loss). normalize=False skips the final norm
    at layers 0..L-1 (the "raw" lens), which makes early rows look odd: the
    unembedding expects normalized vectors.
    """

    model_name: str
    text: str
    tokens: tuple[str, ...]  # (pos,) display strings
    nll: torch.Tensor  # (layer+1, scored) float64 nats of token i+1 predicted at position i
    normalized: bool

    @property
    def n_layers(self) -> int:
        return int(self.nll.shape[0]) - 1

    @property
    def mean_nll(self) -> torch.Tensor:
        """(layer+1,) cross-entropy per layer, nats per token."""
        return self.nll.mean(dim=1)

    @property
    def perplexity(self) -> torch.Tensor:
        """(layer+1,) e^H per layer."""
        return torch.exp(self.mean_nll)


def layer_loss(lm: LoadedModel, text: str, normalize: bool = True) -> LayerLoss:
    """Cross-entropy of the logit lens at every layer, from the logit-lens backend (lmviz.analyses.lens)."""
    from lmviz.analyses.lens import logit_lens

    lm.require_causal("next-token loss")
    t = trace(lm, text)
    if t.n_tokens < 2:
        raise LmvizError("The text is a single token: there is nothing to score. Type a longer text.")
    lens = logit_lens(lm, t, k=1, normalize=normalize)
    nll = lens.next_token_nll[:, :-1].double()  # (layer+1, pos-1): the last position has no next token
    return LayerLoss(model_name=lm.name, text=text, tokens=t.tokens, nll=nll, normalized=normalize)


def first_tokens_text(lm: LoadedModel, text: str, n_tokens: int) -> str:
    """The beginning of `text` that holds its first n_tokens tokens (all of it when shorter): for analyses
    that run one pass over the whole text, such as the logit lens."""
    ids = encode(lm, text)
    if len(ids) <= n_tokens:
        return text
    offsets = _offsets(lm, text, ids)
    cut = next((start for start, end in offsets[n_tokens:] if end > start), len(text))
    return text[:cut]


# ---------------------------------------------------------------- (d) loss vs. context


@dataclass(frozen=True, eq=False)
class ContextCurve:
    """Loss of one text against the window length the model is allowed to see.

    Each point scores the same tokens (every token after the first) with
    sliding windows of that length; with stride s a scored token sees between
    length - s and length - 1 tokens of context (fewer at the start of the
    text). Dimensions: point = one window length.
    """

    model_name: str
    n_tokens: int
    lengths: tuple[int, ...]  # (point,) max_length of the windows
    strides: tuple[int, ...]  # (point,)
    mean_nll: tuple[float, ...]  # (point,) nats per token
    mean_context: tuple[float, ...]  # (point,) average tokens of context per scored token
    scored: int  # tokens scored at every point

    @property
    def perplexity(self) -> tuple[float, ...]:
        return tuple(exp_or_inf(h) for h in self.mean_nll)


def default_lengths(n_tokens: int, limit: int) -> list[int]:
    """Powers of two from 2 up to the text (or limit), plus the whole text when it fits."""
    top = min(n_tokens, limit)
    lengths = [2 ** k for k in range(1, 32) if 2 ** k < top]
    return lengths + [top]


def context_curve(lm: LoadedModel, text: str, lengths: Sequence[int] | None = None, stride_fraction: float = 0.5,
                  limit: int | None = None, progress: WindowProgress | None = None) -> ContextCurve:
    """Mean NLL of `text` (its first `limit` tokens, if given) for each window length (cached).

    stride = stride_fraction x length (at least 1): 1/length gives every token
    exactly min(position, length - 1) tokens of context, at one forward pass
    per token; 0.5 (the default) costs two passes' worth of tokens per point.
    """
    lm.require_causal("next-token loss")
    if not 0 < stride_fraction <= 1:
        raise LmvizError(f"The stride fraction must be in (0, 1], not {stride_fraction}.")
    ids = encode(lm, text)
    if limit is not None:
        ids = ids[: max(2, int(limit))]
    n = len(ids)
    if n < 2:
        raise LmvizError("The text is a single token: there is nothing to score. Type a longer text.")
    lengths = sorted(set(int(w) for w in (lengths or default_lengths(n, lm.context_length))))
    for w in lengths:
        check_window(w, 1, lm.context_length)
    key = (text, n, tuple(lengths), float(stride_fraction))

    def compute() -> ContextCurve:
        tensor = torch.tensor(ids)
        nlls, contexts, strides = [], [], []
        for done, w in enumerate(lengths):
            stride = max(1, min(w, round(w * stride_fraction)))
            windows = plan_windows(n, w, stride)
            nll = score_windows(lm, tensor, windows, None)[0]
            context = torch.cat([torch.arange(v.first, v.end) - v.begin for v in windows])
            nlls.append(float(nll.mean()))
            contexts.append(float(context.double().mean()))
            strides.append(stride)
            if progress:
                progress(done + 1, len(lengths))
        return ContextCurve(model_name=lm.name, n_tokens=n, lengths=tuple(lengths), strides=tuple(strides),
                            mean_nll=tuple(nlls), mean_context=tuple(contexts), scored=n - 1)

    return cached("context curve", lm, key, compute)


# ---------------------------------------------------------------- sample texts


@lru_cache(maxsize=None)
def sample_texts() -> dict[str, str]:
    """Texts shipped for class: a long public-domain passage for the sliding window, and a normal sentence
    with its scrambled version (the same words in random order)."""
    data = resources.files("lmviz") / "data"
    pair = json.loads((data / "class_pair.json").read_text(encoding="utf-8"))
    return {
        "long": (data / "pride_and_prejudice.txt").read_text(encoding="utf-8"),
        "normal": pair["normal"],
        "scrambled": pair["scrambled"],
    }
