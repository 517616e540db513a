"""Features: a text read through a sparse autoencoder (SAE), and a latent turned up to steer generation.

`features(lm, text, sae)` runs the text once, records the SAE's site (the
residual stream at a block's input or output, `lmviz.analyses.sae`) at every
position, and encodes it: which latents are active where, and how strongly.
It also measures how well the SAE stands in for the site on this text:

- **Explained variance** 1 − Σ‖x − x̂‖² / Σ‖x − x̄‖² over positions 1..n−1, x̄
  their mean. Position 0 is left out: it is the attention sink, whose residual
  norm is many times any other's (DESIGN.md), and SAEs are trained without it.
- **Cross-entropy** (mean NLL, nats, of every token after the first, as the
  loss page scores a text) three ways: the model as it is; with the SAE's
  reconstruction x̂ spliced in at the site at every position but the first
  (one `Edit` replace); and with the site zeroed at the same positions. CE
  recovered = (CE_zero − CE_sae) / (CE_zero − CE_clean): 1 when the splice costs
  nothing, 0 when it is as bad as losing the site altogether. The prediction
  made at position 0 is the same in all three passes and cancels in the ratio.
  The splice is exact with x̂ computed from the clean pass: the site's values
  depend only on the blocks before it, which the edit does not touch.

`contributions(lm, result, sae, position, target)` splits a latent's *direct*
effect on one prediction: activation × its decoder direction through the
final norm (held fixed at the actual final residual, as direct logit
attribution holds it) and the unembedding, for a target token.

`steer_feature(lm, text, sae, latent, alpha)` adds alpha × the latent's
decoder direction at the SAE's site at every position while the model
continues the text greedily, through the one decoding loop
(`lmviz.analyses.steering`), next to the continuation without it.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch

from lmviz.analyses import ablation, attribution, steering
from lmviz.analyses.sae import Sae
from lmviz.analyses.windows import score_rows
from lmviz.errors import LmvizError
from lmviz.forward import trace as tracing
from lmviz.forward.cache import cached
from lmviz.model import interventions
from lmviz.model.frozen_norm import require_frozen
from lmviz.model.interventions import Edit, Recording, Site
from lmviz.model.models import LoadedModel
from lmviz.tokens import display_tokens

MAX_TOKENS = 512  # longest text read at once: the activations are kept dense, (pos, d_sae)
TOP_K = 8  # latents listed per position
DEFAULT_ALPHA = 10.0  # steering strength on the page: alpha × the latent's decoder row at every position


@dataclass(frozen=True, eq=False)
class Features:
    """One text through one SAE. Dimension names: pos (the text's tokens), d_sae (latents), k."""

    model_name: str
    text: str
    sae_name: str
    hook: str  # the site the SAE reads: "blocks.8.hook_resid_pre"
    input_ids: torch.Tensor  # (pos,) int64
    tokens: tuple[str, ...]  # (pos,) display strings
    activations: torch.Tensor  # (pos, d_sae) float32: every latent's activation at every position
    top_ids: torch.Tensor  # (pos, k) int64: the k most active latents per position, most active first
    top_values: torch.Tensor  # (pos, k) float32: their activations (0 where fewer than k are active)
    site_norms: torch.Tensor  # (pos,) float64 ‖x‖, the site's activation
    error_norms: torch.Tensor  # (pos,) float64 ‖x − x̂‖, what the SAE misses
    explained_variance: float  # over positions 1..n−1 (NaN with fewer than 2 of them)
    ce_clean: float  # nats per token, every token after the first (NaN for a one-token text)
    ce_sae: float  # with x̂ spliced in at positions 1..n−1
    ce_zero: float  # with the site zeroed at positions 1..n−1
    predicted_ids: torch.Tensor  # (pos,) int64: the model's top next token at each position (clean pass)
    final_residuals: torch.Tensor  # (pos, d_model) the last block's output: where the final norm is held

    @property
    def n_tokens(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def d_sae(self) -> int:
        return int(self.activations.shape[1])

    @property
    def l0(self) -> torch.Tensor:
        """(pos,) int64: how many latents are active at each position."""
        return (self.activations > 0).sum(-1)

    @property
    def ce_recovered(self) -> float:
        """(CE_zero − CE_sae) / (CE_zero − CE_clean); NaN where zeroing the site changes nothing."""
        gap = self.ce_zero - self.ce_clean
        return (self.ce_zero - self.ce_sae) / gap if gap != 0 and math.isfinite(gap) else float("nan")

    def top_features(self, position: int) -> list[tuple[int, float]]:
        """The active latents among the top k at `position`: (id, activation), most active first."""
        return [(int(i), float(v)) for i, v in zip(self.top_ids[position].tolist(), self.top_values[position].tolist())
                if v > 0]


@dataclass(frozen=True)
class LatentContributions:
    """The active latents at one position, each with its direct effect on the logit of `target_id` there."""

    position: int
    target_id: int
    target_token: str  # display string
    latents: torch.Tensor  # (n,) int64: the active latents, largest |contribution| first
    activations: torch.Tensor  # (n,) float32
    contributions: torch.Tensor  # (n,) float64: activation × direction through the frozen final norm · W_U[target]


def max_feature_tokens(lm: LoadedModel) -> int:
    """Longest text read through an SAE: MAX_TOKENS, or fewer where its logits would not fit (as ablation)."""
    return min(MAX_TOKENS, ablation.max_ablation_tokens(lm))


def _ids(lm: LoadedModel, text: str, sae: Sae, what: str) -> list[int]:
    lm.require_causal(what)
    sae.check(lm)
    ids = tracing.encode(lm, text)
    if len(ids) > max_feature_tokens(lm):
        raise LmvizError(f"The text is {len(ids)} tokens long; an SAE reads at most {max_feature_tokens(lm)} at once "
                         "here (every latent is kept at every position). Shorten it.")
    return ids


def features(lm: LoadedModel, text: str, sae: Sae, k: int = TOP_K) -> Features:
    """`text` through `sae` (see the module docstring); cached per (text, SAE files, k)."""
    ids = _ids(lm, text, sae, "an SAE's features")
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k <= sae.d_sae:
        raise LmvizError(f"List between 1 and {sae.d_sae} latents per position, not {k!r}.")
    k = int(k)
    return cached("sae-features", lm, (text, sae.key, k), lambda: _features(lm, text, ids, sae, k))


def _mean_nll(logits: torch.Tensor, ids: torch.Tensor) -> float:
    """Mean NLL (nats) of tokens 1..n−1 under (pos, vocab) logits, as the loss page scores them."""
    return float(score_rows(logits[:-1], ids[1:])[0].mean()) if len(ids) > 1 else float("nan")


def _features(lm: LoadedModel, text: str, ids: list[int], sae: Sae, k: int) -> Features:
    site, last = sae.site, Site(f"blocks.{lm.n_layers - 1}.hook_resid_post")
    recording = Recording(list(dict.fromkeys([site, last])))
    batch, targets = torch.tensor([ids]), torch.tensor(ids)
    logits = interventions.run(lm, batch, record=recording)  # (pos, vocab) float32
    ce_clean, predicted = _mean_nll(logits, targets), logits.argmax(-1)
    del logits
    x = recording[site]  # (pos, d_in) in the model's dtype
    acts = sae.encode(x)  # (pos, d_sae)
    recon = sae.decode(acts)  # (pos, d_in)
    x64, error = x.double(), x.double() - recon.double()
    ce_sae = ce_zero = float("nan")
    if len(ids) > 1:
        splice = Edit(site, recon[1:], at=slice(1, None))
        ce_sae = _mean_nll(interventions.run(lm, batch, edits=(splice,)), targets)
        ce_zero = _mean_nll(interventions.run(lm, batch, edits=(Edit(site, 0.0, at=slice(1, None)),)), targets)
    spread = float((x64[1:] - x64[1:].mean(0)).pow(2).sum()) if len(ids) > 2 else 0.0
    explained = 1 - float(error[1:].pow(2).sum()) / spread if spread > 0 else float("nan")
    top = torch.topk(acts, min(k, sae.d_sae), dim=-1)
    with lm.lock:
        tokens = tuple(display_tokens(lm.tokenizer, ids))
    return Features(lm.name, text, sae.name, sae.hook, targets, tokens, acts, top.indices, top.values,
                    x64.norm(dim=-1), error.norm(dim=-1), explained, ce_clean, ce_sae, ce_zero, predicted,
                    recording[last].clone())


def contributions(lm: LoadedModel, result: Features, sae: Sae, position: int | None = None,
                  target: int | None = None) -> LatentContributions:
    """Each latent active at `position` (default: the last), with its direct contribution to the logit of
    `target` (default: the model's top next token there): activation × its decoder direction through the final
    norm held at the final residual there · the target's unembedding direction (before any soft-cap)."""
    if result.sae_name != sae.name or result.hook != sae.hook or result.d_sae != sae.d_sae:
        raise LmvizError(f"These features were read with {result.sae_name}, not {sae.name}.")
    position = attribution.check_position(position, result.n_tokens)
    target = int(result.predicted_ids[position]) if target is None else int(target)
    if not 0 <= target < lm.vocab_size:
        raise LmvizError(f"Token id {target} is outside {lm.name}'s vocabulary (0..{lm.vocab_size - 1}).")
    head = lm.head
    if not head.linear:
        raise LmvizError(f"{lm.name}'s unembedding is not one linear layer, so lmviz can't attribute its logits.")
    final = require_frozen(head.norm, result.final_residuals[position].unsqueeze(0), "final norm", lm)
    direction, _ = head.direction(target)
    activations = result.activations[position]
    active = torch.nonzero(activations > 0)[:, 0]
    vectors = torch.stack([sae.direction(int(j)) for j in active]) if len(active) else torch.zeros(0, sae.d_in)
    values = activations[active].double() * (final.linear(vectors) @ direction)
    order = torch.argsort(values.abs(), descending=True, stable=True)
    with lm.lock:
        shown = display_tokens(lm.tokenizer, [target])[0]
    return LatentContributions(position, target, shown, active[order], activations[active][order], values[order])


# ---------------------------------------------------------------- steering with a latent


@dataclass(frozen=True)
class FeatureSteering:
    """A prompt continued greedily with alpha × one latent's decoder direction added at the SAE's site at every
    position, next to the model as it is."""

    model_name: str
    text: str
    sae_name: str
    hook: str
    latent: int
    alpha: float
    prompt_ids: tuple[int, ...]
    vector_norm: float  # ‖the latent's decoder direction‖: what one unit of it adds
    unsteered: steering.Continuation  # the model as it is (shared with the steering page's cache)
    steered: steering.Continuation  # scale = alpha, added_norm = |alpha| × vector_norm


def steer_feature(lm: LoadedModel, text: str, sae: Sae, latent: int, alpha: float,
                  max_new_tokens: int = steering.DEFAULT_NEW_TOKENS) -> FeatureSteering:
    """`text` continued greedily for up to `max_new_tokens` tokens with alpha × latent's decoder direction
    added at `sae`'s site at every position, and without it."""
    lm.require_causal("steering")
    sae.check(lm)
    latent = sae.check_latent(latent)
    try:
        alpha = float(alpha)
    except (TypeError, ValueError):
        raise LmvizError(f"alpha must be a number, not {alpha!r}.") from None
    if not math.isfinite(alpha):
        raise LmvizError(f"alpha must be a finite number, not {alpha}.")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, numbers.Integral) or \
            not 1 <= max_new_tokens <= steering.MAX_NEW_TOKENS:
        raise LmvizError(f"Generate between 1 and {steering.MAX_NEW_TOKENS} tokens, not {max_new_tokens!r}.")
    max_new_tokens = int(max_new_tokens)
    prompt_ids = tuple(tracing.encode(lm, text))
    if len(prompt_ids) + max_new_tokens > tracing.max_tokens(lm):
        raise tracing.too_long(lm, len(prompt_ids) + max_new_tokens)
    vector = sae.direction(latent).double()  # (d_in,): the Edit casts alpha × it to the model's dtype
    norm = float(vector.norm())

    def continuation(edits: tuple[Edit, ...], scale: float, key: tuple, analysis: str) -> steering.Continuation:
        return cached(analysis, lm, key, lambda: steering.continuation(lm, prompt_ids, edits, max_new_tokens, scale,
                                                                    norm if scale else 0.0))
    unsteered = continuation((), 0.0, (prompt_ids, max_new_tokens), "steering")  # the steering page's key
    steered = unsteered if alpha == 0 else continuation(
        (Edit(sae.site, alpha * vector, op="add"),), alpha, (prompt_ids, max_new_tokens, sae.key, latent, alpha),
        "feature steering")
    return FeatureSteering(lm.name, text, sae.name, sae.hook, latent, alpha, prompt_ids, norm, unsteered, steered)
