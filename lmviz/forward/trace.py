"""One forward pass, kept: the input tokens and every layer's hidden states.

Every analysis starts from a `Trace`. `trace(lm, text)` runs the model once
with `output_hidden_states=True` and keeps the result in lmviz's one cache
(`lmviz.forward.cache`), so the pages, the CLI and a notebook asking about the same
(model, text) share one pass.

A trace holds no (pos, vocab) logits: at 2,048 tokens they would take 400 MB
for SmolLM2 and 2 GB for a 262k vocabulary. `logits(lm, t, rows)` recomputes
the rows asked for from the last hidden state with the model's verified head
(`lmviz.model.head`), the same operations the model runs. Every trace checks that
on its last position against the model's own logits.

The residual stream is recorded where the blocks pass it on (the sites
`blocks.{l}.hook_resid_pre`, through `lmviz.model.interventions`), so models whose
`hidden_states` skip the embeddings (Mamba, RWKV) are traced right too.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from typing import Sequence

import torch

from lmviz.model import interventions
from lmviz.forward.cache import budget_bytes, cached
from lmviz.errors import LmvizError
from lmviz.model.models import LoadedModel
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
    hidden: torch.Tensor  # (layer+1, pos, d_model) in the model's dtype
    last_logits: torch.Tensor  # (vocab,) float32: the model's own logits at the last position
    truncated_from: int | None = None  # token count before truncation to the context, if any
    # what the unembedding reads, where that is not hidden[-1] (e.g. BERT's MLM transform output)
    head_input: torch.Tensor | None = None  # (pos, d_head) in the model's dtype, or None: hidden[-1]
    # the model's own logits, kept only for a model whose head lmviz could not verify
    own_logits: torch.Tensor | None = None  # (pos, vocab) float32, or None
    patched: str | None = None  # what was changed during the pass (activation patching), else None

    @property
    def n_tokens(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def n_layers(self) -> int:
        return int(self.hidden.shape[0]) - 1

    def nbytes(self) -> int:
        tensors = [t for t in (self.input_ids, self.hidden, self.last_logits, self.head_input, self.own_logits)
                   if t is not None]
        return sum(t.element_size() * t.nelement() for t in tensors)


def logits(lm: LoadedModel, t: Trace, rows=slice(None)) -> torch.Tensor:
    """(n, vocab) float32: the model's output logits at positions `rows` (an index, slice or list)."""
    if t.own_logits is not None:
        return t.own_logits[rows]
    read = t.head_input if t.head_input is not None else t.hidden[-1]
    return lm.head.logits(read[rows], normalize=False)


def max_tokens(lm: LoadedModel) -> int:
    """Longest input traced at once: $LMVIZ_MAX_TOKENS if set, else the model's whole context where one
    trace's hidden states fit lmviz's cache budget ($LMVIZ_TRACE_CACHE_MB), else as many tokens as fit.

    SmolLM2 keeps 31 x 576 float32 numbers per token (71 KB), so its 8,192-token context needs 585 MB
    of the default 1,024 MB. Never more than the model's context."""
    if os.environ.get("LMVIZ_MAX_TOKENS"):
        return max(1, min(lm.context_length, int(os.environ["LMVIZ_MAX_TOKENS"])))
    return max(1, min(lm.context_length, budget_bytes() // hidden_bytes_per_token(lm)))


def limit_reason(lm: LoadedModel) -> str:
    """Why max_tokens(lm) is what it is, in words for a message."""
    limit = max_tokens(lm)
    if os.environ.get("LMVIZ_MAX_TOKENS") and limit < lm.context_length:
        return f"$LMVIZ_MAX_TOKENS={os.environ['LMVIZ_MAX_TOKENS']}"
    if limit < lm.context_length:
        return (f"its hidden states at more tokens would not fit the {budget_bytes() // 2**20:,} MB cache "
                "budget ($LMVIZ_TRACE_CACHE_MB)")
    return "the model's context"


def hidden_bytes_per_token(lm: LoadedModel) -> int:
    """What a trace keeps per token: every layer's hidden state (layer+1 x d_model) in the model's dtype."""
    return (lm.n_layers + 1) * lm.d_model * lm.model.dtype.itemsize


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


_LOGITS_TO_KEEP: dict[type, bool] = {}


def accepts_logits_to_keep(model) -> bool:
    """True when the model's forward takes `logits_to_keep` (compute the head on the last rows only)."""
    kind = type(model)
    if kind not in _LOGITS_TO_KEEP:
        _LOGITS_TO_KEEP[kind] = "logits_to_keep" in inspect.signature(model.forward).parameters
    return _LOGITS_TO_KEEP[kind]


def run_trace(lm: LoadedModel, text: str, truncate: bool = False, edits: Sequence[interventions.Edit] = (),
              patched: str | None = None) -> Trace:
    """One uncached forward pass with hidden states.

    Text longer than `max_tokens(lm)` raises, or with truncate=True keeps the
    first tokens and records the original count in `truncated_from`. `edits`
    change the pass (activation patching), described by `patched`.
    """
    if lm.kind == "classifier":
        raise LmvizError(f"{lm.name} is a sequence classifier: it predicts labels, not tokens.")
    ids = encode(lm, text)
    limit = max_tokens(lm)
    truncated_from = None
    if len(ids) > limit:
        if not truncate:
            raise too_long(lm, len(ids))
        truncated_from, ids = len(ids), ids[:limit]
    input_ids = torch.tensor([ids])
    verified = lm.arch.refusal is None
    reads_last = lm.arch.head_reads_last_hidden
    # the head reads hidden[-1] itself: the model need only compute its last row of logits (our check)
    extra = {"logits_to_keep": 1} if verified and reads_last and accepts_logits_to_keep(lm.model) else {}
    final = interventions.Site(interventions.FINAL)  # what the unembedding reads, where that is not hidden[-1]
    stream = [interventions.Site(f"blocks.{layer}.hook_resid_pre") for layer in range(len(lm.arch.blocks))]
    recording = interventions.Recording(stream + ([] if reads_last else [final]) if verified else [])
    output = interventions.forward(lm, input_ids, record=recording, edits=edits, output_hidden_states=True, **extra)
    with lm.lock:
        tokens = tuple(display_tokens(lm.tokenizer, ids))
    if verified:  # the residual stream as the blocks passed it on, then transformers' last (normed) state
        layers = [recording[site] for site in stream] + [output.hidden_states[-1][0].cpu()]
    else:
        layers = [h[0].cpu() for h in output.hidden_states or ()]
    if not layers or len({tuple(h.shape) for h in layers}) != 1:
        raise LmvizError(f"{lm.name}'s layers don't pass on hidden states of one shape, so lmviz can't trace it "
                         "as one residual stream.")
    hidden = torch.stack(layers)  # in the model's dtype, kept in host memory like every result
    head_input = None if not verified or reads_last else recording[final].to(hidden.dtype)
    result = Trace(
        model_name=lm.name, text=text, input_ids=input_ids[0], tokens=tokens, hidden=hidden,
        last_logits=output.logits[0, -1].float().cpu(), truncated_from=truncated_from, head_input=head_input,
        own_logits=None if verified else output.logits[0].float().cpu(), patched=patched,
    )
    if verified:
        _check_last_position(lm, result, result.last_logits)
    return result


def _check_last_position(lm: LoadedModel, t: Trace, own: torch.Tensor) -> None:
    """The head lmviz recomputes logits with must give the model's own logits at the last position."""
    read = (t.head_input if t.head_input is not None else t.hidden[-1])[-1:]
    ours = logits(lm, t, slice(-1, None))[0]
    bound = lm.head.error_bound(read)[0]
    if not bool(((ours - own.float()).abs() <= bound).all()):
        raise LmvizError(f"lmviz's copy of {lm.name}'s head disagrees with the model's own logits on this "
                         "text, so it won't show numbers computed from it.")


def trace(lm: LoadedModel, text: str, truncate: bool = False) -> Trace:
    """The cached Trace of `text` under `lm` (see run_trace). One pass serves both values of `truncate`:
    a text that fits is traced once whichever page asks first."""
    limit = max_tokens(lm)
    result = cached("trace", lm, (text, limit), lambda: run_trace(lm, text, truncate=True))
    if result.truncated_from and not truncate:
        raise too_long(lm, result.truncated_from)
    return result


def too_long(lm: LoadedModel, n_tokens: int) -> LmvizError:
    """The error for a text longer than max_tokens(lm)."""
    return LmvizError(f"The text is {n_tokens} tokens long; {lm.name} takes at most {max_tokens(lm)} at once "
                      "here. Shorten it.")
