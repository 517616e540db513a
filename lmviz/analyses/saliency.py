"""Which input tokens mattered: token knockout (exact) and gradient saliency (fast approximations).

Both explain one number F at the last position: the logit of a target token
(the model's top token by default, or a typed one), or with a contrast "A, not
B" the difference logit A − logit B (what made the model prefer A over B).

**Token knockout** measures it. Hide token i from every later token: the
attention mask is 0 at key i in every layer, the position ids stay as they
were, so no token moves. score_i = F(x) − F(x with token i hidden): how much
of F token i brought in, everything else equal. Token i's own computation
still runs, but nothing reads it, so positions before i are untouched. One
batched pass holds T−1 copies of the text, copy r with key r hidden (chunked
when long). The query at a hidden position 0 has no key left to attend to;
no later position reads it, and the scores are checked to be finite.

**Gradient saliency** estimates the same thing from derivatives with respect
to the input embeddings e (T, d) (`get_input_embeddings()(ids)`, passed as
`inputs_embeds`; for Gemma that module already scales by sqrt(d)), at a
fraction of the cost of a real experiment:

    gradient               ‖∂F/∂e_i‖            how sensitive F is to token i (no sign)
    input_x_gradient       Σ_d e_id ∂F/∂e_id    the first-order change if e_i went to 0
    integrated_gradients   Σ_d e_id · mean_k ∂F/∂e_id(α_k e),  α_k = (k − ½)/N, k = 1…N

Integrated gradients average the gradient along the straight path from the
zero embedding to e (the midpoint rule with N steps), so its scores should
add up to F(x) − F(0) ("completeness"). The completeness gap
|Σ scores − (F(x) − F(0))| / |F(x) − F(0)| says whether they do; input × gradient
is the one-step version and gets a gap too. Above COMPLETENESS_LIMIT the
scores don't add up: the path through embedding space is too curved for N
steps, or F jumps on it. In a model without biases (Llama, SmolLM2, Gemma)
the zero embedding gives an all-zero residual stream and every logit 0, but
at α = 10⁻⁴ the norms already scale the tiny residual back up (SmolLM2 on
"The capital of Germany is": F(0) = 0, F(10⁻⁴·e) = 16, F(e) = 15.6), a step
no midpoint rule sees: the gap stays near 100% at any N. GPT-2 adds position
embeddings before its first norm, so its path is smooth and the gap shrinks
like 1/N². Each method also reports its Spearman rank correlation
with knockout: how well the cheap estimate orders the tokens like the
experiment does (the unsigned gradient against |knockout|).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass

import numpy as np
import torch

from lmviz.analyses.attribution import resolve_target
from lmviz.errors import LmvizError
from lmviz.forward import trace as trace_module
from lmviz.forward.cache import cached
from lmviz.model import interventions
from lmviz.model.models import LoadedModel

METHODS = ("gradient", "input_x_gradient", "integrated_gradients")
COMPLETENESS_LIMIT = 0.05  # a completeness gap above this: the scores don't add up to F(x) − F(0)
# knockout runs T−1 copies of T tokens, a cost that grows as T²: SmolLM2 took 5 to 7 minutes for 204 tokens
# on two CPU cores (0.25 s for 5). A longer text is refused.
MAX_TOKENS = 256
MAX_STEPS = 1024
BATCH_TOKENS = 1024  # tokens per batched pass (knockout copies, integrated-gradient steps): bounds its memory


@dataclass(frozen=True)
class Knockout:
    """F(x) − F(x with token i hidden), for every position i before the last."""

    model_name: str
    text: str
    input_ids: tuple[int, ...]  # (pos,)
    tokens: tuple[str, ...]  # (pos,) display strings
    target_id: int
    contrast_id: int | None  # None: F is the target's logit; else logit target − logit contrast
    value: float  # F(x), the unmodified run
    scores: tuple[float, ...]  # (pos−1,) positions 0..T−2


@dataclass(frozen=True)
class Saliency:
    """A gradient estimate of each input token's share of F, and how far to trust it."""

    model_name: str
    text: str
    tokens: tuple[str, ...]  # (pos,) display strings
    method: str  # one of METHODS
    steps: int | None  # integrated gradients' N; None for the one-step methods
    target_id: int
    contrast_id: int | None
    scores: tuple[float, ...]  # (pos,) positions 0..T−1
    completeness_gap: float | None  # |Σ scores − (F(x) − F(0))| / |F(x) − F(0)|; None for "gradient"
    adds_up: bool | None  # completeness_gap ≤ COMPLETENESS_LIMIT; None for "gradient"
    knockout_correlation: float | None  # Spearman with knockout over positions 0..T−2; None if undefined


def rank_correlation(a, b) -> float | None:
    """Spearman's rank correlation: the Pearson correlation of the ranks (ties get their average rank).
    None when it is undefined (fewer than two values, or one side all equal)."""
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    norm = math.sqrt(float(ra @ ra) * float(rb @ rb))
    return float(ra @ rb) / norm if len(ra) > 1 and norm > 0 else None


def _ranks(values) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    _, first, counts = np.unique(x[order], return_index=True, return_counts=True)
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(first + (counts - 1) / 2, counts)  # a tie's ranks first..first+count−1, averaged
    return ranks


def knockout_inputs(n_tokens: int, positions: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The attention mask and position ids of a batch of copies of one text, copy r with key positions[r]
    hidden: (rows, pos) each, the position ids 0..T−1 in every row."""
    mask = torch.ones(len(positions), n_tokens, dtype=torch.long)
    mask[torch.arange(len(positions)), torch.tensor(positions)] = 0
    return mask, torch.arange(n_tokens).expand(len(positions), n_tokens)


def _takes(lm: LoadedModel, argument: str) -> bool:
    return argument in inspect.signature(lm.model.forward).parameters


def _ids(lm: LoadedModel, text: str) -> list[int]:
    lm.require_causal("token knockout and saliency")
    ids = trace_module.encode(lm, text)
    if len(ids) < 2:
        raise LmvizError("The text is one token long: knockout and saliency need tokens before the last to score.")
    limit = min(MAX_TOKENS, lm.context_length)
    if len(ids) > limit:
        raise LmvizError(f"The text is {len(ids)} tokens long; token knockout takes at most {limit} "
                         f"(it runs the model once per token). Shorten it.")
    if not _takes(lm, "position_ids"):
        raise LmvizError(f"{type(lm.model).__name__} takes no position_ids, so lmviz can't hide a token "
                         "without moving the ones after it.")
    return ids


def _f(logits: torch.Tensor, target_id: int, contrast_id: int | None) -> torch.Tensor:
    """F from (…, vocab) last-position logits, in float64."""
    logits = logits.double()
    return logits[..., target_id] - (0 if contrast_id is None else logits[..., contrast_id])


def _last_logits(lm: LoadedModel, **inputs) -> torch.Tensor:
    """(rows, vocab) the model's logits at the last position of a pass through the seam (`inputs` go to
    `interventions.forward`: input_ids or inputs_embeds, a mask and position ids, grad=True)."""
    extra = {"logits_to_keep": 1} if trace_module.accepts_logits_to_keep(lm.model) else {}
    return interventions.forward(lm, **inputs, **extra).logits[:, -1]


def _clean(lm: LoadedModel, text: str, ids: list[int]) -> torch.Tensor:
    """(vocab,) the unmodified run's logits after the last token, in the model's dtype."""
    return cached("knockout-clean", lm, (text,), lambda: _last_logits(lm, input_ids=torch.tensor([ids]))[0].cpu())


def _targets(lm: LoadedModel, text: str, ids: list[int], target: str | None,
             contrast: str | None) -> tuple[int, int | None]:
    """The target id (default: the top token of the unmodified run) and the contrast id."""
    def check(token_id: int) -> int:
        if not 0 <= token_id < lm.vocab_size:
            raise LmvizError(f"Token id {token_id} is outside {lm.name}'s vocabulary (0..{lm.vocab_size - 1}).")
        return token_id

    if target is None:
        target_id = int(_clean(lm, text, ids).argmax())
    else:
        target_id = check(resolve_target(lm, target))
    contrast_id = None if contrast is None else check(resolve_target(lm, contrast))
    if contrast_id == target_id:
        raise LmvizError("The target and the contrast are the same token: 'A, not A' is always 0. Pick another.")
    return target_id, contrast_id


def knockout(lm: LoadedModel, text: str, target: str | None = None, contrast: str | None = None) -> Knockout:
    """Each token's knockout score (see the module docstring); target and contrast as typed (ids or text)."""
    ids = _ids(lm, text)
    target_id, contrast_id = _targets(lm, text, ids, target, contrast)
    return cached("knockout", lm, (text, target_id, contrast_id),
                  lambda: _knockout(lm, text, ids, target_id, contrast_id))


def _knockout(lm: LoadedModel, text: str, ids: list[int], target_id: int, contrast_id: int | None) -> Knockout:
    n = len(ids)
    value = float(_f(_clean(lm, text, ids), target_id, contrast_id))
    rows = max(1, BATCH_TOKENS // n)
    hidden = []
    for start in range(0, n - 1, rows):
        positions = list(range(start, min(start + rows, n - 1)))
        mask, position_ids = knockout_inputs(n, positions)
        logits = _last_logits(lm, input_ids=torch.tensor([ids]).expand(len(positions), n),
                              attention_mask=mask.to(lm.device), position_ids=position_ids.to(lm.device))
        hidden.append(_f(logits, target_id, contrast_id).cpu())
    scores = value - torch.cat(hidden)
    if not torch.isfinite(scores).all():
        raise LmvizError(f"{lm.name} gives inf or NaN logits when a token is hidden from attention, so lmviz "
                         "can't knock tokens out in it.")
    with lm.lock:
        tokens = tuple(trace_module.display_tokens(lm.tokenizer, ids))
    return Knockout(lm.name, text, tuple(ids), tokens, target_id, contrast_id, value, tuple(scores.tolist()))


def saliency(lm: LoadedModel, text: str, method: str, steps: int = 64, target: str | None = None,
             contrast: str | None = None) -> Saliency:
    """A gradient estimate of each token's share of F (see the module docstring), next to knockout."""
    if method not in METHODS:
        raise LmvizError(f"Saliency method must be one of {', '.join(METHODS)}, not '{method}'.")
    if method == "integrated_gradients" and not 1 <= steps <= MAX_STEPS:
        raise LmvizError(f"Integrated gradients take 1..{MAX_STEPS} steps, not {steps}.")
    lm.require_causal("saliency")
    if lm.model.get_input_embeddings() is None or not _takes(lm, "inputs_embeds"):
        raise LmvizError(f"{type(lm.model).__name__} takes no input embeddings (inputs_embeds), so lmviz can't "
                         "differentiate its output with respect to them.")
    exact = knockout(lm, text, target, contrast)
    steps = steps if method == "integrated_gradients" else None
    return cached("saliency", lm, (text, method, steps, exact.target_id, exact.contrast_id),
                  lambda: _saliency(lm, exact, method, steps))


def _gradients(lm: LoadedModel, embeds: torch.Tensor, alphas: list[float], target_id: int,
               contrast_id: int | None) -> torch.Tensor:
    """(pos, d) float64: Σ over the alphas of ∂F/∂e at α·e, a batch of alphas per pass."""
    n = embeds.shape[0]
    rows = max(1, BATCH_TOKENS // n)
    total = torch.zeros(embeds.shape, dtype=torch.float64)
    for start in range(0, len(alphas), rows):
        scale = torch.tensor(alphas[start:start + rows], dtype=torch.float64, device=embeds.device)
        inputs = (scale[:, None, None] * embeds.double()).to(embeds.dtype).requires_grad_()
        f = _f(_last_logits(lm, inputs_embeds=inputs, grad=True), target_id, contrast_id)
        (grad,) = torch.autograd.grad(f.sum(), inputs)  # rows are independent: each row's own gradient
        total += grad.double().sum(0).cpu()
    return total


def _saliency(lm: LoadedModel, exact: Knockout, method: str, steps: int | None) -> Saliency:
    ids = torch.tensor([exact.input_ids], device=lm.device)
    with torch.no_grad():
        embeds = lm.model.get_input_embeddings()(ids)[0]  # (pos, d) in the model's dtype
    if method == "integrated_gradients":
        mean = _gradients(lm, embeds, [(k - 0.5) / steps for k in range(1, steps + 1)], exact.target_id,
                          exact.contrast_id) / steps
    else:
        mean = _gradients(lm, embeds, [1.0], exact.target_id, exact.contrast_id)
    scores = mean.norm(dim=-1) if method == "gradient" else (embeds.double().cpu() * mean).sum(-1)
    gap = adds_up = None
    if method != "gradient":
        zero = float(_f(_last_logits(lm, inputs_embeds=torch.zeros_like(embeds)[None])[0],
                        exact.target_id, exact.contrast_id))
        change = exact.value - zero  # F(x) from the input_ids pass: a misread inputs_embeds would show here
        missing = abs(float(scores.sum()) - change)
        gap = missing / abs(change) if change else (0.0 if missing == 0 else math.inf)
        adds_up = gap <= COMPLETENESS_LIMIT
    knocked = np.array(exact.scores)
    correlation = rank_correlation(scores[:-1].numpy(), np.abs(knocked) if method == "gradient" else knocked)
    return Saliency(exact.model_name, exact.text, exact.tokens, method, steps, exact.target_id, exact.contrast_id,
                    tuple(scores.tolist()), gap, adds_up, correlation)
