"""Steering: push a model's generation one way by adding a vector to its residual stream (ActAdd).

Activation addition (Turner et al., 2023, "Steering Language Models With
Activation Engineering") needs no training. Run the model on two short
prompts that differ in one respect, say A = " hate" and B = " love", and take
the input of block l at each one's last token; their difference

    v = resid_pre_l(B) − resid_pre_l(A)

points from "hate" towards "love" in the space the blocks after l read. Add
scale × v to block l's input at every position while the model generates (the
prompt's positions, and each new token's as it comes) and the continuation
tends to go the B way; a negative scale pushes it the A way. Too large a scale
drowns what the residual stream was carrying and the text falls apart, so the
interesting part is a sweep: the same prompt continued greedily at a few
scales, next to the model as it is (scale 0, no edit at all).

Here v is the difference at the prompts' last tokens and is added at every
position; the paper aligns the two prompts token by token and adds at the
first positions only. `vector_norm` is ‖v‖, and each continuation reports
|scale| × ‖v‖, the size of what it adds.

The addition is one `Edit(Site("blocks.{l}.hook_resid_pre"), v, op="add")`,
held by `interventions.applying` over the one decoding loop
(`lmviz.forward.decoding.Decoding`, greedy): with the KV cache each step runs
only the new token, and that position gets v too, so it equals generate()
with the same addition hooked onto block l by hand.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch

from lmviz.errors import LmvizError
from lmviz.forward import decoding
from lmviz.forward import trace as tracing
from lmviz.forward.cache import cached
from lmviz.model import interventions
from lmviz.model.interventions import Edit, Recording, Site
from lmviz.model.models import LoadedModel
from lmviz.tokens import display_tokens, token_text

# Every new token is one pass: a full sweep (MAX_SCALES steered continuations and the unsteered one) of
# MAX_NEW_TOKENS tokens is 1,000 passes, about 3 minutes for SmolLM2 on two busy CPU cores (0.2 s a token).
MAX_NEW_TOKENS = 100
MAX_SCALES = 9
DEFAULT_NEW_TOKENS = 30
# The page's defaults, chosen on SmolLM2-135M (30 blocks) continuing "I think that you are" from " hate" to
# " love" (30 tokens; blocks 3, 6, 8 to 12, 15; scales -2 to 16). The one-token prompts sit at position 0,
# whose residual stream is the attention sink's: ~8x any other position's norm at block 6, ~150x at block 15.
# So from block 12 on ‖v‖ is ~1,800 and every scale tried gives one token repeated; at blocks 3 to 9 (‖v‖
# 79 to 93) scale 1 at best changes the subject and 2 or more gives gibberish. Block 10 (‖v‖ 49) steers
# readably: scale 1.5 "…the stories of a love, a memory…", 2 "(love, to love, to love)…", 3 falls apart,
# and -1 turns the unsteered praise into "using a non-standard approach to the problem. The problem is…".
DEFAULT_LAYER = 10
DEFAULT_SCALE = 2.0


@dataclass(frozen=True)
class Continuation:
    """The prompt continued greedily with scale × v added to block `layer`'s input (scale 0: no edit)."""

    scale: float
    token_ids: tuple[int, ...]  # (new,) ending with an end-of-sequence id if the model chose one
    tokens: tuple[str, ...]  # (new,) display strings
    text: str  # the new ids decoded together
    added_norm: float  # ‖scale × v‖ = |scale| × vector_norm


@dataclass(frozen=True)
class SteeringResult:
    """One prompt continued at several scales of one steering vector, and without it."""

    model_name: str
    text: str
    layer: int  # v is added to this block's input (blocks.{layer}.hook_resid_pre)
    from_text: str  # prompt A
    to_text: str  # prompt B: v points from A to B
    prompt_ids: tuple[int, ...]
    vector_norm: float  # ‖v‖, the unscaled difference
    unsteered: Continuation  # the model as it is
    sweep: tuple[Continuation, ...]  # one per scale asked, in that order


def steering_vector(lm: LoadedModel, layer: int, from_text: str, to_text: str) -> torch.Tensor:
    """v, (d_model,) float64 on the CPU: block `layer`'s input at the last token of `to_text` minus the same
    at the last token of `from_text`, each from one pass over that prompt alone."""
    site = Site(f"blocks.{layer}.hook_resid_pre")

    def last(prompt: str) -> torch.Tensor:
        recording = Recording([site], at=-1)
        interventions.forward(lm, torch.tensor([tracing.encode(lm, prompt)]), record=recording)
        return recording[site].double()
    return cached("steering vector", lm, (layer, from_text, to_text), lambda: last(to_text) - last(from_text))


def steer(lm: LoadedModel, text: str, layer: int, from_text: str, to_text: str, scales=(DEFAULT_SCALE,),
          max_new_tokens: int = DEFAULT_NEW_TOKENS) -> SteeringResult:
    """`text` continued greedily for up to `max_new_tokens` tokens with scale × v added to block `layer`'s
    input at every position, for each of `scales`, and without v (see the module docstring)."""
    lm.require_causal("steering")
    layer, max_new_tokens, scales = int(layer), int(max_new_tokens), tuple(float(s) for s in scales)
    if not 0 <= layer < lm.n_layers:
        raise LmvizError(f"Layer {layer} is outside {lm.name}'s layers (0..{lm.n_layers - 1}).")
    if not from_text.strip() or not to_text.strip():
        raise LmvizError("Steering needs two prompts to contrast (from A, to B); one of them is empty.")
    if not 1 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise LmvizError(f"Generate between 1 and {MAX_NEW_TOKENS} tokens, not {max_new_tokens}.")
    if not 1 <= len(scales) <= MAX_SCALES or not all(math.isfinite(s) for s in scales):
        raise LmvizError(f"Give 1 to {MAX_SCALES} finite scales, not ({', '.join(f'{s:g}' for s in scales)}).")
    prompt_ids = tuple(tracing.encode(lm, text))
    if len(prompt_ids) + max_new_tokens > tracing.max_tokens(lm):
        raise tracing.too_long(lm, len(prompt_ids) + max_new_tokens)
    v = steering_vector(lm, layer, from_text, to_text)
    norm = float(v.norm())

    def at(scale: float) -> Continuation:
        key = (prompt_ids, max_new_tokens) + ((layer, from_text, to_text, scale) if scale else ())  # 0: no edit
        edits = (Edit(Site(f"blocks.{layer}.hook_resid_pre"), scale * v, op="add"),) if scale else ()
        return cached("steering", lm, key, lambda: continuation(lm, prompt_ids, edits, max_new_tokens, scale, norm))
    return SteeringResult(lm.name, text, layer, from_text, to_text, prompt_ids, norm, at(0.0),
                          tuple(at(scale) for scale in scales))


def continuation(lm: LoadedModel, prompt_ids: tuple[int, ...], edits: tuple[Edit, ...], max_new_tokens: int,
                 scale: float, norm: float) -> Continuation:
    """The greedy continuation of `prompt_ids` with `edits` held on every step (the one decoding loop);
    `scale` and `norm` only label it (the vector's size is |scale| x norm)."""
    with interventions.applying(lm, edits=edits):
        ids = [t.id for t in itertools.islice(decoding.Decoding(lm.model, prompt_ids, decoding.greedy),
                                              max_new_tokens)]
    with lm.lock:
        shown = tuple(display_tokens(lm.tokenizer, ids))
        text = "".join(token_text(lm.tokenizer, t) for t in ids)
    return Continuation(scale, tuple(ids), shown, text, abs(scale) * norm)
