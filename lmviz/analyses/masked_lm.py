"""The masked-LM head of BERT (seed 001), its predictions and its loss.

dense -> activation -> LayerNorm -> a decoder whose weight is the input
embedding matrix, plus an output-only bias (`mlm_head_anatomy`,
`fill_mask`), and the MLM loss computed three ways that agree (`mlm_loss`):
BERT's original numerator / (denominator + 1e-5), CrossEntropyLoss with
ignore_index=-100, and the model's own labels= loss.

Shapes use the names pos (token position), vocab, d_model, pred (masked predictions), k.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lmviz.model import compute
from lmviz.forward import trace as tracing
from lmviz.analyses.embeddings import check_k
from lmviz.errors import LmvizError
from lmviz.model.models import LoadedModel
from lmviz.tokens import display_token, display_tokens

IGNORE_INDEX = -100  # the label CrossEntropyLoss skips (transformers' convention for unmasked tokens)


SEED_EPSILON = 1e-5  # BERT's run_pretraining.py adds this to the denominator of the MLM loss


# model_type -> where each part of the masked-LM head sits inside the head module
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
        with torch.inference_mode():
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
    k = check_k(k, lm.vocab_size)
    logits = tracing.logits(lm, t, positions)  # (mask, vocab)
    normaliser = torch.logsumexp(logits, dim=-1)  # (mask,)
    top = logits.topk(k, dim=-1)
    logprobs = top.values - normaliser[:, None]
    with lm.lock:
        cache: dict[int, str] = {}
        top_tokens = tuple(tuple(display_tokens(lm.tokenizer, row, cache)) for row in top.indices.tolist())
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


def mlm_loss(lm: LoadedModel, text: str, positions: Sequence[int], max_predictions: int | None = None) -> MlmLoss:
    """Mask `positions` of `text`'s tokens and compute the MLM loss the three ways of `MlmLoss`."""
    require_masked(lm)
    mask, mask_id = mask_token(lm)
    ids = tracing.encode(lm, text)
    limit = tracing.max_tokens(lm)
    if len(ids) > limit:
        raise tracing.too_long(lm, len(ids))
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
    with compute.slot(), torch.inference_mode():
        output = lm.model(input_ids=input_ids[None], labels=labels[None], output_hidden_states=True)
        sequence_output = output.hidden_states[-1][0]  # (pos, d_model)
        gathered = sequence_output[masked_positions]  # (pred, d_model)  gather_indexes
        head_logits = lm.head.logits(gathered)  # (pred, vocab)  the head on the gathered rows only
        top1 = head_logits.argmax(dim=-1)  # (pred,)
    with lm.lock:  # the tokenizer only
        tokens = tuple(display_tokens(lm.tokenizer, ids))
        top1_tokens = tuple(display_tokens(lm.tokenizer, top1.tolist()))
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
