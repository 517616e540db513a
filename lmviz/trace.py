"""One forward pass, kept: the input tokens, every layer's hidden states, the logits.

Every analysis starts from a `Trace`. `trace(lm, text)` runs the model once
with `output_hidden_states=True` and keeps the result in a process-wide,
thread-safe cache bounded in bytes, so the pages, the CLI and a notebook
asking about the same (model, text) share one pass.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass

import torch

from lmviz.errors import LmvizError
from lmviz.models import LoadedModel
from lmviz.tokens import display_tokens


@dataclass(frozen=True, eq=False)
class Trace:
    """The record of one forward pass. Treat the tensors as read-only: the cache shares them.

    hidden[0] is the embedding output, hidden[i] the output of layer i; as in
    transformers, hidden[-1] already has the model's final norm applied.
    """

    model_name: str
    text: str
    input_ids: torch.Tensor  # (pos,) int64
    tokens: tuple[str, ...]  # (pos,) display strings: '·' for spaces, '\n' for newlines
    hidden: torch.Tensor  # (layer+1, pos, d_model) float32
    logits: torch.Tensor  # (pos, vocab) float32, the model's own output
    truncated_from: int | None = None  # token count before truncation to the context, if any

    @property
    def n_tokens(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def n_layers(self) -> int:
        return int(self.hidden.shape[0]) - 1

    def nbytes(self) -> int:
        return sum(t.element_size() * t.nelement() for t in (self.input_ids, self.hidden, self.logits))


def max_tokens(lm: LoadedModel) -> int:
    """Longest input traced at once: the model's context, capped by $LMVIZ_MAX_TOKENS (default 2048)."""
    return min(lm.context_length, int(os.environ.get("LMVIZ_MAX_TOKENS", "2048")))


def encode(lm: LoadedModel, text: str) -> list[int]:
    """Token ids of `text` as the model sees it (with the tokenizer's special tokens, e.g. BOS)."""
    if not text or not text.strip():
        raise LmvizError("The text is empty: type something to analyse.")
    with lm.lock:  # a fast tokenizer must not be used by two threads at once
        ids = lm.tokenizer(text, add_special_tokens=True)["input_ids"]
    if not ids:
        raise LmvizError("The text produced no tokens.")
    return list(ids)


@dataclass(frozen=True)
class Batch:
    """Several texts padded to one length, as a batch goes into a model (seed 004)."""

    input_ids: list[list[int]]  # (batch, pos), padded on the left
    attention_mask: list[list[int]]  # (batch, pos), 0 where padding
    tokens: list[list[str]]  # (batch, pos) display strings
    pad_token_id: int
    pad_is_eos: bool  # the tokenizer had no pad token, so eos stands in (as the seed sets it)


def encode_batch(lm: LoadedModel, texts: list[str]) -> Batch:
    """Left-pad several texts to the longest, pad = eos when the tokenizer has no pad token.

    Padding is done here, not by the shared tokenizer, so the tokenizer is never mutated.
    """
    tokenizer = lm.tokenizer
    pad_is_eos = tokenizer.pad_token_id is None
    pad_id = tokenizer.eos_token_id if pad_is_eos else tokenizer.pad_token_id
    if pad_id is None:
        raise LmvizError("This tokenizer has neither a pad nor an end-of-sequence token to pad with.")
    rows = [encode(lm, text) for text in texts]
    width = max(len(row) for row in rows)
    input_ids = [[pad_id] * (width - len(row)) + row for row in rows]
    mask = [[0] * (width - len(row)) + [1] * len(row) for row in rows]
    with lm.lock:
        tokens = [display_tokens(tokenizer, row) for row in input_ids]
    return Batch(input_ids, mask, tokens, pad_id, pad_is_eos)


def run_trace(lm: LoadedModel, text: str, truncate: bool = False) -> Trace:
    """One uncached forward pass with hidden states.

    Text longer than `max_tokens(lm)` raises, or with truncate=True keeps the
    first tokens and records the original count in `truncated_from`.
    """
    if lm.kind == "classifier":
        raise LmvizError(f"{lm.name} is a sequence classifier: it predicts labels, not tokens.")
    ids = encode(lm, text)
    limit = max_tokens(lm)
    truncated_from = None
    if len(ids) > limit:
        if not truncate:
            raise LmvizError(
                f"The text is {len(ids)} tokens long; {lm.name} takes at most {limit} at once here. "
                "Shorten it."
            )
        truncated_from, ids = len(ids), ids[:limit]
    input_ids = torch.tensor([ids])
    with lm.lock, torch.inference_mode():
        output = lm.model(input_ids=input_ids, output_hidden_states=True)
        tokens = tuple(display_tokens(lm.tokenizer, ids))
    return Trace(
        model_name=lm.name,
        text=text,
        input_ids=input_ids[0],
        tokens=tokens,
        hidden=torch.stack(output.hidden_states)[:, 0].float(),
        logits=output.logits[0].float(),
        truncated_from=truncated_from,
    )


class TraceCache:
    """Least-recently-used traces, bounded in bytes; one computation per key even under threads."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple, Trace] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[tuple, threading.Lock] = {}
        self.hits = 0
        self.misses = 0

    def get(self, lm: LoadedModel, text: str, truncate: bool = False) -> Trace:
        key = (lm.name, id(lm.model), text, truncate, max_tokens(lm))
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self.hits += 1
                return self._entries[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:  # a second thread asking for the same key waits for the first
            with self._lock:
                if key in self._entries:
                    self.hits += 1
                    return self._entries[key]
            try:
                result = run_trace(lm, text, truncate)
            finally:
                with self._lock:
                    self._key_locks.pop(key, None)
            with self._lock:
                self.misses += 1
                self._entries[key] = result
                self._evict()
            return result

    def _evict(self) -> None:
        total = sum(entry.nbytes() for entry in self._entries.values())
        while total > self.max_bytes and len(self._entries) > 1:
            _, dropped = self._entries.popitem(last=False)
            total -= dropped.nbytes()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)


TRACES = TraceCache(max_bytes=int(os.environ.get("LMVIZ_TRACE_CACHE_MB", "1024")) * 2**20)


def trace(lm: LoadedModel, text: str, truncate: bool = False) -> Trace:
    """The cached Trace of `text` under `lm` (see run_trace)."""
    return TRACES.get(lm, text, truncate)
