"""Float tolerances for the tests, each derived from a stated rounding bound (never guessed).

u is the unit roundoff of float32, 2^-24. The bounds are Higham's worst cases
("Accuracy and Stability of Numerical Algorithms", ch. 3-4), so they hold on
any CPU, whatever its SIMD width, thread count or summation order:

- a sum of n terms computed in float32 in any order is off by at most
  (n - 1)·u·Σ|x_i| (γ_{n-1}, to first order);
- a dot product of length d likewise by d·u·Σ|a_i b_i|, so two float32
  computations of the same logits differ by at most 2·d·u·Σ|a_i b_i| (see
  `lmviz.model.head.Head.error_bound`, which adds the norm's rounding);
- a float32 probability below 2^-126 is subnormal or flushed to 0, so
  probabilities also carry an absolute 2^-126;
- log-softmax over n logits z computed in float32: the max is exact, each
  z - max and exp cost a few roundings relative to |z|, and the normaliser
  is a sum of n terms, so log p is off by at most (n + 8)·u·(1 + max|z|)
  plus the error of the logits themselves, counted twice (z_i and the
  log-sum-exp).
"""

from __future__ import annotations

import math

import torch

U32 = 2.0**-24
TINY32 = 2.0**-126  # float32's smallest normal number: smaller probabilities lose digits or flush to 0


def sum_bound(n: int, total_abs: float = 1.0) -> float:
    """|float32 sum - exact sum| of n terms whose absolute values add up to total_abs."""
    return max(n - 1, 1) * U32 * total_abs


def log_softmax_bound(logits: torch.Tensor, logit_error: float | torch.Tensor = 0.0) -> torch.Tensor:
    """Per row: the most a float32 log-probability can be off, given logits (…, n) that are themselves
    off by at most logit_error."""
    n = logits.shape[-1]
    return 2 * torch.as_tensor(logit_error, dtype=torch.float64) + (n + 8) * U32 * (
        1 + logits.double().abs().amax(-1))


def prob_bound(probs: torch.Tensor, logprob_error: float | torch.Tensor) -> torch.Tensor:
    """|Δp| for float32 probabilities whose logs are off by at most logprob_error: p·(e^ε - 1), at most 1,
    plus TINY32 for those below float32's normal range (stored with fewer digits, or as 0). A huge ε (raw
    Gemma logits reach 1e4) leaves the bound at 1, never NaN (0·∞)."""
    p = probs.double()
    growth = torch.expm1(torch.as_tensor(logprob_error, dtype=torch.float64))
    return torch.where(p == 0, 0.0, p * growth).clamp_max(1.0) + TINY32


def entropy_bound(probs: torch.Tensor, logprob_error: float | torch.Tensor) -> torch.Tensor:
    """|ΔH| for H = -Σ p log p when every log p is off by at most ε: Σ|Δp||log p| + Σ p ε, plus the float32
    sum of n terms of size up to |log p_min|."""
    p = probs.double()
    eps = torch.as_tensor(logprob_error, dtype=torch.float64)
    log_p = torch.log(p.clamp_min(1e-300))
    n = p.shape[-1]
    spread = (p * log_p.abs()).sum(-1)
    return torch.where(spread == 0, 0.0, torch.expm1(eps) * spread) + eps + n * U32 * (1 + spread + math.log(n))


# A float64 network run batched one way and another differs by ~1e-15 relative in its outputs (measured);
# no a-priori bound covers a whole network, so comparisons of differently batched passes run in float64 and
# allow this much, a million times the observed difference and far below any float32 effect they check.
FLOAT64_SLACK = 2.0**-30


def float32_nll_bound(logits64: torch.Tensor) -> torch.Tensor:
    """(…,) how far lmviz's float32 NLL (float64 logits rounded to float32, then a float32 log-softmax) may be
    from float64 cross-entropy on logits (…, vocab)."""
    rounding = U32 * logits64.abs().amax(-1)  # each logit rounded to float32
    return log_softmax_bound(logits64, rounding) + FLOAT64_SLACK * (1 + logits64.abs().amax(-1))


def linear_bound(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Elementwise bound on two float32 computations of x @ weight.T + bias in different orders (and of the
    few elementwise steps before it): (4d + 16)·u·(|x| @ |weight|.T + |bias|), d = x.shape[-1]."""
    magnitude = x.detach().abs().float() @ weight.detach().abs().float().T
    if bias is not None:
        magnitude = magnitude + bias.detach().abs().float()
    return (4 * x.shape[-1] + 16) * U32 * magnitude


def assert_linear_close(got: torch.Tensor, expected: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                        bias: torch.Tensor | None = None) -> None:
    """got and expected are x @ weight.T + bias (or a subset of its columns, matched by value) up to rounding."""
    bound = linear_bound(x, weight, bias)
    if got.shape != bound.shape:  # e.g. top-k values: bound them by the row's largest
        bound = bound.amax(-1, keepdim=True).expand_as(got) if got.dim() == bound.dim() else bound.amax()
    assert ((got.float() - expected.float()).abs() <= bound).all()


def assert_top_k(ids: torch.Tensor, values: torch.Tensor, scores: torch.Tensor, bound: torch.Tensor) -> None:
    """ids (…, k) with values are the top k of scores (…, vocab), in order, up to scores within 2·bound."""
    best = scores.topk(ids.shape[-1], -1).values
    slack = 2 * bound.amax(-1, keepdim=True) if bound.dim() == scores.dim() else 2 * bound
    assert ((scores.gather(-1, ids) - best).abs() <= slack).all()
    assert ((values - best).abs() <= slack).all()


@torch.no_grad()
def continuation_bound(model, prefix: list[int], continuation: list[int]) -> float:
    """Bound on the difference between two float32 sums of log P(continuation tokens) taken from the same
    logits (lmviz's step loop and generate() run the same passes): per token, twice the float32 log-softmax
    bound of that step's logits (from a plain pass, for their size), plus FLOAT64_SLACK for a float64 model."""
    logits = model(input_ids=torch.tensor([prefix + continuation])).logits[0].double()
    steps = logits[len(prefix) - 1: len(prefix) - 1 + len(continuation)]
    slack = FLOAT64_SLACK * len(continuation) * (1 + float(steps.abs().max()))
    return float(2 * log_softmax_bound(steps).sum()) + slack
