"""Attention and attribution figures: the layer x head overview, one head's pattern, one query's lines,
the parts of a logit by block and by head, and a distribution before and after an ablation.

The two clickable grids (the head overview and the heads' attribution) carry `cell_markers`: clicking a
cell selects its marker, whose `customdata` is [layer, head] (["head", layer, head] on the attribution grid).
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from lmviz.analyses.ablation import AblationResult
from lmviz.analyses.attention import AttentionResult
from lmviz.analyses.attribution import Attribution
from lmviz.present.plots import HIGHLIGHT, KEPT_COLOUR, REMOVED_COLOUR, cell_markers, safe_label, style

ATTN_COLOUR = KEPT_COLOUR
MLP_COLOUR = "#e8590c"
EMBED_COLOUR = "#868e96"
DIVERGING = "RdBu"  # red pushes the logit down, blue up; white is zero


def head_grid(result: AttentionResult, statistic: str, selected: tuple[int, int] | None = None) -> go.Figure:
    """Layers (rows, layer 0 at the bottom) x heads, coloured by one statistic; a ring marks `selected`."""
    values = result.stats[statistic].numpy()
    hover = [[f"L{layer}.H{head}<br>{statistic}: {values[layer, head]:.3f}" for head in range(result.n_heads)]
             for layer in range(result.n_layers)]
    figure = go.Figure(go.Heatmap(
        z=values, x=list(range(result.n_heads)), y=list(range(result.n_layers)), colorscale="Viridis",
        zmin=0.0, zmax=None if statistic == "entropy" else 1.0, hoverinfo="skip",
        colorbar=dict(title=dict(text=statistic, side="right"))))
    figure.add_trace(cell_markers(result.n_layers, result.n_heads, hover))
    if selected is not None:
        figure.add_trace(go.Scatter(x=[selected[1]], y=[selected[0]], mode="markers", showlegend=False,
                                    hoverinfo="skip", marker=dict(symbol="square-open", size=22, color=HIGHLIGHT,
                                                                  line=dict(width=3, color=HIGHLIGHT))))
    _grid_axes(figure, result.n_layers, result.n_heads)
    return style(figure, f"Heads by {statistic}", height=max(420, 22 * result.n_layers + 120))


def _grid_axes(figure: go.Figure, n_layers: int, n_heads: int) -> None:
    figure.update_xaxes(title="head", dtick=1, range=[-0.5, n_heads - 0.5], showgrid=False, zeroline=False)
    figure.update_yaxes(title="layer", dtick=max(1, n_layers // 15), range=[-0.5, n_layers - 0.5], showgrid=False,
                        zeroline=False)


def _token_labels(result: AttentionResult, positions) -> list[str]:
    return [f"{p} {safe_label(result.tokens[p])}" for p in positions]


def pattern(result: AttentionResult, layer: int, head: int) -> go.Figure:
    """One head's probabilities: the window's queries (rows) x keys (columns); causal, so the upper right is 0."""
    start, stop = result.queries
    values = result.pattern(layer, head).numpy()
    keys, queries = _token_labels(result, range(stop)), _token_labels(result, range(start, stop))
    figure = go.Figure(go.Heatmap(
        z=values, x=keys, y=queries, colorscale="Blues", zmin=0.0, zmax=1.0,
        hovertemplate="query %{y}<br>key %{x}<br>probability %{z:.4f}<extra></extra>",
        colorbar=dict(title=dict(text="probability", side="right"))))
    figure.update_yaxes(title="query (attends from)", autorange="reversed", type="category")
    figure.update_xaxes(title="key (attends to)", type="category", tickangle=-60)
    return style(figure, f"Layer {layer}, head {head}: where each query looks",
                 height=max(420, 24 * (stop - start) + 200))


def query_lines(result: AttentionResult, layer: int, head: int, query: int, floor: float = 0.01) -> go.Figure:
    """bertviz-style: the query's token on the right, every earlier token on the left, one line per key
    with width and opacity set by its probability (keys below `floor` are left out; the hover tells)."""
    row = result.row(layer, head, query).numpy()
    n = len(row)
    figure = go.Figure()
    for key in np.argsort(-row):
        p = float(row[key])
        if p < floor:
            break
        figure.add_trace(go.Scatter(
            x=[0, 1], y=[key, query], mode="lines", showlegend=False,
            line=dict(width=1 + 14 * p, color=f"rgba(59,91,219,{0.15 + 0.85 * p:.3f})"),
            hovertext=f"{safe_label(result.tokens[query])} → {safe_label(result.tokens[key])}: {p:.4f}",
            hoverinfo="text"))
    left = [f"{safe_label(result.tokens[k])}  {row[k]:.2f}" for k in range(n)]
    figure.add_trace(go.Scatter(x=[0] * n, y=list(range(n)), mode="text", text=left, textposition="middle left",
                                showlegend=False, hoverinfo="skip", textfont=dict(size=15)))
    figure.add_trace(go.Scatter(x=[1], y=[query], mode="text", text=[f"<b>{safe_label(result.tokens[query])}</b>"],
                                textposition="middle right", showlegend=False, hoverinfo="skip",
                                textfont=dict(size=17, color=HIGHLIGHT)))
    figure.update_xaxes(visible=False, range=[-0.9, 1.6])
    figure.update_yaxes(visible=False, autorange="reversed")
    return style(figure, f"Layer {layer}, head {head}: from position {query}", height=max(320, 26 * n + 90))


def attribution_bars(result: Attribution) -> go.Figure:
    """The logit's parts by layer: attention and MLP side by side, the embedding first. Clickable bars:
    customdata is [kind, layer]."""
    layers = list(range(result.n_layers))
    figure = go.Figure([
        go.Bar(x=["emb"], y=[result.embed], name="embedding", marker_color=EMBED_COLOUR,
               customdata=[["embed", -1]], hovertemplate="embedding: %{y:.4f}<extra></extra>"),
        go.Bar(x=[str(layer) for layer in layers], y=result.attn.tolist(), name="attention", marker_color=ATTN_COLOUR,
               customdata=[["attn", layer] for layer in layers],
               hovertemplate="attention, layer %{x}: %{y:.4f}<extra></extra>"),
        go.Bar(x=[str(layer) for layer in layers], y=result.mlp.tolist(), name="MLP", marker_color=MLP_COLOUR,
               customdata=[["mlp", layer] for layer in layers], hovertemplate="MLP, layer %{x}: %{y:.4f}<extra></extra>"),
    ])
    figure.update_layout(barmode="group", legend=dict(orientation="h", y=1.02, x=0, yanchor="bottom"),
                         clickmode="event+select")
    figure.update_xaxes(title="layer", type="category")
    figure.update_yaxes(title=f"part of the logit of '{safe_label(result.target_token)}'", zeroline=True)
    return style(figure, f"Which blocks wrote '{safe_label(result.target_token)}' (sum {result.total:.3f})",
                 height=460)


def head_attribution(result: Attribution) -> go.Figure:
    """Layers x heads, each head's part of the logit, on a diverging scale centred at zero."""
    values = result.heads.numpy()
    top = float(np.abs(values).max()) if values.size else 1.0
    top = top or 1.0
    n_layers, n_heads = values.shape
    hover = [[f"L{layer}.H{head}: {values[layer, head]:+.4f}" for head in range(n_heads)] for layer in range(n_layers)]
    figure = go.Figure(go.Heatmap(z=values, x=list(range(n_heads)), y=list(range(n_layers)), colorscale=DIVERGING,
                                  zmid=0.0, zmin=-top, zmax=top, hoverinfo="skip",
                                  colorbar=dict(title=dict(text="logit part", side="right"))))
    figure.add_trace(cell_markers(n_layers, n_heads, hover, prefix=("head",)))
    _grid_axes(figure, n_layers, n_heads)
    return style(figure, "Every head's part", height=max(420, 22 * n_layers + 120))


def ablation_bars(result: AblationResult) -> go.Figure:
    """Probabilities of the top tokens before and after the ablation (the union of both top lists)."""
    before = dict(zip(result.before_ids, result.before_probs)) | dict(zip(result.top_ids, result.before_of_after))
    after = dict(zip(result.top_ids, result.top_probs)) | dict(zip(result.before_ids, result.after_of_before))
    names = dict(zip(result.before_ids, result.before_tokens)) | dict(zip(result.top_ids, result.top_tokens))
    ids = list(dict.fromkeys([*result.before_ids[:8], *result.top_ids[:8]]))
    labels = [safe_label(names[i]) for i in ids]
    figure = go.Figure([
        go.Bar(x=labels, y=[before[i] for i in ids], name="before", marker_color=REMOVED_COLOUR,
               hovertemplate="%{x}: %{y:.4f} before<extra></extra>"),
        go.Bar(x=labels, y=[after[i] for i in ids], name="after", marker_color=ATTN_COLOUR,
               hovertemplate="%{x}: %{y:.4f} after<extra></extra>"),
    ])
    figure.update_layout(barmode="group", legend=dict(orientation="h", y=1.02, x=0, yanchor="bottom"))
    figure.update_xaxes(type="category")
    figure.update_yaxes(title="probability of the next token", rangemode="tozero")
    return style(figure, f"Next token with {result.component.label} {result.mode}-ablated (KL {result.kl:.3g} nats)",
                 height=420)
