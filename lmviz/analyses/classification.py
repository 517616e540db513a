"""A classification head (seed 002): logits -> softmax -> labels, and the loss for each label.

One linear layer on a pooled hidden state; row i of its weight matrix makes
logit i, which is label i of `config.id2label` (`classify`). For any other
model, a linear head on its pooled hidden state: random like nn.Linear
(`random_head`) or fitted to a few labelled sentences (`fit_head`).
The scores are logits: unnormalized, unitless numbers, one per class (seed 000).

Shapes use the names pos (token position), d_model, label.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lmviz.model import compute
from lmviz.forward import trace as tracing
from lmviz.forward.cache import cached
from lmviz.errors import LmvizError
from lmviz.model.models import LoadedModel

POOLINGS = ("last", "mean", "first")


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
        raise tracing.too_long(lm, len(ids))
    input_ids = torch.tensor([ids])
    pooled = weight = bias = by_hand = None
    pooling = "unknown to lmviz for this architecture (the model's logits are shown as they are)"
    with compute.slot(), torch.inference_mode():
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
