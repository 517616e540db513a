"""Result -> plotly Figure, one module per analysis (plots/lens.py, plots/sampling.py, …).

Figures are built here, not in the pages, so a notebook gets the same pictures.
Shared conventions live in this file: a projector-friendly font size, colours
for kept / removed / finished, and `safe_label`, which every token string must
pass through before it becomes plotly text (plotly renders a subset of HTML,
so a token such as "<b>" or "<|im_start|>" would otherwise be eaten).
"""

from __future__ import annotations

import html

import plotly.graph_objects as go

FONT_SIZE = 16  # readable on a projector from the back of a room
KEPT_COLOUR = "#3b5bdb"
REMOVED_COLOUR = "#ced4da"
FINISHED_COLOUR = "#2f9e44"
HIGHLIGHT = "#e8590c"


def safe_label(token: str) -> str:
    """A token string made safe for plotly text and hover labels (HTML-escaped)."""
    return html.escape(token, quote=False)


def style(figure: go.Figure, title: str | None = None, height: int | None = None) -> go.Figure:
    """Apply the shared look: large fonts, white background, tight margins."""
    figure.update_layout(
        title=title,
        font=dict(size=FONT_SIZE),
        template="plotly_white",
        margin=dict(l=10, r=10, t=60 if title else 20, b=10),
        hoverlabel=dict(font_size=FONT_SIZE),
    )
    if height:
        figure.update_layout(height=height)
    return figure


def standalone_html(figure: go.Figure) -> str:
    """The figure as one HTML file that works offline: plotly.js is inside (about 4.7 MB), no CDN."""
    return figure.to_html(include_plotlyjs=True, full_html=True, config={"displaylogo": False})


def cell_markers(n_rows: int, n_cols: int, hover: list[list[str]], prefix: tuple = ()) -> go.Scatter:
    """An invisible marker on every cell of a (row x column) grid, e.g. layer x head: plotly heatmaps report
    no clicks to a page, but a click selects the marker, whose customdata is [*prefix, row, column]."""
    cells = [(layer, head) for layer in range(n_rows) for head in range(n_cols)]
    return go.Scatter(
        x=[head for _, head in cells], y=[layer for layer, _ in cells], mode="markers", showlegend=False,
        marker=dict(symbol="square", size=18, opacity=0.0), customdata=[[*prefix, *cell] for cell in cells],
        hovertext=[text for row in hover for text in row], hoverinfo="text",
    )
