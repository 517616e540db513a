"""Embedding neighbours, masked-LM predictions and loss, classifier scores."""

from __future__ import annotations

import pandas as pd

from lmviz.analyses import classification, embeddings, masked_lm


def neighbours_table(result: embeddings.Neighbours):
    """The seed's table: one row per input token, its k nearest tokens in columns 1..k."""
    frame = pd.DataFrame(list(result.top_tokens), columns=[str(j + 1) for j in range(result.k)])
    frame.insert(0, "token", list(result.tokens))
    frame.insert(1, "own rank", result.self_rank.tolist())
    frame.insert(2, "|e|", result.input_norms.tolist())
    return frame

def mask_table(result: masked_lm.MaskPredictions, mask: int):
    """The top-k table at mask number `mask` (0-based, in text order)."""
    return pd.DataFrame({
        "token": list(result.top_tokens[mask]),
        "id": result.top_ids[mask].tolist(),
        "logit": result.top_logits[mask].tolist(),
        "probability": result.top_probs[mask].tolist(),
        "log-probability": result.top_logprobs[mask].tolist(),
    })


def mlm_loss_table(result: masked_lm.MlmLoss):
    """The seed's per-prediction table, padding rows included."""
    return pd.DataFrame({
        "masked_lm_position": result.positions.tolist(),
        "true token": [result.tokens[p] if w > 0 else "(padding)"
                       for p, w in zip(result.positions.tolist(), result.label_weights.tolist())],
        "masked_lm_id": result.label_ids.tolist(),
        "label_weight": result.label_weights.tolist(),
        "per_example_loss": result.per_example_loss.tolist(),
        "p(true token)": result.per_example_loss.neg().exp().tolist(),
        "model's top guess": list(result.top1_tokens),
    })

def classification_table(result: classification.Classification):
    """One row per label, in id order: label id i, its name, logit i, probability, loss if true."""
    frame = pd.DataFrame({"id": range(len(result.labels)), "label": list(result.labels),
                          "logit": result.logits.tolist()})
    if result.logits_by_hand is not None:
        frame["pooled @ W.T + b"] = result.logits_by_hand.tolist()
    frame["probability"] = result.probs.tolist()
    frame["loss if this label were true"] = result.loss_per_label.tolist()
    return frame
