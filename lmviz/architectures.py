"""Everything that differs between model architectures, found on the model itself and checked.

The analyses need to know, for any loaded transformers model:

- the **blocks**: the transformer layers, in order (the modules named by the
  model's `_no_split_modules`, held in one `nn.ModuleList`); the residual
  stream is read at their outputs;
- the **final norm**: whatever the model applies between the last block's
  output and the unembedding (a norm, OPT-350m's projection, BERT's MLM
  transform). It is found by running a short probe with hooks and following
  the values from the last block's output to the unembedding's input;
- the **head**: the unembedding (`get_output_embeddings()`) plus what the
  model does to its output: Cohere multiplies by `logit_scale`, Granite
  divides by `logits_scaling`, Gemma-2/3 soft-cap, and any other constant
  factor is measured on the probe;
- the **attention, MLP and output projection** inside each block;
- the **EOS ids** that `generate()` stops at, and how to build a KV cache.

Discovery is verified on every load: on the probe, the head applied to the
last block's output (before the final norm) must reproduce the model's own
logits within a bound derived from the dtype. A model that fails keeps
working where only its own logits are used (sampling, beam search, loss), and
everything that projects hidden states to the vocabulary refuses it with
`Architecture.refusal`: one line that names the architecture. A lens that is
silently wrong is never shown.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import nn

PROBE_IDS = (1, 2, 3, 5, 8, 13, 21)  # a short probe; ids below every vocabulary's size

# dtype -> unit roundoff u (half the distance from 1 to the next number)
UNIT_ROUNDOFF = {torch.float64: 2.0**-53, torch.float32: 2.0**-24, torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}

# Child names that hold a block's attention, MLP and the attention's output projection.
ATTENTION_NAMES = ("self_attn", "attn", "attention", "self_attention", "mixer")
MLP_NAMES = ("mlp", "feed_forward", "ffn", "block_sparse_moe", "moe")
OUT_PROJ_NAMES = ("o_proj", "out_proj", "c_proj", "dense", "wo", "proj")


@dataclass(frozen=True)
class LogitTransform:
    """What the model does to the unembedding's output, in this order:
    logits = softcap(scale * z / divisor), softcap(x) = cap * tanh(x / cap)."""

    scale: float = 1.0  # Cohere's logit_scale, or a factor measured on the probe
    divisor: float = 1.0  # Granite's logits_scaling
    softcap: float | None = None  # Gemma-2/3's final_logit_softcapping

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        if self.scale != 1.0:
            logits = logits * self.scale
        if self.divisor != 1.0:
            logits = logits / self.divisor
        if self.softcap:  # the same operations, in the same order, as transformers
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    @property
    def linear(self) -> bool:
        """True when the transform is a constant factor (so it commutes with sums)."""
        return not self.softcap

    @property
    def factor(self) -> float:
        return self.scale / self.divisor


@dataclass(frozen=True)
class BlockParts:
    """The modules inside one transformer block (None where the block has no such child)."""

    block: nn.Module
    attention: nn.Module | None
    mlp: nn.Module | None
    out_proj: nn.Module | None  # the attention's output projection (heads concatenated -> d_model)


@dataclass(frozen=True, eq=False)
class Architecture:
    """Where the parts of one loaded model are. See the module docstring."""

    model_type: str
    blocks: tuple[nn.Module, ...]  # (layer,) in the order the model runs them
    final_norm: nn.Module  # (…, d_model) -> (…, d_head); nn.Identity when there is none
    unembed: nn.Module | None  # (…, d_head) -> (…, vocab); None for classifiers
    logit_transform: LogitTransform = field(default_factory=LogitTransform)
    refusal: str | None = None  # why hidden states can't be projected to the vocabulary, or None
    head_reads_last_hidden: bool = True  # the unembedding reads transformers' last hidden state as it is
    max_head_error: float = 0.0  # max |head(last block output) - model logits| on the probe
    head_error_bound: float = 0.0  # what that error was allowed to be

    def parts(self, layer: int) -> BlockParts:
        """The attention, MLP and output projection of block `layer`."""
        block = self.blocks[layer]
        attention = _child(block, ATTENTION_NAMES)
        return BlockParts(block, attention, _child(block, MLP_NAMES),
                          _child(attention, OUT_PROJ_NAMES) if attention is not None else None)


# ---------------------------------------------------------------- discovery


def _child(module: nn.Module, names: tuple[str, ...]) -> nn.Module | None:
    for name in names:
        child = getattr(module, name, None)
        if isinstance(child, nn.Module):
            return child
    return None


def find_blocks(model: nn.Module) -> tuple[nn.Module, ...]:
    """The transformer blocks: the longest nn.ModuleList of modules whose class the model names in
    `_no_split_modules` (the unit accelerate never splits across devices), else the longest
    ModuleList of identical modules under the base model. Empty when neither exists."""
    no_split = set(getattr(model, "_no_split_modules", None) or ())
    best: tuple[nn.Module, ...] = ()
    fallback: tuple[nn.Module, ...] = ()
    for module in model.modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        items = tuple(module)
        names = {type(item).__name__ for item in items}
        if names <= no_split and len(items) > len(best):
            best = items
        elif len(names) == 1 and len(items) > len(fallback) and not isinstance(items[0], (nn.Linear, nn.Embedding)):
            fallback = items
    return best or fallback


def _first_tensor(args: tuple, kwargs: dict) -> torch.Tensor | None:
    for value in list(args) + [kwargs.get("hidden_states")] + list(kwargs.values()):
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return value
    return None


def _output_tensor(output) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    first = getattr(output, "last_hidden_state", None)
    return first if isinstance(first, torch.Tensor) else None


def _same(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    return a is not None and b is not None and a.shape == b.shape and bool(torch.equal(a, b))


@dataclass
class _Call:
    name: str
    module: nn.Module
    input: torch.Tensor | None
    output: torch.Tensor | None


@torch.inference_mode()
def _probe(model: nn.Module, blocks: tuple[nn.Module, ...], unembed: nn.Module | None, probe_ids: torch.Tensor):
    """Run the probe with hooks: the calls made after the last block, the last block's output, the
    unembedding's input, the model's logits and how often each block ran."""
    in_blocks = {id(m) for block in blocks for m in block.modules()}
    calls: list[_Call] = []
    runs = [0] * len(blocks)
    outputs: list[torch.Tensor | None] = [None] * len(blocks)
    state = {"after_last": False, "last_out": None, "head_in": None, "first_in": None}
    handles = []

    def first_hook(module, args, kwargs):
        if state["first_in"] is None:
            state["first_in"] = _first_tensor(args, kwargs)

    def block_hook(index):
        def hook(module, args, kwargs, output):
            runs[index] += 1
            outputs[index] = _output_tensor(output)
            if index == len(blocks) - 1:
                state["last_out"] = _output_tensor(output)
                state["after_last"] = True
        return hook

    def any_hook(name):
        def hook(module, args, kwargs, output):
            if state["after_last"]:
                calls.append(_Call(name, module, _first_tensor(args, kwargs), _output_tensor(output)))
        return hook

    def head_hook(module, args, kwargs):
        state["head_in"] = _first_tensor(args, kwargs)

    try:
        handles.append(blocks[0].register_forward_pre_hook(first_hook, with_kwargs=True))
        for index, block in enumerate(blocks):
            handles.append(block.register_forward_hook(block_hook(index), with_kwargs=True))
        for name, module in model.named_modules():
            if id(module) not in in_blocks and module is not model:
                handles.append(module.register_forward_hook(any_hook(name), with_kwargs=True))
        if unembed is not None:
            handles.append(unembed.register_forward_pre_hook(head_hook, with_kwargs=True))
        output = model(input_ids=probe_ids, use_cache=False, output_hidden_states=True)
    finally:
        for handle in handles:
            handle.remove()
    # transformers' hidden_states must be the residual stream: block 0's input, then each block's output
    # (the last one through the final norm, which the head check covers)
    hidden = getattr(output, "hidden_states", None)
    stream = [state["first_in"]] + outputs[:-1]
    readable = hidden is not None and len(hidden) == len(blocks) + 1 and all(
        _same(h, s) for h, s in zip(hidden[:-1], stream))
    reads_last = hidden is not None and _same(hidden[-1], state["head_in"])
    return calls, state["last_out"], state["head_in"], getattr(output, "logits", None), runs, readable, reads_last


def _chain(calls: list[_Call], start: torch.Tensor, target: torch.Tensor, hops: int = 4) -> list[_Call] | None:
    """Modules that carry `start` (the last block's output) to `target` (the unembedding's input),
    in order: none when they are equal, one for a plain final norm, more for e.g. norm -> projection.
    Searched depth-first, shortest first."""
    if _same(start, target):
        return []
    if hops == 0:
        return None
    step = [c for c in calls if _same(c.input, start) and c.output is not None and not _same(c.output, start)]
    for call in sorted(step, key=lambda c: not _same(c.output, target)):
        rest = _chain(calls, call.output, target, hops - 1)
        if rest is not None:
            return [call] + rest
    return None


def _config_transform(config) -> LogitTransform:
    """The logit post-processing a config asks for (attributes transformers reads in ForCausalLM)."""
    scale = getattr(config, "logit_scale", None)
    divisor = getattr(config, "logits_scaling", None)
    softcap = getattr(config, "final_logit_softcapping", None)
    return LogitTransform(
        scale=float(scale) if isinstance(scale, (int, float)) and not isinstance(scale, bool) else 1.0,
        divisor=float(divisor) if isinstance(divisor, (int, float)) and divisor else 1.0,
        softcap=float(softcap) if softcap else None,
    )


def head_error_bound(normed: torch.Tensor, unembed: nn.Module, transform: LogitTransform) -> torch.Tensor:
    """Elementwise bound on |our logits - the model's| when both compute the same head in a different
    order: each logit is a dot product of length d, whose rounding error is at most d·u·Σ|h_i||w_i|
    (Higham, γ_d), counted twice (ours and the model's) plus the norm's own rounding; the transform
    adds a few roundings of the result."""
    u = UNIT_ROUNDOFF.get(normed.dtype, 2.0**-24)
    d = normed.shape[-1]
    if isinstance(unembed, nn.Linear):
        magnitude = normed.abs().float() @ unembed.weight.detach().abs().float().T
        if unembed.bias is not None:
            magnitude = magnitude + unembed.bias.detach().abs().float()
    else:  # an unknown head module: bound by the largest logit times the width
        magnitude = unembed(normed).abs().float().amax() * torch.ones(1)
    return (4 * d + 16) * u * abs(transform.factor) * magnitude + 1e-30


def discover(model: nn.Module, kind: str) -> Architecture:
    """Find and verify the parts of a loaded model (see the module docstring)."""
    config = model.config
    model_type = getattr(config, "model_type", type(model).__name__)
    arch_name = f"{type(model).__name__} ('{model_type}')"
    blocks = find_blocks(model)
    unembed = model.get_output_embeddings() if kind != "classifier" else None
    if kind == "classifier":
        return Architecture(model_type, blocks, nn.Identity(), None, refusal=None)
    if not blocks:
        return Architecture(model_type, blocks, nn.Identity(), unembed,
                            refusal=f"lmviz can't find the transformer blocks of {arch_name}.")
    if unembed is None:
        return Architecture(model_type, blocks, nn.Identity(), None,
                            refusal=f"{arch_name} has no output embedding to project hidden states with.")
    device = next(model.parameters()).device
    probe_ids = torch.tensor([PROBE_IDS], device=device)
    try:
        calls, last_out, head_in, logits, runs, readable, reads_last = _probe(model, blocks, unembed, probe_ids)
    except Exception as error:  # a model that can't run the probe can't be verified either
        return Architecture(model_type, blocks, nn.Identity(), unembed,
                            refusal=f"{arch_name} failed on a short probe ({type(error).__name__}), "
                                    "so lmviz can't verify its head.")
    if runs != [1] * len(blocks):
        return Architecture(model_type, blocks, nn.Identity(), unembed,
                            refusal=f"{arch_name} does not run each of its blocks once in order, so its "
                                    "layers are not one residual stream lmviz can read.")
    if not readable:
        return Architecture(model_type, blocks, nn.Identity(), unembed,
                            refusal=f"{arch_name}'s hidden_states are not the inputs and outputs of its blocks, "
                                    "so lmviz can't read its layers as one residual stream.")
    path = _chain(calls, last_out, head_in) if last_out is not None and head_in is not None else None
    if path is None or logits is None:
        return Architecture(model_type, blocks, nn.Identity(), unembed,
                            refusal=f"lmviz can't trace how {arch_name} turns its last block's output into "
                                    "logits, so it can't project hidden states to the vocabulary.")
    modules = [call.module for call in path]
    final_norm = modules[0] if len(modules) == 1 else (nn.Sequential(*modules) if modules else nn.Identity())
    with torch.inference_mode():
        normed = final_norm(last_out)
        raw = unembed(normed)
    model_logits = logits.to(raw.dtype)
    candidates = [_config_transform(config)]
    ratio = _measured_scale(raw, model_logits)
    if ratio is not None:
        candidates.append(LogitTransform(scale=ratio))
    for transform in candidates:
        with torch.inference_mode():
            ours = transform(raw)
            bound = head_error_bound(normed, unembed, transform)
        error = (ours.float() - model_logits.float()).abs()
        if ours.shape == model_logits.shape and bool((error <= bound).all()):
            return Architecture(model_type, blocks, final_norm, unembed, transform, None,
                                reads_last, float(error.max()), float(bound.max()))
    worst = float((candidates[0](raw).float() - model_logits.float()).abs().max()) \
        if raw.shape == model_logits.shape else float("nan")
    return Architecture(model_type, blocks, final_norm, unembed, candidates[0],
                        refusal=f"lmviz can't reproduce the logits of {arch_name} from its hidden states "
                                f"(off by up to {worst:.3g}), so it won't show a logit lens for it.",
                        max_head_error=worst)


def _measured_scale(raw: torch.Tensor, logits: torch.Tensor) -> float | None:
    """A constant c with logits = c · raw, measured by least squares (verified by the caller)."""
    if raw.shape != logits.shape:
        return None
    raw64, logits64 = raw.double().flatten(), logits.double().flatten()
    denominator = float((raw64 * raw64).sum())
    if denominator == 0.0:
        return None
    scale = float((raw64 * logits64).sum()) / denominator
    return scale if scale != 1.0 and scale == scale else None


# ---------------------------------------------------------------- reading the head's input


@dataclass
class Captured:
    head_input: torch.Tensor | None = None  # (batch, pos, d_head) what the unembedding read


@contextmanager
def capture_head_input(arch: Architecture) -> Iterator[Captured]:
    """Record what the unembedding reads in the next forward pass made by this thread.

    The hook is shared by every thread that uses the model; it records only for
    the thread that installed it, so concurrent passes need no lock.
    """
    owner = threading.get_ident()
    captured = Captured()

    def before_head(module, args, kwargs):
        if threading.get_ident() == owner:
            captured.head_input = _first_tensor(args, kwargs)

    handle = arch.unembed.register_forward_pre_hook(before_head, with_kwargs=True) if arch.unembed is not None else None
    try:
        yield captured
    finally:
        if handle is not None:
            handle.remove()


# ---------------------------------------------------------------- generation


def eos_ids(model: nn.Module) -> tuple[int, ...]:
    """The ids generate() stops at: the generation config's eos_token_id (an id, a list, or none)."""
    config = getattr(model, "generation_config", None)
    eos = getattr(config, "eos_token_id", None)
    if eos is None:
        return ()
    return tuple(dict.fromkeys(int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])))


def new_kv_cache(model: nn.Module):
    """An empty KV cache of the kind generate() builds for this model."""
    from transformers import DynamicCache

    config = model.config.get_text_config(decoder=True) if hasattr(model.config, "get_text_config") else model.config
    return DynamicCache(config=config)
