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

Text longer than the model's context is scored with strided sliding windows
(the Hugging Face "perplexity of fixed-length models" recipe): window k starts
at k * stride and holds at most `max_length` tokens; it scores only the tokens
the previous window did not reach, and uses the rest as context. Every token
after the first is scored exactly once, and the tokens are counted directly
(the documentation's recipe subtracts one per window, which undercounts).
With stride == max_length the step is max_length - 1, so consecutive windows
overlap by one token and no token goes unscored for want of context.

Results are frozen dataclasses with shape comments:
- `LossReport`: per-token NLL, rank, top guess, context; aggregates and formulas.
- `ModelComparison`: one text under two models, per token when the tokenizers
  agree, else per word (tokens mapped to character spans), plus bits per byte.
- `LayerLoss`: the cross-entropy of the logit-lens prediction at every layer.
- `ContextCurve`: loss against window length (how much context helps).
"""

from __future__ import annotations

import bisect
import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Callable, Sequence

import torch

from lmviz import trace as tracing
from lmviz.architectures import head_error_bound
from lmviz.cache import cached
from lmviz.errors import LmvizError
from lmviz.models import LoadedModel
from lmviz.tokens import token_text, visible
from lmviz.trace import accepts_logits_to_keep, encode, max_tokens, trace

LN2 = math.log(2.0)
RANK_BUCKETS = ((1, "top-1"), (10, "top-10"), (100, "top-100"), (None, "rest"))  # (upper rank, label)
TARGETS_PER_CHUNK = 512  # scored positions projected to the vocabulary at once: bounds memory to ~100 MB
TOKENS_PER_BATCH = 4096  # equal-shaped windows run together up to this many tokens per forward pass
LOGITS_BUDGET = 256 * 2**20  # bytes of float32 logits one forward pass may return
Progress = Callable[[int, int], None]  # (windows done, windows in all)


def exp_or_inf(x: float) -> float:
    """e^x, or inf where it overflows a float (a perplexity over one very improbable word)."""
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


# ---------------------------------------------------------------- windows


@dataclass(frozen=True)
class Window:
    """One forward pass of the sliding evaluation: tokens [begin, end) go in, [first, end) are scored."""

    begin: int  # first token of the window (context starts here)
    end: int  # one past the last token
    first: int  # first scored token; begin < first, so every scored token has context

    @property
    def length(self) -> int:
        return self.end - self.begin

    @property
    def n_scored(self) -> int:
        return self.end - self.first


def plan_windows(n_tokens: int, max_length: int, stride: int) -> list[Window]:
    """Strided windows that score every token after the first exactly once.

    Window k starts at k * step, step = min(stride, max_length - 1), and ends
    max_length tokens later (or at the end of the text); it scores the tokens
    from where the previous window ended. The first window scores 1 .. end-1.
    """
    check_window(max_length, stride)
    if n_tokens < 2:
        raise LmvizError("The text is a single token: there is nothing to score (the first token has no "
                         "context). Type a longer text.")
    step = min(stride, max_length - 1)
    windows: list[Window] = []
    previous_end = 1  # token 0 is never scored
    begin = 0
    while previous_end < n_tokens:
        end = min(begin + max_length, n_tokens)
        windows.append(Window(begin=begin, end=end, first=previous_end))
        previous_end = end
        begin += step
    return windows


def check_window(max_length: int, stride: int, context_length: int | None = None) -> None:
    """Raise LmvizError for a window the evaluation cannot use."""
    if max_length < 2:
        raise LmvizError(f"max-length must be at least 2 tokens (one of context, one scored), not {max_length}.")
    if context_length is not None and max_length > context_length:
        raise LmvizError(f"max-length {max_length} is above the model's context of {context_length} tokens. "
                         f"Use at most {context_length}.")
    if stride <= 0:
        raise LmvizError(f"stride must be a positive number of tokens, not {stride}.")
    if stride > max_length:
        raise LmvizError(f"stride {stride} is larger than max-length {max_length}: tokens between windows would "
                         "never be scored. Use a stride of at most max-length.")


# ---------------------------------------------------------------- the report


@dataclass(frozen=True)
class Metric:
    """One aggregate with the formula that produces it (LaTeX) and a sentence that explains it."""

    key: str
    label: str
    value: float
    formula: str
    note: str


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

    def metrics(self) -> list[Metric]:
        """The aggregates, each with its formula, in teaching order."""
        items = [
            Metric("scored", "Tokens scored", self.scored, r"N = \text{tokens} - 1",
                   "Every token after the first; the first has no context to predict it from."),
            Metric("accuracy", "Accuracy", self.accuracy,
                   r"\frac{1}{N}\sum_i [\arg\max_v p(v \mid x_{<i}) = x_i]",
                   "How often the model's top guess was the actual next token."),
            Metric("log_likelihood", "Log-likelihood", self.log_likelihood, r"\sum_i \ln p(x_i \mid x_{<i})",
                   "The log of the probability of the whole text, in nats. Summing logs avoids the underflow "
                   "of multiplying thousands of small probabilities."),
            Metric("mean_nll", "Mean NLL = H", self.mean_nll,
                   r"H = -\frac{1}{N}\sum_i \ln p(x_i \mid x_{<i})",
                   "Nats per token. With one-hot targets, cross-entropy is exactly the mean negative "
                   "log-likelihood: the training loss."),
            Metric("perplexity", "Perplexity (base e)", self.perplexity, r"\mathrm{PPL} = e^{H}",
                   "As uncertain as a uniform choice among this many tokens."),
            Metric("perplexity_base2", "Perplexity (base 2)", self.perplexity_base2,
                   r"2^{H_2},\quad H_2 = -\frac{1}{N}\sum_i \log_2 p(x_i \mid x_{<i}) = H / \ln 2",
                   "The same number: the base cancels out, as long as the log and the power share it."),
            Metric("bits_per_token", "Bits per token", self.bits_per_token, r"H_2 = H / \ln 2",
                   "Cross-entropy in bits."),
            Metric("bits_per_byte", "Bits per byte", self.bits_per_byte,
                   r"\frac{-\sum_i \log_2 p(x_i \mid x_{<i})}{\text{UTF-8 bytes}}",
                   f"Total bits over the {self.n_bytes:,} bytes the scored tokens cover: does not depend on "
                   "how the tokenizer cuts the text, so models with different vocabularies compare fairly."),
            Metric("word_perplexity", "Perplexity per word", self.word_perplexity,
                   r"e^{-\sum_i \ln p(x_i \mid x_{<i}) / \text{words}}",
                   f"The same total over the {self.n_words:,} words the scored tokens touch instead of the tokens."),
        ]
        if self.model_loss is not None:
            items.append(Metric("model_loss", "labels= loss", self.model_loss,
                                r"\texttt{model(ids, labels=ids).loss}",
                                "The loss transformers computes itself, over the same scored tokens: it must "
                                f"equal the mean NLL (difference {abs(self.model_loss - self.mean_nll):.1e})."))
        return items

    def summary(self) -> dict[str, float | int | None]:
        return {m.key: m.value for m in self.metrics()}

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

    def frame(self):
        """One row per token (the first, unscored, included) as a pandas DataFrame."""
        import pandas as pd

        n = self.n_tokens
        nan = [float("nan")]
        frame = pd.DataFrame({
            "position": range(n),
            "token": self.tokens,
            "id": self.input_ids.tolist(),
            "nll (nats)": nan + self.nll.tolist(),
            "surprisal (bits)": nan + self.surprisal_bits.tolist(),
            "probability": nan + self.probs.tolist(),
            "rank": [None] + self.rank.tolist(),
            "top-1 correct": [None] + self.correct.tolist(),
            "model's top guess": [""] + list(self.top_tokens),
            "p(top guess)": nan + self.top_probs.tolist(),
            "context": [0] + self.context.tolist(),
            "window": [None] + self.window_of.tolist(),
        })
        frame["rank"] = frame["rank"].astype("Int64")
        frame["window"] = frame["window"].astype("Int64")
        frame["top-1 correct"] = frame["top-1 correct"].astype("boolean")
        return frame

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


def _check_causal(lm: LoadedModel) -> None:
    if lm.kind != "causal":
        raise LmvizError(f"{lm.name} is a {lm.kind} model. Loss and perplexity here are next-token scores of a "
                         "causal LM; pick a causal model (e.g. smollm2-135m).")


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


def _coverage(text: str, offsets: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """(UTF-8 bytes, words) of the text covered by the scored tokens (all but the first)."""
    covered = bytearray(len(text) + 1)
    for start, end in offsets[1:]:
        covered[start:end] = b"\x01" * (end - start)
    n_bytes = sum(len(char.encode("utf-8")) for char, hit in zip(text, covered) if hit)
    n_words = sum(1 for match in re.finditer(r"\S+", text) if any(covered[match.start():match.end()]))
    return n_bytes, n_words


def _reduce(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(k, vocab) logits and (k,) targets -> NLL, rank, top id, top probability, each (k,)."""
    logits = logits.float()
    log_probs = torch.log_softmax(logits, dim=-1)  # (k, vocab)
    target_logit = logits.gather(1, targets[:, None])  # (k, 1)
    nll = -log_probs.gather(1, targets[:, None])[:, 0]
    rank = (logits > target_logit).sum(dim=-1) + 1
    top_log_prob, top_id = log_probs.max(dim=-1)
    return nll.double(), rank.long(), top_id.long(), top_log_prob.double().exp()


def _windowed(lm: LoadedModel, ids: torch.Tensor, windows: Sequence[Window],
              progress: Progress | None) -> tuple[torch.Tensor, ...]:
    """Score every window's new tokens, (scored,) NLL, rank, top id, top probability in text order.

    Windows of one shape run together as a batch. Logits are computed only
    where they are needed: the model runs with logits_to_keep = the scored
    tokens (they are each window's last ones), so the context positions never
    reach the (…, vocab) head. A window whose scored logits would not fit in
    LOGITS_BUDGET instead sends its final hidden states through the model's
    head in chunks, after checking that head against the model's own output.
    """
    vocab = lm.vocab_size
    keep_ok = accepts_logits_to_keep(lm.model)
    groups: list[list[tuple[int, Window]]] = []  # consecutive windows of one shape, with where their rows go
    cursor = 0
    for window in windows:
        last = groups[-1][0][1] if groups else None
        fits = 1 + len(groups[-1]) <= _batch_size(window, vocab) if groups else False
        if last is not None and (last.length, last.n_scored) == (window.length, window.n_scored) and fits:
            groups[-1].append((cursor, window))
        else:
            groups.append([(cursor, window)])
        cursor += window.n_scored
    columns: list[list[torch.Tensor]] = [[], [], [], []]
    done = 0
    for group in groups:
        shape = group[0][1]
        batch = torch.stack([ids[w.begin:w.end] for _, w in group])  # (batch, length)
        targets = torch.stack([ids[w.first:w.end] for _, w in group]).reshape(-1)  # (batch * n_scored,)
        with torch.inference_mode():  # no model lock: other sessions' calls go on meanwhile
            if keep_ok and shape.n_scored * vocab * 4 <= LOGITS_BUDGET:
                # the last n_scored + 1 positions; all but the very last predict a scored token
                logits = lm.model(input_ids=batch, use_cache=False, logits_to_keep=shape.n_scored + 1).logits
                logits = logits[:, :-1].reshape(-1, logits.shape[-1])  # (batch * n_scored, vocab)
                parts = [_reduce(logits[i:i + TARGETS_PER_CHUNK], targets[i:i + TARGETS_PER_CHUNK])
                         for i in range(0, len(targets), TARGETS_PER_CHUNK)]
            else:
                parts = _reduce_from_hidden(lm, batch, shape, targets, keep_ok)
        for column, values in zip(columns, zip(*parts)):
            column.extend(values)
        done += len(group)
        if progress:
            progress(done, len(windows))
    return tuple(torch.cat(column) for column in columns)


def _batch_size(window: Window, vocab: int) -> int:
    """How many windows of this shape run in one forward pass (bounded in tokens and in logits memory)."""
    return max(1, min(TOKENS_PER_BATCH // window.length, LOGITS_BUDGET // max(1, window.n_scored * vocab * 4)))


def _reduce_from_hidden(lm: LoadedModel, batch: torch.Tensor, shape: Window, targets: torch.Tensor,
                        keep_ok: bool) -> list[tuple[torch.Tensor, ...]]:
    """The scored logits of a long window in chunks: final hidden states -> the model's head."""
    output = lm.model(input_ids=batch, use_cache=False, output_hidden_states=True,
                      **({"logits_to_keep": 1} if keep_ok else {}))
    final = output.hidden_states[-1]  # (batch, length, d_model), final norm already applied
    own = output.logits[:, -1]  # (batch, vocab), the model's own head at the last position
    mine = lm.logits_from_hidden(final[:, -1], normalize=False)
    if not bool(((own.float() - mine).abs() <= head_error_bound(final[:, -1], lm.unembed, lm.arch.logit_transform)).all()):
        raise LmvizError(f"lmviz's head for {lm.name} does not reproduce the model's logits "
                         f"(max difference {float((own.float() - mine).abs().max()):.2e}).")
    start = shape.first - shape.begin - 1  # the position predicting the first scored token
    hidden = final[:, start:start + shape.n_scored].reshape(-1, final.shape[-1])  # (batch * n_scored, d_model)
    return [_reduce(lm.logits_from_hidden(hidden[i:i + TARGETS_PER_CHUNK], normalize=False),
                    targets[i:i + TARGETS_PER_CHUNK]) for i in range(0, len(targets), TARGETS_PER_CHUNK)]


def _model_loss(lm: LoadedModel, ids: torch.Tensor, windows: Sequence[Window]) -> float | None:
    """The model's own labels= loss, window by window (context labels set to -100), weighted by the tokens
    each window scores: an independent path through transformers' loss function. None for a model that
    computes no loss. A model whose loss does not shift labels itself (lm.arch.labels_shift == 0) gets
    them shifted here."""
    if lm.arch.labels_shift is None:
        return None
    total = 0.0
    with torch.inference_mode():
        for window in windows:
            inputs = ids[window.begin:window.end][None]
            labels = inputs.clone()
            labels[:, : window.first - window.begin] = -100  # context: not scored
            if lm.arch.labels_shift == 0:  # row t must be scored against token t + 1
                labels = torch.cat([labels[:, 1:], torch.full_like(labels[:, :1], -100)], dim=1)
            loss = lm.model(input_ids=inputs, labels=labels, use_cache=False).loss
            total += float(loss) * window.n_scored
    return total / sum(w.n_scored for w in windows)


def _compute_report(lm: LoadedModel, text: str, max_length: int, stride: int, cross_check: bool,
                    progress: Progress | None) -> LossReport:
    ids_list = encode(lm, text)
    ids = torch.tensor(ids_list)
    windows = plan_windows(len(ids_list), max_length, stride)
    offsets = _offsets(lm, text, ids_list)
    if len(windows) == 1 and len(ids_list) <= max_tokens(lm):
        # One window holds the whole text: reuse the cached forward pass the other pages share.
        traced, last = trace(lm, text), len(ids_list) - 1  # row i of the logits predicts token i + 1
        nll, rank, top_id, top_p = (torch.cat(c) for c in zip(*[
            _reduce(tracing.logits(lm, traced, slice(i, min(last, i + TARGETS_PER_CHUNK))),
                    ids[i + 1:i + 1 + TARGETS_PER_CHUNK])
            for i in range(0, last, TARGETS_PER_CHUNK)]))
        if progress:
            progress(1, 1)
    else:
        nll, rank, top_id, top_p = _windowed(lm, ids, windows, progress)
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
        model_loss=_model_loss(lm, ids, windows) if cross_check else None,
    )


def _pieces(lm: LoadedModel, ids: Sequence[int]) -> dict[int, str]:
    return {i: token_text(lm.tokenizer, i) for i in set(ids)}


def loss_report(lm: LoadedModel, text: str, max_length: int | None = None, stride: int | None = None,
                cross_check: bool = True, progress: Progress | None = None) -> LossReport:
    """Score every token of `text` after the first under the causal LM `lm` (cached per settings).

    max_length: most tokens per window (default: the model's context, capped at $LMVIZ_MAX_TOKENS).
    stride: new tokens per window (default max_length // 2). A text that fits in one window is scored
    in one pass, shared with the other pages through the trace cache.
    cross_check: also run the model with labels= (its own loss function) over the same windows and keep
    that loss in `model_loss`; this runs every window a second time.
    """
    _check_causal(lm)
    max_length = int(max_length) if max_length is not None else default_max_length(lm)
    stride = int(stride) if stride is not None else max(1, max_length // 2)
    check_window(max_length, stride, lm.context_length)
    key = (text, max_length, stride, bool(cross_check))
    return cached("loss", lm, key, lambda: _compute_report(lm, text, max_length, stride, cross_check, progress))


# ---------------------------------------------------------------- (b) one text, two models


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

    def frame(self):
        """One row per word."""
        import pandas as pd

        return pd.DataFrame({
            "word": [visible(w) for w in self.words],
            "tokens A": self.tokens_per_word_a.tolist(),
            "tokens B": self.tokens_per_word_b.tolist(),
            "nll A (nats)": self.nll_a.tolist(),
            "nll B (nats)": self.nll_b.tolist(),
            "B - A (nats)": self.diff.tolist(),
            "compared": self.both.tolist(),
        })

    def token_frame(self):
        """One row per scored token, when both models use the same tokens (else None)."""
        import pandas as pd

        if not self.same_tokens:
            return None
        return pd.DataFrame({
            "position": range(1, len(self.tokens)),
            "token": self.tokens[1:],
            "nll A (nats)": self.token_nll_a.tolist(),
            "nll B (nats)": self.token_nll_b.tolist(),
            "B - A (nats)": (self.token_nll_b - self.token_nll_a).tolist(),
        })


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

    def frame(self):
        import pandas as pd

        layers = list(range(self.n_layers + 1))
        return pd.DataFrame({
            "layer": layers,
            "name": ["embeddings"] + [f"layer {i}" for i in layers[1:-1]] + [f"layer {self.n_layers} (output)"],
            "cross-entropy (nats)": self.mean_nll.tolist(),
            "bits per token": (self.mean_nll / LN2).tolist(),
            "perplexity": self.perplexity.tolist(),
        })


def layer_loss(lm: LoadedModel, text: str, normalize: bool = True) -> LayerLoss:
    """Cross-entropy of the logit lens at every layer, from the logit-lens backend (lmviz.lens)."""
    from lmviz.lens import logit_lens

    _check_causal(lm)
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

    def frame(self):
        import pandas as pd

        return pd.DataFrame({
            "window length": self.lengths, "stride": self.strides, "mean context": self.mean_context,
            "cross-entropy (nats)": self.mean_nll, "perplexity": self.perplexity,
        })


def default_lengths(n_tokens: int, limit: int) -> list[int]:
    """Powers of two from 2 up to the text (or limit), plus the whole text when it fits."""
    top = min(n_tokens, limit)
    lengths = [2 ** k for k in range(1, 32) if 2 ** k < top]
    return lengths + [top]


def context_curve(lm: LoadedModel, text: str, lengths: Sequence[int] | None = None, stride_fraction: float = 0.5,
                  limit: int | None = None, progress: Progress | None = None) -> ContextCurve:
    """Mean NLL of `text` (its first `limit` tokens, if given) for each window length (cached).

    stride = stride_fraction x length (at least 1): 1/length gives every token
    exactly min(position, length - 1) tokens of context, at one forward pass
    per token; 0.5 (the default) costs two passes' worth of tokens per point.
    """
    _check_causal(lm)
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
            nll = _windowed(lm, tensor, windows, None)[0]
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
