"""The head: how a hidden state becomes the model's logits, in one place.

    logits = softcap(scale · unembed(norm(hidden)) / divisor),   softcap(x) = cap · tanh(x / cap)

`norm` is whatever the model applies between its last block and the
unembedding (a final norm, OPT-350m's projection, BERT's MLM transform);
`unembed` is the output embedding; Cohere multiplies by `logit_scale`, Granite
divides by `logits_scaling`, Gemma-2/3 soft-cap. Discovery
(`lmviz.model.architectures`) finds these parts on the model and keeps a `Head` only
where it reproduces the model's own logits on a probe (`error_bound` says how
closely it must). Every caller projects through it:

- `logits(hidden)`: rows in, logits out, computed as the model computes them
  (its dtype, its device): the trace, the loss windows, a lens at one layer;
- `tile(rows, v0, v1)`: logits of a slice of the vocabulary in float32, into
  a buffer: the lens's cache-sized tiles; `at(rows, ids)`: only some tokens'
  logits; `weighted_sum(p)`: p @ W;
- `direction(token)` and `before_cap(logit)`: the linear map from a hidden
  state to one token's logit, for direct logit attribution;
- `error_bound(normed)`: how far two correct computations of the same logits
  may be apart through float rounding alone.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import torch
from torch import nn

# dtype -> unit roundoff u (half the distance from 1 to the next number)
UNIT_ROUNDOFF = {torch.float64: 2.0**-53, torch.float32: 2.0**-24, torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}


@dataclass(frozen=True, eq=False)
class Head:
    """A model's final norm, unembedding and logit transform. Shapes: d_model in, d_head into the
    unembedding (the same for nearly every model), vocab out."""

    norm: nn.Module  # (…, d_model) -> (…, d_head); nn.Identity when there is none
    unembed: nn.Module  # (…, d_head) -> (…, vocab)
    scale: float = 1.0  # Cohere's logit_scale, or a constant factor measured on load
    divisor: float = 1.0  # Granite's logits_scaling
    softcap: float | None = None  # Gemma-2/3's final_logit_softcapping

    @property
    def factor(self) -> float:
        """The constant the unembedding's output is multiplied by before the soft-cap."""
        return self.scale / self.divisor

    @property
    def plain(self) -> bool:
        """No scale, divisor or soft-cap: the logits are the unembedding's output."""
        return self.scale == 1.0 and self.divisor == 1.0 and not self.softcap

    @property
    def linear(self) -> bool:
        """The unembedding is one nn.Linear (nearly every causal LM): it can be computed a slice at a time."""
        return isinstance(self.unembed, nn.Linear)

    @property
    def weight(self) -> torch.Tensor:
        """(vocab, d_head) the unembedding's weights as the model keeps them (a linear head only)."""
        return self.unembed.weight.detach()

    @property
    def bias(self) -> torch.Tensor | None:
        """(vocab,) float32 the unembedding's bias, or None."""
        bias = self.unembed.bias if self.linear else None
        return bias.detach().float() if bias is not None else None

    @property
    def device(self) -> torch.device:
        """Where the unembedding's weights are (the CPU for a module without any)."""
        return next((p.device for p in self.unembed.parameters()), torch.device("cpu"))

    def _transform_(self, logits: torch.Tensor) -> torch.Tensor:
        """Scale, divide and soft-cap the unembedding's output in place: the operations transformers runs,
        in its order."""
        if self.scale != 1.0:
            logits.mul_(self.scale)
        if self.divisor != 1.0:
            logits.div_(self.divisor)
        if self.softcap:
            logits.div_(self.softcap).tanh_().mul_(self.softcap)
        return logits

    @torch.inference_mode()
    def logits(self, hidden: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """(…, d_model) hidden states -> (…, vocab) float32 logits on the CPU, computed in the model's dtype
        on its device, as its own head does. normalize=False skips the norm (for a state already normed:
        transformers' last hidden state)."""
        weight = getattr(self.unembed, "weight", None)
        if weight is not None:
            hidden = hidden.to(device=weight.device, dtype=weight.dtype)
        h = self.norm(hidden) if normalize else hidden
        return self._transform_(self.unembed(h)).float().cpu()

    def _weights(self, v0: int, v1: int) -> torch.Tensor:
        """(v1-v0, d_head) float32 rows of the unembedding (a no-op copy for a float32 model)."""
        return self.weight[v0:v1].float()

    def tile(self, rows: torch.Tensor, v0: int = 0, v1: int | None = None,
             out: torch.Tensor | None = None) -> torch.Tensor:
        """(rows, v1-v0) float32 logits of normed rows (rows, d_head) for the vocabulary slice v0:v1 (default:
        all of it), written into `out` when given. A linear head multiplies in float32 one slice of its rows
        at a time; any other head module is called whole and sliced."""
        if not self.linear:
            logits = self._transform_(self.unembed(rows)).float()[:, v0:v1]
            return out.copy_(logits) if out is not None else logits
        weight = self._weights(v0, self.weight.shape[0] if v1 is None else v1)
        rows = rows.float()
        if out is None:
            out = torch.empty(rows.shape[0], weight.shape[0], device=rows.device)
        bias = self.bias
        if bias is None:
            torch.matmul(rows, weight.T, out=out)
        else:
            torch.addmm(bias[v0:v1], rows, weight.T, out=out)
        return self._transform_(out)

    def at(self, rows: torch.Tensor, ids: torch.Tensor) -> torch.Tensor | None:
        """(rows, n) float32 logits of the given token ids, per row (ids: (rows, n)), from normed rows
        (rows, d_head); None for a head that is not linear (its logits come whole)."""
        if not self.linear:
            return None
        logits = torch.einsum("rd,rnd->rn", rows, self.weight[ids].float())
        bias = self.bias
        if bias is not None:
            logits = logits + bias[ids]
        return self._transform_(logits)

    def weighted_sum(self, p: torch.Tensor, width: int = 8192) -> torch.Tensor:
        """(n, d_head) = p @ W for p (n, vocab), in float32, a slice of the vocabulary at a time."""
        total = torch.zeros(p.shape[0], self.weight.shape[1], device=p.device)
        for v0 in range(0, p.shape[1], width):
            total += p[:, v0:v0 + width] @ self._weights(v0, v0 + width)
        return total

    def direction(self, token: int) -> tuple[torch.Tensor, float]:
        """(d_head,) float64 and a number: the logit of `token` before the soft-cap is
        direction · norm(hidden) + bias (a linear head only)."""
        bias = float(self.unembed.bias.detach()[token]) * self.factor if self.unembed.bias is not None else 0.0
        return self.weight[token].double().cpu() * self.factor, bias

    def before_cap(self, logit: float) -> float:
        """The logit before the soft-cap, from the capped one (itself when there is no cap)."""
        if not self.softcap:
            return logit
        return self.softcap * math.atanh(max(-1 + 1e-16, min(1 - 1e-16, logit / self.softcap)))

    def error_bound(self, normed: torch.Tensor) -> torch.Tensor:
        """Elementwise bound on |our logits - the model's| for normed rows (…, d_head), when both compute the
        same head in a different order: each logit is a dot product of length d, whose rounding error is at
        most d·u·Σ|h_i||w_i| (Higham, γ_d), counted twice (ours and the model's) plus the norm's own
        rounding; the transform adds a few roundings of the result. Σ|h_i||w_i| is bounded by ‖h‖·‖w‖
        (Cauchy–Schwarz), so the check on every trace costs one outer product, not a second pass over the
        unembedding."""
        u = UNIT_ROUNDOFF.get(normed.dtype, 2.0**-24)
        d = normed.shape[-1]
        if self.linear:
            magnitude = normed.detach().float().norm(dim=-1, keepdim=True) * _row_norms(self.unembed)
            if self.unembed.bias is not None:
                magnitude = magnitude + self.unembed.bias.detach().abs().float()
        else:  # an unknown head module: bound by the largest logit times the width
            with torch.inference_mode():
                magnitude = self.unembed(normed).abs().float().amax() * torch.ones(1)
        return (4 * d + 16) * u * abs(self.factor) * magnitude + 1e-30


_ROW_NORMS: "weakref.WeakKeyDictionary[nn.Module, tuple[int, torch.Tensor]]" = weakref.WeakKeyDictionary()


def _row_norms(unembed: nn.Linear) -> torch.Tensor:
    """(vocab,) float32 ‖w_v‖ of the unembedding's rows, computed again only when the weight changes."""
    weight = unembed.weight.detach()
    version, norms = _ROW_NORMS.get(unembed, (-1, None))
    if norms is None or version != weight._version:
        norms = weight.float().norm(dim=-1) * (1 + 2.0**-20)  # above the float32 norm's own rounding
        _ROW_NORMS[unembed] = (weight._version, norms)
    return norms
