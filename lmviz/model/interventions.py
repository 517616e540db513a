"""The one seam through which lmviz reads and edits a model during a forward pass.

Every analysis that looks inside a pass (the trace's residual stream,
attention patterns, direct logit attribution, ablation; patching and
steering next) calls `run(lm, input_ids, record=…, edits=…)` (or `forward`,
which returns the model's whole output). Nothing outside this module knows
that there are hooks.

**Sites** name the places, as TransformerLens names them (block l, any model):

    blocks.{l}.hook_resid_pre    block l's input: the residual stream = hidden_states[l]
    blocks.{l}.hook_resid_post   block l's output = hidden_states[l+1] (before the final norm for the last)
    blocks.{l}.hook_attn_out     what the attention adds to the residual stream (after a post-norm: Gemma)
    blocks.{l}.hook_mlp_out      what the MLP adds to the residual stream
    blocks.{l}.attn.hook_out     the attention's own output, before any post-norm (= hook_attn_out without one)
    blocks.{l}.attn.hook_z       the heads side by side: the input of the attention's output projection;
                                 unit=h is head h's d_head slice
    blocks.{l}.attn.hook_q       the query projection's output (before any rotation): unit=h is head h's
    blocks.{l}.attn.hook_k/_v    the key / value projection's output: unit=g is key-value head g's (with
                                 grouped-query attention, g serves query heads g·n/n_kv … (g+1)·n/n_kv − 1)
    blocks.{l}.mlp.hook_post     the neurons: the input of the MLP's output projection; unit=n is neuron n
    ln_final.hook_normalized     what the unembedding reads: the final residual after the final norm

`Site("blocks.5.attn.hook_z", unit=3)` is head 3 of block 5. Where a model's
parts were not found, or don't add up to its blocks' outputs
(`lmviz.model.architectures.Decomposition`), asking for them raises LmvizError.

A **recording** keeps sites' values at chosen positions (`Recording`); an
**edit** replaces a site, adds to it or scales it at chosen positions (all by
default), with a value that may come from another text's recording (`Edit`).
Zero-ablation is `Edit(site)`, mean-ablation `Edit(site, its_mean)`. Edits
apply in the order given and a recording sees a site after its edits: what
the rest of the model read.

The hooks are installed once per loaded model, on load: registering hooks
while another thread runs the model is a race in torch. Each hook looks up
what *this thread* asked for and does nothing otherwise, so eight sessions
can record and ablate different parts of one model at once.

Why plain hooks and not nnsight (0.8.1; `bench/interventions.py`): on one
thread both give the same logits (max |diff| 0) at the same cost (nnsight /
hooks 1.02-1.04 at 13 and 200 tokens). But wrapping a model installs nnsight's
controller as every module's forward, and a trace's state is reached by every
call to the model from any thread: with 8 sessions at once 39 of 40 ablations
failed (greenlet "cannot switch to a different thread", some silently saving
nothing) and plain forwards in other threads broke too. It would need one lock
around all model work, where these hooks run 8 threads correctly (40 of 40).

Attention probabilities need eager attention (SDPA never forms them).
`eager_twin(lm)` is a second view of the same model that shares every weight,
buffer and hook but runs eager attention, so the pages that never ask for
patterns keep the fast kernel, and no setting of the shared model is switched
back and forth under other sessions.
"""

from __future__ import annotations

import copy
import re
import threading
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

from lmviz.model import compute
from lmviz.model.architectures import Architecture, _input_at, _output_tensor
from lmviz.errors import LmvizError

BLOCK_HOOKS = ("hook_resid_pre", "hook_resid_post", "hook_attn_out", "hook_mlp_out", "attn.hook_out",
               "attn.hook_z", "attn.hook_q", "attn.hook_k", "attn.hook_v", "mlp.hook_post")
QKV = ("attn.hook_q", "attn.hook_k", "attn.hook_v")
FINAL = "ln_final.hook_normalized"
OPS = ("replace", "add", "scale")
_UNITS = {"attn.hook_z": "head", "attn.hook_q": "head", "attn.hook_k": "key-value head",
          "attn.hook_v": "key-value head", "mlp.hook_post": "neuron"}  # sites whose last axis splits into units
_NAME = re.compile(r"blocks\.(\d+)\.(.+)")


@dataclass(frozen=True)
class Site:
    """A place in the forward pass, by its name (see the module docstring), optionally one unit of it:
    a head of `attn.hook_z`, a neuron of `mlp.hook_post`."""

    name: str  # "blocks.5.hook_resid_pre", "blocks.5.attn.hook_z", "ln_final.hook_normalized", …
    unit: int | None = None
    layer: int | None = field(init=False, repr=False, compare=False)  # the block; None for the final site
    hook: str = field(init=False, repr=False, compare=False)  # the name without "blocks.{l}."

    def __post_init__(self):
        match = _NAME.fullmatch(self.name)
        layer, hook = (int(match[1]), match[2]) if match else (None, self.name)
        if hook not in (BLOCK_HOOKS if match else (FINAL,)):
            raise LmvizError(f"'{self.name}' is not a site: use blocks.L.{{{', '.join(BLOCK_HOOKS)}}} or {FINAL}.")
        if self.unit is not None and hook not in _UNITS:
            raise LmvizError(f"Only {', '.join(_UNITS)} split into units (heads, neurons), not {self.name}.")
        object.__setattr__(self, "layer", layer)
        object.__setattr__(self, "hook", hook)

    @property
    def label(self) -> str:
        return self.name if self.unit is None else f"{self.name}[{_UNITS[self.hook]} {self.unit}]"


@dataclass(frozen=True)
class Edit:
    """Change `site` during a pass at positions `at` (an index into the position axis: an int, a list, a
    slice; None: all): "replace" it by `value`, "add" `value` to it, or "scale" it by `value`.

    `value` is a number or a tensor that broadcasts to the edited part: (width,) for every position, or
    (n_at, width) one row per position, e.g. another text's `Recording` of the same site. Width is
    d_model, n_heads·d_head (hook_z), d_head (a head), d_mlp (hook_post) or nothing (a neuron).

    In a batch of copies of one text, `rows` (an index into the batch axis; None: every row) picks the
    copies to edit, so one pass runs many experiments. `rows` and `at` given as lists of one length pair
    up, as in torch's indexing: `Edit(site, values, rows=[0, 1, 2], at=[4, 5, 6])` edits row 0 at position
    4, row 1 at 5, row 2 at 6, with values (3, width)."""

    site: Site
    value: torch.Tensor | float = 0.0
    op: str = "replace"
    at: object = None
    rows: object = None

    def __post_init__(self):
        if self.op not in OPS:
            raise LmvizError(f"An edit replaces, adds or scales ({', '.join(OPS)}), not '{self.op}'.")

    def apply(self, x: torch.Tensor, unit: slice | int | None) -> None:
        """Edit x (batch, pos, width) in place at this edit's rows, positions and `unit` of the last axis."""
        index = (slice(None) if self.rows is None else self.rows, slice(None) if self.at is None else self.at) + (
            () if unit is None else (unit,))
        value = torch.as_tensor(self.value, dtype=x.dtype, device=x.device)
        if self.op == "replace":
            x[index] = value
        elif self.op == "add":
            x[index] += value
        else:
            x[index] *= value


@dataclass
class Recording:
    """What to keep from one pass: the values of `sites` at positions `at` (an index into the position
    axis; None: all; "mean": the mean over all positions in float64, (1, …)). After `run`, `recording[site]`
    is (n_at, width) detached on the CPU (a neuron: (n_at,)), from the batch's first row; with
    `every_row=True`, (batch, n_at, width) from all of them.

    With `graph=True` (for a pass run with grad=True) a site keeps the very tensor the model passed on, whole
    (batch, pos, width) and attached to the autograd graph, so a caller can differentiate the output with
    respect to it (`torch.autograd.grad`); `at` and the site's unit are then the caller's to apply.

    `on_attention(layer, probs)` receives every block's (head, query, key) attention probabilities when the
    pass runs eager attention; it reduces them on the spot, so a long text never holds all layers at once.

    With `stop=True` the pass ends as soon as every site is kept, and `forward` returns None: reading block
    8's input of a 30-block model costs 8 blocks, not 30 (collecting an SAE's training activations)."""

    sites: Sequence[Site] = ()
    at: object = None
    on_attention: Callable[[int, torch.Tensor], None] | None = None
    every_row: bool = False
    graph: bool = False
    stop: bool = False
    values: dict[Site, torch.Tensor] = field(default_factory=dict)

    def __getitem__(self, site: Site) -> torch.Tensor:
        return self.values[site]

    def keep(self, tensor: torch.Tensor) -> torch.Tensor:
        """(batch, pos, …) -> (n_at, …) of the first row, or (batch, n_at, …), detached on the CPU."""
        if self.every_row:
            return (tensor if self.at is None else tensor[:, self.at]).detach().cpu()
        if isinstance(self.at, str):
            return tensor[0].detach().double().mean(0, keepdim=True).cpu()
        kept = tensor[0] if self.at is None else tensor[0, self.at]
        return kept.detach().cpu()


@dataclass(frozen=True)
class Component:
    """A part as the ablation page names it: an attention block, an MLP block, or one head."""

    kind: str  # "attn" | "mlp" | "head"
    layer: int
    head: int | None = None  # only for kind == "head"

    def __post_init__(self):
        if self.kind not in ("attn", "mlp", "head") or (self.kind == "head") != (self.head is not None):
            raise LmvizError(f"A component is an attention block, an MLP block or a head, not {self}.")

    @property
    def site(self) -> Site:
        """Its output: what the block adds to the residual stream, or the head's slice of hook_z."""
        if self.kind == "head":
            return Site(f"blocks.{self.layer}.attn.hook_z", unit=self.head)
        return Site(f"blocks.{self.layer}.hook_{self.kind}_out")

    @property
    def label(self) -> str:
        return {"attn": f"attention L{self.layer}", "mlp": f"MLP L{self.layer}",
                "head": f"head L{self.layer}.H{self.head}"}[self.kind]


# ---------------------------------------------------------------- the hooks


@dataclass
class _Pass:
    """What one thread asked of its passes: per (hook, layer), the edits to apply and the sites to keep."""

    recording: Recording | None
    edits: dict[tuple[str, int | None], list[tuple[Edit, slice | int | None]]]
    recorded: dict[tuple[str, int | None], list[tuple[Site, slice | int | None]]]

    def wants(self, key: tuple[str, int | None]) -> bool:
        return key in self.edits or key in self.recorded

    def visit(self, key: tuple[str, int | None], x: torch.Tensor) -> torch.Tensor | None:
        """Edit and record the tensor at one site; the edited copy, or None when it is unchanged."""
        edits = self.edits.get(key)
        if edits:
            x = x.clone()
            for edit, unit in edits:
                edit.apply(x, unit)
        for site, unit in self.recorded.get(key, ()):
            if self.recording.graph and not x.requires_grad:  # nothing before it needs a gradient: start here
                x.requires_grad_(True)
            self.recording.values[site] = x if self.recording.graph else self.recording.keep(
                x if unit is None else x[..., unit])
        if self.recording is not None and self.recording.stop and len(self.recording.values) == len(
                set(self.recording.sites)):
            raise _Recorded
        return x if edits else None


class _Recorded(Exception):
    """Raised by a hook to end a `Recording(stop=True)` pass once everything is kept."""


def _with_output(output, tensor: torch.Tensor):
    """A module's output with `tensor` in the place `_output_tensor` reads."""
    if isinstance(output, torch.Tensor):
        return tensor
    if isinstance(output, (tuple, list)):
        return (tensor, *output[1:])
    output["last_hidden_state"] = tensor
    return output


class _Seam:
    """The hooks of one loaded model, one per site and block, installed once; they act for the thread
    that asked (`active`), and only then."""

    def __init__(self, arch: Architecture):
        self.arch = arch
        self.local = threading.local()
        for layer, block in enumerate(arch.blocks):
            block.register_forward_pre_hook(self._before(("hook_resid_pre", layer)), with_kwargs=True)
            block.register_forward_hook(self._after(("hook_resid_post", layer)))
        parts = arch.decomposition
        for layer in range(len(parts.attentions) if parts else 0):
            parts.attentions[layer].register_forward_hook(self._patterns(layer))
            parts.attentions[layer].register_forward_hook(self._after(("attn.hook_out", layer)))
            parts.out_projs[layer].register_forward_pre_hook(self._before(("attn.hook_z", layer)), with_kwargs=True)
            parts.attn_writes[layer].register_forward_hook(self._after(("hook_attn_out", layer)))
            parts.mlp_writes[layer].register_forward_hook(self._after(("hook_mlp_out", layer)))
            for hook, proj in zip(QKV, parts.qkv_projs[layer] if parts.qkv_projs is not None else ()):
                proj.register_forward_hook(self._after((hook, layer)))
            if parts.mlp_out_projs is not None:
                parts.mlp_out_projs[layer].register_forward_pre_hook(self._before(("mlp.hook_post", layer)),
                                                                     with_kwargs=True)
        if arch.head is not None:
            arch.head.unembed.register_forward_pre_hook(self._before((FINAL, None)), with_kwargs=True)

    def _before(self, key: tuple[str, int | None]):
        """A pre-hook: the site is what the module reads."""
        def hook(module, args, kwargs):
            now = getattr(self.local, "now", None)
            where = _input_at(args, kwargs) if now is not None and now.wants(key) else None
            if where is None:
                return None
            new = now.visit(key, args[where] if isinstance(where, int) else kwargs[where])
            if new is None:
                return None
            if isinstance(where, int):
                return (*args[:where], new, *args[where + 1:]), kwargs
            return args, {**kwargs, where: new}
        return hook

    def _after(self, key: tuple[str, int | None]):
        """A forward hook: the site is what the module returns."""
        def hook(module, args, output):
            now = getattr(self.local, "now", None)
            new = now.visit(key, _output_tensor(output)) if now is not None and now.wants(key) else None
            return None if new is None else _with_output(output, new)
        return hook

    def _patterns(self, layer: int):
        """A forward hook on an attention module: its probabilities, when eager attention returns them."""
        def hook(module, args, output):
            now = getattr(self.local, "now", None)
            recording = now.recording if now is not None else None
            weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if recording is not None and recording.on_attention is not None and isinstance(weights, torch.Tensor):
                recording.on_attention(layer, weights[0].detach())
        return hook

    def _unit(self, site: Site) -> slice | int | None:
        """Where a site's unit sits on its last axis, checked against the model's parts."""
        arch = self.arch
        if site.layer is not None and not 0 <= site.layer < len(arch.blocks):
            raise LmvizError(f"{site.name}: the model has blocks 0..{len(arch.blocks) - 1}.")
        if site.hook in ("hook_attn_out", "hook_mlp_out"):
            arch.require_decomposition()
        elif site.hook.startswith(("attn.", "mlp.")):
            parts = arch.require_decomposition(additive=False)
            if site.hook == "mlp.hook_post" and parts.mlp_out_projs is None:
                raise LmvizError(parts.neurons_refusal)
            if site.hook in QKV and parts.qkv_projs is None:
                raise LmvizError(parts.qkv_refusal)
        elif site.hook == FINAL and arch.head is None:
            raise LmvizError(f"'{arch.model_type}' has no unembedding, so it has no {FINAL}.")
        if site.unit is None:
            return None
        parts = arch.decomposition
        count = {"attn.hook_z": parts.n_heads, "attn.hook_q": parts.n_heads, "mlp.hook_post": parts.d_mlp}.get(
            site.hook, parts.n_kv_heads)
        if not 0 <= site.unit < count:
            raise LmvizError(f"{site.label}: the model has {_UNITS[site.hook]}s 0..{count - 1} there.")
        return site.unit if site.hook == "mlp.hook_post" else slice(site.unit * parts.d_head,
                                                                    (site.unit + 1) * parts.d_head)

    def plan(self, record: Recording | None, edits: Sequence[Edit]) -> _Pass:
        """A thread's request as hooks look it up, every site checked."""
        now = _Pass(record, {}, {})
        for edit in edits:
            now.edits.setdefault((edit.site.hook, edit.site.layer), []).append((edit, self._unit(edit.site)))
        if record is not None and record.on_attention is not None:
            self.arch.require_decomposition(additive=False)
        for site in record.sites if record is not None else ():
            now.recorded.setdefault((site.hook, site.layer), []).append((site, self._unit(site)))
        return now

    @contextmanager
    def active(self, now: _Pass):
        """Context: this thread's passes apply and record what `now` asks."""
        self.local.now = now
        try:
            yield
        finally:
            self.local.now = None


_SEAMS: "weakref.WeakKeyDictionary[nn.Module, _Seam]" = weakref.WeakKeyDictionary()
_TWINS: "weakref.WeakKeyDictionary[nn.Module, tuple[_Seam, nn.Module]]" = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def install(lm) -> None:
    """Put the seam's hooks on a freshly loaded model (before any other thread can run it)."""
    _SEAMS[lm.model] = _Seam(lm.arch)


def _seam(lm) -> _Seam:
    seam = _SEAMS.get(lm.model)
    if seam is None or seam.arch is not lm.arch:
        raise LmvizError(f"{lm.name} was loaded without lmviz's hooks; load it with lmviz.model.models.load.")
    return seam


def eager_twin(lm) -> nn.Module:
    """The model again, sharing every parameter, buffer and hook, but running eager attention, which
    returns the attention probabilities (the shared model keeps its faster kernel). Made once per model,
    and again when the model gets a new seam (described again)."""
    with _LOCK:
        seam, twin = _TWINS.get(lm.model, (None, None))
        if twin is None or seam is not _SEAMS.get(lm.model):
            model = lm.model
            # weights and buffers are shared, not copied; the hooks are plain functions, which deepcopy shares
            twin = copy.deepcopy(model, {id(t): t for t in [*model.parameters(), *model.buffers()]})
            twin.config._attn_implementation = "eager"
            for module in twin.modules():  # sub-configs (a text config inside a multimodal one)
                config = getattr(module, "config", None)
                if config is not None and hasattr(config, "_attn_implementation"):
                    config._attn_implementation = "eager"
            _TWINS[lm.model] = (_SEAMS.get(lm.model), twin)
    return twin


@contextmanager
def applying(lm, *, record: Recording | None = None, edits: Sequence[Edit] = ()):
    """Context: every pass this thread runs through `lm`'s model (or its eager twin) meanwhile applies
    `edits` and fills `record`. `forward` is one pass inside it; a decoding loop (steering) is many."""
    seam = _seam(lm)
    with seam.active(seam.plan(record, edits)):
        yield


def forward(lm, input_ids: torch.Tensor | None = None, *, record: Recording | None = None,
            edits: Sequence[Edit] = (), eager: bool = False, grad: bool = False, **model_kwargs):
    """One forward pass of `input_ids` (batch, pos) in a compute slot, with `record` filled and `edits`
    applied; returns the model's own output. model_kwargs go to the model (output_hidden_states,
    logits_to_keep, attention_mask, position_ids, inputs_embeds instead of input_ids).
    With eager=True the pass runs eager attention, so a `record.on_attention` sees the probabilities.
    With grad=True it builds the autograd graph (for gradients: attribution patching, saliency); otherwise
    it runs in inference mode. A `Recording(stop=True)` ends the pass early, and then it returns None."""
    model = eager_twin(lm) if eager else lm.model
    if input_ids is not None:
        model_kwargs["input_ids"] = input_ids.to(lm.device)
    with (torch.enable_grad() if grad else torch.inference_mode()), compute.slot(), \
            applying(lm, record=record, edits=edits):
        try:
            return model(use_cache=False, **model_kwargs)
        except _Recorded:
            return None


def run(lm, input_ids: torch.Tensor, *, record: Recording | None = None, edits: Sequence[Edit] = (),
        eager: bool = False, logits_at=None) -> torch.Tensor:
    """`forward`, returning the model's logits at `logits_at` (an index into positions; None: every
    position), float32 on the CPU, (n, vocab)."""
    logits = forward(lm, input_ids, record=record, edits=edits, eager=eager).logits[0]
    return (logits if logits_at is None else logits[logits_at]).float().cpu()
