"""Logit-lens figures: the (layer x position) heatmap and watched-token trajectories.

Both take a `LensResult` and return a plotly Figure; every token string goes
through `safe_label` before it becomes plotly text.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import plotly.graph_objects as go

from lmviz.analyses.lens import STATISTICS, LensResult
from lmviz.present.plots import FONT_SIZE, safe_label, style

PROB_FLOOR = 1e-10  # watched-token probabilities below this are drawn at it (the hover shows the true value)
CELL_CHARS = 9  # longest token label written inside a heatmap cell (the hover shows it whole)
COLOURS = ["#3b5bdb", "#e8590c", "#2f9e44", "#ae3ec9", "#1098ad", "#f08c00", "#c2255c", "#5c940d"]


def _short(token: str) -> str:
    return token if len(token) <= CELL_CHARS else token[: CELL_CHARS - 1] + "…"


def position_labels(result: LensResult, positions: Sequence[int]) -> list[str]:
    """'3 ·plan': the text position and its input token (escaped), unique per column."""
    return [f"{p} {safe_label(result.input_token(p))}" for p in positions]


def layer_labels(result: LensResult, layers: Sequence[int]) -> list[str]:
    return [result.layer_label(layer) for layer in layers]


def heatmap(result: LensResult, statistic: str, positions: Sequence[int], layers: Sequence[int],
            hover_k: int = 5, height: int | None = None) -> go.Figure:
    """Layers (rows, embeddings at the bottom) x positions (columns), coloured by `statistic`.

    Each cell is labelled with that layer's top-1 token at that position (bold
    when it is the actual next token); the hover lists the top `hover_k`.
    """
    label, lower_is_better = STATISTICS[statistic]
    columns = [result.column(p) for p in positions]
    values = result.statistic(statistic)[list(layers)][:, columns].numpy().astype(float)  # (rows, cols)
    colour = values
    colorbar: dict = {"title": {"text": label.replace(" (", "<br>(", 1), "side": "right"}}
    zmin = zmax = None
    if statistic == "next_token_rank":  # ranks span 0 .. vocab: colour by log10(rank + 1)
        colour = np.log10(values + 1)
        top = max(1, math.ceil(np.nanmax(colour)) if np.isfinite(colour).any() else 1)
        colorbar.update(tickvals=[math.log10(10**i + 1) if i else 0 for i in range(top + 1)],
                        ticktext=["0"] + [f"{10**i:,}" for i in range(1, top + 1)])
    elif statistic in ("top1_prob", "next_token_prob"):
        zmin, zmax = 0.0, 1.0
    next_ids = result.next_ids[columns].tolist()
    k = min(hover_k, result.k)
    top_ids = result.top_ids[list(layers)][:, columns, :k].tolist()  # (rows, cols, k)
    top_probs = result.top_probs[list(layers)][:, columns, :k].tolist()
    text, hover = [], []
    for r, layer in enumerate(layers):
        text_row, hover_row = [], []
        for c, p in enumerate(positions):
            ids, probs = top_ids[r][c], top_probs[r][c]
            first = safe_label(_short(result.token(ids[0])))
            text_row.append(f"<b>{first}</b>" if ids[0] == next_ids[c] else first)
            following = result.next_token(p)
            following = "—" if following is None else safe_label(following)
            value = values[r, c]
            shown_value = "—" if not math.isfinite(value) else (f"{value:,.0f}" if statistic == "next_token_rank"
                                                                 else f"{value:.4g}")
            lines = [f"<b>layer {safe_label(result.layer_label(layer))}</b>, position {p}",
                     f"after {safe_label(result.input_token(p))} (actual next: {following})",
                     f"{label}: {shown_value}"]
            lines += [f"{i + 1}. {safe_label(result.token(t))}  {q:.3f}" for i, (t, q) in enumerate(zip(ids, probs))]
            hover_row.append("<br>".join(lines))
        text.append(text_row)
        hover.append(hover_row)
    figure = go.Figure(go.Heatmap(
        z=colour, x=position_labels(result, positions), y=layer_labels(result, layers),
        text=text, texttemplate="%{text}", textfont={"size": FONT_SIZE - 4},
        customdata=hover, hovertemplate="%{customdata}<extra></extra>",
        colorscale="Viridis", reversescale=lower_is_better, zmin=zmin, zmax=zmax, colorbar=colorbar,
        xgap=1, ygap=1,
    ))
    figure.update_xaxes(type="category", tickangle=-45 if len(positions) > 10 else 0,
                        title={"text": "input token (each cell predicts the token after it)"})
    figure.update_yaxes(type="category", title={"text": "layer"})
    mode = "normalized" if result.normalized else "raw: no final norm"
    style(figure, title=f"Top-1 prediction of every layer — colour: {label} ({mode})",
          height=height or max(360, 200 + 26 * len(layers)))
    return figure


def trajectories(result: LensResult, position: int, value: str = "prob") -> go.Figure:
    """Probability (log axis) or rank of each watched token at one (text) position, layer by layer."""
    column = result.column(position)
    position = result.positions[column]
    layers = list(range(result.n_layers + 1))
    figure = go.Figure()
    for j, token_id in enumerate(result.watched_ids):
        name = safe_label(result.token(token_id))
        if value == "rank":
            ys = (result.watched_ranks[:, column, j] + 1).tolist()  # 1 = top-1, for the log axis
            hover = "layer %{x}<br>rank %{customdata:,}<extra>" + name + "</extra>"
            custom = result.watched_ranks[:, column, j].tolist()
        else:
            custom = result.watched_probs[:, column, j].tolist()
            ys = [max(p, PROB_FLOOR) for p in custom]  # p can be 1e-40 at layer 0; keep the axis readable
            hover = "layer %{x}<br>p = %{customdata:.4g}<extra>" + name + "</extra>"
        figure.add_trace(go.Scatter(x=layers, y=ys, mode="lines+markers", name=name, customdata=custom,
                                    hovertemplate=hover, line={"color": COLOURS[j % len(COLOURS)], "width": 3}))
    if value == "rank":
        figure.update_yaxes(type="log", autorange="reversed", dtick=1, title={"text": "rank + 1 (1 = top-1, log scale)"})
    else:
        figure.update_yaxes(type="log", range=[math.log10(PROB_FLOOR), 0.05], dtick=1,
                            title={"text": f"probability (log; below {PROB_FLOOR:.0e} at the floor)"})
    figure.update_xaxes(title={"text": "layer (0 = embeddings)"}, tickmode="linear", dtick=max(1, len(layers) // 15))
    after = safe_label(result.input_token(position))
    style(figure, title=f"Watched tokens after position {position} ({after}), layer by layer", height=420)
    return figure

