"""Scoring a text window by window: what every long-text loss in lmviz runs on.

Text longer than the model's context is scored with strided sliding windows
(the Hugging Face "perplexity of fixed-length models" recipe): window k starts
at k * stride and holds at most `max_length` tokens; it scores only the tokens
the previous window did not reach, and uses the rest as context. Every token
after the first is scored exactly once, and the tokens are counted directly
(the documentation's recipe subtracts one per window, which undercounts).
With stride == max_length the step is max_length - 1, so consecutive windows
overlap by one token and no token goes unscored for want of context.

`score_windows` runs windows of one shape together as a batch and computes
logits only where tokens are scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from lmviz.model import compute
from lmviz.errors import LmvizError
from lmviz.model.models import LoadedModel
from lmviz.forward.trace import accepts_logits_to_keep

TARGETS_PER_CHUNK = 512  # scored positions projected to the vocabulary at once: bounds memory to ~100 MB


TOKENS_PER_BATCH = 4096  # equal-shaped windows run together up to this many tokens per forward pass


# bytes of float32 logits one batched forward pass may return; windows needing more go through the head in
# chunks, so nothing is refused (unlike ablation.ABLATION_LOGITS_LIMIT, a limit on the text's length)
BATCH_LOGITS_BUDGET = 256 * 2**20


WindowProgress = Callable[[int, int], None]  # (windows done, windows in all)


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


def score_rows(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(k, vocab) logits and (k,) targets -> NLL, rank, top id, top probability, each (k,)."""
    logits, targets = logits.float(), targets.to(logits.device)  # reduced in float32 where the logits are
    log_probs = torch.log_softmax(logits, dim=-1)  # (k, vocab)
    target_logit = logits.gather(1, targets[:, None])  # (k, 1)
    nll = -log_probs.gather(1, targets[:, None])[:, 0]
    rank = (logits > target_logit).sum(dim=-1) + 1
    top_log_prob, top_id = log_probs.max(dim=-1)
    return nll.double().cpu(), rank.long().cpu(), top_id.long().cpu(), top_log_prob.double().exp().cpu()


def score_windows(lm: LoadedModel, ids: torch.Tensor, windows: Sequence[Window],
              progress: WindowProgress | None) -> tuple[torch.Tensor, ...]:
    """Score every window's new tokens, (scored,) NLL, rank, top id, top probability in text order.

    Windows of one shape run together as a batch. Logits are computed only
    where they are needed: the model runs with logits_to_keep = the scored
    tokens (they are each window's last ones), so the context positions never
    reach the (…, vocab) head. A window whose scored logits would not fit in
    BATCH_LOGITS_BUDGET instead sends its final hidden states through the model's
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
        batch = torch.stack([ids[w.begin:w.end] for _, w in group]).to(lm.device)  # (batch, length)
        targets = torch.stack([ids[w.first:w.end] for _, w in group]).reshape(-1)  # (batch * n_scored,)
        with compute.slot(), torch.inference_mode():  # no model lock: other sessions' calls go on meanwhile
            if keep_ok and shape.n_scored * vocab * 4 <= BATCH_LOGITS_BUDGET:
                # the last n_scored + 1 positions; all but the very last predict a scored token
                logits = lm.model(input_ids=batch, use_cache=False, logits_to_keep=shape.n_scored + 1).logits
                logits = logits[:, :-1].reshape(-1, logits.shape[-1])  # (batch * n_scored, vocab)
                parts = [score_rows(logits[i:i + TARGETS_PER_CHUNK], targets[i:i + TARGETS_PER_CHUNK])
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
    logits_bytes = max(1, window.n_scored * vocab * 4)
    return max(1, min(TOKENS_PER_BATCH // window.length, BATCH_LOGITS_BUDGET // logits_bytes))


def _reduce_from_hidden(lm: LoadedModel, batch: torch.Tensor, shape: Window, targets: torch.Tensor,
                        keep_ok: bool) -> list[tuple[torch.Tensor, ...]]:
    """The scored logits of a long window in chunks: final hidden states -> the model's head."""
    output = lm.model(input_ids=batch, use_cache=False, output_hidden_states=True,
                      **({"logits_to_keep": 1} if keep_ok else {}))
    final = output.hidden_states[-1]  # (batch, length, d_model), final norm already applied
    own = output.logits[:, -1]  # (batch, vocab), the model's own head at the last position
    mine = lm.head.logits(final[:, -1], normalize=False)
    bound = lm.head.error_bound(final[:, -1])
    if not bool(((own.float() - mine).abs() <= bound).all()):
        raise LmvizError(f"lmviz's head for {lm.name} does not reproduce the model's logits "
                         f"(max difference {float((own.float() - mine).abs().max()):.2e}).")
    start = shape.first - shape.begin - 1  # the position predicting the first scored token
    hidden = final[:, start:start + shape.n_scored].reshape(-1, final.shape[-1])  # (batch * n_scored, d_model)
    return [score_rows(lm.head.logits(hidden[i:i + TARGETS_PER_CHUNK], normalize=False),
                    targets[i:i + TARGETS_PER_CHUNK]) for i in range(0, len(targets), TARGETS_PER_CHUNK)]


def labels_loss(lm: LoadedModel, ids: torch.Tensor, windows: Sequence[Window]) -> float | None:
    """The model's own labels= loss, window by window (context labels set to -100), weighted by the tokens
    each window scores: an independent path through transformers' loss function. None for a model that
    computes no loss. A model whose loss does not shift labels itself (lm.arch.labels_shift == 0) gets
    them shifted here."""
    if lm.arch.labels_shift is None:
        return None
    total = 0.0
    for window in windows:
        with compute.slot(), torch.inference_mode():
            inputs = ids[window.begin:window.end][None].to(lm.device)
            labels = inputs.clone()
            labels[:, : window.first - window.begin] = -100  # context: not scored
            if lm.arch.labels_shift == 0:  # row t must be scored against token t + 1
                labels = torch.cat([labels[:, 1:], torch.full_like(labels[:, :1], -100)], dim=1)
            loss = lm.model(input_ids=inputs, labels=labels, use_cache=False).loss
            total += float(loss) * window.n_scored
    return total / sum(w.n_scored for w in windows)
