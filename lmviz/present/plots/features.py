"""Feature figures: a text's strongest SAE latents over its tokens, one latent across the text, and a
latent's or a neuron's max-activating contexts (HTML).

The grid is a heatmap with `cell_markers` on every cell, so a click picks a latent and a position
([row, position] in its customdata; the row's latent is `shown_latents(...)[row]`).
"""

from __future__ import annotations

import html

import plotly.graph_objects as go
import torch

from lmviz.analyses.contexts import Contexts
from lmviz.analyses.features import Features
from lmviz.present.plots import HIGHLIGHT, KEPT_COLOUR, cell_markers, safe_label, style

SHOWN = 16  # latents in the grid


def shown_latents(result: Features, n: int = SHOWN, keep: int | None = None) -> list[int]:
    """The latents the grid shows: by their largest activation on this text (position 0, the attention sink,
    left out), strongest first; `keep` (the chosen latent) is always among them."""
    peaks = result.activations[1:].amax(0) if result.n_tokens > 1 else result.activations.amax(0)
    order = [int(i) for i in torch.argsort(peaks, descending=True, stable=True)[:n] if peaks[i] > 0]
    if keep is not None and keep not in order:
        order = order[:n - 1] + [keep]
    return order


def feature_grid(result: Features, latents: list[int], selected: tuple[int, int] | None = None,
                 names: dict[int, str] | None = None) -> go.Figure:
    """Activation of each of `latents` (rows, strongest on top) at each token (columns); `names`: a short
    label per latent (the token its corpus contexts peak on), shown beside its number."""
    labels = [f"{p} {safe_label(t)}" for p, t in enumerate(result.tokens)]
    z = result.activations[:, latents].T.numpy() if latents else [[0.0] * result.n_tokens]
    rows = [f"#{latent} {safe_label((names or {}).get(latent, ''))}".strip() for latent in latents]
    hover = [[f"latent {latent}, position {p} {safe_label(result.tokens[p])}<br>activation {float(z[r][p]):.2f}"
              for p in range(result.n_tokens)] for r, latent in enumerate(latents)]
    figure = go.Figure(go.Heatmap(z=z, x=list(range(result.n_tokens)), y=list(range(len(latents))), zmin=0,
                                  colorscale="Oranges", xgap=1, ygap=1, hoverinfo="skip",
                                  colorbar=dict(title=dict(text="activation", side="right"))))
    figure.add_trace(cell_markers(len(latents), result.n_tokens, hover))
    if selected is not None and selected[0] in latents:
        figure.add_trace(go.Scatter(x=[selected[1]], y=[latents.index(selected[0])], mode="markers",
                                    showlegend=False, hoverinfo="skip",
                                    marker=dict(symbol="square-open", size=22, color=HIGHLIGHT,
                                                line=dict(width=3, color=HIGHLIGHT))))
    figure.update_xaxes(tickvals=list(range(result.n_tokens)), ticktext=labels, tickangle=-45 if result.n_tokens > 8
                        else 0, range=[-0.5, result.n_tokens - 0.5], showgrid=False, zeroline=False)
    figure.update_yaxes(tickvals=list(range(len(latents))), ticktext=rows, autorange="reversed", showgrid=False,
                        zeroline=False, title="latent")
    return style(figure, f"The {len(latents)} strongest latents of {safe_label(result.sae_name)} on this text",
                 height=max(360, 26 * len(latents) + 200))


def latent_across_text(result: Features, latent: int) -> go.Figure:
    """One latent's activation at every token of the text."""
    values = result.activations[:, latent].tolist()
    labels = [f"{p} {safe_label(t)}" for p, t in enumerate(result.tokens)]
    figure = go.Figure(go.Bar(x=list(range(result.n_tokens)), y=values, marker_color=KEPT_COLOUR,
                              hovertext=[f"{label}: {v:.2f}" for label, v in zip(labels, values)], hoverinfo="text"))
    figure.update_xaxes(tickvals=list(range(result.n_tokens)), ticktext=labels, tickangle=-45 if result.n_tokens > 8
                        else 0)
    figure.update_yaxes(title="activation", rangemode="tozero")
    return style(figure, f"Latent #{latent} across the text", height=300)


def contexts_html(contexts: Contexts, limit: int | None = None) -> str:
    """The contexts as lines of tokens, each shaded by the latent's activation there (orange: the strongest in
    that line); every token HTML-escaped, whitespace made visible as the tables show it."""
    lines = []
    for context in contexts.contexts[:limit]:
        top = max(context.activations) or 1.0
        spans = []
        for i, (token, value) in enumerate(zip(context.tokens, context.activations)):
            share = max(0.0, value / top)
            weight = "font-weight:700;" if i == context.peak else ""
            spans.append(f'<span title="{value:.2f}" style="background:rgba(232,89,12,{0.85 * share:.2f});'
                         f'{weight}border-radius:3px;padding:0 1px">{html.escape(token, quote=False)}</span>')
        lines.append(f'<div style="font-family:monospace;margin:2px 0;white-space:nowrap;overflow-x:auto">'
                     f'<span style="color:#868e96">{max(context.activations):5.1f}</span> {"".join(spans)}</div>')
    return "".join(lines)
