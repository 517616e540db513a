"""Float tolerances for the tests, each derived from a stated rounding bound (never guessed).

u is the unit roundoff of float32, 2^-24. The bounds are Higham's worst cases
("Accuracy and Stability of Numerical Algorithms", ch. 3-4), so they hold on
any CPU, whatever its SIMD width, thread count or summation order:

- a sum of n terms computed in float32 in any order is off by at most
  (n - 1)·u·Σ|x_i| (γ_{n-1}, to first order);
- a dot product of length d likewise by d·u·Σ|a_i b_i|, so two float32
  computations of the same logits differ by at most 2·d·u·Σ|a_i b_i| (see
  `lmviz.architectures.head_error_bound`, which adds the norm's rounding);
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
    """|Δp| for probabilities whose logs are off by at most logprob_error: p·(e^ε - 1)."""
    return probs.double() * torch.expm1(torch.as_tensor(logprob_error, dtype=torch.float64))


def entropy_bound(probs: torch.Tensor, logprob_error: float | torch.Tensor) -> torch.Tensor:
    """|ΔH| for H = -Σ p log p when every log p is off by at most ε: Σ|Δp||log p| + Σ p ε, plus the float32
    sum of n terms of size up to |log p_min|."""
    p = probs.double()
    eps = torch.as_tensor(logprob_error, dtype=torch.float64)
    log_p = torch.log(p.clamp_min(1e-300))
    n = p.shape[-1]
    return torch.expm1(eps) * (p * log_p.abs()).sum(-1) + eps + n * U32 * (1 + (p * log_p.abs()).sum(-1) + math.log(n))
