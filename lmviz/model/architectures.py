"""Everything that differs between model architectures, found on the model itself and checked.

The analyses need to know, for any loaded transformers model:

- the **blocks**: the transformer layers, in order (the modules named by the
  model's `_no_split_modules`, held in one `nn.ModuleList`); the residual
  stream runs from each to the next;
- the **head** (`lmviz.model.head.Head`): the final norm, i.e. whatever the model
  applies between the last block's output and the unembedding (a norm,
  OPT-350m's projection, BERT's MLM transform), found by running a short
  probe with hooks and following the values from the last block's output to
  the unembedding's input; then the unembedding (`get_output_embeddings()`)
  and what the model does to its output: Cohere multiplies by `logit_scale`,
  Granite divides by `logits_scaling`, Gemma-2/3 soft-cap, and any other
  constant factor is measured on the probe;
- the **attention, MLP and their output projections** inside each block, and
  how the block writes them to the residual stream (`Decomposition`: output =
  input + attention part + MLP part, checked on the probe). The MLP's output
  projection is kept only where the MLP returns exactly its output (checked
  on the probe): then a neuron's share is its activation times its column.

This module only finds and checks. Reading and editing these parts during a
pass is `lmviz.model.interventions`; holding a norm's scale fixed for attribution
is `lmviz.model.frozen_norm`.

Discovery is verified on every load: on the probe, the head applied to the
last block's output (before the final norm) must reproduce the model's own
logits within a bound derived from the dtype (`Head.error_bound`). A model
that fails keeps working where only its own logits are used (sampling, beam
search, loss), and everything that projects hidden states to the vocabulary
refuses it with `Architecture.refusal`: one line that names the architecture.
A lens that is silently wrong is never shown.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from lmviz.errors import LmvizError
from lmviz.model.head import UNIT_ROUNDOFF, Head

PROBE_IDS = (1, 2, 3, 5, 8, 13, 21)  # a short probe; ids below every vocabulary's size

# Child names that hold a block's attention, MLP and the attention's output projection.
ATTENTION_NAMES = ("self_attn", "attn", "attention", "self_attention", "multi_head_attention", "mixer")
MLP_NAMES = ("mlp", "feed_forward", "ffn", "block_sparse_moe", "moe")
OUT_PROJ_NAMES = ("o_proj", "out_proj", "c_proj", "dense", "wo", "proj")
# Child names of an MLP's output projection (what reads the neurons).
QKV_NAMES = ("q_proj", "k_proj", "v_proj")
MLP_OUT_NAMES = ("down_proj", "c_proj", "fc2", "dense_4h_to_h", "fc_out", "w2", "wo")


@dataclass(frozen=True, eq=False)
class Architecture:
    """Where the parts of one loaded model are. See the module docstring."""

    model_type: str
    blocks: tuple[nn.Module, ...]  # (layer,) in the order the model runs them
    head: Head | None  # final norm, unembedding, logit transform; None for classifiers. Verified unless refusal
    refusal: str | None = None  # why hidden states can't be projected to the vocabulary, or None
    head_reads_last_hidden: bool = True  # the unembedding reads transformers' last hidden state as it is
    labels_shift: int | None = 1  # 1: labels= loss shifts labels itself; 0: pass them shifted; None: no loss
    max_head_error: float = 0.0  # max |head(last block output) - model logits| on the probe
    head_error_bound: float = 0.0  # what that error was allowed to be
    decomposition: Decomposition | None = None  # blocks split into attention and MLP parts, or None
    decomposition_refusal: str | None = None  # why the blocks can't be split, when decomposition is None

    def require_decomposition(self, additive: bool = True) -> Decomposition:
        """The blocks' attention and MLP parts, or LmvizError with the reason they can't be found. With
        additive=True (attribution, ablation) the parts must also add up to each block's output; attention
        patterns only need the attention modules (additive=False)."""
        if self.decomposition is None or (additive and self.decomposition.additive_refusal):
            raise LmvizError((self.decomposition.additive_refusal if self.decomposition else None)
                             or self.decomposition_refusal or self.refusal
                             or f"lmviz can't split the blocks of '{self.model_type}' into attention and MLP parts.")
        return self.decomposition


@dataclass(frozen=True, eq=False)
class Decomposition:
    """How every block writes to the residual stream, checked on the probe:
    block output = block input + attention part + MLP part (sequential or parallel blocks alike).

    The attention part is the output of `attn_writes[layer]`: the attention itself (Llama, GPT-2) or a
    norm applied to its output (Gemma's post-attention norm); likewise `mlp_writes`. The attention's
    output projection `out_projs[layer]` reads the heads side by side, `d_head` numbers each, so one
    head's share is the projection of its slice alone. The MLP's output projection `mlp_out_projs[layer]`
    reads its `d_mlp` neurons, and its output is the MLP's (checked), so one neuron's share is its
    activation times its column.
    """

    attentions: tuple[nn.Module, ...] = field(repr=False)  # (layer,) attention modules: return (output, weights)
    out_projs: tuple[nn.Module, ...] = field(repr=False)  # (layer,) (…, n_heads·d_head) -> (…, d_model)
    attn_writes: tuple[nn.Module, ...] = field(repr=False)  # (layer,) its output is the attention's part
    mlp_writes: tuple[nn.Module, ...] = field(repr=False)  # (layer,) its output is the MLP's part
    n_heads: int
    d_head: int
    max_error: float  # max |input + attention part + MLP part - output| on the probe, over all blocks
    additive_refusal: str | None = None  # why the parts don't add up to the blocks' outputs (BLOOM adds the
    # residual inside its attention): then only the attention modules are usable, for attention patterns
    mlp_out_projs: tuple[nn.Module, ...] | None = field(default=None, repr=False)  # (layer,) (…, d_mlp) -> (…, d)
    d_mlp: int | None = None
    neurons_refusal: str | None = None  # why there are no mlp_out_projs (a mixture of experts has no one MLP)
    qkv_projs: tuple[tuple[nn.Module, nn.Module, nn.Module], ...] | None = field(default=None, repr=False)
    # (layer,) the query, key and value projections, where they are separate linear layers; head h's query
    # is the q projection's output slice h·d_head:(h+1)·d_head, and likewise key-value head g's key and value
    n_kv_heads: int | None = None  # key-value heads (fewer than n_heads with grouped-query attention)
    qkv_refusal: str | None = None  # why there are no qkv_projs (a fused projection)

    def attn_post_norm(self, layer: int) -> nn.Module | None:
        """The norm between the attention's output and the residual stream (Gemma), or None."""
        write = self.attn_writes[layer]
        return None if write is self.attentions[layer] else write


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


def _input_at(args: tuple, kwargs: dict) -> int | str | None:
    """Where a module's call holds its input: the first float tensor among the positional arguments, else
    the `hidden_states` keyword, else the first float tensor among the keywords. None when there is none."""
    for i, value in enumerate(args):
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return i
    for key in ["hidden_states", *kwargs]:
        value = kwargs.get(key)
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return key
    return None


def _first_tensor(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """A module call's input (see `_input_at`)."""
    where = _input_at(args, kwargs)
    return None if where is None else args[where] if isinstance(where, int) else kwargs[where]


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
    module: nn.Module
    input: torch.Tensor | None
    output: torch.Tensor | None
    ran_head: bool = False  # the unembedding was called while this module ran


@dataclass
class _Probe:
    """What one forward pass with hooks everywhere showed."""

    calls: list[_Call]  # modules outside the blocks that ran after the last block, in the order they ended
    block_inputs: list[torch.Tensor | None]  # (layer,) what each block read
    block_outputs: list[torch.Tensor | None]  # (layer,) what each block returned (the hidden state)
    runs: list[int]  # (layer,) how often each block ran
    head_input: torch.Tensor | None  # what the unembedding read
    last_hidden: torch.Tensor | None  # transformers' hidden_states[-1]
    logits: torch.Tensor | None
    loss: torch.Tensor | None


@torch.inference_mode()
def _probe(model: nn.Module, blocks: tuple[nn.Module, ...], unembed: nn.Module, probe_ids: torch.Tensor) -> _Probe:
    in_blocks = {id(m) for block in blocks for m in block.modules()}
    result = _Probe([], [None] * len(blocks), [None] * len(blocks), [0] * len(blocks), None, None, None, None)
    state = {"after_last": False, "open": []}  # open: calls that have started and not yet ended
    handles = []

    def before_block(index):
        def hook(module, args, kwargs):
            result.block_inputs[index] = _first_tensor(args, kwargs)
        return hook

    def after_block(index):
        def hook(module, args, kwargs, output):
            result.runs[index] += 1
            result.block_outputs[index] = _output_tensor(output)
            state["after_last"] = index == len(blocks) - 1
        return hook

    def before_any(module, args, kwargs):
        state["open"].append(_Call(module, _first_tensor(args, kwargs), None))

    def after_any(module, args, kwargs, output):
        call = state["open"].pop()
        if state["after_last"] and call.module is module:
            call.output = _output_tensor(output)
            result.calls.append(call)

    def before_head(module, args, kwargs):
        result.head_input = _first_tensor(args, kwargs)
        for call in state["open"]:
            call.ran_head = True

    try:
        for index, block in enumerate(blocks):
            handles.append(block.register_forward_pre_hook(before_block(index), with_kwargs=True))
            handles.append(block.register_forward_hook(after_block(index), with_kwargs=True))
        for module in model.modules():
            if id(module) not in in_blocks and module is not model:
                handles.append(module.register_forward_pre_hook(before_any, with_kwargs=True))
                handles.append(module.register_forward_hook(after_any, with_kwargs=True))
        handles.append(unembed.register_forward_pre_hook(before_head, with_kwargs=True))
        output = model(input_ids=probe_ids, use_cache=False, output_hidden_states=True, labels=probe_ids)
    finally:
        for handle in handles:
            handle.remove()
    hidden = getattr(output, "hidden_states", None)
    result.last_hidden = hidden[-1] if hidden else None
    result.logits, result.loss = getattr(output, "logits", None), getattr(output, "loss", None)
    return result


def _one_stream(probe: _Probe) -> bool:
    """The blocks form one residual stream: each runs once, reads what the one before returned, and all
    of them (and transformers' last hidden state) have one shape."""
    if probe.runs != [1] * len(probe.runs) or probe.last_hidden is None:
        return False
    first = probe.block_inputs[0]
    if first is None or any(out is None or out.shape != first.shape for out in probe.block_outputs):
        return False
    following = zip(probe.block_outputs[:-1], probe.block_inputs[1:])
    return probe.last_hidden.shape == first.shape and all(_same(out, nxt) for out, nxt in following)


def _labels_shift(logits: torch.Tensor | None, ids: torch.Tensor, loss: torch.Tensor | None) -> int | None:
    """How the model's `labels=` loss lines labels up with logits: 1 when it shifts them itself (row t
    is scored against label t+1, nearly every causal LM), 0 when the caller must (BART's decoder as a
    causal LM), None when it returns no loss."""
    if logits is None or loss is None:
        return None
    logits64 = logits[0].double()
    shifted = float(torch.nn.functional.cross_entropy(logits64[:-1], ids[0, 1:]))
    unshifted = float(torch.nn.functional.cross_entropy(logits64, ids[0]))
    return 1 if abs(shifted - float(loss)) <= abs(unshifted - float(loss)) else 0


class _Stop(Exception):
    pass


class UpToHead(nn.Module):
    """The part of a head module that runs before its unembedding, for heads that mix modules with plain
    functions (RoBERTa's LM head: dense -> gelu() -> layer_norm -> decoder). Calls the whole module and
    stops it at the unembedding's input, so the model's own code computes every step."""

    def __init__(self, container: nn.Module, unembed: nn.Module):
        super().__init__()
        self.container, self.unembed = container, unembed

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        seen = []

        def stop(module, args, kwargs):
            seen.append(_first_tensor(args, kwargs))
            raise _Stop

        handle = self.unembed.register_forward_pre_hook(stop, with_kwargs=True)
        try:
            self.container(hidden)
        except _Stop:
            pass
        finally:
            handle.remove()
        if not seen:
            raise RuntimeError("the head module did not reach its unembedding")
        return seen[0]


class Scale(nn.Module):
    """Multiply by a constant (MiniCPM divides the last hidden state by hidden_size / dim_model_base)."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden * self.factor


def _least_squares_scale(a: torch.Tensor | None, b: torch.Tensor | None) -> float | None:
    """The c that makes c·a closest to b (least squares, in float64); None when there is no such number."""
    if a is None or b is None or a.shape != b.shape or not bool(a.abs().max() > 0):
        return None
    a64, b64 = a.double().flatten(), b.double().flatten()
    c = float((a64 * b64).sum() / (a64 * a64).sum())
    return c if c == c else None


def _factor(a: torch.Tensor | None, b: torch.Tensor | None) -> float | None:
    """c with b = c·a up to float32 rounding, else None."""
    c = _least_squares_scale(a, b)
    if c is None:
        return None
    a64, b64 = a.double().flatten(), b.double().flatten()
    return c if bool(((b64 - c * a64).abs() <= 8 * 2.0**-24 * b64.abs().max()).all()) else None


def _chain(calls: list[_Call], start: torch.Tensor, target: torch.Tensor, hops: int = 4) -> list[nn.Module] | None:
    """Modules that carry `start` (the last block's output) to `target` (the unembedding's input),
    in order: none when they are equal, one for a plain final norm, more for e.g. norm -> projection;
    a constant factor at the end when the model scales with plain arithmetic. Depth-first, shortest first."""
    if _same(start, target):
        return []
    factor = _factor(start, target)
    if factor is not None:
        return [Scale(factor)]
    if hops == 0:
        return None
    step = [c for c in calls if _same(c.input, start) and c.output is not None and not _same(c.output, start)]
    for call in sorted(step, key=lambda c: not _same(c.output, target)):
        rest = _chain(calls, call.output, target, hops - 1)
        if rest is not None:
            return [call.module] + rest
    return None


def _final_norm(probe: _Probe, unembed: nn.Module) -> nn.Module | None:
    """What the model applies between its last block and the unembedding, as one module (see _chain);
    else the smallest module that reads the last block's output and calls the unembedding, stopped there."""
    start, target = probe.block_outputs[-1], probe.head_input
    if start is None or target is None:
        return None
    modules = _chain(probe.calls, start, target)
    if modules is not None:
        return modules[0] if len(modules) == 1 else (nn.Sequential(*modules) if modules else nn.Identity())
    containers = [c for c in probe.calls if c.ran_head and _same(c.input, start)]
    if containers:  # calls end innermost first
        return UpToHead(containers[0].module, unembed)
    return None


def _config_transform(config) -> dict:
    """The logit post-processing a config asks for (attributes transformers reads in ForCausalLM), as
    Head's scale, divisor and softcap."""
    scale = getattr(config, "logit_scale", None)
    divisor = getattr(config, "logits_scaling", None)
    softcap = getattr(config, "final_logit_softcapping", None)
    return dict(
        scale=float(scale) if isinstance(scale, (int, float)) and not isinstance(scale, bool) else 1.0,
        divisor=float(divisor) if isinstance(divisor, (int, float)) and divisor else 1.0,
        softcap=float(softcap) if softcap else None,
    )


def discover(model: nn.Module, kind: str) -> Architecture:
    """Find and verify the parts of a loaded model (see the module docstring)."""
    config = model.config
    model_type = getattr(config, "model_type", type(model).__name__)
    arch_name = f"{type(model).__name__} ('{model_type}')"
    blocks = find_blocks(model)
    unembed = model.get_output_embeddings() if kind != "classifier" else None
    if kind == "classifier":
        return Architecture(model_type, blocks, None, refusal=None)
    if unembed is None:
        return Architecture(model_type, blocks, None,
                            refusal=f"{arch_name} has no output embedding to project hidden states with.")
    bare = Head(nn.Identity(), unembed)  # where lmviz can't find or verify the rest of the head
    if not blocks:
        return Architecture(model_type, blocks, bare,
                            refusal=f"lmviz can't find the transformer blocks of {arch_name}.")
    device = next(model.parameters()).device
    probe_ids = torch.tensor([PROBE_IDS], device=device)
    try:
        probe = _probe(model, blocks, unembed, probe_ids)
    except Exception as error:  # noqa: BLE001 - a model that can't run the probe can't be verified either
        return Architecture(model_type, blocks, bare,
                            refusal=f"{arch_name} failed on a short probe ({type(error).__name__}), "
                                    "so lmviz can't verify its head.")
    if not _one_stream(probe):
        return Architecture(model_type, blocks, bare,
                            refusal=f"{arch_name}'s blocks do not pass one hidden state from each to the next, "
                                    "so lmviz can't read its layers as one residual stream.")
    decomposition, why_not = _decompose(model, blocks, probe_ids, arch_name)
    parts = {"decomposition": decomposition, "decomposition_refusal": why_not}
    final_norm = _final_norm(probe, unembed)
    if final_norm is None or probe.logits is None:
        return Architecture(model_type, blocks, bare, **parts,
                            refusal=f"lmviz can't trace how {arch_name} turns its last block's output into "
                                    "logits, so it can't project hidden states to the vocabulary.")
    reads_last = _same(probe.last_hidden, probe.head_input)
    shift = _labels_shift(probe.logits, probe_ids, probe.loss)
    with torch.inference_mode():
        normed = final_norm(probe.block_outputs[-1])
        raw = unembed(normed)
    model_logits = probe.logits.to(raw.dtype).float().cpu()
    candidates = [Head(final_norm, unembed, **_config_transform(config))]
    ratio = _least_squares_scale(raw, model_logits)  # any other constant factor; verified below
    if ratio is not None and ratio != 1.0:
        candidates.append(Head(final_norm, unembed, scale=ratio))
    for head in candidates:
        ours = head.logits(probe.block_outputs[-1])
        error = (ours - model_logits).abs()
        bound = head.error_bound(normed).cpu()
        if ours.shape == model_logits.shape and bool((error <= bound).all()):
            return Architecture(model_type, blocks, head, None,
                                reads_last, shift, float(error.max()), float(bound.max()), **parts)
    ours = candidates[0].logits(probe.block_outputs[-1])
    worst = float((ours - model_logits).abs().max()) if ours.shape == model_logits.shape else float("nan")
    return Architecture(model_type, blocks, candidates[0], **parts,
                        refusal=f"lmviz can't reproduce the logits of {arch_name} from its hidden states "
                                f"(off by up to {worst:.3g}), so it won't show a logit lens for it.",
                        max_head_error=worst)


# ---------------------------------------------------------------- splitting blocks into parts


def _in_features(module: nn.Module) -> int | None:
    """Width of what a linear layer reads: nn.Linear's in_features, GPT-2's Conv1D (weight is (in, out))."""
    if isinstance(module, nn.Linear):
        return module.in_features
    weight = getattr(module, "weight", None)
    if type(module).__name__ == "Conv1D" and isinstance(weight, torch.Tensor) and weight.dim() == 2:
        return int(weight.shape[0])
    return None


@torch.inference_mode()
def _decompose(model: nn.Module, blocks: tuple[nn.Module, ...], probe_ids: torch.Tensor,
               arch_name: str) -> tuple[Decomposition | None, str | None]:
    """Find what each block adds to the residual stream for its attention and its MLP, and check on the
    probe that input + both parts = output. Returns (decomposition, None) or (None, why not)."""
    cannot = f"lmviz can't split {arch_name}'s blocks into attention and MLP parts"
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    attentions = [_child(block, ATTENTION_NAMES) for block in blocks]
    mlps = [_child(block, MLP_NAMES) for block in blocks]
    out_projs = [_child(a, OUT_PROJ_NAMES) if a is not None else None for a in attentions]
    if not blocks or any(m is None for m in attentions + mlps + out_projs):
        return None, f"{cannot}: it has no attention, MLP or output projection lmviz knows by name."
    n_heads = getattr(config, "num_attention_heads", None)
    widths = {_in_features(p) for p in out_projs}
    if not isinstance(n_heads, int) or len(widths) != 1 or None in widths or next(iter(widths)) % n_heads:
        return None, f"{cannot}: its output projection does not read {n_heads} heads side by side."
    mlp_outs = [_child(m, MLP_OUT_NAMES) for m in mlps]
    seen: dict[int, tuple[torch.Tensor | None, torch.Tensor | None]] = {}  # id(module) -> (input, output)
    handles = []

    def record(module, args, kwargs, output):
        seen[id(module)] = (_first_tensor(args, kwargs), _output_tensor(output))

    try:
        for block, mlp_out in zip(blocks, mlp_outs):
            handles.append(block.register_forward_hook(record, with_kwargs=True))
            for child in [*block.children(), *([mlp_out] if mlp_out is not None else [])]:
                handles.append(child.register_forward_hook(record, with_kwargs=True))
        model(input_ids=probe_ids, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()

    def writer(block: nn.Module, part: nn.Module) -> nn.Module:
        """The child that reads `part`'s output (a post-norm), else `part` itself."""
        output = seen.get(id(part), (None, None))[1]
        after = [c for c in block.children() if c is not part and _same(seen.get(id(c), (None, None))[0], output)
                 and not _same(*seen[id(c)])]  # a child that returns its input as it is (dropout) changes nothing
        return after[0] if after else part

    attn_writes = tuple(writer(b, a) for b, a in zip(blocks, attentions))
    mlp_writes = tuple(writer(b, m) for b, m in zip(blocks, mlps))
    worst, not_additive = 0.0, None
    for block, attn, mlp in zip(blocks, attn_writes, mlp_writes):
        h_in, h_out = seen.get(id(block), (None, None))
        a, m = seen.get(id(attn), (None, None))[1], seen.get(id(mlp), (None, None))[1]
        if any(t is None or t.shape != h_out.shape for t in (h_in, a, m)) if h_out is not None else True:
            not_additive = f"{cannot}: a block's parts don't have the residual stream's shape."
            break
        u = UNIT_ROUNDOFF.get(h_out.dtype, 2.0**-24)
        h_in, a, m, h_out = (t.double() for t in (h_in, a, m, h_out))
        error = (h_in + a + m - h_out).abs()
        if not bool((error <= 4 * u * (h_in.abs() + a.abs() + m.abs()) + 1e-30).all()):
            not_additive = f"{cannot} that add up to the block's output (off by {float(error.max()):.3g})."
            break
        worst = max(worst, float(error.max()))
    width = next(iter(widths))
    neurons, d_mlp, no_neurons = _neurons(mlps, mlp_outs, seen, arch_name)
    qkv, n_kv, no_qkv = _qkv(attentions, n_heads, width // n_heads, arch_name)
    return Decomposition(tuple(attentions), tuple(out_projs), attn_writes, mlp_writes, n_heads, width // n_heads,
                         worst, not_additive, neurons, d_mlp, no_neurons, qkv, n_kv, no_qkv), None


def _qkv(attentions: list[nn.Module], n_heads: int, d_head: int, arch_name: str
         ) -> tuple[tuple | None, int | None, str | None]:
    """The separate query, key and value projections of each attention (q_proj, k_proj, v_proj: nn.Linear),
    the number of key-value heads, and None; or (None, None, why not). The query projection must write
    n_heads·d_head numbers and the key and value projections one multiple of d_head that divides it."""
    found = [tuple(getattr(a, name, None) for name in QKV_NAMES) for a in attentions]
    if any(not isinstance(p, nn.Linear) for projs in found for p in projs):
        return None, None, (f"{arch_name} computes queries, keys and values in one fused projection (or "
                            "names them otherwise), so lmviz can't feed one head's query, key or value alone.")
    kv_widths = {p.out_features for _, k, v in found for p in (k, v)}
    if {q.out_features for q, _, _ in found} != {n_heads * d_head} or len(kv_widths) != 1 or \
            next(iter(kv_widths)) % d_head or n_heads % (next(iter(kv_widths)) // d_head):
        return None, None, f"{arch_name}'s query, key and value projections don't write {n_heads} heads of {d_head}."
    return tuple(found), next(iter(kv_widths)) // d_head, None


def _neurons(mlps: list[nn.Module], mlp_outs: list[nn.Module | None], seen: dict, arch_name: str
             ) -> tuple[tuple[nn.Module, ...] | None, int | None, str | None]:
    """The MLPs' output projections, their width d_mlp, and None; or (None, None, why not). Each must be
    a linear layer whose output the MLP returns as it is (checked on the probe), so that the MLP's output
    is Σ_n neuron_n · column_n exactly."""
    cannot = f"lmviz can't read the neurons of {arch_name}'s MLP"
    if any(p is None for p in mlp_outs):
        return None, None, (f"{cannot}: it has no one output projection lmviz knows by name "
                            "(a mixture of experts has one per expert).")
    widths = {_in_features(p) for p in mlp_outs}
    if len(widths) != 1 or None in widths:
        return None, None, f"{cannot}: its output projections are not linear layers of one width."
    for mlp, out in zip(mlps, mlp_outs):
        if not _same(seen.get(id(out), (None, None))[1], seen.get(id(mlp), (None, None))[1]):
            return None, None, f"{cannot}: the MLP does not return what its output projection computes."
    return tuple(mlp_outs), next(iter(widths)), None
