"""Information flow: the graph of what moved where (Ferrando & Voita 2024, "Information Flow Routes",
as in Meta's llm-transparency-tool).

The residual stream at position j is a sum, and block l adds two terms to it:

    mid_j = x_j + a_j        x_j the block's input, a_j what its attention adds (`hook_attn_out`)
    out_j = mid_j + m_j      m_j what its MLP adds (`hook_mlp_out`); out_j is block l+1's input

The attention's term splits further over the tokens it read, because it is linear in their values
once the attention probabilities are fixed:

    a_j = Σ_{i≤j} c_{i→j} + b_j,    c_{i→j} = Σ_h A^h[j,i] · W_O^h v_i^{g(h)}

v_i^g is value head g at token i, W_V x̃_i + b_V as the model computed it (`attn.hook_v`); with
grouped-query attention query head h reads value head g(h) = h // (n_heads / n_kv_heads). W_O^h is
head h's slice of the output projection and b_j its bias. Where the block norms the attention's output
before adding it (Gemma's post-attention norm), that norm's scale is held fixed at the actual output
(`lmviz.model.frozen_norm`, as direct logit attribution does) and applied to every term, so the terms
still sum to what was added. lmviz checks that they do, within a bound derived from float rounding
(`Flow.sum_error` ≤ `Flow.sum_bound`), and refuses a family where they don't.

**Importance (proximity).** For a sum y = Σ_k c_k,

    proximity(c_k) = max(0, ‖y‖₁ − ‖y − c_k‖₁)        how much of y's size is lost without c_k
    importance(c_k) = proximity(c_k) / Σ_k' proximity(c_k')

The terms of mid_j are x_j (a "resid" edge), every c_{i→j} (an "attn" edge from token i) and b_j (no
edge: it comes from no token, but it takes its share). The terms of out_j are mid_j ("resid") and m_j
("mlp"). A head's share of an attention edge is the same formula one level down, over the heads' terms
A^h[j,i] · W_O^h v_i^{g(h)} of c_{i→j}. Importances are local: each is a share of the one sum it enters.
In a block that runs attention and MLP side by side (GPT-J, Phi), mid_j is the partial sum x_j + a_j.

**The graph.** Nodes are states of the residual stream: `Node(l, p)` is the stream entering block l at
position p (`Node(n_layers, p)`: the final residual, before the final norm), `Node(l, p, mid=True)` the
stream inside block l after its attention, before its MLP. Start at Node(n_layers, position) and walk
down, keeping every edge into a kept node whose importance is at least the threshold, and the node it
comes from:

    attn   Node(l, i) -> Node(l, j, mid)                  token i's part of block l's attention at j
    resid  Node(l, j) -> Node(l, j, mid)   (sublayer "attn")
           Node(l, j, mid) -> Node(l+1, j) (sublayer "mlp")
    mlp    Node(l, j, mid) -> Node(l+1, j)

**Cost.** One eager pass (attention probabilities), with each block's terms computed as the pass goes
(block l when block l+1's attention has run), in blocks of query and key positions: at most
BLOCK_NUMBERS numbers of (query, key, d_model) exist at once, never a whole layer's, let alone every
layer's. What is kept per text is one importance per edge, (layer, query, key), and the heads' shares
of the edges at least HEAD_FLOOR important. SmolLM2's flow costs 1.6 plain forward passes at 100 tokens
and 2.8 at 500 on one CPU thread (`bench/flow.py`): the terms are tokens² · d_model numbers per layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lmviz.analyses.attribution import check_position
from lmviz.errors import LmvizError
from lmviz.forward import trace as trace_module
from lmviz.forward.cache import cached
from lmviz.model import compute, interventions
from lmviz.model.architectures import Decomposition
from lmviz.model.frozen_norm import require_frozen
from lmviz.model.head import UNIT_ROUNDOFF
from lmviz.model.interventions import Recording, Site
from lmviz.model.models import LoadedModel
from lmviz.tokens import display_tokens

DEFAULT_THRESHOLD = 0.04  # τ: the least importance an edge needs to stay in the graph
HEAD_FLOOR = 0.01  # heads' shares are kept for attention edges at least this important (a thinner one: none)
MAX_TOKENS = 1024  # the work grows as tokens² (a minute or more for SmolLM2 on two cores at 1,024)
QUERY_CHUNK = 32  # query positions whose terms are computed together
BLOCK_NUMBERS = 2**19  # (key, query, d_model) numbers computed at once: 2 MB of float32, in the CPU's cache
KINDS = ("attn", "resid", "mlp")


@dataclass(frozen=True, order=True)
class Node:
    """A state of the residual stream at one position: entering block `layer` (layer = n_layers: the final
    residual), or with mid=True inside block `layer`, after its attention and before its MLP."""

    layer: int
    position: int
    mid: bool = False

    @property
    def height(self) -> float:
        """Where it is drawn: layer, or layer + ½ inside a block."""
        return self.layer + (0.5 if self.mid else 0.0)


@dataclass(frozen=True)
class Edge:
    """One term of one sum: `kind` "attn" (token from_pos's part of block `layer`'s attention at to_pos),
    "resid" (the stream carried past a sublayer, from_pos = to_pos) or "mlp" (the block's MLP at to_pos).
    `sublayer` names the sum it enters: "attn" (the stream after the attention) or "mlp" (the block's
    output). `importance` is its share of that sum (see the module docstring)."""

    kind: str
    sublayer: str
    layer: int  # the block
    from_pos: int
    to_pos: int
    importance: float
    heads: tuple[tuple[int, float], ...] = ()  # attn edges: (head, share of the edge), largest first, shares > 0

    @property
    def source(self) -> Node:
        return Node(self.layer, self.from_pos, mid=self.sublayer == "mlp")

    @property
    def target(self) -> Node:
        if self.sublayer == "attn":
            return Node(self.layer, self.to_pos, mid=True)
        return Node(self.layer + 1, self.to_pos)


@dataclass(frozen=True)
class Importances:
    """Every term's importance in every sum of one text's pass: what each graph is cut from.
    Dimension names: layer, query (the position a sum is at), key (the token a term comes from), head."""

    model_name: str
    text: str
    input_ids: tuple[int, ...]  # (pos,)
    tokens: tuple[str, ...]  # (pos,) display strings
    attn: torch.Tensor  # (layer, query, key) float32 (float64 for a float64 model): c_{key→query} in mid_query
    attn_resid: torch.Tensor  # (layer, pos) x_j in mid_j
    attn_bias: torch.Tensor  # (layer, pos) b_j in mid_j (no edge)
    mlp_resid: torch.Tensor  # (layer, pos) mid_j in out_j
    mlp: torch.Tensor  # (layer, pos) m_j in out_j
    head_keys: torch.Tensor  # (edge,) int64 ascending, (layer·pos + query)·pos + key: the attn edges ≥ HEAD_FLOOR
    head_shares: torch.Tensor  # (edge, head) as attn: each head's share of that edge (they sum to 1, or all 0)
    sum_error: float  # |Σ_i c_{i→j} + b_j − a_j| where it is closest to its bound (over layers, positions, d)
    sum_bound: float  # the float-rounding bound at that element

    @property
    def n_layers(self) -> int:
        return int(self.attn.shape[0])

    @property
    def n_tokens(self) -> int:
        return int(self.attn.shape[1])

    def heads_of(self, layer: int, query: int, key: int) -> tuple[tuple[int, float], ...]:
        """The heads of attn edge key→query in block `layer` with their shares, largest first (none kept below
        HEAD_FLOOR importance)."""
        n = self.n_tokens
        code = (layer * n + query) * n + key
        at = int(torch.searchsorted(self.head_keys, code))
        if at == len(self.head_keys) or int(self.head_keys[at]) != code:
            return ()
        shares = self.head_shares[at].tolist()
        return tuple(sorted(((h, s) for h, s in enumerate(shares) if s > 0), key=lambda hs: -hs[1]))


@dataclass(frozen=True)
class Flow:
    """The information-flow graph into one position's final residual: the edges at least `threshold`
    important on some path down from Node(n_layers, position), and their nodes."""

    model_name: str
    text: str
    input_ids: tuple[int, ...]  # (pos,)
    tokens: tuple[str, ...]  # (pos,) display strings
    position: int
    threshold: float
    n_layers: int
    n_heads: int
    nodes: tuple[Node, ...]  # sorted: by layer, position, mid
    edges: tuple[Edge, ...]  # by block from the top; in each, the MLP sublayer's, then the attention's
    sum_error: float  # see Importances: the attention's terms against its output, and their rounding bound
    sum_bound: float

    def edges_of(self, kind: str) -> list[Edge]:
        return [edge for edge in self.edges if edge.kind == kind]


# ---------------------------------------------------------------- the pass


def require_flow(lm: LoadedModel) -> Decomposition:
    """The parts the flow needs, or a one-line refusal: blocks that add up, separate value projections,
    linear output projections."""
    lm.require_causal("the information flow")
    parts = lm.arch.require_decomposition()
    if parts.qkv_projs is None:
        raise LmvizError(parts.qkv_refusal.replace("so lmviz can't feed one head's query, key or value alone",
                                                   "so lmviz can't split its attention by token"))
    if not all(isinstance(projection, nn.Linear) for projection in parts.out_projs):
        raise LmvizError(f"{type(lm.model).__name__} ('{lm.arch.model_type}')'s attention output projection is not "
                         "one linear layer, so lmviz can't split its attention by head and token.")
    return parts


def check_ids(lm: LoadedModel, text: str) -> list[int]:
    """The token ids of `text`, or a one-line refusal when it is longer than the flow takes."""
    ids = trace_module.encode(lm, text)
    limit = min(MAX_TOKENS, trace_module.max_tokens(lm))
    if len(ids) > limit:
        raise LmvizError(f"The text is {len(ids)} tokens long; the information flow takes at most {limit} "
                         "(its work grows as the square of the length). Shorten it.")
    return ids


def importances(lm: LoadedModel, text: str) -> Importances:
    """The cached importance of every edge of `text` (see the module docstring): one eager pass."""
    require_flow(lm)
    ids = check_ids(lm, text)
    return cached("flow-importances", lm, (text,), lambda: _importances(lm, text, ids))


class _Block:
    """One block's attention as terms, on the model's device in the working dtype (float32; float64 for a
    float64 model): the recorded states of every position, the attention probabilities, each head's
    projected values, and a frozen post-norm's per-position factors."""

    def __init__(self, lm: LoadedModel, parts: Decomposition, layer: int, probs: torch.Tensor,
                 states: dict[str, torch.Tensor]):
        self.device = probs.device
        self.dtype = torch.promote_types(probs.dtype, torch.float32)
        self.u = UNIT_ROUNDOFF.get(states["hook_attn_out"].dtype, 2.0**-24)  # the model's rounding
        self.n_heads, self.d_head = parts.n_heads, parts.d_head
        here = self.here
        self.A = here(probs)  # (head, query, key)
        self.x, self.a, self.m = (here(states[hook]) for hook in ("hook_resid_pre", "hook_attn_out", "hook_mlp_out"))
        n, d = self.x.shape
        projection = parts.out_projs[layer]
        weight = here(projection.weight.detach())  # (d, head·d_head)
        bias = here(projection.bias.detach()) if projection.bias is not None else \
            torch.zeros(d, dtype=self.dtype, device=self.device)
        group = parts.n_heads // parts.n_kv_heads  # query heads per value head
        v = here(states["attn.hook_v"]).view(n, -1, self.d_head).transpose(0, 1).repeat_interleave(group, 0)
        # (key, head, d) W_O^h v_k^g(h): what head h would add if it read key k alone
        self.values_by_key = torch.bmm(v, weight.view(d, self.n_heads, self.d_head).permute(1, 2, 0)).transpose(
            0, 1).contiguous()
        # Σ_h |W_O^h| (A^h |v|) + |b|: the terms' size before any cancellation, for the rounding bound
        self.magnitude = torch.bmm(self.A, v.abs()).transpose(0, 1).reshape(n, -1) @ weight.abs().T + bias.abs()
        self.steps: list[tuple[bool, torch.Tensor]] = []  # a frozen post-norm: (centre first?, (pos, d) factor)
        self.bias = bias.expand(n, d)  # (pos, d) b_j
        post = parts.attn_post_norm(layer)
        if post is not None:
            frozen = require_frozen(post, states["attn.hook_out"], "post-attention norm", lm,
                                    "split its attention by token")
            for step in frozen.steps:
                factor = step.scale * (step.gain if step.gain is not None else 1.0)
                self.steps.append((step.center, here(factor.expand(n, d))))
            constant = frozen.bias
            self.bias = here(frozen.linear(bias.cpu().expand(n, d))
                             + (constant if isinstance(constant, torch.Tensor) else 0.0))

    def here(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(self.device, self.dtype)

    def _normed(self, c: torch.Tensor, queries, axis: int) -> torch.Tensor:
        """Terms c (…, d) at `queries` (along the other axis than `axis` of c's first two) through the frozen
        post-norm's linear part, if there is one."""
        for center, factor in self.steps:
            c = c - c.mean(-1, keepdim=True) if center else c
            c = c * factor[queries].unsqueeze(axis)
        return c

    def terms(self, weights: torch.Tensor, keys: slice, queries: slice) -> torch.Tensor:
        """(key, query, d) c_{key→query} from `weights` (key, query, head), the probabilities of `keys` and
        `queries`: one batched product per key, (query, head) @ (head, d), in the layout later passes read in order."""
        return self._normed(torch.bmm(weights, self.values_by_key[keys]), queries, 0)

    def head_terms(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """(edge, head, d) every head's part A^h[j,i] · W_O^h v_i of the edges keys[e] → queries[e]."""
        c = self.A[:, queries, keys].T.unsqueeze(-1) * self.values_by_key[keys]
        return self._normed(c, queries, 1)

    def bound(self) -> torch.Tensor:
        """(pos, d) float64: how far Σ_i c_{i→j} + b_j may be from a_j through float rounding alone. The model
        computes z = A v (at most pos terms) and W_O z + b (head·d_head + 1 terms); lmviz computes W_O^h v
        (d_head terms), Σ_h (head terms) and Σ_i (pos terms). Each sum of n terms is off by at most n·u·Σ|terms|
        (Higham's γ_n to first order), and every one of those is at most Σ_h |W_O^h|(A^h|v|) + |b|, so the whole
        is within (2·pos + head·d_head + d_head + head + 8)·u of it. A frozen post-norm scales that by its factor
        and adds its own rounding, (d + 16)·u·|a_j| + 2u·|a_j|, as `freeze_norm` allows."""
        n, d = self.a.shape
        terms = 2 * n + self.n_heads * self.d_head + self.d_head + self.n_heads + 8
        error = terms * self.u * self.magnitude.double()
        for center, factor in self.steps:
            error = (error + error.mean(-1, keepdim=True) if center else error) * factor.double().abs()
        if self.steps:
            error = error + ((d + 16) * max(self.u, 2.0**-24) + 2 * self.u) * self.a.double().abs()
        return error


def _proximity(size: torch.Tensor, rest: torch.Tensor) -> torch.Tensor:
    """max(0, ‖y‖₁ − ‖y − c‖₁) from ‖y‖₁ and y − c (…, d)."""
    return (size - _l1(rest)).clamp_min(0)


def _l1(vectors: torch.Tensor) -> torch.Tensor:
    """‖·‖₁ along the last axis (abs, then sum: 6x torch.linalg.vector_norm's speed on a CPU)."""
    return vectors.abs().sum(-1)


def _shares(proximities: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(…, term) proximities -> each one's share of their sum along the last axis (all 0 when the sum is), and
    1 / sum (0 where it is 0) to scale other terms of the same sums by."""
    total = proximities.sum(-1, keepdim=True)
    scale = torch.where(total > 0, 1 / total.clamp_min(torch.finfo(total.dtype).tiny), torch.zeros_like(total))
    return proximities * scale, scale[..., 0]


def _importances(lm: LoadedModel, text: str, ids: list[int]) -> Importances:
    parts = require_flow(lm)
    n, n_layers = len(ids), lm.n_layers
    kept = torch.float64 if lm.model.dtype == torch.float64 else torch.float32  # what importances are kept in
    attn = torch.zeros(n_layers, n, n, dtype=kept)
    attn_resid, attn_bias, mlp_resid, mlp = (torch.zeros(n_layers, n, dtype=kept) for _ in range(4))
    head_keys: list[torch.Tensor] = []
    head_shares: list[torch.Tensor] = []
    worst = {"ratio": -1.0, "error": 0.0, "bound": 0.0}
    hooks = {layer: ["hook_resid_pre", "attn.hook_v", "hook_attn_out", "hook_mlp_out"]
             + (["attn.hook_out"] if parts.attn_post_norm(layer) is not None else []) for layer in range(n_layers)}
    sites = {(layer, hook): Site(f"blocks.{layer}.{hook}") for layer in range(n_layers) for hook in hooks[layer]}
    done: list[int] = []

    def block(layer: int, probs: torch.Tensor) -> None:
        """Block `layer`'s importances, once its MLP has run (its recorded states are dropped after)."""
        b = _Block(lm, parts, layer, probs, {hook: record.values.pop(sites[layer, hook]) for hook in hooks[layer]})
        d = b.x.shape[-1]
        mid = b.x + b.a  # (pos, d) y of the attention sublayer
        size = _l1(mid)
        resid = _proximity(size, b.a)  # ‖y − x‖ = ‖a‖
        bias = _proximity(size, mid - b.bias)
        bound = b.bound()
        for start in range(0, n, QUERY_CHUNK):
            stop = min(n, start + QUERY_CHUNK)
            rows = slice(start, stop)
            weights = b.A[:, rows, :stop].permute(2, 1, 0).contiguous()  # (key, query, head): 5x bmm's speed of a view
            total = torch.zeros(stop - start, d, dtype=b.dtype, device=b.device)  # Σ_i c_{i→j}
            rest = torch.empty(stop, stop - start, dtype=b.dtype, device=b.device)  # (key, query) ‖y − c‖₁
            per = max(1, BLOCK_NUMBERS // ((stop - start) * d))  # keys at a time: the block stays in cache
            for first in range(0, stop, per):
                keys = slice(first, min(stop, first + per))
                c = b.terms(weights[keys], keys, rows)  # (key, query, d)
                total += c.sum(0)
                torch.sum(c.sub_(mid[rows]).abs_(), -1, out=rest[keys])  # ‖c − y‖₁, in place
            rest = rest.T
            error = (total + b.bias[rows] - b.a[rows]).double().abs()
            ratio = error / bound[rows].clamp_min(1e-300)
            at = int(ratio.argmax())
            if float(ratio.flatten()[at]) > worst["ratio"]:
                worst.update(ratio=float(ratio.flatten()[at]), error=float(error.flatten()[at]),
                             bound=float(bound[rows].flatten()[at]))
            read = (b.A[:, rows, :stop] != 0).any(0)  # a key no head read (the future, outside a window) has no term
            prox = (size[rows, None] - rest).clamp_min(0) * read
            every, _ = _shares(torch.cat([prox, resid[rows, None], bias[rows, None]], -1))
            attn[layer, rows, :stop] = every[:, :stop].cpu()  # (copying casts to the kept dtype)
            attn_resid[layer, rows], attn_bias[layer, rows] = every[:, -2].cpu(), every[:, -1].cpu()
            queries, keys = (every[:, :stop] >= HEAD_FLOOR).nonzero(as_tuple=True)
            piece = max(1, BLOCK_NUMBERS // (b.n_heads * d))
            for first in range(0, len(queries), piece):
                q, k = queries[first:first + piece] + start, keys[first:first + piece]
                parts_of = b.head_terms(q, k)  # (edge, head, d)
                whole = parts_of.sum(1, keepdim=True)  # (edge, 1, d) the edge's c_{k→q}
                heads = (_l1(whole) - parts_of.sub_(whole).abs_().sum(-1)).clamp_min(0)  # (edge, head)
                head_shares.append(_shares(heads)[0].to("cpu", kept))
                head_keys.append(((layer * n + q) * n + k).cpu())
        out = mid + b.m  # y of the MLP sublayer
        size = _l1(out)
        every, _ = _shares(torch.stack([_proximity(size, b.m), _proximity(size, mid)], -1))
        mlp_resid[layer], mlp[layer] = every[:, 0].cpu(), every[:, 1].cpu()
        done.append(layer)

    waiting: list[tuple[int, torch.Tensor]] = []

    def on_attention(layer: int, probs: torch.Tensor) -> None:
        if waiting:  # the block before has run its MLP now
            block(*waiting.pop())
        waiting.append((layer, probs))

    record = Recording(list(sites.values()), on_attention=on_attention)
    extra = {"logits_to_keep": 1} if trace_module.accepts_logits_to_keep(lm.model) else {}
    with compute.slot(), torch.inference_mode():
        try:
            interventions.forward(lm, torch.tensor([ids]), record=record, eager=True, **extra)
        except LmvizError:
            raise
        except Exception as error:  # noqa: BLE001 - transformers' eager attention of this model is broken
            raise LmvizError(f"{type(lm.model).__name__} ('{lm.arch.model_type}') fails with eager attention "
                             f"({type(error).__name__}), so lmviz can't show its information flow.") from None
        if waiting:
            block(*waiting.pop())
    if done != list(range(n_layers)):
        raise LmvizError(f"The attention of {type(lm.model).__name__} ('{lm.arch.model_type}') does not return its "
                         "probabilities in eager mode, so lmviz can't show its information flow.")
    if worst["ratio"] > 1:
        raise LmvizError(f"The attention of {type(lm.model).__name__} ('{lm.arch.model_type}') is not the sum of its "
                         f"tokens' values as lmviz splits it (off by {worst['error']:.3g} where rounding allows "
                         f"{worst['bound']:.3g}), so lmviz can't show its information flow.")
    with lm.lock:
        tokens = tuple(display_tokens(lm.tokenizer, ids))
    keys = torch.cat(head_keys) if head_keys else torch.zeros(0, dtype=torch.int64)
    shares = torch.cat(head_shares) if head_shares else torch.zeros(0, parts.n_heads, dtype=kept)
    return Importances(lm.name, text, tuple(ids), tokens, attn, attn_resid, attn_bias, mlp_resid, mlp, keys, shares,
                       worst["error"], worst["bound"])


# ---------------------------------------------------------------- the graph


def check_threshold(threshold: float) -> float:
    threshold = float(threshold)
    if not 0.0 <= threshold <= 1.0:  # NaN fails too
        raise LmvizError(f"The threshold is an importance, between 0 and 1 (the default is {DEFAULT_THRESHOLD}); "
                         f"not {threshold:g}.")
    return threshold


def graph(found: Importances, position: int, threshold: float = DEFAULT_THRESHOLD) -> Flow:
    """The edges at least `threshold` important on a path down from Node(n_layers, position), walked block by
    block from the top (see the module docstring). With threshold 0: every edge of every position ≤ position."""
    n, n_layers = found.n_tokens, found.n_layers
    position, threshold = check_position(position, n), check_threshold(threshold)
    keys = torch.arange(n)
    causal = keys[None, :] <= keys[:, None]  # (query, key)
    reached = torch.zeros(n, dtype=torch.bool)
    reached[position] = True  # the nodes entering the block above: Node(layer + 1, ·)
    nodes = {Node(n_layers, position)}
    edges: list[Edge] = []

    def add(kind: str, sublayer: str, layer: int, pairs, values: torch.Tensor) -> None:
        for (source, target), importance in zip(pairs, values.tolist()):
            heads = found.heads_of(layer, target, source) if kind == "attn" else ()
            edges.append(Edge(kind, sublayer, layer, source, target, importance, heads))

    for layer in range(n_layers - 1, -1, -1):
        out = reached.nonzero()[:, 0]
        carried = out[found.mlp_resid[layer, out] >= threshold]
        written = out[found.mlp[layer, out] >= threshold]
        add("resid", "mlp", layer, zip(carried.tolist(), carried.tolist()), found.mlp_resid[layer, carried])
        add("mlp", "mlp", layer, zip(written.tolist(), written.tolist()), found.mlp[layer, written])
        mids = torch.zeros(n, dtype=torch.bool)
        mids[carried], mids[written] = True, True
        nodes.update(Node(layer, p, mid=True) for p in mids.nonzero()[:, 0].tolist())
        kept = causal & mids[:, None] & (found.attn[layer] >= threshold)  # (query, key)
        queries, sources = kept.nonzero(as_tuple=True)
        stays = mids.nonzero()[:, 0]
        stays = stays[found.attn_resid[layer, stays] >= threshold]
        add("resid", "attn", layer, zip(stays.tolist(), stays.tolist()), found.attn_resid[layer, stays])
        add("attn", "attn", layer, zip(sources.tolist(), queries.tolist()), found.attn[layer, queries, sources])
        reached = torch.zeros(n, dtype=torch.bool)
        reached[stays], reached[sources] = True, True
        nodes.update(Node(layer, p) for p in reached.nonzero()[:, 0].tolist())
    return Flow(found.model_name, found.text, found.input_ids, found.tokens, position, threshold, n_layers,
                int(found.head_shares.shape[1]), tuple(sorted(nodes)), tuple(edges), found.sum_error, found.sum_bound)


def flow(lm: LoadedModel, text: str, position: int | None = None, threshold: float = DEFAULT_THRESHOLD) -> Flow:
    """The cached information-flow graph into `position`'s final residual (default: the last position)."""
    found = importances(lm, text)
    position, threshold = check_position(position, found.n_tokens), check_threshold(threshold)
    return cached("flow", lm, (text, position, threshold), lambda: graph(found, position, threshold))
