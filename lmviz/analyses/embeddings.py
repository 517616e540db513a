"""Tied embeddings and each token's nearest neighbours in the output embedding (seed 004).

A causal LM's unembedding is often the input embedding matrix itself ("tied
weights"). Scoring each input token's embedding against every output
embedding, `lm_head(embed(ids))`, lists the tokens the model files next to it
(`neighbours`), by dot product (what the head computes) or cosine.

Shapes use the names pos (token position), vocab, d_model, k.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lmviz.model import compute
from lmviz.forward import trace as tracing
from lmviz.errors import LmvizError
from lmviz.model.models import LoadedModel
from lmviz.tokens import display_tokens

METRICS = ("dot", "cosine")


CHUNK_BYTES = 64 * 2**20  # float32 scores held at once: positions per chunk = CHUNK_BYTES / (4 * vocab)


def check_k(k: int, vocab: int) -> int:
    """k as a whole number from 1 to the vocabulary size (larger asks get the whole vocabulary)."""
    if int(k) < 1:
        raise LmvizError(f"k must be at least 1 (got {k}).")
    return min(int(k), vocab)


@dataclass(frozen=True)
class TieReport:
    """Are the input embedding and the output layer one matrix? (seed 004)

    An embedding maps a token id to a row of a (vocab, d_model) matrix; the
    output layer maps a hidden state to one score per token with a matrix of
    the same shape (nn.Linear stores its weight as (out, in)). Tying uses one
    matrix for both, which saves vocab x d_model parameters.
    """

    model_name: str
    input_shape: tuple[int, int]  # (vocab, d_model) of the input embedding
    output_shape: tuple[int, int] | None  # (vocab, d_model) of the output layer; None: there is none
    same_storage: bool  # one tensor serves both (tied in memory)
    equal_values: bool  # the same numbers (true whenever same_storage is)
    output_bias: bool  # the output layer adds a bias per token (BERT's decoder does; the embedding has none)

    @property
    def tied(self) -> bool:
        return self.equal_values

    @property
    def saved_parameters(self) -> int:
        """Parameters a tied model does not store twice: vocab x d_model (0 when untied)."""
        return self.input_shape[0] * self.input_shape[1] if self.tied else 0


def tie_report(lm: LoadedModel) -> TieReport:
    """Compare the input embedding with the output layer, by storage and by value."""
    with lm.lock:
        inputs, outputs = lm.model.get_input_embeddings(), lm.model.get_output_embeddings()
        input_shape = tuple(inputs.weight.shape)
        if outputs is None or not hasattr(outputs, "weight"):
            return TieReport(lm.name, input_shape, None, False, False, False)
        output_shape = tuple(outputs.weight.shape)
        same = output_shape == input_shape and inputs.weight.data_ptr() == outputs.weight.data_ptr()
        equal = same or (output_shape == input_shape and bool(torch.equal(inputs.weight, outputs.weight)))
        bias = getattr(outputs, "bias", None) is not None
    return TieReport(lm.name, input_shape, output_shape, same, equal, bias)


@dataclass(frozen=True)
class Neighbours:
    """Each input token's embedding scored against every output embedding: `lm_head(embed(ids))`.

    With tied weights this is every token's similarity to every other token in
    the one embedding matrix. "dot" is the raw dot product e·w, what the output
    layer computes; "cosine" divides it by |e|·|w|. Embeddings are not
    normalized, so a token whose output embedding is long (large |w|) climbs
    the dot-product list without being any more similar in direction.
    The output layer's bias, where it has one, is left out: it is not part of
    an embedding (and it adds the same amount for every input token).
    """

    model_name: str
    text: str
    metric: str  # "dot" | "cosine"
    tied: bool  # input and output embeddings are one matrix
    input_ids: torch.Tensor  # (pos,) int64
    tokens: tuple[str, ...]  # (pos,) display strings
    top_ids: torch.Tensor  # (pos, k) int64, best first
    top_scores: torch.Tensor  # (pos, k) float32, dot products or cosines
    top_tokens: tuple[tuple[str, ...], ...]  # (pos, k) display strings
    top_norms: torch.Tensor  # (pos, k) |w| of each neighbour's output embedding
    input_norms: torch.Tensor  # (pos,) |e| of each input embedding
    self_rank: torch.Tensor  # (pos,) int64: how many tokens score above the input token itself (0 = top)

    @property
    def k(self) -> int:
        return int(self.top_ids.shape[1])


def neighbours(lm: LoadedModel, text: str, k: int = 10, metric: str = "dot") -> Neighbours:
    """The embedding-neighbour table of seed 004 for the tokens of `text`.

    Scores are computed a chunk of positions at a time (CHUNK_BYTES of scores,
    341 positions for a 49k vocabulary) and reduced to the top k at once, so a
    long text never holds a (pos, vocab) matrix.
    """
    if metric not in METRICS:
        raise LmvizError(f"Unknown metric '{metric}': use one of {', '.join(METRICS)}.")
    report = tie_report(lm)
    if report.output_shape is None:
        raise LmvizError(
            f"{lm.name} is a {lm.kind} model without output embeddings (its head predicts labels, not tokens): "
            "the embedding-neighbour table needs a causal or masked LM."
        )
    ids = tracing.encode(lm, text)
    limit = tracing.max_tokens(lm)
    if len(ids) > limit:
        raise tracing.too_long(lm, len(ids))
    input_ids = torch.tensor(ids)
    with compute.slot(), torch.inference_mode():  # no model lock: other sessions' calls go on meanwhile
        embed, unembed = lm.model.get_input_embeddings(), lm.model.get_output_embeddings()
        weight = unembed.weight  # (vocab, d_model)
        k = check_k(k, weight.shape[0])
        w_norms = weight.float().norm(dim=-1)  # (vocab,)
        parts, step = [], max(1, CHUNK_BYTES // (4 * weight.shape[0]))
        for start in range(0, len(ids), step):
            chunk = input_ids[start:start + step]
            e = embed(chunk).float()  # (chunk, d_model), the module as the model calls it
            e_norms = e.norm(dim=-1)  # (chunk,)
            if metric == "cosine":
                e = e / e_norms[:, None].clamp_min(1e-8)
            scores = F.linear(e, weight.float())  # (chunk, vocab) = e @ W.T, the output layer without bias
            if metric == "cosine":
                scores.div_(w_norms.clamp_min(1e-8))  # (e/|e|)·w / |w|, in place
            inside = chunk < scores.shape[1]  # an untied head may have fewer rows than the input vocabulary
            own = scores.gather(1, chunk.clamp_max(scores.shape[1] - 1)[:, None])  # (chunk, 1)
            above = (scores > own).sum(dim=1, dtype=torch.int32).long()  # (chunk,); int32 sums bools ~2x faster
            rank = torch.where(inside, above, -1)  # -1: the token is not in the output vocabulary
            top = scores.topk(k, dim=-1)
            parts.append((top.indices, top.values, e_norms, rank))
        top_ids = torch.cat([p[0] for p in parts])
        top_scores = torch.cat([p[1] for p in parts]).float()
    with lm.lock:  # the tokenizer only
        cache: dict[int, str] = {}
        top_tokens = tuple(tuple(display_tokens(lm.tokenizer, row, cache)) for row in top_ids.tolist())
        tokens = tuple(display_tokens(lm.tokenizer, ids, cache))
    return Neighbours(
        model_name=lm.name,
        text=text,
        metric=metric,
        tied=report.tied,
        input_ids=input_ids,
        tokens=tokens,
        top_ids=top_ids,
        top_scores=top_scores,
        top_tokens=top_tokens,
        top_norms=w_norms[top_ids],
        input_norms=torch.cat([p[2] for p in parts]),
        self_rank=torch.cat([p[3] for p in parts]),
    )
