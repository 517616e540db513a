"""Where the scores come from: tied embeddings, the masked-LM head, a classification head.

A language model ends in a *head*, a small module that turns the last hidden
state (d_model numbers per position) into scores. The scores are logits:
unnormalized, unitless numbers, one per class; softmax turns them into
probabilities, and training only ever sees them through the cross-entropy
loss (seed 000). Three heads are opened up here:

- the **unembedding** of a causal LM, often the input embedding matrix
  itself ("tied weights", seed 004). Scoring each input token's embedding
  against every output embedding, `lm_head(embed(ids))`, lists the tokens
  the model files next to it (`neighbours`);
- the **masked-LM head** of BERT (seed 001): dense -> activation ->
  LayerNorm -> a decoder whose weight is the input embedding matrix, plus an
  output-only bias (`mlm_head_anatomy`, `fill_mask`), and its loss computed
  three ways that agree (`mlm_loss`);
- a **classification head** (seed 002): one linear layer on a pooled hidden
  state; row i of its weight matrix makes logit i, which is label i of
  `config.id2label` (`classify`, `random_head`, `fit_head`).

Shapes use the names pos (token position), vocab, d_model, label, k.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lmviz import trace as tracing
from lmviz.cache import cached
from lmviz.errors import LmvizError
from lmviz.models import LoadedModel
from lmviz.tokens import display_token, display_tokens

METRICS = ("dot", "cosine")
POOLINGS = ("last", "mean", "first")
IGNORE_INDEX = -100  # the label CrossEntropyLoss skips (transformers' convention for unmasked tokens)
SEED_EPSILON = 1e-5  # BERT's run_pretraining.py adds this to the denominator of the MLM loss
CHUNK_BYTES = 64 * 2**20  # float32 scores held at once: positions per chunk = CHUNK_BYTES / (4 * vocab)


def _check_k(k: int, vocab: int) -> int:
    if int(k) < 1:
        raise LmvizError(f"k must be at least 1 (got {k}).")
    return min(int(k), vocab)


def _names(tokenizer, ids, cache: dict[int, str] | None = None) -> list[str]:
    """display_token for many ids, decoding each distinct id once."""
    cache = {} if cache is None else cache
    out = []
    for token_id in ids:
        token_id = int(token_id)
        if token_id not in cache:
            cache[token_id] = display_token(tokenizer, token_id)
        out.append(cache[token_id])
    return out


# ------------------------------------------------------------ tied embeddings


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

    def frame(self):
        """The seed's table: one row per input token, its k nearest tokens in columns 1..k."""
        import pandas as pd

        frame = pd.DataFrame(list(self.top_tokens), columns=[str(j + 1) for j in range(self.k)])
        frame.insert(0, "token", list(self.tokens))
        frame.insert(1, "own rank", self.self_rank.tolist())
        frame.insert(2, "|e|", self.input_norms.tolist())
        return frame


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
        raise LmvizError(f"The text is {len(ids)} tokens long; at most {limit} here. Shorten it.")
    input_ids = torch.tensor(ids)
    with lm.lock, torch.inference_mode():
        embed, unembed = lm.model.get_input_embeddings(), lm.model.get_output_embeddings()
        weight = unembed.weight  # (vocab, d_model)
        k = _check_k(k, weight.shape[0])
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
        cache: dict[int, str] = {}
        top_tokens = tuple(tuple(_names(lm.tokenizer, row, cache)) for row in top_ids.tolist())
        tokens = tuple(_names(lm.tokenizer, ids, cache))
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


# --------------------------------------------------------------- masked LM

# model_type -> where each part of the masked-LM head sits, relative to lm.unembed
# (BERT: model.cls; RoBERTa family: model.lm_head), and the activation when it is not a module.
_MLM_PARTS = {
    "bert": dict(dense="predictions.transform.dense", activation="predictions.transform.transform_act_fn",
                 norm="predictions.transform.LayerNorm", decoder="predictions.decoder", bias="predictions.bias"),
    **dict.fromkeys(
        ["roberta", "xlm-roberta", "camembert"],
        dict(dense="dense", activation=None, norm="layer_norm", decoder="decoder", bias="bias"),
    ),
}
_HEAD_PREFIX = {"bert": "cls", "roberta": "lm_head", "xlm-roberta": "lm_head", "camembert": "lm_head"}


def _get(root, dotted: str):
    for part in dotted.split("."):
        root = getattr(root, part)
    return root


def require_masked(lm: LoadedModel) -> None:
    """Raise a clear LmvizError unless `lm` is a masked LM with a known head."""
    if lm.kind != "masked":
        raise LmvizError(
            f"{lm.name} is a {lm.kind} model; this needs a masked LM (BERT family), which sees the whole "
            "text and fills in [MASK] tokens: a BERT-family folder written by save_pretrained, a Hugging Face "
            "name where the hub is reachable, or AntiBERTy offline (`--model antiberty`; see the README)."
        )
    if lm.model.config.model_type not in _MLM_PARTS:
        raise LmvizError(f"lmviz does not know the parts of the masked-LM head of '{lm.model.config.model_type}'.")


@dataclass(frozen=True)
class HeadStep:
    """One step of a head, read from the model."""

    name: str  # what it does, e.g. "dense"
    path: str  # attribute path in the model, e.g. "cls.predictions.transform.dense"
    shape: str  # parameter shapes, e.g. "weight (512, 512), bias (512,)"
    note: str  # one line on its role


@dataclass(frozen=True)
class MlmHeadAnatomy:
    """The masked-LM head of a BERT-family model (seed 001), with the tie checked two ways.

    logits = LayerNorm(act(h @ W_dense.T + b_dense)) @ E.T + b_out, where E is
    the input embedding matrix (vocab, d_model) and b_out a bias that only the
    output has. `recompute_max_diff` is the largest gap between the model's
    logits and that formula evaluated by hand with E taken from the *input*
    embedding: ~1e-6 means the decoder really is the embedding.
    """

    model_name: str
    steps: tuple[HeadStep, ...]
    activation: str  # e.g. "GELUActivation"
    decoder_path: str
    embedding_path: str
    decoder_same_storage: bool  # decoder.weight is the input embedding tensor itself
    decoder_equal_values: bool
    output_bias: bool  # an output-only bias exists
    recompute_text: str | None
    recompute_max_diff: float | None  # max |model logits - by-hand logits| over the text


def _shape_of(module) -> str:
    parts = [f"{name} {tuple(p.shape)}" for name, p in module.named_parameters(recurse=False)]
    return ", ".join(parts) or "no parameters"


def _embedding_path(model) -> str:
    target = model.get_input_embeddings()
    for name, module in model.named_modules():
        if module is target:
            return name
    return "input embeddings"


def mlm_head_anatomy(lm: LoadedModel, text: str | None = None) -> MlmHeadAnatomy:
    """Read the head's parts from the model; with `text`, recompute its logits by hand."""
    require_masked(lm)
    model_type = lm.model.config.model_type
    parts, prefix = _MLM_PARTS[model_type], _HEAD_PREFIX[model_type]
    head = _get(lm.model, prefix)  # the whole masked-LM head: transform + decoder
    with lm.lock:
        dense, norm, decoder = _get(head, parts["dense"]), _get(head, parts["norm"]), _get(head, parts["decoder"])
        activation = _get(head, parts["activation"]) if parts["activation"] else F.gelu
        bias = _get(head, parts["bias"])
        embedding = lm.model.get_input_embeddings()
        act_name = type(activation).__name__ if isinstance(activation, nn.Module) else getattr(activation, "__name__", "gelu")
        steps = (
            HeadStep("dense", f"{prefix}.{parts['dense']}", _shape_of(dense), "d_model -> d_model, with bias"),
            HeadStep("activation", f"{prefix}.{parts['activation'] or 'gelu'}", "no parameters", act_name),
            HeadStep("LayerNorm", f"{prefix}.{parts['norm']}", _shape_of(norm), f"eps {norm.eps:g}"),
            HeadStep("decoder", f"{prefix}.{parts['decoder']}", f"weight {tuple(decoder.weight.shape)}",
                     "d_model -> vocab: the input embedding matrix, used transposed"),
            HeadStep("output bias", f"{prefix}.{parts['bias']}", f"{tuple(bias.shape)}",
                     "one bias per token, only on the output side"),
        )
        same = decoder.weight.data_ptr() == embedding.weight.data_ptr()
        equal = same or (decoder.weight.shape == embedding.weight.shape and bool(torch.equal(decoder.weight, embedding.weight)))
    diff = None
    if text is not None:
        t = tracing.trace(lm, text)
        with lm.lock, torch.inference_mode():
            h = F.linear(t.hidden[-1], dense.weight, dense.bias)  # (pos, d_model)
            h = activation(h)
            h = F.layer_norm(h, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
            by_hand = h @ embedding.weight.T + bias  # (pos, vocab): E from the INPUT side
        diff = float((by_hand - tracing.logits(lm, t)).abs().max())
    return MlmHeadAnatomy(
        model_name=lm.name,
        steps=steps,
        activation=act_name,
        decoder_path=f"{prefix}.{parts['decoder']}.weight",
        embedding_path=f"{_embedding_path(lm.model)}.weight",
        decoder_same_storage=same,
        decoder_equal_values=equal,
        output_bias=True,
        recompute_text=text,
        recompute_max_diff=diff,
    )


def mask_token(lm: LoadedModel) -> tuple[str, int]:
    """The tokenizer's mask token and its id; raises when it has none."""
    tokenizer = lm.tokenizer
    if tokenizer.mask_token is None or tokenizer.mask_token_id is None:
        raise LmvizError(f"The tokenizer of {lm.name} has no mask token, so there is nothing to fill in.")
    return tokenizer.mask_token, int(tokenizer.mask_token_id)


@dataclass(frozen=True)
class MaskPredictions:
    """What a masked LM predicts at each mask token (seed 000).

    `top_logits` are the prediction scores the model returns: unnormalized and
    unitless (adding one constant to all of them changes nothing after the
    softmax). probs = softmax(logits) over the full vocabulary, and
    logprobs = logits - logsumexp(logits), the quantity cross-entropy uses.
    """

    model_name: str
    text: str
    input_ids: torch.Tensor  # (pos,) int64
    tokens: tuple[str, ...]  # (pos,)
    mask_positions: torch.Tensor  # (mask,) int64
    top_ids: torch.Tensor  # (mask, k) best first
    top_tokens: tuple[tuple[str, ...], ...]  # (mask, k)
    top_logits: torch.Tensor  # (mask, k) float32
    top_probs: torch.Tensor  # (mask, k) float32
    top_logprobs: torch.Tensor  # (mask, k) float32
    logsumexp: torch.Tensor  # (mask,) the softmax normaliser: logprob = logit - logsumexp

    def frame(self, mask: int):
        """The top-k table at mask number `mask` (0-based, in text order)."""
        import pandas as pd

        return pd.DataFrame({
            "token": list(self.top_tokens[mask]),
            "id": self.top_ids[mask].tolist(),
            "logit": self.top_logits[mask].tolist(),
            "probability": self.top_probs[mask].tolist(),
            "log-probability": self.top_logprobs[mask].tolist(),
        })


def fill_mask(lm: LoadedModel, text: str, k: int = 5) -> MaskPredictions:
    """Top-k tokens (logit, probability, log-probability) at every mask token of `text`."""
    require_masked(lm)
    mask, mask_id = mask_token(lm)
    t = tracing.trace(lm, text)
    positions = (t.input_ids == mask_id).nonzero().flatten()
    if len(positions) == 0:
        raise LmvizError(
            f"The text has no {mask} token. Write {mask} where the model should fill in a token, "
            f"e.g. \"Paris is the {mask} of France.\""
        )
    k = _check_k(k, lm.vocab_size)
    logits = tracing.logits(lm, t, positions)  # (mask, vocab)
    normaliser = torch.logsumexp(logits, dim=-1)  # (mask,)
    top = logits.topk(k, dim=-1)
    logprobs = top.values - normaliser[:, None]
    with lm.lock:
        cache: dict[int, str] = {}
        top_tokens = tuple(tuple(_names(lm.tokenizer, row, cache)) for row in top.indices.tolist())
    return MaskPredictions(
        model_name=lm.name, text=text, input_ids=t.input_ids, tokens=t.tokens, mask_positions=positions,
        top_ids=top.indices, top_tokens=top_tokens, top_logits=top.values, top_probs=logprobs.exp(),
        top_logprobs=logprobs, logsumexp=normaliser,
    )


def special_positions(lm: LoadedModel, ids: Sequence[int]) -> set[int]:
    """Positions holding special tokens ([CLS], [SEP], [PAD], [MASK] …), which BERT never picks to mask."""
    special = set(lm.tokenizer.all_special_ids)
    return {i for i, token_id in enumerate(ids) if int(token_id) in special}


def default_mask_positions(lm: LoadedModel, text: str, rate: float = 0.15) -> list[int]:
    """About `rate` of the ordinary tokens, evenly spread (at least one): a deterministic
    stand-in for BERT's random 15 % choice."""
    ids = tracing.encode(lm, text)
    candidates = [i for i in range(len(ids)) if i not in special_positions(lm, ids)]
    if not candidates:
        return []
    count = max(1, round(rate * len(candidates)))
    step = len(candidates) / count
    return sorted({candidates[int(step * j + step / 2)] for j in range(count)})


def maskable_tokens(lm: LoadedModel, text: str) -> list[tuple[int, str]]:
    """(position, display string) of every token `mlm_loss` may mask: all but the special ones."""
    ids = tracing.encode(lm, text)
    special = special_positions(lm, ids)
    with lm.lock:
        shown = display_tokens(lm.tokenizer, ids)
    return [(i, shown[i]) for i in range(len(ids)) if i not in special]


@dataclass(frozen=True)
class MlmLoss:
    """The masked-LM loss of one text with some tokens masked, computed three ways (seed 001).

    1. The seed's way (BERT's TensorFlow `get_masked_lm_output`): gather the
       final hidden states at `positions`, run the head on them only,
       log_softmax, pick each label's log-probability with a one-hot vector,
       then loss = sum(label_weights * per_example_loss) / (sum(label_weights) + 1e-5).
       `positions` are zero-padded to `max_predictions` with weight 0.
    2. torch.nn.CrossEntropyLoss(ignore_index=-100) over every position, with
       label -100 wherever nothing was masked.
    3. The model's own loss: `model(input_ids, labels=labels).loss`.
    1 differs from 2 and 3 only by the 1e-5: seed_loss = ce * n / (n + 1e-5).
    """

    model_name: str
    text: str
    original_ids: torch.Tensor  # (pos,) the text's tokens
    input_ids: torch.Tensor  # (pos,) what the model saw: chosen positions replaced by the mask token
    tokens: tuple[str, ...]  # (pos,) display strings of original_ids
    labels: torch.Tensor  # (pos,) original id where masked, -100 elsewhere
    positions: torch.Tensor  # (pred,) masked_lm_positions, zero-padded
    label_ids: torch.Tensor  # (pred,) masked_lm_ids (0 in padding)
    label_weights: torch.Tensor  # (pred,) 1.0 for a real prediction, 0.0 for padding
    per_example_loss: torch.Tensor  # (pred,) -sum(log_probs * one_hot) = -log p(label)
    top1_ids: torch.Tensor  # (pred,) the model's best guess at each position
    top1_tokens: tuple[str, ...]  # (pred,) display strings of top1_ids
    numerator: float  # sum(label_weights * per_example_loss)
    denominator: float  # sum(label_weights) + 1e-5
    seed_loss: float  # numerator / denominator
    cross_entropy: float  # CrossEntropyLoss(ignore_index=-100)
    model_loss: float  # the model's own loss

    @property
    def n_masked(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())

    def frame(self):
        """The seed's per-prediction table, padding rows included."""
        import pandas as pd

        return pd.DataFrame({
            "masked_lm_position": self.positions.tolist(),
            "true token": [self.tokens[p] if w > 0 else "(padding)"
                           for p, w in zip(self.positions.tolist(), self.label_weights.tolist())],
            "masked_lm_id": self.label_ids.tolist(),
            "label_weight": self.label_weights.tolist(),
            "per_example_loss": self.per_example_loss.tolist(),
            "p(true token)": self.per_example_loss.neg().exp().tolist(),
            "model's top guess": list(self.top1_tokens),
        })


def mlm_loss(lm: LoadedModel, text: str, positions: Sequence[int], max_predictions: int | None = None) -> MlmLoss:
    """Mask `positions` of `text`'s tokens and compute the MLM loss the three ways of `MlmLoss`."""
    require_masked(lm)
    mask, mask_id = mask_token(lm)
    ids = tracing.encode(lm, text)
    limit = tracing.max_tokens(lm)
    if len(ids) > limit:
        raise LmvizError(f"The text is {len(ids)} tokens long; at most {limit} here. Shorten it.")
    chosen = sorted({int(p) for p in positions})
    if not chosen:
        raise LmvizError("Pick at least one token to mask: the loss is taken over masked tokens only.")
    special = special_positions(lm, ids)
    for p in chosen:
        if not 0 <= p < len(ids):
            raise LmvizError(f"Position {p} is outside the text (positions 0 to {len(ids) - 1}).")
        if p in special:
            what = "already a mask token: it has no true token to score" if ids[p] == mask_id else \
                "a special token, which BERT never masks"
            raise LmvizError(f"Position {p} ({display_token(lm.tokenizer, ids[p])}) is {what}. Pick ordinary tokens.")
    n_pred = len(chosen) if max_predictions is None else int(max_predictions)
    if n_pred < len(chosen):
        raise LmvizError(f"{len(chosen)} tokens are masked but max_predictions is {n_pred}: raise it.")
    original = torch.tensor(ids)
    input_ids = original.clone()
    input_ids[chosen] = mask_id
    labels = torch.full_like(original, IGNORE_INDEX)
    labels[chosen] = original[chosen]
    pad = n_pred - len(chosen)
    masked_positions = torch.tensor(chosen + [0] * pad)  # (pred,)
    label_ids = torch.tensor([ids[p] for p in chosen] + [0] * pad)  # (pred,)
    label_weights = torch.tensor([1.0] * len(chosen) + [0.0] * pad)  # (pred,)
    with lm.lock, torch.inference_mode():
        output = lm.model(input_ids=input_ids[None], labels=labels[None], output_hidden_states=True)
        sequence_output = output.hidden_states[-1][0]  # (pos, d_model)
        gathered = sequence_output[masked_positions]  # (pred, d_model)  gather_indexes
        head_logits = lm.logits_from_hidden(gathered)  # (pred, vocab)  the head on the gathered rows only
        tokens = tuple(display_tokens(lm.tokenizer, ids))
        top1 = head_logits.argmax(dim=-1)  # (pred,)
        top1_tokens = tuple(_names(lm.tokenizer, top1.tolist()))
    vocab = head_logits.shape[-1]
    log_probs = torch.log_softmax(head_logits, dim=-1)  # (pred, vocab)
    one_hot = F.one_hot(label_ids, vocab).float()  # (pred, vocab)
    per_example = -(log_probs * one_hot).sum(dim=-1)  # (pred,)
    numerator = float((label_weights * per_example).sum())
    denominator = float(label_weights.sum()) + SEED_EPSILON
    logits = output.logits[0].float()  # (pos, vocab)
    cross_entropy = nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)(logits.view(-1, vocab), labels.view(-1))
    return MlmLoss(
        model_name=lm.name, text=text, original_ids=original, input_ids=input_ids, tokens=tokens, labels=labels,
        positions=masked_positions, label_ids=label_ids, label_weights=label_weights, per_example_loss=per_example,
        top1_ids=top1, top1_tokens=top1_tokens, numerator=numerator, denominator=denominator,
        seed_loss=numerator / denominator, cross_entropy=float(cross_entropy), model_loss=float(output.loss),
    )


# ---------------------------------------------------------- classification


@dataclass(frozen=True)
class LinearHead:
    """A classification head on a pooled hidden state: logits = pooled @ weight.T + bias.

    Row i of `weight` produces logit i, and logit i belongs to label i
    (`labels[i]`, config.id2label[i]). The layer itself knows no label names:
    the order is fixed by whoever numbered the labels for training (seed 002).
    """

    model_name: str
    labels: tuple[str, ...]  # (label,) label i = labels[i]
    weight: torch.Tensor  # (label, d_model)
    bias: torch.Tensor  # (label,)
    pooling: str  # "last" | "mean" | "first": how the final hidden states become one vector
    origin: str  # how the weights came about, in words
    train_accuracy: float | None = None  # on the examples it was fitted to
    train_loss: float | None = None  # mean cross-entropy on those examples


def _check_labels(labels: Sequence[str]) -> tuple[str, ...]:
    labels = tuple(str(label).strip() for label in labels)
    if any(not label for label in labels):
        raise LmvizError("A label name is empty: give every label a name.")
    if len(labels) < 2:
        raise LmvizError("A classifier needs at least two labels (e.g. negative, positive).")
    if len(set(labels)) != len(labels):
        raise LmvizError("Label names must differ: " + ", ".join(labels))
    return labels


def _check_pooling(pooling: str) -> str:
    if pooling not in POOLINGS:
        raise LmvizError(f"Unknown pooling '{pooling}': use one of {', '.join(POOLINGS)}.")
    return pooling


def pooled_hidden(lm: LoadedModel, text: str, pooling: str = "last") -> torch.Tensor:
    """One vector (d_model,) for `text`: the final hidden state of the last token (what decoder
    classifiers use), of the first token (BERT's [CLS]), or the mean over tokens."""
    _check_pooling(pooling)
    hidden = tracing.trace(lm, text).hidden[-1]  # (pos, d_model), final norm applied
    if pooling == "last":
        return hidden[-1]
    if pooling == "first":
        return hidden[0]
    return hidden.mean(dim=0)


def random_head(lm: LoadedModel, labels: Sequence[str], pooling: str = "last", seed: int = 0) -> LinearHead:
    """A fresh head, initialised like torch's nn.Linear(d_model, n_labels): U(-1/sqrt(d), 1/sqrt(d))."""
    labels = _check_labels(labels)
    _check_pooling(pooling)
    generator = torch.Generator().manual_seed(int(seed))
    bound = 1 / math.sqrt(lm.d_model)
    weight = (torch.rand(len(labels), lm.d_model, generator=generator) * 2 - 1) * bound
    bias = (torch.rand(len(labels), generator=generator) * 2 - 1) * bound
    return LinearHead(lm.name, labels, weight, bias, pooling, f"random (seed {seed}), like a fresh nn.Linear")


def parse_examples(text: str) -> list[tuple[str, str]]:
    """Lines of `label: sentence` -> [(label, sentence)]; blank lines are skipped."""
    examples = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        label, colon, sentence = line.partition(":")
        if not colon or not label.strip() or not sentence.strip():
            raise LmvizError(f"Line {number} is not `label: sentence` (got \"{line.strip()[:60]}\"). "
                             "Write one example per line, e.g. `positive: What a lovely day.`")
        examples.append((label.strip(), sentence.strip()))
    return examples


MAX_EXAMPLES = 64


def fit_head(lm: LoadedModel, examples: Sequence[tuple[str, str]], pooling: str = "last",
             l2: float = 1e-3, max_iter: int = 200) -> LinearHead:
    """Fit a linear head to labelled sentences: multinomial logistic regression on the pooled final
    hidden states (L-BFGS, full batch, L2 penalty `l2`). Labels are numbered in order of first
    appearance. The result is cached per (model, examples, pooling, l2)."""
    _check_pooling(pooling)
    examples = [(str(label).strip(), str(sentence)) for label, sentence in examples]
    if len(examples) > MAX_EXAMPLES:
        raise LmvizError(f"{len(examples)} examples; at most {MAX_EXAMPLES} here.")
    labels = _check_labels(list(dict.fromkeys(label for label, _ in examples)) if examples else [])
    return cached("fitted head", lm, (tuple(examples), pooling, l2, max_iter),
                  lambda: _fit(lm, examples, labels, pooling, l2, max_iter))


def _fit(lm: LoadedModel, examples: list[tuple[str, str]], labels: tuple[str, ...], pooling: str,
         l2: float, max_iter: int) -> LinearHead:
    features = torch.stack([pooled_hidden(lm, sentence, pooling) for _, sentence in examples])  # (n, d_model)
    targets = torch.tensor([labels.index(label) for label, _ in examples])  # (n,)
    # Standardize so one step size suits every model; fold the scaling back into the weights after.
    mean, scale = features.mean(dim=0), features.std(dim=0, unbiased=False).clamp_min(1e-6)
    x = (features - mean) / scale
    weight = torch.zeros(len(labels), lm.d_model, requires_grad=True)
    bias = torch.zeros(len(labels), requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=max_iter, line_search_fn="strong_wolfe")

    def objective():
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weight.T + bias, targets) + l2 * (weight**2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(objective)
    with torch.no_grad():
        w = weight / scale  # (label, d_model): logits = ((f - mean) / scale) @ W.T + b = f @ w.T + b'
        b = bias - w @ mean
        logits = features @ w.T + b
        accuracy = float((logits.argmax(dim=-1) == targets).float().mean())
        loss = float(F.cross_entropy(logits, targets))
    return LinearHead(lm.name, labels, w.detach(), b.detach(), pooling,
                      f"fitted on {len(examples)} sentences (logistic regression)", accuracy, loss)


@dataclass(frozen=True)
class Classification:
    """A text's class scores (seed 002): logits -> softmax -> label names, and the loss per label.

    `loss_per_label[i]` is CrossEntropyLoss(logits, label i) = -log probs[i]:
    what training would pay if label i were the truth. Small where the
    logit is high relative to the others.
    """

    model_name: str
    text: str
    labels: tuple[str, ...]  # (label,) label i = config.id2label[i]
    generic_labels: bool  # no real names: transformers' default LABEL_0, LABEL_1 … (or none at all)
    pooling: str  # how the text became one vector, in words
    head_origin: str  # the model's own trained head, or a LinearHead's origin
    pooled: torch.Tensor | None  # (d_model,) the head's input, when lmviz knows how to read it
    weight: torch.Tensor | None  # (label, d_model)
    bias: torch.Tensor | None  # (label,)
    logits: torch.Tensor  # (label,) what the head outputs
    logits_by_hand: torch.Tensor | None  # (label,) pooled @ weight.T + bias, computed here
    probs: torch.Tensor  # (label,) softmax(logits)
    loss_per_label: torch.Tensor  # (label,)

    @property
    def predicted(self) -> int:
        return int(self.logits.argmax())

    def frame(self):
        """One row per label, in id order: label id i, its name, logit i, probability, loss if true."""
        import pandas as pd

        frame = pd.DataFrame({"id": range(len(self.labels)), "label": list(self.labels),
                              "logit": self.logits.tolist()})
        if self.logits_by_hand is not None:
            frame["pooled @ W.T + b"] = self.logits_by_hand.tolist()
        frame["probability"] = self.probs.tolist()
        frame["loss if this label were true"] = self.loss_per_label.tolist()
        return frame


def _scores(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax and the cross-entropy for each possible label, (label,) each."""
    logits = logits.float()
    losses = torch.stack([F.cross_entropy(logits[None], torch.tensor([i])) for i in range(len(logits))])
    return torch.softmax(logits, dim=-1), losses


def classify_with_head(lm: LoadedModel, head: LinearHead, text: str) -> Classification:
    """Apply a LinearHead to the pooled final hidden state of `text` under `lm`."""
    if head.weight.shape[1] != lm.d_model:
        raise LmvizError(f"This head takes {head.weight.shape[1]} numbers but {lm.name} gives {lm.d_model}.")
    pooled = pooled_hidden(lm, text, head.pooling)  # (d_model,)
    linear = nn.Linear(lm.d_model, len(head.labels))  # the seed's classificationLayer
    with torch.no_grad():
        linear.weight.copy_(head.weight)
        linear.bias.copy_(head.bias)
        logits = linear(pooled)  # (label,)
    by_hand = pooled @ head.weight.T + head.bias  # the seed's logitsOwnCalculation
    probs, losses = _scores(logits)
    pooling = {"last": "final hidden state of the last token", "first": "final hidden state of the first token",
               "mean": "mean of the final hidden states"}[head.pooling]
    return Classification(lm.name, text, head.labels, False, pooling, head.origin, pooled, head.weight,
                          head.bias, logits.detach(), by_hand, probs, losses)


def _generic(id2label: dict, n: int) -> tuple[tuple[str, ...], bool]:
    names = [id2label.get(i, id2label.get(str(i))) for i in range(n)] if id2label else []
    if len(names) != n or any(name is None for name in names):
        return tuple(f"label {i}" for i in range(n)), True
    generic = all(str(name) == f"LABEL_{i}" for i, name in enumerate(names))
    return tuple(str(name) for name in names), generic


def classify(lm: LoadedModel, text: str) -> Classification:
    """Run a sequence-classification model on `text` and read its labels from config.id2label.

    Where lmviz knows the architecture it also rebuilds the logits by hand:
    BERT-style (pooler output of [CLS] -> `classifier`, as in seed 002) and
    decoder-style (final hidden state of the last token -> `score`).
    """
    if lm.kind != "classifier":
        raise LmvizError(
            f"{lm.name} is a {lm.kind} model, not a sequence classifier: use a linear head on its "
            "pooled hidden state instead (random_head or fit_head)."
        )
    model = lm.model
    if getattr(model.config, "problem_type", None) == "regression" or model.config.num_labels < 2:
        raise LmvizError(f"{lm.name} predicts a single number (regression): it has no labels to choose between.")
    ids = tracing.encode(lm, text)
    if len(ids) > tracing.max_tokens(lm):
        raise LmvizError(f"The text is {len(ids)} tokens long; at most {tracing.max_tokens(lm)} here. Shorten it.")
    input_ids = torch.tensor([ids])
    pooled = weight = bias = by_hand = None
    pooling = "unknown to lmviz for this architecture (the model's logits are shown as they are)"
    with lm.lock, torch.inference_mode():
        output = model(input_ids=input_ids, output_hidden_states=True)
        logits = output.logits[0].float()  # (label,)
        classifier = getattr(model, "classifier", None)
        score = getattr(model, "score", None)
        base = getattr(model, model.base_model_prefix, None)
        if isinstance(classifier, nn.Linear) and base is not None and getattr(base, "pooler", None) is not None:
            pooled = base(input_ids=input_ids).pooler_output[0]  # (d_model,) tanh(dense([CLS]))
            weight, bias, pooling = classifier.weight, classifier.bias, "pooler output: tanh(dense(h[CLS]))"
        elif isinstance(score, nn.Linear):
            pooled = output.hidden_states[-1][0, -1]  # the last token (batch of one, no padding)
            weight, bias, pooling = score.weight, score.bias, "final hidden state of the last token"
        if pooled is not None:
            bias_term = bias if bias is not None else torch.zeros(weight.shape[0])
            by_hand = (pooled @ weight.T + bias_term).float()
            weight = weight.detach().clone()
            bias = bias_term.detach().clone()
    labels, generic = _generic(model.config.id2label or {}, len(logits))
    probs, losses = _scores(logits)
    return Classification(lm.name, text, labels, generic, pooling, "the model's own trained head", pooled,
                          weight, bias, logits, by_hand, probs, losses)


# ------------------------------------------------- AntiBERTy, a real MLM offline

ANTIBERTY_PIP = "antiberty==0.1.3"  # MIT; later versions download their weights instead of shipping them
ANTIBERTY_CHAIN = {0: "Heavy", 1: "Light"}  # AntiBERTyRunner.LABEL_TO_CHAIN
ANTIBERTY_SPECIES = {0: "Camel", 1: "Human", 2: "Mouse", 3: "Rabbit", 4: "Rat", 5: "Rhesus"}  # LABEL_TO_SPECIES


ANTIBODY_HEAVY = (  # trastuzumab's heavy-chain variable domain, a published antibody sequence
    "EVQLVESGGGLVQPGGSLRLSCAASGFNIKDTYIHWVRQAPGKGLEWVARIYPTNGYTRYADSVKGRFTISADTSKNTAYLQMNSLRAEDTAVYYCSRW"
    "GGDGFYAMDYWGQGTLVTVSS"
)


def antiberty_available() -> bool:
    """True when the antiberty package (with its weights) is installed."""
    import importlib.util

    return importlib.util.find_spec("antiberty") is not None


def _antiberty_tokenizer(vocab_file: str):
    """WordPiece over AntiBERTy's 25-token vocabulary that splits every residue letter on its own,
    so "EVQLV[MASK]SGG" works as well as AntiBERTy's own spaced "E V Q L V [MASK] S G G"."""
    from tokenizers import Regex, Tokenizer, pre_tokenizers, processors
    from tokenizers import models as tk_models
    from transformers import PreTrainedTokenizerFast

    vocab = {line.strip(): i for i, line in enumerate(open(vocab_file, encoding="utf-8")) if line.strip()}
    tokenizer = Tokenizer(tk_models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex("."), behavior="isolated")])
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


def prepare_antiberty(target: str | None = None, progress=None) -> dict[str, str]:
    """Turn the AntiBERTy weights shipped inside PyPI `antiberty==0.1.3` into folders lmviz loads.

    Returns {"mlm": BertForMaskedLM folder, "chain": heavy/light classifier folder,
    "species": six-species classifier folder}. The package keeps a pickled
    `pytorch_model.bin`; it is read with torch.load(weights_only=True), which
    unpickles tensors only, and written out as safetensors (once; later calls
    return the folders). The two classifiers are AntiBERTy's own trained heads
    on the pooled [CLS] state, i.e. exactly BertForSequenceClassification.
    """
    import importlib.util
    import json
    import os
    import shutil
    import tempfile
    from pathlib import Path

    from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification

    from lmviz.models import cache_dir

    progress = progress or (lambda message: None)
    root = Path(target) if target else cache_dir() / "antiberty-0.1.3"
    folders = {name: root / name for name in ("mlm", "chain", "species")}
    if all((folder / "model.safetensors").exists() for folder in folders.values()):
        return {name: str(folder) for name, folder in folders.items()}
    found = importlib.util.find_spec("antiberty")  # locates the package without importing it
    if found is None or found.origin is None:
        raise LmvizError(f"AntiBERTy is not installed: run `pip install --no-deps {ANTIBERTY_PIP}` first.")
    models_dir = Path(found.origin).parent / "trained_models"
    checkpoint = models_dir / "AntiBERTy_md_smooth"
    progress("Converting AntiBERTy's weights to safetensors (once) …")
    state = torch.load(checkpoint / "pytorch_model.bin", weights_only=True, map_location="cpu")
    raw = json.loads((checkpoint / "config.json").read_text())
    raw = {key: value for key, value in raw.items() if not key.startswith("_") and key != "architectures"}
    tokenizer = _antiberty_tokenizer(str(models_dir / "vocab.txt"))
    encoder = {key: value for key, value in state.items() if key.startswith("bert.") and "position_ids" not in key}

    def build(name: str):
        if name == "mlm":
            model = BertForMaskedLM(BertConfig(**raw, architectures=["BertForMaskedLM"]))
            weights = {k: v for k, v in encoder.items() if not k.startswith("bert.pooler.")}
            weights.update({k: v for k, v in state.items() if k.startswith("cls.predictions.")})
        else:
            labels = ANTIBERTY_CHAIN if name == "chain" else ANTIBERTY_SPECIES
            config = BertConfig(**raw, architectures=["BertForSequenceClassification"], id2label=labels,
                                label2id={v: k for k, v in labels.items()})
            model = BertForSequenceClassification(config)
            weights = dict(encoder, **{"classifier.weight": state[f"cls.{name}.weight"],
                                       "classifier.bias": state[f"cls.{name}.bias"]})
        missing, unexpected = model.load_state_dict(weights, strict=False)
        missing = [k for k in missing if k not in ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias")]
        if missing or unexpected:
            raise LmvizError(f"AntiBERTy's checkpoint does not fit {type(model).__name__}: {missing + unexpected}")
        return model

    root.mkdir(parents=True, exist_ok=True)
    for name, folder in folders.items():
        model = build(name)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
        try:
            model.save_pretrained(staging, safe_serialization=True)
            tokenizer.save_pretrained(staging)
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(staging, folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    progress(f"AntiBERTy folders written under {root}.")
    return {name: str(folder) for name, folder in folders.items()}
