"""Ablation: take one head or block out of the model and see what changes.

Zero-ablation replaces the component's output by zeros; mean-ablation by its
mean over this text's positions (less of a shock to the layers after it: the
component still says "something typical", just nothing about this position).
For a head the output is its d_head slice of the output projection's input;
for a block, what it adds to the residual stream. Either is one `Edit` of the
component's site (`Component.site`, `lmviz.model.interventions`).

The result compares the next-token distribution after the last token before
and after (top tokens, KL(before ‖ after) in nats, computed in float64 over the
whole vocabulary) and the text's loss: the mean negative log-likelihood of
every token after the first, as the loss page scores a text that fits at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmviz.model import interventions
from lmviz.forward import trace as trace_module
from lmviz.forward.cache import cached
from lmviz.errors import LmvizError
from lmviz.model.interventions import Component, Edit, Recording, Site
from lmviz.model.models import LoadedModel
from lmviz.tokens import display_tokens

TOP_K = 10
MODES = ("zero", "mean")
# bytes of the (pos, vocab) float32 logits one ablation pass keeps whole (the text's loss needs every row):
# a longer text is refused. Not windows.BATCH_LOGITS_BUDGET, a batching threshold with a chunked fallback.
ABLATION_LOGITS_LIMIT = 2**30


@dataclass(frozen=True)
class Outcome:
    """What one pass over the text predicts (float64)."""

    last_log_probs: torch.Tensor  # (vocab,) log-probabilities after the last token
    loss: float  # mean NLL of tokens 1..n-1 (nats); NaN for a one-token text


@dataclass(frozen=True)
class AblationResult:
    """The model with `component` ablated against the model as it is, on one text."""

    model_name: str
    text: str
    component: Component
    mode: str  # "zero" | "mean"
    top_ids: tuple[int, ...]  # (k,) after ablation, most probable first
    top_probs: tuple[float, ...]  # (k,)
    top_tokens: tuple[str, ...]  # (k,) display strings
    before_ids: tuple[int, ...]  # (k,) the model as it is
    before_probs: tuple[float, ...]  # (k,)
    before_tokens: tuple[str, ...]  # (k,)
    kl: float  # KL(before ‖ after) of the next-token distribution after the last token, nats
    loss_before: float  # the text's mean NLL (nats)
    loss_after: float
    after_of_before: tuple[float, ...]  # (k,) after ablation, the probabilities of `before_ids`
    before_of_after: tuple[float, ...]  # (k,) before ablation, the probabilities of `top_ids`

    @property
    def loss_change(self) -> float:
        return self.loss_after - self.loss_before


def _outcome(logits: torch.Tensor, ids: list[int], rows: int = 256) -> Outcome:
    """(pos, vocab) logits -> Outcome, in float64 a block of rows at a time."""
    nll = []
    for start in range(0, len(ids) - 1, rows):
        block = torch.log_softmax(logits[start:start + rows].double(), dim=-1)
        scored = torch.tensor(ids[start + 1:start + 1 + block.shape[0]])
        nll.append(-block[torch.arange(scored.shape[0]), scored])
    loss = float(torch.cat(nll).mean()) if nll else float("nan")
    return Outcome(torch.log_softmax(logits[-1].double(), dim=-1), loss)


def max_ablation_tokens(lm: LoadedModel) -> int:
    """Longest text ablated at once: its logits must fit ABLATION_LOGITS_LIMIT (5,461 tokens for a 49k
    vocabulary)."""
    return max(1, min(trace_module.max_tokens(lm), ABLATION_LOGITS_LIMIT // (4 * lm.vocab_size)))


@dataclass(frozen=True)
class _Clean:
    outcome: Outcome
    means: dict[Site, torch.Tensor]  # every block's attn.hook_z, hook_attn_out, hook_mlp_out: mean over positions


def _ids(lm: LoadedModel, text: str) -> list[int]:
    lm.require_causal("ablation")
    lm.arch.require_decomposition()
    ids = trace_module.encode(lm, text)
    if len(ids) > max_ablation_tokens(lm):
        raise LmvizError(f"The text is {len(ids)} tokens long; ablation on {lm.name} takes at most "
                         f"{max_ablation_tokens(lm)} (its logits over every position must fit "
                         f"{ABLATION_LOGITS_LIMIT // 2**20:,} MB). Shorten it.")
    return ids


def _clean(lm: LoadedModel, text: str, ids: list[int]) -> _Clean:
    def compute() -> _Clean:
        sites = [Site(f"blocks.{layer}.{hook}") for layer in range(lm.n_layers)
                 for hook in ("attn.hook_z", "hook_attn_out", "hook_mlp_out")]
        recording = Recording(sites, at="mean")
        logits = interventions.run(lm, torch.tensor([ids]), record=recording)
        return _Clean(_outcome(logits, ids), {site: recording[site][0] for site in sites})
    return cached("ablation-clean", lm, (text,), compute)


def check_component(lm: LoadedModel, component: Component) -> Component:
    parts = lm.arch.require_decomposition()
    if not 0 <= component.layer < lm.n_layers:
        raise LmvizError(f"Layer {component.layer} is outside {lm.name}'s layers (0..{lm.n_layers - 1}).")
    if component.head is not None and not 0 <= component.head < parts.n_heads:
        raise LmvizError(f"Head {component.head} is outside {lm.name}'s heads (0..{parts.n_heads - 1}).")
    return component


def edit_for(lm: LoadedModel, text: str, component: Component, mode: str) -> Edit:
    """The Edit that zero- or mean-ablates `component` on `text`."""
    if mode not in MODES:
        raise LmvizError(f"Ablation mode must be one of {', '.join(MODES)}, not '{mode}'.")
    site = check_component(lm, component).site
    if mode == "zero":
        return Edit(site)
    value = _clean(lm, text, _ids(lm, text)).means[Site(site.name)]  # the whole site: every head side by side
    if component.kind == "head":
        width = lm.arch.require_decomposition().d_head
        value = value[component.head * width:(component.head + 1) * width]
    return Edit(site, value)


def ablate(lm: LoadedModel, text: str, component: Component, mode: str = "zero", k: int = TOP_K) -> AblationResult:
    """The cached effect of ablating `component` on `text` (see the module docstring)."""
    ids = _ids(lm, text)
    edit = edit_for(lm, text, component, mode)
    key = (text, component, mode, k)
    return cached("ablation", lm, key, lambda: _ablate(lm, text, ids, component, edit, mode, k))


def _ablate(lm: LoadedModel, text: str, ids: list[int], component: Component, edit: Edit, mode: str,
            k: int) -> AblationResult:
    before = _clean(lm, text, ids).outcome
    after = _outcome(interventions.run(lm, torch.tensor([ids]), edits=(edit,)), ids)
    p_before = before.last_log_probs.exp()
    kl = float((p_before * (before.last_log_probs - after.last_log_probs)).sum())
    top_after = torch.topk(after.last_log_probs, k)
    top_before = torch.topk(before.last_log_probs, k)
    with lm.lock:
        tokens_after = tuple(display_tokens(lm.tokenizer, top_after.indices.tolist()))
        tokens_before = tuple(display_tokens(lm.tokenizer, top_before.indices.tolist()))
    return AblationResult(
        lm.name, text, component, mode,
        tuple(top_after.indices.tolist()), tuple(top_after.values.exp().tolist()), tokens_after,
        tuple(top_before.indices.tolist()), tuple(top_before.values.exp().tolist()), tokens_before,
        max(kl, 0.0), before.loss, after.loss, tuple(after.last_log_probs[top_before.indices].exp().tolist()),
        tuple(before.last_log_probs[top_after.indices].exp().tolist()),
    )
