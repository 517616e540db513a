"""The one decoding loop: feed a causal LM its tokens step by step, as generate() does.

Two layers:

- `Decoder(model, ids)` is one step for a batch of sequences (one row per beam
  or sample). `step()` runs the model on what it has not seen yet and returns
  the next-token logits and log-probabilities of every row; `append(tokens)`
  adds one token per row; `reorder(rows)` picks rows (beam search keeps the
  best beams, with their keys and values). Like generate(), it asks for the
  last position's logits only (`logits_to_keep=1`), passes position ids
  counted from 0 (RoBERTa-style models would otherwise start at
  padding_idx + 1), keeps the logits in float32 on the model's device, and
  lets the model build its own KV cache on the first call (a DynamicCache, or
  the cache class the model brings); a model without a cache (e.g. GPT-1) gets
  its whole sequence again at every step.
- `Decoding(model, prompt_ids, choose)` is the loop around one sequence:
  step, let a *chooser* pick the token, record it (`Token`: id,
  log-probability, rank, whether it ends the text), append, repeat. It is an
  iterator, so a caller takes as many tokens as it wants and may come back for
  more later (the sampling page's runs do).

A chooser is any `choose(logits, ids) -> token id`: logits (vocab,) float32 and
ids (pos,), the prompt and the tokens so far, both on the model's device. `greedy` (below) is
generate(do_sample=False); `lmviz.analyses.sampling.Sampler` applies transformers'
processors and draws as generate(do_sample=True) does; what-if generation is
`greedy` after forced tokens. Beam search keeps its own expand-and-prune rule
on `Decoder.step()`.

One precision: log-probabilities are float32 log_softmax of the float32
logits, what generate() computes, so beam scores (sums of them) equal its
`sequences_scores`. One EOS rule: the ids in the generation config
(`eos_ids`), and a text ends at the first one chosen after the forced tokens.
One seed rule: `check_seed`.
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from lmviz.model import compute
from lmviz.errors import LmvizError
from lmviz.forward.trace import accepts_logits_to_keep

Chooser = Callable[[torch.Tensor, torch.Tensor], int]  # (logits (vocab,), ids so far (pos,)) -> the next token id


class Decoder:
    """Incremental decoding of a batch of sequences (batch, pos)."""

    def __init__(self, model: nn.Module, input_ids: torch.Tensor):
        self.model = model
        self.device = model.get_input_embeddings().weight.device  # where the inputs go, and the logits come
        input_ids = input_ids.to(self.device)
        self.sequences = input_ids  # (batch, pos) everything so far, on the model's device
        self.pending = input_ids  # (batch, new) what the model has not seen yet
        self.cache = None  # the model's KV cache, from its first call on
        self.uses_cache: bool | None = None  # unknown until the first call
        self.extra = {"logits_to_keep": 1} if accepts_logits_to_keep(model) else {}
        self.positions = "position_ids" in inspect.signature(model.forward).parameters

    @torch.inference_mode()
    def step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, log-probabilities) of the token after each sequence: (batch, vocab) float32 on the model's
        device, the logits a copy as generate() takes them."""
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
            logits = output.logits[:, -1, :].to(device=self.device, dtype=torch.float32, copy=True)
            return logits, nn.functional.log_softmax(logits, dim=-1)

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


@dataclass(frozen=True)
class Token:
    """One generated token, scored under the model given everything before it."""

    id: int
    logprob: float  # log P(token | before), float32 log_softmax of the raw logits (T = 1, no filter)
    rank: int  # 1 = the model's most probable token there (tokens with equal logits share a rank)
    eos: bool  # an end-of-sequence id: the text ends here


def greedy(logits: torch.Tensor, ids: torch.Tensor) -> int:
    """The chooser of generate(do_sample=False): the most probable token (the first of equal maxima)."""
    return int(torch.argmax(logits))


class Decoding:
    """The one decoding loop over one sequence: an iterator of `Token`s.

    Each `next()` is one step: a forward pass over the newest token (with the
    KV cache), then the next of the `forced` tokens or else `choose`'s pick,
    recorded as a `Token`. It ends after an end-of-sequence id that no forced
    token follows, and otherwise goes on as long as asked: take n tokens with
    itertools.islice, and keep it to continue later.
    """

    def __init__(self, model: nn.Module, prompt_ids: Sequence[int], choose: Chooser, forced: Sequence[int] = ()):
        self.decoder = Decoder(model, torch.tensor([list(prompt_ids)], dtype=torch.long))
        self.choose = choose
        self.forced = tuple(int(t) for t in forced)
        self.stop = frozenset(eos_ids(model))
        self.new = 0  # tokens generated so far
        self.ended = False

    def __iter__(self) -> Decoding:
        return self

    @torch.inference_mode()
    def __next__(self) -> Token:
        if self.ended:
            raise StopIteration
        logits, log_probs = (row[0] for row in self.decoder.step())  # (vocab,) each
        n, self.new = self.new, self.new + 1
        token = self.forced[n] if n < len(self.forced) else int(self.choose(logits, self.decoder.sequences[0]))
        self.ended = token in self.stop and self.new >= len(self.forced)
        self.decoder.append(torch.tensor([token]))  # seen by the model at the next step
        return Token(token, float(log_probs[token]), int((logits > logits[token]).sum()) + 1, self.ended)


def eos_ids(model: nn.Module) -> tuple[int, ...]:
    """The ids generate() stops at: the generation config's eos_token_id (an id, a list, or none)."""
    config = getattr(model, "generation_config", None)
    eos = getattr(config, "eos_token_id", None)
    if eos is None:
        return ()
    return tuple(dict.fromkeys(int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])))


def check_seed(seed) -> int:
    """A sampling seed as an int from 0 to 2^63 - 1 (what torch.manual_seed takes), or LmvizError."""
    if isinstance(seed, float) and seed.is_integer():
        seed = int(seed)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**63:
        raise LmvizError(f"The seed must be a whole number from 0 to 2^63 - 1, not {seed!r}.")
    return int(seed)
