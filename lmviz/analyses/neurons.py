"""Neurons: which entries of one MLP's hidden vector wrote a logit, and what each one writes.

An MLP block computes a hidden vector a (d_mlp numbers, the *neurons*: the
seam's site `blocks.{l}.mlp.hook_post`, the input of the output projection)
and adds W_out a + b to the residual stream. That sum splits exactly over the
neurons: neuron n adds a_n × column n of W_out. Direct logit attribution
(`lmviz.analyses.attribution`) holds the final norm's scale fixed at the
actual residual, which makes the path from the residual stream to a logit
linear; so the MLP block's part in the logit of a target token t splits too:

    mlp_part = Σ_n a_n · (W_out[:, n] through the frozen norm) · d_t  +  (b through it) · d_t

with d_t the target's direction of the verified head (`Head.direction`). The
first terms are the neurons' *contributions*, the last the projection's bias,
which no neuron owns. Where the block norms the MLP's output before adding it
(Gemma's post-feedforward norm), that norm's scale is held fixed too, at the
MLP's actual output, as attribution does for the attention's post-norm.

A contribution is a *direct* effect, per neuron, on this one logit. What the
neuron does through later blocks is not in it. Each neuron's column, through
the frozen norms and the unembedding, also ranks the tokens it promotes and
suppresses (`TokenEffects`): the logit change per unit of activation at this
position, before any soft-cap. With an RMSNorm or LayerNorm the norm's frozen
scale is one positive number, so the ranking is the same at every position.

Everything is in float64 from one pass recorded at the chosen position. The
contributions and bias add up to the MLP part that attribution reports up to
float rounding, which `Neurons.bound` bounds (see `_bound`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lmviz.analyses import attribution
from lmviz.errors import LmvizError
from lmviz.forward import trace as trace_module
from lmviz.forward.cache import cached
from lmviz.model import interventions
from lmviz.model.frozen_norm import FrozenNorm, require_frozen
from lmviz.model.head import UNIT_ROUNDOFF
from lmviz.model.interventions import Recording, Site
from lmviz.model.models import LoadedModel
from lmviz.tokens import display_tokens

TOP = 10  # neurons listed
TOP_TOKENS = 10  # promoted and suppressed tokens per neuron
_VOCAB_SLICE = 16384  # unembedding rows multiplied at a time (a bfloat16 model's rows are upcast a slice at a time)


@dataclass(frozen=True)
class TokenEffects:
    """What one direction in the residual stream does to the logits directly, per unit: the tokens it
    promotes and suppresses most, with the logit change (before any soft-cap), through the frozen norm(s)."""

    promoted_ids: tuple[int, ...]  # (k,) largest logit change first
    promoted_values: tuple[float, ...]  # (k,)
    promoted_tokens: tuple[str, ...]  # (k,) display strings
    suppressed_ids: tuple[int, ...]  # (k,) most negative first
    suppressed_values: tuple[float, ...]  # (k,)
    suppressed_tokens: tuple[str, ...]  # (k,) display strings


@dataclass(frozen=True)
class Neurons:
    """The neurons of block `layer`'s MLP at `position`, split out of its part in the logit of `target_id`.
    Dimension name: neuron (d_mlp)."""

    model_name: str
    text: str
    position: int  # the text position whose prediction (of the token after it) is explained
    layer: int  # the block whose MLP's neurons these are
    target_id: int
    target_token: str  # display string
    activations: torch.Tensor  # (neuron,) float64: the MLP's hidden vector, what its output projection reads
    contributions: torch.Tensor  # (neuron,) float64: activation × (column through the frozen norms) · direction
    bias: float  # the output projection's bias (and a post-norm's bias) through the frozen norms: no neuron's
    mlp_part: float  # the MLP block's part in direct logit attribution (`Attribution.mlp[layer]`)
    bound: float  # how far Σ contributions + bias may be from mlp_part through float rounding alone
    top: tuple[int, ...]  # the neurons with the largest |contribution|, largest first
    top_tokens: tuple[TokenEffects, ...]  # per neuron of `top`: what its column promotes and suppresses

    @property
    def total(self) -> float:
        """Σ contributions + bias: the MLP part again, up to `bound`."""
        return float(self.contributions.sum()) + self.bias

    @property
    def half_count(self) -> int:
        """How many of the largest |contributions| make up half of Σ|contribution|: how spread the push is."""
        sizes = self.contributions.abs().sort(descending=True).values
        return int((sizes.cumsum(0) < sizes.sum() / 2).sum()) + 1

    @property
    def d_mlp(self) -> int:
        return int(self.activations.shape[0])

    def rows(self) -> list[dict]:
        """The top neurons as {"layer", "index", "activation", "contribution"}, largest |contribution| first."""
        return [{"layer": self.layer, "index": n, "activation": float(self.activations[n]),
                 "contribution": float(self.contributions[n])} for n in self.top]


def token_effects(lm: LoadedModel, vectors: torch.Tensor, frozen: FrozenNorm, k: int = TOP_TOKENS
                  ) -> tuple[TokenEffects, ...]:
    """Per row of `vectors` (n, d_model), a direction added to the final residual: the k tokens whose
    logits it raises and lowers most, per unit, through the final norm held at `frozen` and the verified
    head's unembedding and constant factor (no bias: a direction adds none). Float32 products."""
    head = lm.head
    if not head.linear:
        raise LmvizError(f"{lm.name}'s unembedding is not one linear layer, so lmviz can't project a "
                         "direction through it.")
    normed = frozen.linear(vectors).float()  # (n, d_head)
    weight = head.weight
    normed = normed.to(weight.device)
    logits = torch.cat([normed @ weight[v0:v0 + _VOCAB_SLICE].float().T
                        for v0 in range(0, weight.shape[0], _VOCAB_SLICE)], dim=1).cpu() * head.factor
    k = min(k, logits.shape[1])
    up, down = torch.topk(logits, k, dim=1), torch.topk(-logits, k, dim=1)
    cache: dict[int, str] = {}
    effects = []
    with lm.lock:
        for row in range(logits.shape[0]):
            up_ids, down_ids = up.indices[row].tolist(), down.indices[row].tolist()
            effects.append(TokenEffects(
                tuple(up_ids), tuple(up.values[row].tolist()), tuple(display_tokens(lm.tokenizer, up_ids, cache)),
                tuple(down_ids), tuple((-down.values[row]).tolist()),
                tuple(display_tokens(lm.tokenizer, down_ids, cache))))
    return tuple(effects)


def _output_columns(projection: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(d_mlp, d_model) float64: the output projection's columns, one row per neuron, and (d_model,) its
    bias (zeros without one), from an nn.Linear or GPT-2's Conv1D (weight (in, out))."""
    weight = projection.weight.detach().double().cpu()
    rows = weight.T if isinstance(projection, nn.Linear) else weight
    bias = getattr(projection, "bias", None)
    bias = bias.detach().double().cpu() if isinstance(bias, torch.Tensor) else torch.zeros(rows.shape[1],
                                                                                            dtype=torch.float64)
    return rows, bias


def mlp_post_norm(lm: LoadedModel, layer: int) -> nn.Module | None:
    """The norm between block `layer`'s MLP and the residual stream (Gemma's post-feedforward norm), or None:
    what writes the MLP's part is then not the MLP itself (which holds the output projection)."""
    parts = lm.arch.require_decomposition()
    write = parts.mlp_writes[layer]
    projection = parts.mlp_out_projs[layer]
    return None if any(module is projection for module in write.modules()) else write


def _neurons_at(lm: LoadedModel, text: str, position: int) -> torch.Tensor:
    """(layer, neuron) every block's MLP hidden vector at `position`, in the model's dtype: one cached pass,
    which ends at the last block's neurons (no unembedding)."""
    def record() -> torch.Tensor:
        sites = [Site(f"blocks.{layer}.mlp.hook_post") for layer in range(lm.n_layers)]
        recording = Recording(sites, at=[position], stop=True)
        interventions.forward(lm, torch.tensor([trace_module.encode(lm, text)]), record=recording)
        return torch.stack([recording[site][0] for site in sites])
    return cached("neuron-activations", lm, (text, position), record)


def neurons(lm: LoadedModel, text: str, layer: int, position: int | None = None, target: int | None = None,
            top: int = TOP, k_tokens: int = TOP_TOKENS) -> Neurons:
    """Split block `layer`'s MLP part in the logit of `target` (default: the model's top token) at `position`
    (default: the last) over its neurons; the `top` largest by |contribution|, each with the `k_tokens`
    tokens its column promotes and suppresses most."""
    lm.require_causal("neuron attribution")
    parts = lm.arch.require_decomposition()
    if parts.mlp_out_projs is None:
        raise LmvizError(parts.neurons_refusal)
    if not 0 <= int(layer) < lm.n_layers:
        raise LmvizError(f"Layer {layer} is outside {lm.name}'s layers (0..{lm.n_layers - 1}).")
    if not 1 <= int(top) <= parts.d_mlp:
        raise LmvizError(f"List between 1 and {parts.d_mlp} neurons (the MLP's width), not {top}.")
    if not 1 <= int(k_tokens) <= lm.vocab_size:
        raise LmvizError(f"List between 1 and {lm.vocab_size} tokens per neuron, not {k_tokens}.")
    split = attribution.attribute(lm, text, position, target)  # checks the text, position and target
    key = (text, split.position, split.target_id, int(layer), int(top), int(k_tokens))
    return cached("neurons", lm, key, lambda: _neurons(lm, text, split, int(layer), int(top), int(k_tokens)))


def _neurons(lm: LoadedModel, text: str, split: attribution.Attribution, layer: int, top: int,
             k_tokens: int) -> Neurons:
    parts = lm.arch.require_decomposition()
    recorded = attribution.position_parts(lm, text, split.position)
    activation = _neurons_at(lm, text, split.position)[layer]  # (neuron,) in the model's dtype
    projection = parts.mlp_out_projs[layer]
    columns, bias = _output_columns(projection)  # (neuron, d), (d,)
    a = activation.double()
    final = require_frozen(lm.head.norm, recorded.residuals[lm.n_layers].unsqueeze(0), "final norm", lm)
    direction, _ = lm.head.direction(split.target_id)
    post = mlp_post_norm(lm, layer)
    inner = None
    if post is not None:  # Gemma: the MLP's output is normed before it joins the residual stream
        parameter = next(projection.parameters())
        with torch.inference_mode():  # the MLP's own output, as the model computed it
            raw = projection(activation.to(device=parameter.device, dtype=parameter.dtype)[None, None])[0, 0].cpu()
        inner = require_frozen(post, raw.unsqueeze(0), "post-feedforward norm", lm)
        columns, bias = inner.linear(columns), inner.linear(bias) + inner.bias
    read = final.linear(columns) @ direction  # (neuron,) the logit per unit of each neuron
    contributions = a * read
    bias_part = float(final.linear(bias) @ direction)
    order = torch.argsort(contributions.abs(), descending=True, stable=True)[:top].tolist()
    # the top neurons' columns (through a post-norm) as directions in the final residual
    effects = token_effects(lm, columns[order], final, k_tokens)
    bound = _bound(lm, projection, activation, recorded.mlp[layer], a, inner, final, direction, read)
    return Neurons(lm.name, text, split.position, layer, split.target_id, split.target_token, a, contributions,
                   bias_part, float(split.mlp[layer]), bound, tuple(order), effects)


def _abs_linear(frozen: FrozenNorm, e: torch.Tensor) -> torch.Tensor:
    """An elementwise bound on |frozen.linear(x)| for |x| ≤ e (LayerNorm's centering included)."""
    for step in frozen.steps:
        e = (e + e.mean() if step.center else e) * step.scale.abs()[0] * (step.gain.abs() if step.gain is not None
                                                                           else 1)
    return e


def _bound(lm: LoadedModel, projection: nn.Module, activation: torch.Tensor, mlp_out: torch.Tensor,
           a: torch.Tensor, inner: FrozenNorm | None, final: FrozenNorm, direction: torch.Tensor,
           read: torch.Tensor) -> float:
    """How far Σ contributions + bias may be from the MLP part attribution reports, through rounding alone.

    The model computes the MLP's output m̂ = W a + b in its dtype (unit roundoff u): a dot product of d_mlp
    terms and a bias, so |m̂ − m| ≤ e = (d_mlp + 2)·u·(|W||a| + |b|) per component (Higham's γ_n), where m is
    the exact value the neurons sum to. With a post-norm N frozen at the MLP's output as recomputed here
    (itself within e of m), what the model added is N(m̂), and N(m̂) − L(m) − bias is at most:
    |L|(e) for the input's rounding, ρ·|L(m)| for the frozen scale (the norm's 1/rms or 1/std moves by a
    factor ≤ ρ = 2‖e‖/(‖m̂‖ − 2‖e‖) between two inputs 2e apart), and the norm's own rounding,
    (d+16)·u_n·|L(m)| + 2u·|N(m̂)|, with u_n at least float32's (norms upcast). That error vector reaches
    the logit through the frozen final norm |L_f| and |direction|. The float64 sums add
    (d_mlp + 4d + 64)·2⁻⁵³ times the magnitude of their terms."""
    u = UNIT_ROUNDOFF.get(activation.dtype, 2.0**-24)
    columns, bias = _output_columns(projection)  # before any post-norm: |W| and |b| as the model holds them
    d_mlp, d = columns.shape
    e = (d_mlp + 2) * u * (a.abs() @ columns.abs() + bias.abs())  # (d,)
    if inner is not None:
        u_norm = max(u, 2.0**-24)
        m = a @ columns + bias
        normed = inner.linear(m).abs()
        norm_e, norm_m = float(e.norm()), float(m.norm())
        rho = 2 * norm_e / (norm_m - 2 * norm_e) if norm_m > 2 * norm_e else float("inf")
        e = _abs_linear(inner, e) + (rho + (d + 16) * u_norm) * normed + 2 * u * mlp_out.double().abs()
    weights = direction.abs()
    float64 = (d_mlp + 4 * d + 64) * 2.0**-53 * (float((a * read).abs().sum())
                                                 + float(_abs_linear(final, mlp_out.double().abs()) @ weights))
    return float(_abs_linear(final, e) @ weights) + float64 + 1e-300
