"""Experiment figures: a patching grid (layer x position or layer x head), AtP against exhaustive
patching, the affected cone drawn over a logit-lens grid (the Patch-Lens view), and token knockout beside
a gradient estimate.

Grids are numeric heatmaps with layer 0 at the bottom and `cell_markers` on every cell, so a click picks
a cell ([layer, column] in its customdata).
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lmviz.analyses.patching import AttributionPatching, Patching
from lmviz.analyses.saliency import Knockout, Saliency
from lmviz.present.plots import HIGHLIGHT, cell_markers, safe_label, style

DIVERGING = "RdBu"  # blue: toward the clean run (or up), red: away from it; white: no effect
METRIC_LABELS = {"normalized": "restored (0 = corrupted, 1 = clean)", "logit_diff": "logit(answer) − logit(wrong)",
                 "prob": "p(answer)", "kl": "KL(clean ‖ patched), nats"}
METHOD_LABELS = {"gradient": "Gradient norm ‖∂F/∂e‖", "input_x_gradient": "Input × gradient",
                 "integrated_gradients": "Integrated gradients"}
SITE_LABELS = {"resid": "block inputs (residual stream)", "attn": "attention outputs", "mlp": "MLP outputs",
               "head": "heads"}


def column_labels(result: Patching) -> list[str]:
    if result.columns == "head":
        return head_labels(result.cells.logit_diff.shape[1])
    return [f"{position} {safe_label(token)}" for position, token in enumerate(result.tokens)]


def head_labels(n_heads: int) -> list[str]:
    return [f"H{head}" for head in range(n_heads)]


def grid(values: np.ndarray, labels: list[str], metric: str, title: str,
         selected: tuple[int, int] | None = None, clickable: bool = True) -> go.Figure:
    """One value per (layer, column): columns named by `labels` (heads "H0", … or positions), coloured around
    0 (normalized: 0 to 1 is the interesting range)."""
    heads = labels[0] == "H0"
    n_layers, n_columns = values.shape
    top = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0
    low, high = (-max(1.0, top), max(1.0, top)) if metric == "normalized" else (
        (0.0, top or 1.0) if metric in ("prob", "kl") else (-(top or 1.0), top or 1.0))
    hover = [[f"layer {layer}, {'head ' + labels[c] if heads else 'position ' + labels[c]}"
              f"<br>{METRIC_LABELS[metric]}: {values[layer, c]:.3f}" for c in range(n_columns)]
             for layer in range(n_layers)]
    figure = go.Figure(go.Heatmap(
        z=values, x=list(range(n_columns)), y=list(range(n_layers)), zmin=low, zmax=high, hoverinfo="skip",
        colorscale=DIVERGING if low < 0 else "Blues", xgap=1, ygap=1,
        colorbar=dict(title=dict(text=METRIC_LABELS[metric].replace(" (", "<br>(", 1), side="right"))))
    if clickable:
        figure.add_trace(cell_markers(n_layers, n_columns, hover))
    if selected is not None:
        figure.add_trace(go.Scatter(x=[selected[1]], y=[selected[0]], mode="markers", showlegend=False,
                                    hoverinfo="skip", marker=dict(symbol="square-open", size=22, color=HIGHLIGHT,
                                                                  line=dict(width=3, color=HIGHLIGHT))))
    figure.update_xaxes(tickvals=list(range(n_columns)), ticktext=labels, range=[-0.5, n_columns - 0.5],
                        tickangle=-45 if n_columns > 10 and not heads else 0, showgrid=False,
                        zeroline=False, title="head" if heads else "position")
    figure.update_yaxes(title="layer", dtick=max(1, n_layers // 15), range=[-0.5, n_layers - 0.5], showgrid=False,
                        zeroline=False)
    return style(figure, title, height=max(420, 18 * n_layers + 160))


def patching_grid(result: Patching, metric: str = "normalized", selected: tuple[int, int] | None = None) -> go.Figure:
    """Every cell of one patching experiment."""
    where = "" if result.position is None else f" at position {result.position}"
    how = "clean → corrupted" if result.mode == "denoise" else "corrupted → clean"
    return grid(result.values(metric), column_labels(result), metric,
                f"Patching {SITE_LABELS[result.site]}{where} ({how})", selected)


def attribution_grid(result: AttributionPatching) -> go.Figure:
    """AtP's estimate, on the same colour scale as the exhaustive grid beside it."""
    return grid(result.estimate, column_labels(result.exact), result.metric,
                f"AtP estimate — r = {result.correlation:.2f} with exact", clickable=False)


def attribution_scatter(result: AttributionPatching) -> go.Figure:
    """Estimate against exact value, one point per cell; on the diagonal the estimate is right."""
    exact = result.exact.values(result.metric)
    labels = column_labels(result.exact)
    n_layers, n_columns = exact.shape
    text = [f"layer {layer}, {labels[c]}" for layer in range(n_layers) for c in range(n_columns)]
    low = float(min(exact.min(), result.estimate.min()))
    high = float(max(exact.max(), result.estimate.max()))
    figure = go.Figure([
        go.Scatter(x=[low, high], y=[low, high], mode="lines", line=dict(color="#adb5bd", dash="dot"),
                   hoverinfo="skip", showlegend=False),
        go.Scatter(x=exact.ravel(), y=result.estimate.ravel(), mode="markers", text=text, showlegend=False,
                   marker=dict(size=8, color="#3b5bdb", opacity=0.7),
                   hovertemplate="%{text}<br>exact %{x:.3f}<br>AtP %{y:.3f}<extra></extra>")])
    figure.update_xaxes(title="exact (patching)")
    figure.update_yaxes(title="AtP estimate")
    return style(figure, f"Estimate vs exact ({len(text)} cells)", height=420)


def cone(figure: go.Figure, first_row: int, first_column: int, n_rows: int, n_columns: int) -> go.Figure:
    """Shade what one patch can change on a (layer x position) lens grid: its row and later ones, its
    column and later ones (rows and columns counted as the grid draws them, from 0)."""
    figure.add_shape(type="rect", x0=first_column - 0.5, x1=n_columns - 0.5, y0=first_row - 0.5, y1=n_rows - 0.5,
                     line=dict(color=HIGHLIGHT, width=5), fillcolor="rgba(232, 89, 12, 0.18)", layer="above")
    return figure


def token_scores(knockout: Knockout, estimate: Saliency) -> go.Figure:
    """Knockout (exact, top) and a gradient estimate (bottom) over the input tokens, x shared."""
    labels = [f"{position} {safe_label(token)}" for position, token in enumerate(estimate.tokens)]
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.12, subplot_titles=(
        "Knockout (exact): F(x) − F(x without the token)",
        f"{METHOD_LABELS[estimate.method]} (estimate)" + (
            "" if estimate.knockout_correlation is None else f" — rank correlation with knockout "
                                                              f"{estimate.knockout_correlation:.2f}")))
    exact = list(knockout.scores)
    figure.add_trace(go.Bar(x=labels[:len(exact)], y=exact, marker_color=["#3b5bdb" if v >= 0 else "#e03131"
                                                                           for v in exact],
                            hovertemplate="%{x}<br>%{y:.3f}<extra>knockout</extra>", showlegend=False), row=1, col=1)
    guessed = list(estimate.scores)
    figure.add_trace(go.Bar(x=labels, y=guessed, marker_color=["#748ffc" if v >= 0 else "#ff8787" for v in guessed],
                            hovertemplate="%{x}<br>%{y:.3f}<extra>estimate</extra>", showlegend=False), row=2, col=1)
    figure.update_xaxes(type="category", categoryorder="array", categoryarray=labels,
                        tickangle=-45 if len(labels) > 10 else 0)
    return style(figure, None, height=620)
