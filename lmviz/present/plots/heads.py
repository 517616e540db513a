"""Figures for the heads page: the embedding-neighbour grid, mask predictions, class scores
(results of lmviz.analyses.embeddings, masked_lm and classification)."""

from __future__ import annotations

import plotly.graph_objects as go

from lmviz.analyses.classification import Classification
from lmviz.analyses.embeddings import Neighbours
from lmviz.analyses.masked_lm import MaskPredictions
from lmviz.present.plots import HIGHLIGHT, KEPT_COLOUR, REMOVED_COLOUR, safe_label, style


def neighbours_figure(result: Neighbours, max_rows: int | None = None) -> go.Figure:
    """A (pos, k) grid: row = input token, column j = its j-th nearest token, colour = score.
    `max_rows` keeps only the first positions (a long text would make a very tall figure)."""
    n = len(result.tokens) if max_rows is None else min(max_rows, len(result.tokens))
    rows = [f"{i}: {safe_label(token)}" for i, token in enumerate(result.tokens[:n])]  # positions keep rows unique
    columns = [str(j + 1) for j in range(result.k)]
    text = [[safe_label(token) for token in row] for row in result.top_tokens[:n]]
    custom = [[[norm] for norm in row] for row in result.top_norms[:n].tolist()]
    score = "cosine" if result.metric == "cosine" else "dot product"
    figure = go.Figure(go.Heatmap(
        z=result.top_scores[:n].tolist(), x=columns, y=rows, text=text, texttemplate="%{text}",
        customdata=custom, colorscale="Blues", colorbar=dict(title=score),
        hovertemplate="%{y} → %{text}<br>" + score + " %{z:.3f}<br>|w| %{customdata[0]:.2f}<extra></extra>",
    ))
    figure.update_yaxes(autorange="reversed", type="category")
    figure.update_xaxes(title="neighbour rank", type="category")
    title = f"Nearest output embeddings by {score}" + ("" if result.tied else " (untied: output matrix ≠ input matrix)")
    return style(figure, title, height=120 + 40 * len(rows))


def mask_figure(result: MaskPredictions, mask: int) -> go.Figure:
    """Horizontal bars of the top-k probabilities at one mask, logits in the labels."""
    tokens = [safe_label(token) for token in result.top_tokens[mask]]
    probs = result.top_probs[mask].tolist()
    logits = result.top_logits[mask].tolist()
    figure = go.Figure(go.Bar(
        x=probs, y=[f"{j + 1}. {token}" for j, token in enumerate(tokens)], orientation="h",
        marker_color=[HIGHLIGHT] + [KEPT_COLOUR] * (len(probs) - 1),
        text=[f"p {p:.3f} · logit {l:.2f}" for p, l in zip(probs, logits)], textposition="auto",
        hovertemplate="%{y}: p = %{x:.4f}<extra></extra>",
    ))
    figure.update_yaxes(autorange="reversed", type="category")
    figure.update_xaxes(title="probability (softmax over the whole vocabulary)", range=[0, max(probs) * 1.15 or 1])
    position = int(result.mask_positions[mask])
    return style(figure, f"Mask at position {position}", height=140 + 36 * len(probs))


def classification_figure(result: Classification) -> go.Figure:
    """Logit and probability per label, label ids in order."""
    names = [f"{i}: {safe_label(label)}" for i, label in enumerate(result.labels)]
    colours = [HIGHLIGHT if i == result.predicted else REMOVED_COLOUR for i in range(len(names))]
    figure = go.Figure()
    figure.add_bar(x=names, y=result.probs.tolist(), marker_color=colours, name="probability",
                   text=[f"{p:.3f}" for p in result.probs.tolist()], textposition="auto",
                   customdata=result.logits.tolist(),
                   hovertemplate="%{x}<br>probability %{y:.4f}<br>logit %{customdata:.4f}<extra></extra>")
    figure.update_xaxes(type="category", title="label id: name (config.id2label)")
    figure.update_yaxes(title="softmax(logits)", range=[0, 1])
    return style(figure, "Which logit is which label", height=360)
