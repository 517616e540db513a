"""A norm held at a fixed scale, so that it is linear: what direct logit attribution needs.

A LayerNorm or RMSNorm divides its input x by x's own size, so norm(a + b) is
not norm(a) + norm(b). Hold the divisor at the value it has for one input
(the actual residual) and the norm becomes an affine map L: then
norm(c₁ + c₂ + …) = L(c₁) + L(c₂) + … + bias exactly at that input, which is
what lets `lmviz.analyses.attribution` split a logit into parts that sum to it.

`freeze_norm(norm, x)` works out which kind of norm a module is (LayerNorm
or RMSNorm; gain w, 1 + w or none; a bias or not) by computing every
candidate in float64 and keeping the one that reproduces the module's own
output at x within the rounding of computing a norm.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lmviz.errors import LmvizError
from lmviz.model.architectures import Scale
from lmviz.model.head import UNIT_ROUNDOFF


@dataclass(frozen=True)
class _Affine:
    """One step of a frozen norm: y = center?(x) * scale * gain + bias, all float64."""

    scale: torch.Tensor  # (…, 1): the norm's 1/rms or 1/std at the point it was frozen at
    gain: torch.Tensor | None  # (d,) or None
    center: bool  # subtract the mean first (LayerNorm)
    bias: torch.Tensor | None  # (d,) or None

    def linear(self, c: torch.Tensor) -> torch.Tensor:
        c = c - c.mean(-1, keepdim=True) if self.center else c
        c = c * self.scale
        return c * self.gain if self.gain is not None else c


@dataclass(frozen=True)
class FrozenNorm:
    """A norm with its scale held at the value it had for one input x: then norm(c₁ + c₂ + …) =
    linear(c₁) + linear(c₂) + … + bias exactly, which is what lets direct logit attribution split a
    logit into parts that sum to it. Checked against the norm itself at x (`freeze_norm`)."""

    steps: tuple[_Affine, ...]

    def linear(self, c: torch.Tensor) -> torch.Tensor:
        """(…, d) -> (…, d) float64: the norm's linear part, applied to one part of the residual."""
        c = c.double()
        for step in self.steps:
            c = step.linear(c)
        return c

    @property
    def bias(self) -> torch.Tensor | float:
        """(d,) float64, or 0.0: what the norm adds whatever the input."""
        total: torch.Tensor | float = 0.0
        for step in self.steps:
            total = step.linear(total) if isinstance(total, torch.Tensor) else total
            if step.bias is not None:
                total = total + step.bias
        return total


_EPS_NAMES = ("variance_epsilon", "eps", "epsilon", "layer_norm_eps", "layer_norm_epsilon")


def _norm_candidates(norm: nn.Module, x: torch.Tensor) -> list[_Affine]:
    """The ways `norm` could compute its output from x (float64), to be checked against it: LayerNorm or
    RMSNorm, with a gain w, 1 + w (Gemma, Nemotron) or none (OLMo), a bias if it has one."""
    ones = torch.ones(*x.shape[:-1], 1, dtype=torch.float64)
    if isinstance(norm, (nn.Identity, nn.Dropout)):
        return [_Affine(ones, None, False, None)]
    if isinstance(norm, Scale):
        return [_Affine(ones * norm.factor, None, False, None)]
    named = [getattr(norm, n) for n in _EPS_NAMES if isinstance(getattr(norm, n, None), float)]
    weight = getattr(norm, "weight", None)
    if weight is not None and (not isinstance(weight, torch.Tensor) or weight.shape != x.shape[-1:]):
        return []
    gains = [None] if weight is None else [weight.detach().double().cpu(), 1 + weight.detach().double().cpu()]
    bias = getattr(norm, "bias", None)
    bias = bias.detach().double().cpu() if isinstance(bias, torch.Tensor) and bias.shape == x.shape[-1:] else None
    x = x.double()
    candidates = []
    for eps in named[:1] or [1e-5, 1e-6]:  # a norm that keeps its epsilon in code: the usual two
        std = (x.var(-1, unbiased=False, keepdim=True) + eps).rsqrt()
        rms = (x.pow(2).mean(-1, keepdim=True) + eps).rsqrt()
        kinds = ((rms, False), (std, True)) if "rms" in type(norm).__name__.lower() else ((std, True), (rms, False))
        candidates += [_Affine(scale, gain, center, bias) for gain in gains for scale, center in kinds]
    return candidates  # where two would pass (a residual with mean 0), the class name decides


@torch.inference_mode()
def freeze_norm(norm: nn.Module, x: torch.Tensor) -> FrozenNorm | None:
    """`norm` with its scale held at its value for x (…, d), checked: linear(x) + bias must equal norm(x)
    within the rounding of computing a norm (a mean of d squares, a square root, a product). None for a
    norm lmviz does not know how to hold fixed. Handles nn.Identity, a constant Scale, LayerNorm, RMSNorm
    (with gain w or 1 + w) and nn.Sequential chains of them."""
    modules = list(norm) if isinstance(norm, nn.Sequential) else [norm]
    steps, point = [], x
    for module in modules:
        parameter = next(module.parameters(), None)
        device = parameter.device if parameter is not None else point.device
        try:  # called as the model calls it: (batch, pos, d), where its weights are
            output = module(point.to(device).unsqueeze(0))[0].cpu()
        except Exception:  # noqa: BLE001 - not a norm that takes one vector at a time (a convolution, …)
            return None
        if not isinstance(output, torch.Tensor) or output.shape != point.shape:
            return None
        expected = output.double().cpu()
        u = UNIT_ROUNDOFF.get(point.dtype, 2.0**-24)
        for candidate in _norm_candidates(module, point.cpu()):
            linear = candidate.linear(point.double().cpu())
            ours = linear + candidate.bias if candidate.bias is not None else linear
            size = linear.abs() + candidate.bias.abs() if candidate.bias is not None else linear.abs()
            bound = (point.shape[-1] + 16) * 2.0**-24 * size + 2 * u * expected.abs() + 1e-30
            if bool(((ours - expected).abs() <= bound).all()):
                steps.append(candidate)
                break
        else:
            return None
        point = output
    return FrozenNorm(tuple(steps))


def require_frozen(norm: nn.Module, x: torch.Tensor, what: str, lm, purpose: str = "split its logits into parts"
                   ) -> FrozenNorm:
    """`freeze_norm(norm, x)`, or an LmvizError that names the model, the norm (`what`: "final norm", …) and
    what holding it fixed was for."""
    frozen = freeze_norm(norm, x)
    if frozen is None:
        raise LmvizError(f"lmviz can't hold the {what} of {type(lm.model).__name__} ('{lm.arch.model_type}'), "
                         f"a {type(norm).__name__}, at a fixed scale, so it can't {purpose}.")
    return frozen
