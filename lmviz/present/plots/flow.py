"""The information-flow graph: tokens along the bottom, layers upward, one line per edge.

Every node is a state of the residual stream (`lmviz.analyses.flow.Node`): drawn at height `layer` where a
block reads it and `layer + ½` inside a block, after its attention. In each block's lower half the
attention's edges fan in from the tokens they read (blue), beside the residual carried straight up (grey);
in its upper half the MLP's edge (orange, a little to the right) runs beside the residual again. Width
and opacity grow with importance.

To stay legible at 40 tokens × 30 layers the figure prunes and aggregates: it draws only positions up to
the chosen one (nothing after it can reach it), merges edges into one trace per colour and width step, and
hovers one marker in the middle of each edge ("heads that carry it, by share" for attention). A click on
a node selects its marker, whose `customdata` is [layer, position, mid (0 or 1)].
"""

from __future__ import annotations

from collections import defaultdict

import plotly.graph_objects as go

from lmviz.analyses.flow import HEAD_FLOOR, Edge, Flow, Node
from lmviz.present.plots import HIGHLIGHT, KEPT_COLOUR, safe_label, style

COLOURS = {"attn": KEPT_COLOUR, "resid": "#909aa3", "mlp": "#f08c00"}
LABELS = {"attn": "attention (token → token)", "resid": "residual (carried past)", "mlp": "MLP"}
WIDEST = {"attn": 9.0, "resid": 3.5, "mlp": 7.0}  # px at importance 1: the residual is the backdrop
BEND = 0.2  # positions: an MLP edge bends out right of the residual, a token's attention to itself left
WIDTH_STEPS = 8  # edges are drawn in this many widths
HEADS_SHOWN = 4


def _path(edge: Edge) -> tuple[list[float], list[float]]:
    """The points an edge is drawn through: straight, or bent beside the residual (MLP right, self-attention
    left) so that it does not hide behind it."""
    source, target = edge.source, edge.target
    x0, y0, x1, y1 = source.position, source.height, target.position, target.height
    if edge.kind == "mlp" or (edge.kind == "attn" and x0 == x1):
        bend = BEND if edge.kind == "mlp" else -BEND
        return [x0, x0 + bend, x1 + bend, x1], [y0, y0 + 0.12, y1 - 0.12, y1]
    return [x0, x1], [y0, y1]


def _hover(result: Flow, edge: Edge) -> str:
    token = lambda p: f"{p} '{safe_label(result.tokens[p])}'"  # noqa: E731
    where = {"attn": f"block {edge.layer}'s attention: {token(edge.from_pos)} → {token(edge.to_pos)}",
             "mlp": f"block {edge.layer}'s MLP at {token(edge.to_pos)}",
             "resid": f"residual at {token(edge.to_pos)} past block {edge.layer}'s "
                      f"{'attention' if edge.sublayer == 'attn' else 'MLP'}"}[edge.kind]
    text = f"{where}<br>importance {edge.importance:.3f}"
    if edge.kind == "attn":
        if edge.heads:
            shown = ", ".join(f"H{h} {share:.0%}" for h, share in edge.heads[:HEADS_SHOWN])
            more = f" (+{len(edge.heads) - HEADS_SHOWN} more)" if len(edge.heads) > HEADS_SHOWN else ""
            text += f"<br>heads by share: {shown}{more}"
        else:
            text += f"<br>(heads are kept for edges ≥ {HEAD_FLOOR:g} only)"
    return text


def graph(result: Flow, selected: Node | None = None, height: int | None = None) -> go.Figure:
    """The flow graph of `result` (see the module docstring); a ring marks the `selected` node."""
    figure = go.Figure()
    lines: dict[tuple[str, int], tuple[list, list]] = defaultdict(lambda: ([], []))
    for edge in result.edges:
        xs, ys = _path(edge)
        step = max(1, round(edge.importance * WIDTH_STEPS))
        lines[edge.kind, step][0].extend(xs + [None])
        lines[edge.kind, step][1].extend(ys + [None])
    shown = set()
    for (kind, step), (xs, ys) in sorted(lines.items(), key=lambda item: (item[0][0] != "resid", item[0][1])):
        figure.add_trace(go.Scattergl(
            x=xs, y=ys, mode="lines", hoverinfo="skip", name=LABELS[kind], legendgroup=kind,
            showlegend=kind not in shown, opacity=0.4 + 0.6 * step / WIDTH_STEPS,
            line=dict(color=COLOURS[kind], width=0.8 + (WIDEST[kind] - 0.8) * step / WIDTH_STEPS)))
        shown.add(kind)
    hovered = [edge for edge in result.edges if edge.kind != "resid"]  # a residual's hover would hide its node's
    middles = [(sum(xs[1:-1] or xs) / len(xs[1:-1] or xs), sum(ys) / len(ys)) for xs, ys in map(_path, hovered)]
    figure.add_trace(go.Scatter(
        x=[x for x, _ in middles], y=[y for _, y in middles], mode="markers", showlegend=False,
        marker=dict(size=8, color=[COLOURS[edge.kind] for edge in hovered], opacity=0.0),
        hovertext=[_hover(result, edge) for edge in hovered], hoverinfo="text"))
    busy = {node for edge in result.edges if edge.kind != "resid" for node in (edge.source, edge.target)}
    nodes = list(result.nodes)
    figure.add_trace(go.Scatter(
        x=[node.position for node in nodes], y=[node.height for node in nodes], mode="markers", showlegend=False,
        marker=dict(size=[8 if node in busy else 4 for node in nodes], color="white",
                    line=dict(width=[1.5 if node in busy else 1.0 for node in nodes], color="#495057")),
        customdata=[[node.layer, node.position, int(node.mid)] for node in nodes],
        hovertext=[_node_hover(result, node) for node in nodes], hoverinfo="text"))
    if selected is not None:
        figure.add_trace(go.Scatter(x=[selected.position], y=[selected.height], mode="markers", showlegend=False,
                                    hoverinfo="skip", marker=dict(symbol="circle-open", size=18, color=HIGHLIGHT,
                                                                  line=dict(width=3, color=HIGHLIGHT))))
    positions = list(range(result.position + 1))
    figure.update_xaxes(tickvals=positions, ticktext=[safe_label(result.tokens[p]) for p in positions],
                        tickangle=-45 if len(positions) > 24 else 0, range=[-0.6, result.position + 0.6],
                        showgrid=False, zeroline=False)
    step = 1 if result.n_layers <= 12 else 2 if result.n_layers <= 32 else 4
    rows = list(range(0, result.n_layers, step)) + [result.n_layers]
    figure.update_yaxes(tickvals=rows, ticktext=[_layer_label(layer, result.n_layers) for layer in rows],
                        range=[-0.5, result.n_layers + 0.5], showgrid=True, gridcolor="#f1f3f5", zeroline=False)
    title = (f"What flowed into '{safe_label(result.tokens[result.position])}' (position {result.position}): "
             f"edges ≥ {result.threshold:g} of their sum")
    style(figure, title, height=height or max(480, 26 * result.n_layers + 200))
    figure.update_layout(legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0),
                         hovermode="closest", margin=dict(l=10, r=10, t=70, b=10))
    return figure


def _layer_label(layer: int, n_layers: int) -> str:
    return "embeddings" if layer == 0 else "output" if layer == n_layers else f"block {layer}"


def _node_hover(result: Flow, node: Node) -> str:
    where = (f"inside block {node.layer}, after its attention" if node.mid else
             "the final residual" if node.layer == result.n_layers else
             "the embeddings (block 0's input)" if node.layer == 0 else f"block {node.layer}'s input")
    return f"{node.position} '{safe_label(result.tokens[node.position])}': {where}<br>click for links"
