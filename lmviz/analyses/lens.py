"""The logit lens: what every layer would predict if it were the last one.

A causal LM turns its last hidden state into next-token scores with its head:
the final norm, then the unembedding (a d_model -> vocab matrix), then, for
Gemma-2/3, soft-capping. The logit lens sends every layer's hidden state
through that same head, so each layer gets its own next-token distribution:

    lens[i] = softcap(unembed(final_norm(hidden[i])))     for i = 0 .. L-1
    lens[L] = the model's own logits                        (hidden[L] is already normed)

Layer 0 is the embedding output, layer L the model's output. The final norm is
recomputed for every vector (its scale depends on the vector), and applied
exactly once everywhere: transformers' last hidden state already has it.

With `normalize=False` ("raw", as seed 004 does it) the norm is skipped:
`lm_head(hidden_states[i])` for every i, the last row included (computed from
hidden[L], which is already normed, so it still equals the model's logits).

The full lens is (L+1) x pos x vocab numbers: 3 GB for 512 tokens of a 30-layer
model with a 49k vocabulary. `run_logit_lens` never holds it. It walks over
blocks of (positions x all layers) and, inside a block, over slices of the
vocabulary small enough to stay in the CPU cache; each tile of logits is
folded at once into running statistics (top-k, an online log-sum-exp,
entropy, KL, ranks) and then overwritten by the next tile. The tiles come from
the model's verified head (`lmviz.model.head.Head.tile`), which computes exactly
what the model's own head does, one vocabulary slice at a time.
"""

from __future__ import annotations

import math
import threading
import weakref
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch

from lmviz.model import compute
from lmviz.forward import trace as tracing
from lmviz.forward.cache import cached, is_cached_result
from lmviz.errors import LmvizError
from lmviz.model.head import Head
from lmviz.model.models import LoadedModel
from lmviz.tokens import token_text, visible
from lmviz.forward.trace import Trace

MAX_K = 100
MAX_WATCHED = 20

# Statistics a heatmap can be coloured by: key -> (label, lower is better?)
STATISTICS: dict[str, tuple[str, bool]] = {
    "top1_prob": ("top-1 probability", False),
    "entropy": ("entropy (nats)", True),
    "kl_to_final": ("KL(final ‖ layer) (nats)", True),
    "next_token_prob": ("probability of the actual next token", False),
    "next_token_nll": ("cross-entropy of the actual next token (nats)", True),
    "next_token_rank": ("rank of the actual next token (0 = top-1)", True),
}


@dataclass(frozen=True, eq=False)
class LensResult:
    """What every layer predicts at every position, reduced to statistics.

    Dimensions: layer = 0 .. L (0 = embeddings, L = the model's output, so
    layer+1 rows), pos = input positions, k = the top-k kept. The prediction
    at position p is about the token at p+1, so next-token figures are NaN
    (rank -1) at the last position. Probabilities are softmax over the full
    vocabulary in float32; entropies, KL and cross-entropies are in nats.

    A result covers all positions or a window of them (`positions`). The
    methods below, and the figures and tables built from a result, take text
    positions; negative ones count from the window's end.
    """

    model_name: str
    text: str
    tokens: tuple[str, ...]  # (pos,) display strings of the input tokens
    input_ids: torch.Tensor  # (pos,) int64
    next_ids: torch.Tensor  # (pos,) int64 the actual next token (-1 after the text's last token)
    top_ids: torch.Tensor  # (layer+1, pos, k) int64, most likely first
    top_probs: torch.Tensor  # (layer+1, pos, k) float32
    entropy: torch.Tensor  # (layer+1, pos) float32, H(layer) = -sum p log p
    kl_to_final: torch.Tensor  # (layer+1, pos) float32, KL(final ‖ layer) = sum p_final log(p_final / p_layer)
    next_token_nll: torch.Tensor  # (layer+1, pos) float32, -log p_layer(actual next token); NaN at the last pos
    next_token_rank: torch.Tensor  # (layer+1, pos) int64, tokens scored strictly higher; -1 at the last pos
    watched_ids: tuple[int, ...]  # (n_watched,)
    watched_probs: torch.Tensor  # (layer+1, pos, n_watched) float32
    watched_ranks: torch.Tensor  # (layer+1, pos, n_watched) int64
    normalized: bool  # True: final norm applied at every layer; False: raw (seed 004)
    max_final_error: float  # max |lmviz's head - the model's own logits| at the last position (~1e-6)
    pieces: Mapping[int, str]  # exact text of every id in top_ids and watched_ids
    truncated_from: int | None = None  # token count of the text before truncation, if it was cut
    first_position: int = 0  # the text position of column 0 (a window of positions starts later)

    # ------------------------------------------------------------ shapes

    @property
    def n_layers(self) -> int:
        """L: the rows are layers 0 .. L."""
        return int(self.top_ids.shape[0]) - 1

    @property
    def n_tokens(self) -> int:
        return int(self.top_ids.shape[1])

    @property
    def k(self) -> int:
        return int(self.top_ids.shape[2])

    @property
    def positions(self) -> range:
        """The text positions this result covers (all of them, or a window)."""
        return range(self.first_position, self.first_position + self.n_tokens)

    def layer_label(self, layer: int) -> str:
        """'0 (embeddings)', '12', '30 (output)'."""
        layer = layer % (self.n_layers + 1)
        if layer == 0:
            return "0 (embeddings)"
        if layer == self.n_layers:
            return f"{layer} (output)"
        return str(layer)

    def token(self, token_id: int, show_whitespace: bool = True) -> str:
        """The text of a token in this result: visible whitespace by default, else the exact piece."""
        piece = self.pieces[int(token_id)]
        return visible(piece) if show_whitespace else piece

    # ------------------------------------------------------------ derived statistics

    @property
    def next_token_prob(self) -> torch.Tensor:
        """(layer+1, pos) probability of the actual next token (NaN at the last position)."""
        return torch.exp(-self.next_token_nll)

    def statistic(self, key: str) -> torch.Tensor:
        """(layer+1, pos) float32 values of one of STATISTICS (NaN where undefined)."""
        if key == "top1_prob":
            return self.top_probs[..., 0]
        if key == "entropy":
            return self.entropy
        if key == "kl_to_final":
            return self.kl_to_final
        if key == "next_token_prob":
            return self.next_token_prob
        if key == "next_token_nll":
            return self.next_token_nll
        if key == "next_token_rank":
            rank = self.next_token_rank.float()
            return torch.where(self.next_token_rank < 0, torch.nan, rank)
        raise LmvizError(f"Unknown statistic '{key}'. Choose one of: {', '.join(STATISTICS)}.")

    # ------------------------------------------------------------ tables


    def check_layer(self, layer: int) -> int:
        if not -(self.n_layers + 1) <= layer <= self.n_layers:
            raise LmvizError(f"Layer {layer} does not exist: this model has layers 0 to {self.n_layers}.")
        return layer % (self.n_layers + 1)

    def column(self, position: int) -> int:
        """The column of a text position in this result's tensors (-1 = the window's last position)."""
        if -self.n_tokens <= position < 0:
            return position % self.n_tokens
        if position not in self.positions:
            raise LmvizError(f"Position {position} is not in this lens: it covers positions "
                             f"{self.first_position} to {self.positions[-1]}.")
        return position - self.first_position

    def input_token(self, position: int) -> str:
        """Display string of the input token at a text position."""
        return self.tokens[self.column(position)]

    def next_token(self, position: int) -> str | None:
        """Display string of the token that actually follows a text position (None after the last)."""
        next_id = int(self.next_ids[self.column(position)])
        return None if next_id < 0 else self.token(next_id)


# ---------------------------------------------------------------- which layers to show


def layer_rows(n_layers: int, stride: int) -> list[int]:
    """Layers 0, stride, 2*stride, … and always the last one, L (the model's output)."""
    if stride < 1:
        raise LmvizError("The layer stride must be at least 1.")
    rows = list(range(0, n_layers + 1, stride))
    if rows[-1] != n_layers:
        rows.append(n_layers)
    return rows


# ---------------------------------------------------------------- watched tokens


def parse_watched(spec: str, leading_space: bool = True) -> list[str]:
    """Split a comma-separated list of tokens to watch into exact token texts.

    Each entry is stripped; with leading_space=True a space is put in front
    (the form a word takes inside a sentence, " Paris"). A leading `·` stands
    for a space, as the page shows tokens, and turns the automatic space off.
    """
    pieces = []
    for entry in spec.split(","):
        entry = entry.strip()
        if not entry:
            continue
        if entry.startswith("·"):
            entry = " " + entry[1:]
        elif leading_space:
            entry = " " + entry
        pieces.append(entry.replace("\\n", "\n"))
    return pieces


def resolve_watched(lm: LoadedModel, pieces: Sequence[str]) -> tuple[int, ...]:
    """Token ids of texts that must each be exactly one token; else say how they tokenize."""
    if len(pieces) > MAX_WATCHED:
        raise LmvizError(f"Watch at most {MAX_WATCHED} tokens at once.")
    ids = []
    with lm.lock:
        for piece in pieces:
            encoded = lm.tokenizer(piece, add_special_tokens=False)["input_ids"]
            if len(encoded) != 1:
                parts = " + ".join(f"'{visible(token_text(lm.tokenizer, i))}'" for i in encoded) or "nothing"
                raise LmvizError(
                    f"'{visible(piece)}' is not a single token for {lm.name}: it tokenizes as {parts}. "
                    "Watch one of those pieces instead."
                )
            ids.append(int(encoded[0]))
    return tuple(dict.fromkeys(ids))  # drop repeats, keep order


# ---------------------------------------------------------------- the computation


class _Running:
    """Statistics of rows of logits, folded in one vocabulary tile at a time.

    Per row it keeps the top-k so far, the running max m, s = sum exp(z - m),
    t = sum exp(z - m) (z - m) (so that entropy = log s - t / s), u = sum
    p_final z (so that KL(final ‖ row) = logsumexp - u - H(final)), and for
    every target token (the actual next token, the watched ones) how many
    logits beat its logit and the logit itself.
    """

    def __init__(self, n_rows: int, k: int, targets: torch.Tensor, thresholds: torch.Tensor, track_u: bool = True):
        self.k = k
        self.track_u = track_u  # False: the caller computes u another way
        self.targets = targets  # (rows, n_targets) token ids
        self.thresholds = thresholds  # (rows, n_targets) their logits, computed outside the tiles
        self.top_values = torch.empty(n_rows, 0)  # (rows, <=k)
        self.top_ids = torch.empty(n_rows, 0, dtype=torch.long)
        self.m = torch.full((n_rows,), -math.inf)
        self.s = torch.zeros(n_rows)
        self.t = torch.zeros(n_rows)
        self.u = torch.zeros(n_rows)  # (rows,)
        self.beaten_by = torch.zeros_like(targets)  # (rows, n_targets) logits strictly above the threshold
        self.target_logits = torch.full(targets.shape, math.nan)  # (rows, n_targets), as found in the tiles
        self.self_above = torch.zeros(targets.shape, dtype=torch.bool)

    def update(self, tile: torch.Tensor, v0: int, work: torch.Tensor, p_final: torch.Tensor | None) -> None:
        """Fold in tile (rows, w) = logits of tokens v0 .. v0+w, rows = (layer, pos) layer-major.
        p_final (pos, w): the final distribution on this slice, for u (None when u is not tracked).

        Overwrites `tile`; `work` is a (rows, w) float buffer. Every pass below writes into one of
        the two buffers and sums it: on a CPU that beats the fused-looking alternatives (bool
        masks summed as int64, batched matmul dot products).
        """
        n_rows, width = tile.shape
        # top-k: this tile's best, merged with the best so far
        values, ids = torch.topk(tile, min(self.k, width), dim=-1)
        ids += v0
        if self.top_values.shape[1]:
            values = torch.cat([self.top_values, values], dim=1)
            ids = torch.cat([self.top_ids, ids], dim=1)
            values, order = torch.topk(values, min(self.k, values.shape[1]), dim=-1)
            ids = ids.gather(1, order)
        self.top_values, self.top_ids = values, ids
        # targets: count the logits above each one, and pick up its own logit when it is in this tile
        local = self.targets - v0  # (rows, n_targets)
        inside = (local >= 0) & (local < width)
        found = tile.gather(1, local.clamp(0, width - 1))
        self.target_logits = torch.where(inside, found, self.target_logits)
        self.self_above |= inside & (found > self.thresholds)
        for j in range(self.targets.shape[1]):
            torch.gt(tile, self.thresholds[:, j : j + 1], out=work)  # 1.0 where a logit beats the target
            self.beaten_by[:, j] += work.sum(-1).long()  # exact: whole numbers far below 2**24
        if self.track_u:  # u += sum_v p_final[pos, v] z[row, v]
            n_pos = p_final.shape[0]
            grouped = (n_rows // n_pos, n_pos, width)
            torch.mul(tile.view(grouped), p_final.unsqueeze(0), out=work.view(grouped))
            self.u += work.sum(-1)
        # online log-sum-exp and entropy
        new_m = torch.maximum(self.m, values[:, 0])
        shift = self.m - new_m  # -inf on the first tile, where s = t = 0
        scale = torch.exp(shift)
        tile.sub_(new_m.unsqueeze(1))  # z - m
        torch.exp(tile, out=work)  # exp(z - m)
        s_tile = work.sum(-1)
        t_tile = tile.mul_(work).sum(-1)  # exp(z - m) (z - m)
        first = self.s == 0
        self.t = torch.where(first, t_tile, (self.t + shift * self.s) * scale + t_tile)
        self.s = torch.where(first, s_tile, self.s * scale + s_tile)
        self.m = new_m

    def logsumexp(self) -> torch.Tensor:
        return self.m + torch.log(self.s)

    def entropy(self) -> torch.Tensor:
        return torch.log(self.s) - self.t / self.s

    def ranks(self) -> torch.Tensor:
        """(rows, n_targets): tokens with a strictly higher logit than the target."""
        return self.beaten_by - self.self_above.long()


def _check_inputs(lm: LoadedModel, trace: Trace, k: int, watched_ids: Sequence[int]) -> tuple[int, ...]:
    lm.require_causal("the logit lens")
    lm.require_vocabulary_head()
    if trace.model_name != lm.name or trace.n_layers != lm.n_layers:
        raise LmvizError("This trace was made with another model: trace the text with this one first.")
    if not 1 <= k <= min(MAX_K, lm.vocab_size):
        raise LmvizError(f"k must be between 1 and {min(MAX_K, lm.vocab_size)}.")
    watched = tuple(int(i) for i in watched_ids)
    if len(watched) > MAX_WATCHED:
        raise LmvizError(f"Watch at most {MAX_WATCHED} tokens at once.")
    for token_id in watched:
        if not 0 <= token_id < lm.vocab_size:
            raise LmvizError(f"Token id {token_id} is outside the vocabulary (0 to {lm.vocab_size - 1}).")
    return watched


def parse_positions(spec: str) -> tuple[int, int]:
    """'A:B' -> (A, B): a half-open, 0-based window of positions, as the CLI's --positions takes it."""
    parts = spec.split(":")
    try:
        first, end = (int(part) for part in parts)
    except ValueError:
        raise LmvizError(f"Positions must look like A:B (e.g. 100:124), not '{spec}'.") from None
    return first, end


def check_positions(positions: tuple[int, int] | None, n_pos: int) -> tuple[int, int]:
    """(a, b) with 0 <= a < b <= n_pos, from None (all positions) or a half-open window (a, b)."""
    if positions is None:
        return 0, n_pos
    first, end = (int(p) for p in positions)
    if not 0 <= first < end <= n_pos:
        raise LmvizError(f"Positions {first}:{end} are not a window of the text's positions 0:{n_pos} "
                         "(half-open, 0-based, at least one position).")
    return first, end


def _normed_rows(head: Head, hidden: torch.Tensor, normalize: bool) -> torch.Tensor:
    """(layer*pos, d): hidden states (layer, pos, d) of layers 0..L-1, through the final norm when
    normalizing (recomputed for every vector), flattened layer-major."""
    if normalize:  # where the norm's weights are; it may change the width (OPT-350m: 1024 -> 512)
        hidden = head.norm(hidden.to(next((p.device for p in head.norm.parameters()), torch.device("cpu"))))
    return hidden.reshape(-1, hidden.shape[-1]).float().contiguous()


@torch.inference_mode()
def run_logit_lens(lm: LoadedModel, trace: Trace, k: int = 10, normalize: bool = True,
                   watched_ids: Sequence[int] = (), positions: tuple[int, int] | None = None, *,
                   progress: Callable[[int, int], None] | None = None,
                   rows_per_block: int = 1024, vocab_block: int = 2048) -> LensResult:
    """The logit lens of a trace, computed now (see `logit_lens` for the cached version).

    k: top tokens kept per (layer, position). normalize: apply the final norm
    to layers 0..L-1 (False: raw, seed 004). watched_ids: token ids whose
    probability and rank are recorded everywhere. positions=(a, b): only
    positions a .. b-1 (half-open, 0-based), e.g. the window a heatmap shows;
    the result's `first_position` is a. progress(done, total) is called after
    each block of positions (a progress bar for a long text). rows_per_block and
    vocab_block size the tiles: two buffers of about rows_per_block x
    vocab_block floats (8 MB each by default, so both stay in a 32 MB L3 cache)
    are live, whatever the text length; measured best on a 2-core CPU.

    Inside a block of positions the rows are layer-major: (layer, pos). Rows of
    layers 0..L-1 come from the tiled matrix product; the rows of layer L are
    the model's own logits (normalized) or the head applied to hidden[L] (raw).
    """
    watched = _check_inputs(lm, trace, k, watched_ids)
    head = lm.head
    if not normalize and head.linear and head.weight.shape[1] != trace.hidden.shape[-1]:
        raise LmvizError(f"{lm.name}'s unembedding expects {head.weight.shape[1]}-wide vectors but its hidden "
                         f"states are {trace.hidden.shape[-1]} wide, so a raw lens (without the final "
                         "norm and projection) is not defined for it.")
    n_layers = trace.n_layers  # L: rows 0..L
    n_pos, vocab = trace.n_tokens, lm.vocab_size
    first, end = check_positions(positions, n_pos)
    n_out = end - first  # positions computed
    # the actual next token at every position, -1 after the last (scored as a placeholder 0, masked at the end)
    next_ids = torch.cat([trace.input_ids[1:], torch.tensor([-1])])
    watched_t = torch.tensor(watched, dtype=torch.long)
    targets_per_pos = torch.cat([next_ids.clamp_min(0).unsqueeze(1), watched_t.expand(n_pos, len(watched))],
                                dim=1)  # (pos, 1+w)
    # sum_v p_final z_v is linear in the hidden state when the head is: h . (W^T p_final) + b . p_final
    linear_u = head.linear and head.plain

    if head.linear:
        width = min(vocab_block, vocab)
        block_pos = max(1, rows_per_block // (n_layers + 1))
    else:  # the head runs whole: keep each block's full-vocabulary tile near 16 MB
        width = vocab
        block_pos = max(1, (2**22 // vocab) // (n_layers + 1))
    total_blocks = -(-n_out // block_pos)  # ceil
    out_values = torch.empty(n_layers + 1, n_out, k)
    out_ids = torch.empty(n_layers + 1, n_out, k, dtype=torch.long)
    out_lse = torch.empty(n_layers + 1, n_out)
    out_entropy = torch.empty(n_layers + 1, n_out)
    out_kl = torch.empty(n_layers + 1, n_out, dtype=torch.float64)
    out_target_logits = torch.empty(n_layers + 1, n_out, 1 + len(watched))
    out_ranks = torch.empty(n_layers + 1, n_out, 1 + len(watched), dtype=torch.long)
    # the head lmviz projects with, on the last position, against the model's own logits there (verified
    # on load and on every trace to be within rounding; shown on the page)
    max_error = float((tracing.logits(lm, trace, -1) - trace.last_logits).abs().max())

    # tiles and running statistics live where the head's weights are (a GPU, or the CPU); each block's
    # results come back to the CPU
    device = head.device
    for p0 in range(first, end, block_pos):
        with compute.slot(), torch.device(device):  # one block at a time: others' work goes on between blocks
            p1 = min(end, p0 + block_pos)
            o0, o1 = p0 - first, p1 - first  # where the block goes in the result
            n_block = p1 - p0
            n_lens = n_layers * n_block  # rows from the matrix product
            n_rows = n_lens + n_block
            rows = _normed_rows(head, trace.hidden[:n_layers, p0:p1], normalize).to(device)  # (layer*pos, d)
            final = tracing.logits(lm, trace, slice(p0, p1)).to(device)  # (pos, vocab) the model's output logits
            # the rows of layer L: the output itself, or (raw) the bare head on hidden[L] (already normed)
            last_rows = final if normalize else head.tile(trace.hidden[n_layers, p0:p1].to(device))  # (pos, vocab)
            # the final distribution in float64: a shared rounding error in its log-sum-exp would scale
            # every p_final by the same 1 + 1e-5 and shift sum p_final z, hence KL, by 1e-5 x the logits
            final_logp = torch.log_softmax(final.double(), dim=-1)  # (pos, vocab)
            final_entropy = -(final_logp.exp() * final_logp).sum(-1)  # (pos,)
            p_final = final_logp.exp().float()
            p_final_mass = p_final.double().sum(-1)  # 1 up to float32 rounding
            del final_logp
            block_targets = targets_per_pos[p0:p1].to(device)  # (pos, 1+w)
            targets = block_targets.repeat(n_layers + 1, 1)  # (rows, 1+w), layer-major like the rows
            thresholds = torch.empty(targets.shape)
            if head.linear:  # non-linear heads: read from the (whole-vocabulary) tile below
                thresholds[:n_lens] = head.at(rows, targets[:n_lens])
            thresholds[n_lens:] = last_rows.gather(1, block_targets)
            running = _Running(n_rows, k, targets, thresholds, track_u=not linear_u)
            if linear_u:
                w_bar = head.weighted_sum(p_final)  # (pos, d): W^T p_final
                bias_term = p_final @ head.bias if head.bias is not None else torch.zeros(n_block)
                u_lens = torch.linalg.vecdot(rows.view(n_layers, n_block, -1), w_bar) + bias_term  # (layer, pos)
                u_last = (p_final.double() * last_rows.double()).sum(-1)  # (pos,)
                running.u = torch.cat([u_lens.reshape(-1).double(), u_last])
            buffers: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
            for v0 in range(0, vocab, width):
                v1 = min(vocab, v0 + width)
                if v1 - v0 not in buffers:
                    buffers[v1 - v0] = (torch.empty(n_rows, v1 - v0), torch.empty(n_rows, v1 - v0))
                tile, work = buffers[v1 - v0]
                head.tile(rows, v0, v1, out=tile[:n_lens])
                tile[n_lens:] = last_rows[:, v0:v1]
                if not head.linear:
                    thresholds[:n_lens] = tile[:n_lens].gather(1, targets[:n_lens])
                running.update(tile, v0, work, None if linear_u else p_final[:, v0:v1])
            lse = running.logsumexp()
            shape = (n_layers + 1, n_block)
            out_values[:, o0:o1] = running.top_values.view(*shape, k)
            out_ids[:, o0:o1] = running.top_ids.view(*shape, k)
            out_lse[:, o0:o1] = lse.view(shape)
            out_entropy[:, o0:o1] = running.entropy().view(shape)
            # KL(final ‖ row) = sum p_final (log p_final - z + lse) = -H(final) - u + mass * lse
            kl = p_final_mass * lse.double().view(shape) - running.u.double().view(shape) - final_entropy
            out_kl[:, o0:o1] = kl
            out_target_logits[:, o0:o1] = running.target_logits.view(*shape, -1)
            out_ranks[:, o0:o1] = running.ranks().view(*shape, -1)
        if progress is not None:
            progress(o0 // block_pos + 1, total_blocks)

    kl_to_final = out_kl.clamp_min(0).float()
    if normalize:
        kl_to_final[n_layers] = 0.0  # the same distribution, exactly
    log_probs = out_target_logits - out_lse.unsqueeze(-1)  # (layer+1, pos, 1+w)
    nll = -log_probs[..., 0]
    rank = out_ranks[..., 0].clone()
    if end == n_pos:  # the text's last position has no next token
        nll[:, -1] = math.nan
        rank[:, -1] = -1
    top_probs = torch.exp(out_values - out_lse.unsqueeze(-1))
    next_ids = next_ids[first:end]
    pieces = token_pieces(lm, torch.unique(out_ids).tolist() + list(watched) + next_ids[next_ids >= 0].tolist())
    return LensResult(
        model_name=lm.name,
        text=trace.text,
        tokens=trace.tokens[first:end],
        input_ids=trace.input_ids[first:end],
        next_ids=next_ids,
        top_ids=out_ids,
        top_probs=top_probs,
        entropy=out_entropy.clamp_min(0),
        kl_to_final=kl_to_final,
        next_token_nll=nll,
        next_token_rank=rank,
        watched_ids=watched,
        watched_probs=log_probs[..., 1:].exp().contiguous(),
        watched_ranks=out_ranks[..., 1:].contiguous(),
        normalized=normalize,
        max_final_error=max_error,
        pieces=pieces,
        truncated_from=trace.truncated_from,
        first_position=first,
    )


# ---------------------------------------------------------------- token texts, remembered per model

_pieces_memo: "weakref.WeakKeyDictionary[LoadedModel, dict[int, str]]" = weakref.WeakKeyDictionary()
_pieces_lock = threading.Lock()


def token_pieces(lm: LoadedModel, ids: Sequence[int]) -> dict[int, str]:
    """{id: exact token text} for these ids; decoded once per model and remembered."""
    with _pieces_lock:
        memo = _pieces_memo.setdefault(lm, {})
    missing = [i for i in dict.fromkeys(int(i) for i in ids) if i not in memo]
    if missing:
        with lm.lock:
            found = {i: token_text(lm.tokenizer, i) for i in missing}
        memo.update(found)
    return {int(i): memo[int(i)] for i in ids}


def _key(lm: LoadedModel, trace: Trace, k: int, normalize: bool, watched_ids: Sequence[int],
         positions: tuple[int, int] | None) -> tuple:
    watched = _check_inputs(lm, trace, k, watched_ids)
    return (trace.text, trace.patched, trace.n_tokens, int(k), bool(normalize), watched,
            check_positions(positions, trace.n_tokens))


def logit_lens(lm: LoadedModel, trace: Trace, k: int = 10, normalize: bool = True,
               watched_ids: Sequence[int] = (), positions: tuple[int, int] | None = None,
               progress: Callable[[int, int], None] | None = None) -> LensResult:
    """The logit lens of `trace` under `lm` (see run_logit_lens), cached per (text, k, mode, watched, window).

    Ask for the positions you show: a 24-position window of a 2,000-token text
    costs a tenth of its forward pass, the whole lens five times it."""
    key = _key(lm, trace, k, normalize, watched_ids, positions)
    _, _, _, _, _, watched, window = key
    return cached("lens", lm, key, lambda: run_logit_lens(lm, trace, k, normalize, watched, window, progress=progress))


def is_cached(lm: LoadedModel, trace: Trace, k: int = 10, normalize: bool = True,
              watched_ids: Sequence[int] = (), positions: tuple[int, int] | None = None) -> bool:
    """Whether `logit_lens` with these arguments would answer from the cache at once."""
    return is_cached_result("lens", lm, _key(lm, trace, k, normalize, watched_ids, positions))
