"""The one seam through which lmviz reads and edits a model's parts during a forward pass.

Attention patterns, direct logit attribution and ablation all need to see (or
change) what happens inside the blocks: the attention probabilities, each
head's slice of the output projection's input, and what the attention and the
MLP add to the residual stream (`lmviz.architectures.Decomposition`).

`PartHooks` are installed once per loaded model, like the residual-stream
recorder: registering hooks while another thread runs the model is a race in
torch. Each hook looks up what *this thread* asked for (a `Recording`, a tuple
of `Edit`s) and does nothing otherwise, so eight sessions can record and
ablate different heads on one model at once.

`run(lm, input_ids, ...)` is the seam itself: a forward pass with recordings
and edits described as data (`Component`, `Edit`, `Recording`). Another engine
(NDIF, for models that fit no single machine) can implement the same call;
nothing above it knows how the hooks work.

Why plain hooks and not nnsight (0.8.1; `bench/interventions.py`): on one
thread both give the same logits (max |diff| 0) at the same cost (nnsight /
hooks 1.02-1.04 at 13 and 200 tokens). But wrapping a model installs nnsight's
controller as every module's forward, and a trace's state is reached by every
call to the model from any thread: with 8 sessions at once 39 of 40 ablations
failed (greenlet "cannot switch to a different thread", some silently saving
nothing) and plain forwards in other threads broke too. It would need one lock
around all model work, where these hooks run 8 threads correctly (40 of 40).

Attention probabilities need eager attention (SDPA never forms them).
`eager_twin(lm)` is a second view of the same model that shares every weight
and buffer but runs eager attention, so the pages that never ask for patterns
keep the fast kernel, and no setting of the shared model is switched back and
forth under other sessions.
"""

from __future__ import annotations

import copy
import threading
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from lmviz import compute
from lmviz.architectures import Decomposition, _first_tensor, _output_tensor
from lmviz.errors import LmvizError

KINDS = ("attn", "mlp", "head")  # what an edit or a component can be
MODES = ("zero", "mean")


@dataclass(frozen=True)
class Component:
    """One part of the model: an attention block, an MLP block, or one head of a block's attention."""

    kind: str  # "attn" | "mlp" | "head"
    layer: int
    head: int | None = None  # only for kind == "head"

    def __post_init__(self):
        if self.kind not in KINDS or (self.kind == "head") != (self.head is not None):
            raise LmvizError(f"A component is an attention block, an MLP block or a head, not {self}.")

    @property
    def label(self) -> str:
        return {"attn": f"attention L{self.layer}", "mlp": f"MLP L{self.layer}",
                "head": f"head L{self.layer}.H{self.head}"}[self.kind]


@dataclass(frozen=True)
class Edit:
    """Replace a component's output during a pass: by zero, or by `value` (its mean over the text).

    For a head the output is its d_head slice of the output projection's input; for a block,
    what it adds to the residual stream."""

    component: Component
    value: torch.Tensor | None = None  # (d_head,) or (d_model,); None: zero


@dataclass
class Recording:
    """What to keep from one pass, at the positions `at` (an index into the position axis; None: all;
    "mean": the mean over all positions, float64, (1, …)).

    heads[layer]: (n_at, n_heads·d_head) the output projection's input; attn[layer], mlp[layer]:
    (n_at, d_model) what each adds to the residual; attn_raw[layer]: the attention's own output (before
    a post-norm). `on_attention(layer, probs)` receives (head, query, key) probabilities when the pass
    runs eager attention; it reduces them on the spot, so a long text never holds all layers at once."""

    at: object = None
    on_attention: Callable[[int, torch.Tensor], None] | None = None
    heads: dict[int, torch.Tensor] = field(default_factory=dict)
    attn: dict[int, torch.Tensor] = field(default_factory=dict)
    mlp: dict[int, torch.Tensor] = field(default_factory=dict)
    attn_raw: dict[int, torch.Tensor] = field(default_factory=dict)

    def keep(self, tensor: torch.Tensor) -> torch.Tensor:
        """(batch=1, pos, …) -> (n_at, …) detached on the CPU."""
        if isinstance(self.at, str):
            return tensor[0].detach().double().mean(0, keepdim=True).cpu()
        kept = tensor[0] if self.at is None else tensor[0, self.at]
        return kept.detach().cpu()


class PartHooks:
    """Hooks on every block's attention, output projection and written parts, installed once per model;
    they act for the thread that asked (`active`), and only then."""

    def __init__(self, parts: Decomposition):
        self.parts = parts
        self.local = threading.local()
        for layer in range(len(parts.attentions)):
            parts.attentions[layer].register_forward_hook(self._after_attention(layer))
            parts.out_projs[layer].register_forward_pre_hook(self._before_projection(layer))
            parts.attn_writes[layer].register_forward_hook(self._after_write("attn", layer))
            parts.mlp_writes[layer].register_forward_hook(self._after_write("mlp", layer))

    def _state(self) -> tuple[Recording | None, dict]:
        return getattr(self.local, "recording", None), getattr(self.local, "edits", {})

    def _after_attention(self, layer: int):
        def hook(module, args, output):
            recording, _ = self._state()
            if recording is None:
                return None
            recording.attn_raw[layer] = recording.keep(_output_tensor(output))
            weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if recording.on_attention is not None and isinstance(weights, torch.Tensor):
                recording.on_attention(layer, weights[0].detach())
            return None
        return hook

    def _before_projection(self, layer: int):
        def hook(module, args):
            recording, edits = self._state()
            x = _first_tensor(args, {})
            heads = [e for e in edits.get(layer, ()) if e.component.kind == "head"]
            if heads:
                x = x.clone()
                width = self.parts.d_head
                for edit in heads:
                    part = slice(edit.component.head * width, (edit.component.head + 1) * width)
                    x[..., part] = 0 if edit.value is None else edit.value.to(x.device, x.dtype)
            if recording is not None:
                recording.heads[layer] = recording.keep(x)
            return (x, *args[1:]) if heads else None
        return hook

    def _after_write(self, kind: str, layer: int):
        def hook(module, args, output):
            recording, edits = self._state()
            edit = next((e for e in edits.get(layer, ()) if e.component.kind == kind), None)
            tensor = _output_tensor(output)
            if edit is not None:
                tensor = torch.zeros_like(tensor) if edit.value is None else \
                    edit.value.to(tensor.device, tensor.dtype).expand_as(tensor).clone()
                output = (tensor, *output[1:]) if isinstance(output, tuple) else tensor
            if recording is not None:
                getattr(recording, kind)[layer] = recording.keep(tensor)
            return output if edit is not None else None
        return hook

    @contextmanager
    def active(self, recording: Recording | None, edits: tuple[Edit, ...]):
        """Context: this thread's passes record into `recording` and apply `edits`."""
        by_layer: dict[int, list[Edit]] = {}
        for edit in edits:
            by_layer.setdefault(edit.component.layer, []).append(edit)
        self.local.recording, self.local.edits = recording, by_layer
        try:
            yield
        finally:
            self.local.recording, self.local.edits = None, {}


_HOOKS: "weakref.WeakKeyDictionary[nn.Module, PartHooks]" = weakref.WeakKeyDictionary()
_TWINS: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()  # model -> (hooks, twin)
_LOCK = threading.Lock()


def install(lm) -> None:
    """Put the part hooks on a freshly loaded model (before any other thread can run it)."""
    if lm.arch.decomposition is not None:
        _HOOKS[lm.model] = PartHooks(lm.arch.decomposition)


def part_hooks(lm) -> PartHooks:
    """The model's part hooks, or LmvizError saying why its blocks can't be split into parts."""
    parts = lm.arch.require_decomposition(additive=False)
    hooks = _HOOKS.get(lm.model)
    if hooks is None or hooks.parts is not parts:
        raise LmvizError(f"{lm.name} was loaded without lmviz's part hooks; load it with lmviz.models.load.")
    return hooks


def eager_twin(lm) -> nn.Module:
    """The model again, sharing every parameter, buffer and hook, but running eager attention, which
    returns the attention probabilities (the shared model keeps its faster kernel). Made once per model."""
    with _LOCK:
        (hooks, recorder), twin = _TWINS.get(lm.model, ((None, None), None))
        if twin is None or hooks is not _HOOKS.get(lm.model) or recorder is not lm.recorder:  # the hooks it has now
            model = lm.model
            memo = {id(t): t for t in [*model.parameters(), *model.buffers()]}
            for module in model.modules():  # hooks are shared, not copied: their owners (recorders) too
                for hooks_dict in (module._forward_hooks, module._forward_pre_hooks):
                    for hook in hooks_dict.values():
                        owner = getattr(hook, "__self__", None)
                        if owner is not None:
                            memo[id(owner)] = owner
            twin = copy.deepcopy(model, memo)
            twin.config._attn_implementation = "eager"
            for module in twin.modules():  # sub-configs (a text config inside a multimodal one)
                config = getattr(module, "config", None)
                if config is not None and hasattr(config, "_attn_implementation"):
                    config._attn_implementation = "eager"
            _TWINS[lm.model] = ((_HOOKS.get(lm.model), lm.recorder), twin)
    return twin


@torch.inference_mode()
def run(lm, input_ids: torch.Tensor, *, record: Recording | None = None, edits: tuple[Edit, ...] = (),
        eager: bool = False, logits_at=None):
    """One forward pass of `input_ids` (1, pos) with `record` filled and `edits` applied, in a compute
    slot. Returns the model's logits at `logits_at` (an index into positions; None: every position),
    float32 on the CPU, (n, vocab). With eager=True the pass runs eager attention, so a
    `record.on_attention` sees the probabilities."""
    hooks = part_hooks(lm)
    model = eager_twin(lm) if eager else lm.model
    with compute.slot(), hooks.active(record, tuple(edits)):
        output = model(input_ids=input_ids.to(lm.device), use_cache=False)
    logits = output.logits[0]
    return (logits if logits_at is None else logits[logits_at]).float().cpu()
