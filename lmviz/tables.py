"""Results -> pandas tables with display column names: what the pages, the CLI and a notebook show.

The analysis modules compute; this module only arranges their numbers in rows
and names the columns for a reader ("nll (nats)", "p final", …). One section
per analysis, in the order of the pages.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from lmviz import beam, classification, compare, embeddings, lens, loss, masked_lm, sampling
from lmviz.errors import LmvizError
from lmviz.tokens import visible

# ---------------------------------------------------------------- lens


def lens_table(result: lens.LensResult, layer: int | None = None, position: int | None = None,
               values: str = "token", show_whitespace: bool = True):
    """The seed-style top-k table as a pandas DataFrame.

    layer=i (default: the last layer): rows = rank 0..k-1, columns = positions,
    like seed 004's `pd.DataFrame([[decode(x) for x in y] for y in topk]).T`.
    position=p: rows = layers 0..L, columns = rank, what one position looks like
    as it goes up the model. values: "token" (the text), "prob", "id", or
    "token+prob" ("·visit 0.231").
    """
    if values not in ("token", "prob", "id", "token+prob"):
        raise LmvizError("values must be one of: token, prob, id, token+prob.")
    if layer is not None and position is not None:
        raise LmvizError("Give a layer or a position, not both.")
    if position is not None:
        column = result.column(position)
        ids, probs = result.top_ids[:, column], result.top_probs[:, column]  # (layer+1, k)
        cells = _cells(result, ids, probs, values, show_whitespace)
        frame = pd.DataFrame(cells, index=pd.Index(range(result.n_layers + 1), name="layer"))
        frame.columns.name = "rank"
        return frame
    layer = result.check_layer(-1 if layer is None else layer)
    ids, probs = result.top_ids[layer], result.top_probs[layer]  # (pos, k)
    cells = _cells(result, ids, probs, values, show_whitespace)
    frame = pd.DataFrame(cells).T  # (k, pos): rows = rank, columns = position
    frame.columns = result.positions
    frame.index.name, frame.columns.name = "rank", "position"
    return frame


def lens_long_table(result: lens.LensResult):
    """Every (layer, position, rank) as one row, with that cell's statistics: for CSV export."""
    n_layers, n_pos, k = result.top_ids.shape
    layer = torch.arange(n_layers).view(-1, 1, 1).expand(n_layers, n_pos, k).reshape(-1)
    pos = torch.arange(n_pos).view(1, -1, 1).expand(n_layers, n_pos, k).reshape(-1)
    cell = lambda t: t.unsqueeze(-1).expand(n_layers, n_pos, k).reshape(-1).numpy()  # noqa: E731
    ids = result.top_ids.reshape(-1).tolist()
    next_tokens = [result.next_token(p) for p in result.positions]
    frame = pd.DataFrame({
        "layer": layer.numpy(),
        "position": pos.numpy() + result.first_position,
        "input_token": [result.tokens[p] for p in pos.tolist()],
        "next_token": [next_tokens[p] for p in pos.tolist()],
        "rank": torch.arange(k).repeat(n_layers * n_pos).numpy(),
        "token_id": ids,
        "token": [visible(result.pieces[i]) for i in ids],
        "prob": result.top_probs.reshape(-1).numpy(),
        "entropy": cell(result.entropy),
        "kl_to_final": cell(result.kl_to_final),
        "next_token_nll": cell(result.next_token_nll),
        "next_token_rank": cell(result.next_token_rank),
    })
    frame["normalized"] = result.normalized
    return frame


def watched_table(result: lens.LensResult, position: int):
    """(layer+1) rows: probability and rank of each watched token at one (text) position."""
    column = result.column(position)
    rows = []
    for j, token_id in enumerate(result.watched_ids):
        for layer in range(result.n_layers + 1):
            rows.append({
                "layer": layer,
                "token": visible(result.pieces[token_id]),
                "token_id": token_id,
                "prob": float(result.watched_probs[layer, column, j]),
                "rank": int(result.watched_ranks[layer, column, j]),
            })
    return pd.DataFrame(rows, columns=["layer", "token", "token_id", "prob", "rank"])


def _cells(result: lens.LensResult, ids: torch.Tensor, probs: torch.Tensor, values: str,
           show_whitespace: bool) -> list[list]:
    if values == "id":
        return ids.tolist()
    if values == "prob":
        return probs.tolist()
    names = [[result.token(i, show_whitespace) for i in row] for row in ids.tolist()]
    if values == "token":
        return names
    return [[f"{name} {p:.3f}" for name, p in zip(row, prow)] for row, prow in zip(names, probs.tolist())]


# ---------------------------------------------------------------- sampling


def distribution_table(dist: sampling.Distribution, labels: list[str] | None = None):
    """The rows of a distribution as a pandas DataFrame (labels: display strings, one per row)."""
    frame = pd.DataFrame({
        "rank": dist.rank.tolist(),
        "id": dist.token_ids.tolist(),
        "logit": dist.logits.tolist(),
        "p (model, T=1)": dist.model_probs.tolist(),
        "log p (model)": dist.model_logprobs.tolist(),
        "p after T": dist.tempered_probs.tolist(),
        "p final": dist.probs.tolist(),
        "log p final": dist.logprobs.tolist(),
        "status": dist.status(),
    })
    if labels is not None:
        frame.insert(1, "token", labels)
    return frame


def toy_table(toy: sampling.ToyTable, shifted: bool = False):
    """The lecture's table as a DataFrame of strings: a row x (or x + shift), then one row per
    temperature, σ_T(x) written like the slides (.0321); one column per logit."""
    x = toy.logits + toy.shift if shifted else toy.logits
    probs = toy.shifted_probs if shifted else toy.probs
    columns = [str(i + 1) for i in range(x.numel())]
    rows = {("x + c" if shifted else "x"): [f"{v:g}" for v in x.tolist()]}
    for t, row in zip(toy.temperatures, probs.tolist()):
        name = f"σ_{t:g}(x + c)" if shifted else f"σ_{t:g}(x)"
        rows[name + (" greedy" if t == 0 else "")] = [sampling.lecture_number(v) for v in row]
    return pd.DataFrame.from_dict(rows, orient="index", columns=columns)


# ---------------------------------------------------------------- beam


def final_table(tree: beam.BeamTree):
    """The returned hypotheses, best first, as a DataFrame (whitespace made visible)."""
    from lmviz.tokens import visible

    return pd.DataFrame([
        {
            "rank": rank + 1,
            "continuation": visible("".join(h.tokens)),
            "tokens": h.length,
            "ended": h.ended,
            "log-prob (sum)": h.logprob,
            f"score = log-prob / tokens^{tree.length_penalty:g}": h.score,
        }
        for rank, h in enumerate(tree.final)
    ])


def comparison_table(tree: beam.BeamTree, greedy_run: beam.Continuation, sampled: beam.Continuation):
    """Greedy, the beam search winner and a sampled continuation side by side, scored alike."""
    from lmviz.tokens import visible

    best = tree.final[0]
    lp = tree.length_penalty
    rows = [
        ("greedy", greedy_run.tokens, greedy_run.logprob, greedy_run.ended),
        (f"beam search ({tree.num_beams} beams), #1", best.tokens, best.logprob, best.ended),
        (f"sampling (seed {sampled.seed})", sampled.tokens, sampled.logprob, sampled.ended),
    ]
    return pd.DataFrame([
        {
            "method": method,
            "continuation": visible("".join(tokens)),
            "tokens": len(tokens),
            "ended": ended,
            "log-prob (sum)": logprob,
            "per token": logprob / len(tokens),
            f"score (length penalty {lp:g})": logprob / (len(tokens) ** lp),
        }
        for method, tokens, logprob, ended in rows
    ])


# ---------------------------------------------------------------- loss


def loss_table(report: loss.LossReport):
    """One row per token (the first, unscored, included) as a pandas DataFrame."""
    n = report.n_tokens
    nan = [float("nan")]
    frame = pd.DataFrame({
        "position": range(n),
        "token": report.tokens,
        "id": report.input_ids.tolist(),
        "nll (nats)": nan + report.nll.tolist(),
        "surprisal (bits)": nan + report.surprisal_bits.tolist(),
        "probability": nan + report.probs.tolist(),
        "rank": [None] + report.rank.tolist(),
        "top-1 correct": [None] + report.correct.tolist(),
        "model's top guess": [""] + list(report.top_tokens),
        "p(top guess)": nan + report.top_probs.tolist(),
        "context": [0] + report.context.tolist(),
        "window": [None] + report.window_of.tolist(),
    })
    frame["rank"] = frame["rank"].astype("Int64")
    frame["window"] = frame["window"].astype("Int64")
    frame["top-1 correct"] = frame["top-1 correct"].astype("boolean")
    return frame


def layer_loss_table(result: loss.LayerLoss):
    layers = list(range(result.n_layers + 1))
    return pd.DataFrame({
        "layer": layers,
        "name": ["embeddings"] + [f"layer {i}" for i in layers[1:-1]] + [f"layer {result.n_layers} (output)"],
        "cross-entropy (nats)": result.mean_nll.tolist(),
        "bits per token": (result.mean_nll / loss.LN2).tolist(),
        "perplexity": result.perplexity.tolist(),
    })


def context_table(curve: loss.ContextCurve):
    return pd.DataFrame({
        "window length": curve.lengths, "stride": curve.strides, "mean context": curve.mean_context,
        "cross-entropy (nats)": curve.mean_nll, "perplexity": curve.perplexity,
    })


@dataclass(frozen=True)
class Metric:
    """One aggregate with the formula that produces it (LaTeX) and a sentence that explains it."""

    key: str
    label: str
    value: float
    formula: str
    note: str


def loss_metrics(report: loss.LossReport) -> list[Metric]:
    """The aggregates, each with its formula, in teaching order."""
    items = [
        Metric("scored", "Tokens scored", report.scored, r"N = \text{tokens} - 1",
               "Every token after the first; the first has no context to predict it from."),
        Metric("accuracy", "Accuracy", report.accuracy,
               r"\frac{1}{N}\sum_i [\arg\max_v p(v \mid x_{<i}) = x_i]",
               "How often the model's top guess was the actual next token."),
        Metric("log_likelihood", "Log-likelihood", report.log_likelihood, r"\sum_i \ln p(x_i \mid x_{<i})",
               "The log of the probability of the whole text, in nats. Summing logs avoids the underflow "
               "of multiplying thousands of small probabilities."),
        Metric("mean_nll", "Mean NLL = H", report.mean_nll,
               r"H = -\frac{1}{N}\sum_i \ln p(x_i \mid x_{<i})",
               "Nats per token. With one-hot targets, cross-entropy is exactly the mean negative "
               "log-likelihood: the training loss."),
        Metric("perplexity", "Perplexity (base e)", report.perplexity, r"\mathrm{PPL} = e^{H}",
               "As uncertain as a uniform choice among this many tokens."),
        Metric("perplexity_base2", "Perplexity (base 2)", report.perplexity_base2,
               r"2^{H_2},\quad H_2 = -\frac{1}{N}\sum_i \log_2 p(x_i \mid x_{<i}) = H / \ln 2",
               "The same number: the base cancels out, as long as the log and the power share it."),
        Metric("bits_per_token", "Bits per token", report.bits_per_token, r"H_2 = H / \ln 2",
               "Cross-entropy in bits."),
        Metric("bits_per_byte", "Bits per byte", report.bits_per_byte,
               r"\frac{-\sum_i \log_2 p(x_i \mid x_{<i})}{\text{UTF-8 bytes}}",
               f"Total bits over the {report.n_bytes:,} bytes the scored tokens cover: does not depend on "
               "how the tokenizer cuts the text, so models with different vocabularies compare fairly."),
        Metric("word_perplexity", "Perplexity per word", report.word_perplexity,
               r"e^{-\sum_i \ln p(x_i \mid x_{<i}) / \text{words}}",
               f"The same total over the {report.n_words:,} words the scored tokens touch instead of the tokens."),
    ]
    if report.model_loss is not None:
        items.append(Metric("model_loss", "labels= loss", report.model_loss,
                            r"\texttt{model(ids, labels=ids).loss}",
                            "The loss transformers computes itself, over the same scored tokens: it must "
                            f"equal the mean NLL (difference {abs(report.model_loss - report.mean_nll):.1e})."))
    return items


# ---------------------------------------------------------------- compare


def word_comparison_table(comparison: compare.ModelComparison):
    """One row per word."""
    return pd.DataFrame({
        "word": [visible(w) for w in comparison.words],
        "tokens A": comparison.tokens_per_word_a.tolist(),
        "tokens B": comparison.tokens_per_word_b.tolist(),
        "nll A (nats)": comparison.nll_a.tolist(),
        "nll B (nats)": comparison.nll_b.tolist(),
        "B - A (nats)": comparison.diff.tolist(),
        "compared": comparison.both.tolist(),
    })


def token_comparison_table(comparison: compare.ModelComparison):
    """One row per scored token, when both models use the same tokens (else None)."""
    if not comparison.same_tokens:
        return None
    return pd.DataFrame({
        "position": range(1, len(comparison.tokens)),
        "token": comparison.tokens[1:],
        "nll A (nats)": comparison.token_nll_a.tolist(),
        "nll B (nats)": comparison.token_nll_b.tolist(),
        "B - A (nats)": (comparison.token_nll_b - comparison.token_nll_a).tolist(),
    })


# ---------------------------------------------------------------- embeddings


def neighbours_table(result: embeddings.Neighbours):
    """The seed's table: one row per input token, its k nearest tokens in columns 1..k."""
    frame = pd.DataFrame(list(result.top_tokens), columns=[str(j + 1) for j in range(result.k)])
    frame.insert(0, "token", list(result.tokens))
    frame.insert(1, "own rank", result.self_rank.tolist())
    frame.insert(2, "|e|", result.input_norms.tolist())
    return frame


# ---------------------------------------------------------------- masked_lm


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


# ---------------------------------------------------------------- classification


def classification_table(result: classification.Classification):
    """One row per label, in id order: label id i, its name, logit i, probability, loss if true."""
    frame = pd.DataFrame({"id": range(len(result.labels)), "label": list(result.labels),
                          "logit": result.logits.tolist()})
    if result.logits_by_hand is not None:
        frame["pooled @ W.T + b"] = result.logits_by_hand.tolist()
    frame["probability"] = result.probs.tolist()
    frame["loss if this label were true"] = result.loss_per_label.tolist()
    return frame
