"""The one decoding loop's engine: feed a causal LM its tokens step by step, as generate() does.

`Decoder(model, ids)` holds a batch of sequences (one row per beam or sample).
`next_logits()` runs the model on what it has not seen yet and returns the
next-token logits of every row; `append(tokens)` adds one token per row;
`reorder(rows)` picks rows (beam search keeps the best beams, with their keys
and values). Like generate(), it asks for the last position's logits only
(`logits_to_keep=1`), passes position ids counted from 0 as generate() does
(RoBERTa-style models would otherwise start at padding_idx + 1), and lets the
model build its own KV cache on the first call (a DynamicCache, or the cache
class the model brings); a model without a cache (e.g. GPT-1) gets its whole
sequence again at every step.

The sampling page, and the beam page's beam, greedy and sampling rows, all
step through this one class.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from lmviz import compute
from lmviz.trace import accepts_logits_to_keep


class Decoder:
    """Incremental decoding of a batch of sequences (batch, pos)."""

    def __init__(self, model: nn.Module, input_ids: torch.Tensor):
        self.model = model
        self.device = model.get_input_embeddings().weight.device  # where the inputs go
        input_ids = input_ids.to(self.device)
        self.sequences = input_ids  # (batch, pos) everything so far, on the model's device
        self.pending = input_ids  # (batch, new) what the model has not seen yet
        self.cache = None  # the model's KV cache, from its first call on
        self.uses_cache: bool | None = None  # unknown until the first call
        self.extra = {"logits_to_keep": 1} if accepts_logits_to_keep(model) else {}
        self.positions = "position_ids" in inspect.signature(model.forward).parameters

    @torch.inference_mode()
    def next_logits(self) -> torch.Tensor:
        """(batch, vocab) float32 logits of the token after each sequence (a copy, not a view)."""
        inputs = self.sequences if self.uses_cache is False else self.pending
        extra = dict(self.extra)
        if self.positions:
            start = self.sequences.shape[1] - inputs.shape[1]
            extra["position_ids"] = torch.arange(start, self.sequences.shape[1], device=self.device).expand(
                inputs.shape[0], -1)
        with compute.slot():
            output = self.model(input_ids=inputs, past_key_values=self.cache, use_cache=True, return_dict=True,
                                **extra)
        self.cache = getattr(output, "past_key_values", None)
        if self.uses_cache is None:
            self.uses_cache = self.cache is not None
        return output.logits[:, -1, :].to(device="cpu", dtype=torch.float32, copy=True)

    def append(self, tokens: torch.Tensor) -> None:
        """Add one token (batch,) to every sequence."""
        column = tokens.reshape(-1, 1).to(device=self.device, dtype=self.sequences.dtype)
        self.sequences = torch.cat([self.sequences, column], dim=1)
        self.pending = column

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep sequences `rows` (batch,), in that order, with their cached keys and values."""
        rows = rows.to(self.device)
        self.sequences = self.sequences[rows]
        if self.cache is not None:
            self.cache.reorder_cache(rows)
