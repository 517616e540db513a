"""Direct logit attribution: which blocks and heads wrote a token's logit.

The residual stream at the last block's output is a sum: the embedding, plus
what every attention block and every MLP block added (`Decomposition`, checked
on load). The logit of a target token t is

    logit_t = factor · W_U[t] · final_norm(residual) + b_U[t]

The final norm divides by the residual's own size, so it is not linear. Hold
its scale fixed at the value it has for the actual residual (`lmviz.model.frozen_norm`):
then final_norm(a + b + …) = L(a) + L(b) + … + bias exactly, and the logit
splits into one number per part that sum to it. "Holding the norm fixed"
means: every part is judged by how much it pushes the residual towards W_U[t],
with the same division that the whole residual gets. A part's number is its
*direct* effect; what it does through later blocks is not in it.

An attention block's part splits further over its heads: the output projection
is linear, so each head's share is the projection of its d_head slice alone
(plus the projection's bias, shown once per block). Where the block norms its
attention output before adding it (Gemma), that norm's scale is held fixed too.

Everything is computed in float64 from one pass recorded at the chosen position
(`lmviz.model.interventions`: every block's hook_resid_post, hook_attn_out,
hook_mlp_out, attn.hook_z, and attn.hook_out for a post-norm), with the
model's verified head (`lmviz.model.head`: `Head.direction`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lmviz.model import interventions
from lmviz.forward import trace as trace_module
from lmviz.model.frozen_norm import FrozenNorm, require_frozen
from lmviz.model.head import UNIT_ROUNDOFF
from lmviz.forward.cache import cached
from lmviz.errors import LmvizError
from lmviz.model.interventions import Site
from lmviz.analyses.lens import resolve_watched
from lmviz.model.models import LoadedModel


@dataclass(frozen=True)
class Attribution:
    """The logit of `target_id` at `position`, split into parts. Dimension names: layer, head."""

    model_name: str
    text: str
    position: int  # the text position whose prediction (of the token after it) is explained
    layer: int  # how many blocks are included: the model's output when layer == n_layers, else the logit lens
    target_id: int
    target_token: str  # display string
    logit: float  # the model's own logit (the lens's at `layer`; before a soft-cap): what the parts sum to
    embed: float  # the embedding's part (token + position embeddings)
    attn: torch.Tensor  # (layer,) float64: each attention block's part, blocks 0 .. layer-1
    mlp: torch.Tensor  # (layer,) float64: each MLP block's part
    heads: torch.Tensor  # (layer, head) float64: each head's share of its attention block's part
    head_bias: torch.Tensor  # (layer,) float64: the output projection's bias, the rest of each block's part
    constant: float  # the final norm's bias and the unembedding's bias: no part of the residual
    bound: float  # how far the parts' sum may be from `logit` through float rounding alone
    softcap: float | None = None  # the model's final soft-cap: it turns `logit` into cap·tanh(logit/cap)

    @property
    def total(self) -> float:
        """The parts' sum: embed + Σ attention + Σ MLP + constant."""
        return self.embed + float(self.attn.sum()) + float(self.mlp.sum()) + self.constant

    @property
    def n_layers(self) -> int:
        return int(self.attn.shape[0])

    def components(self) -> list[dict]:
        """Every part as {"kind", "layer", "head", "contribution"} (layer/head None where they don't apply)."""
        rows = [{"kind": "embed", "layer": None, "head": None, "contribution": self.embed}]
        for layer in range(self.n_layers):
            rows.append({"kind": "attn", "layer": layer, "head": None, "contribution": float(self.attn[layer])})
            rows += [{"kind": "head", "layer": layer, "head": head, "contribution": float(value)}
                     for head, value in enumerate(self.heads[layer].tolist())]
            rows.append({"kind": "mlp", "layer": layer, "head": None, "contribution": float(self.mlp[layer])})
        return rows


@dataclass(frozen=True)
class PositionParts:
    """What one recorded pass saw at one position, float32/model dtype on the CPU (d = d_model)."""

    residuals: torch.Tensor  # (layer+1, d) the residual stream: what block 0 read, then each block's output
    attn: torch.Tensor  # (layer, d) what each attention block added
    mlp: torch.Tensor  # (layer, d) what each MLP block added
    attn_raw: torch.Tensor  # (layer, d) each attention's own output, before a post-norm
    heads_in: torch.Tensor  # (layer, n_heads·d_head) the output projections' inputs
    logits: torch.Tensor  # (vocab,) the model's own logits at the position, in its dtype


def _require_attributable(lm: LoadedModel) -> None:
    lm.require_causal("attribution")
    lm.require_vocabulary_head()
    lm.arch.require_decomposition()


def position_parts(lm: LoadedModel, text: str, position: int) -> PositionParts:
    """One cached forward pass of `text` recording every part at `position`."""
    _require_attributable(lm)
    ids = trace_module.encode(lm, text)
    if len(ids) > trace_module.max_tokens(lm):
        raise trace_module.too_long(lm, len(ids))
    position = check_position(position, len(ids))
    return cached("attribution-parts", lm, (text, position), lambda: _record(lm, ids, position))


def _record(lm: LoadedModel, ids: list[int], position: int) -> PositionParts:
    def every_block(hook: str) -> list[Site]:
        return [Site(f"blocks.{layer}.{hook}") for layer in range(lm.n_layers)]

    stream = [Site("blocks.0.hook_resid_pre"), *every_block("hook_resid_post")]
    parts = {hook: every_block(hook) for hook in ("hook_attn_out", "hook_mlp_out", "attn.hook_out", "attn.hook_z")}
    recording = interventions.Recording([*stream, *(site for sites in parts.values() for site in sites)],
                                        at=[position])
    output = interventions.forward(lm, torch.tensor([ids]), record=recording)
    logits = output.logits[0, position].cpu()  # in the model's dtype: a float32 copy would break a float64 bound

    def stacked(sites: list[Site]) -> torch.Tensor:
        return torch.stack([recording[site][0] for site in sites])

    return PositionParts(residuals=stacked(stream), attn=stacked(parts["hook_attn_out"]),
                         mlp=stacked(parts["hook_mlp_out"]), attn_raw=stacked(parts["attn.hook_out"]),
                         heads_in=stacked(parts["attn.hook_z"]), logits=logits)


def check_position(position: int | None, n_tokens: int) -> int:
    """A text position (negative counts from the end; None: the last)."""
    if position is None:
        return n_tokens - 1
    if not -n_tokens <= int(position) < n_tokens:
        raise LmvizError(f"Position {position} is outside the text (0..{n_tokens - 1}).")
    return int(position) % n_tokens


def head_outputs(projection: nn.Module, x: torch.Tensor, n_heads: int, d_head: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(head, d_model) float64 each head's slice of `x` (n_heads·d_head,) through the output projection
    alone, and (d_model,) the projection's bias, which no head owns. In float64 from the weights of an
    nn.Linear or GPT-2's Conv1D (weight (in, out)); any other projection is called on one slice at a time."""
    weight, bias = getattr(projection, "weight", None), getattr(projection, "bias", None)
    x64 = x.double().cpu()
    if isinstance(projection, nn.Linear) or (type(projection).__name__ == "Conv1D" and weight is not None):
        w = weight.detach().double().cpu()
        w = w if isinstance(projection, nn.Linear) else w.T  # (d_model, n_heads·d_head)
        per_head = torch.stack([w[:, h * d_head:(h + 1) * d_head] @ x64[h * d_head:(h + 1) * d_head]
                                for h in range(n_heads)])
        b = bias.detach().double().cpu() if isinstance(bias, torch.Tensor) else torch.zeros(w.shape[0], dtype=torch.float64)
        return per_head, b
    parameter = next(projection.parameters())
    masked = torch.zeros(n_heads + 1, n_heads * d_head, dtype=parameter.dtype, device=parameter.device)
    for head in range(n_heads):  # row `head` holds that head's slice; the last row is all zeros
        masked[head, head * d_head:(head + 1) * d_head] = x[head * d_head:(head + 1) * d_head]
    with torch.inference_mode():
        out = projection(masked).double().cpu()
    return out[:-1] - out[-1], out[-1]


def attribute(lm: LoadedModel, text: str, position: int | None = None, target: int | None = None,
              layer: int | None = None) -> Attribution:
    """Split the logit of `target` (default: the model's top token) at `position` (default: the last).
    With `layer` < n_layers, split the logit lens's logit at that layer instead: the parts of blocks
    0 .. layer-1, with the final norm held at the residual there."""
    _require_attributable(lm)
    n_tokens = len(trace_module.encode(lm, text))
    position = check_position(position, n_tokens)
    layer = lm.n_layers if layer is None else int(layer)
    if not 0 <= layer <= lm.n_layers:
        raise LmvizError(f"Layer {layer} is outside 0..{lm.n_layers} (0: the embeddings, {lm.n_layers}: the output).")
    parts = position_parts(lm, text, position)
    target = int(parts.logits.argmax()) if target is None else int(target)
    if not 0 <= target < lm.vocab_size:
        raise LmvizError(f"Token id {target} is outside {lm.name}'s vocabulary (0..{lm.vocab_size - 1}).")
    key = (text, position, target, layer)
    return cached("attribution", lm, key, lambda: _attribute(lm, text, position, target, layer, parts))


def resolve_target(lm: LoadedModel, spec: str) -> int:
    """A target token from what a user typed: a token id, or a token's text. Text is read as a word inside
    a sentence (" Paris") when that is one token, else as typed ("," or "Paris" at a line's start);
    a leading · stands for a space, and quotes make a number text ("8" is the token 8, 8 the id)."""
    spec = spec.strip()
    if not spec:
        raise LmvizError("Give a target token: its id, or its text (e.g. Paris, or ·Paris for the exact piece).")
    quoted = len(spec) >= 3 and spec[0] == spec[-1] and spec[0] in "\"'"
    if quoted:
        spec = spec[1:-1]
    elif spec.lstrip("-").isdecimal() and spec.isascii():  # "²" is a digit but not a number int() reads
        return int(spec)
    spec = spec.replace("\\n", "\n")
    try:
        if spec.startswith("·"):
            return resolve_watched(lm, [" " + spec[1:]])[0]
        try:
            return resolve_watched(lm, [" " + spec])[0]
        except LmvizError:
            return resolve_watched(lm, [spec])[0]
    except LmvizError as error:
        raise LmvizError(str(error).replace("Watch one of those pieces", "Pick one of those pieces as the target"))


def _attribute(lm: LoadedModel, text: str, position: int, target: int, layer: int,
               parts: PositionParts) -> Attribution:
    decomposition = lm.arch.require_decomposition()
    head = lm.head
    if not head.linear:
        raise LmvizError(f"{lm.name}'s unembedding is not one linear layer, so lmviz can't attribute its logits.")
    direction, unembed_bias = head.direction(target)
    residual = parts.residuals[layer]
    final = require_frozen(head.norm, residual.unsqueeze(0), "final norm", lm)

    def logit_of(vectors: torch.Tensor, frozen: FrozenNorm = final) -> torch.Tensor:
        return frozen.linear(vectors) @ direction

    final_bias = final.bias
    constant = unembed_bias + (float(final_bias @ direction) if isinstance(final_bias, torch.Tensor) else 0.0)
    heads, head_bias = [], []
    for block in range(layer):
        per_head, bias = head_outputs(decomposition.out_projs[block], parts.heads_in[block],
                                      decomposition.n_heads, decomposition.d_head)
        post_norm = decomposition.attn_post_norm(block)
        if post_norm is not None:  # Gemma: the attention output is normed before it joins the residual
            inner = require_frozen(post_norm, parts.attn_raw[block].unsqueeze(0), "post-attention norm", lm)
            per_head, bias = inner.linear(per_head), inner.linear(bias) + inner.bias
        heads.append(logit_of(per_head))
        head_bias.append(logit_of(bias).reshape(()))
    if layer == lm.n_layers:  # the model's own logit
        logit = float(parts.logits[target])
    else:  # the logit lens at `layer`: the model's verified head on the residual there
        logit = float(head.logits(residual.unsqueeze(0))[0, target])
    logit = head.before_cap(logit)  # the parts sum to the logit before a soft-cap
    embed = float(logit_of(parts.residuals[0]))
    attn, mlp = logit_of(parts.attn[:layer]), logit_of(parts.mlp[:layer])
    bound = _sum_bound(lm, parts, layer, direction, final)
    with lm.lock:
        token = trace_module.display_tokens(lm.tokenizer, [target])[0]
    empty = torch.zeros(0, decomposition.n_heads, dtype=torch.float64)
    return Attribution(lm.name, text, position, layer, target, token, logit, embed, attn, mlp,
                       torch.stack(heads) if heads else empty,
                       torch.stack(head_bias) if head_bias else torch.zeros(0, dtype=torch.float64),
                       constant, bound, head.softcap)


def _sum_bound(lm: LoadedModel, parts: PositionParts, layer: int, direction: torch.Tensor,
               final: FrozenNorm) -> float:
    """How far Σ parts may be from the model's logit through rounding: the model adds 2·layer parts to
    the residual (each add rounds by u·|result|, bounded by u·Σ|parts| so far), normalizes (rounding
    ≤ (d+16)·u·|normed|, with u at least float32's: the norms upcast) and takes a dot product of length d
    (≤ (3d+16)·u·Σ|h||w|)."""
    residual = parts.residuals[layer]
    u = UNIT_ROUNDOFF.get(residual.dtype, 2.0**-24)
    d = residual.shape[-1]
    magnitude = (parts.residuals[0].double().abs() + parts.attn[:layer].double().abs().sum(0)
                 + parts.mlp[:layer].double().abs().sum(0))
    residual_error = 2 * max(layer, 1) * u * magnitude  # (d,)
    normed = final.linear(residual).abs()
    weights = direction.abs()
    for step in final.steps:  # |L(e)| elementwise, LayerNorm's centering included
        residual_error = (residual_error + residual_error.mean() if step.center else residual_error) * \
            step.scale.abs()[0] * (step.gain.abs() if step.gain is not None else 1)
    u_norm = max(u, 2.0**-24)  # transformers' norms compute in float32 even in a float64 model
    bound = float(residual_error @ weights + ((d + 16) * u_norm + (3 * d + 16) * u) * (normed @ weights))
    cap = lm.head.softcap
    if cap:  # recovering the logit before the cap from the capped float32 one amplifies its rounding
        y = min(abs(float(parts.logits.abs().max())) / cap, 1 - 1e-12)
        bound += 8 * 2.0**-24 * cap / (1 - y * y)
    return bound
