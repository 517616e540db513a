"""Loss and perplexity per token, per layer and per context length; two models compared."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from lmviz.analyses import compare, loss
from lmviz.tokens import visible


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
