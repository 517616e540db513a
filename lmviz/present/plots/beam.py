"""The beam search tree as a plotly figure, replayable step by step (expand -> evaluate -> prune), and the
what-if branches of the sampling page drawn the same way (`branches_figure`).

Steps run left to right (x = tokens generated), the prompt at x = 0. Each
column lists that step's candidates, grouped under their parent beam in the
parent's order, so no two edges cross. Kept beams are blue, pruned candidates
grey, finished hypotheses green (a diamond; the returned ones carry their rank
#1, #2, …), the winning path orange. Every candidate is labelled above its
node with its token and, on a second line, its probability given its parent
(and, while a step is evaluated, its cumulative log-probability); hovering a
node gives its log-probability, the cumulative log-probability beam search
ranks by, and the length-penalised score it would have had, had it ended
there.

Nothing overlaps, up to K = 5 and 12 steps on a 1280-pixel-wide screen
(tests/browser checks the drawn text boxes): the labels sit on their nodes
rather than on the edges, which converge near every parent; tokens are cut
to fit a column (`label_chars`), and rows are `ROW_PX` apart, room for two
lines.
"""

from __future__ import annotations

import math

import plotly.graph_objects as go

from lmviz.analyses.beam import FINISHED, KEPT, PRUNED, BeamNode, BeamTree
from lmviz.present.plots import FINISHED_COLOUR, HIGHLIGHT, KEPT_COLOUR, REMOVED_COLOUR, safe_label, style
from lmviz.tokens import visible
from lmviz.analyses.whatif import WhatIfTree

PHASES = ("expand", "evaluate", "prune")
CANDIDATE = "#868e96"  # a candidate not yet judged (replay: expand / evaluate)
PRUNED_TEXT = "#868e96"
SYMBOL = {KEPT: "circle", PRUNED: "circle-open", FINISHED: "diamond"}
MAX_LABEL = 14  # most characters of a token shown on the figure (the hover has all of it)
ROW_PX = 54  # vertical pixels per node of the tallest column: a two-line label and its marker


def frames(tree: BeamTree) -> list[tuple[int, str]]:
    """Every replay frame in order: (1, "expand"), (1, "evaluate"), (1, "prune"), (2, "expand"), …"""
    return [(step, phase) for step in range(1, tree.steps + 1) for phase in PHASES]


def frame_label(step: int, phase: str) -> str:
    return f"step {step}: {phase}"


def visible_nodes(tree: BeamTree, pruned_per_beam: int) -> list[BeamNode]:
    """The nodes drawn: the root, every kept or finished candidate, and each beam's
    `pruned_per_beam` most probable pruned children."""
    shown = [tree.nodes[0]]
    pruned_count: dict[int, int] = {}
    for node in sorted(tree.nodes[1:], key=lambda n: (n.step, n.parent, -n.logprob)):
        if node.status != PRUNED:
            shown.append(node)
        elif pruned_count.get(node.parent, 0) < pruned_per_beam:
            pruned_count[node.parent] = pruned_count.get(node.parent, 0) + 1
            shown.append(node)
    return shown


def positions(nodes: list[BeamNode]) -> dict[int, tuple[float, float]]:
    """(x, y) of every node: x = step; y keeps each column in its parents' order, centred on 0."""
    y_of: dict[int, float] = {}
    by_step: dict[int, list[BeamNode]] = {}
    for node in nodes:
        by_step.setdefault(node.step, []).append(node)
    placed: dict[int, tuple[float, float]] = {}
    for step in sorted(by_step):
        # under the parents, top to bottom, and under one parent the most probable first
        column = sorted(by_step[step], key=lambda n: (-y_of.get(n.parent, 0.0), -n.logprob))
        count = len(column)
        for index, node in enumerate(column):
            y = (count - 1) / 2 - index
            y_of[node.id] = y
            placed[node.id] = (float(step), float(y))
    return placed


def label_chars(steps: int) -> int:
    """Characters of a token that fit a column: about 84 px of a 1280-px-wide chart is shared by steps + 1
    columns, at ~7 px a character, at most MAX_LABEL."""
    return max(4, min(MAX_LABEL, 84 // (steps + 1)))


def _label(token: str, chars: int = MAX_LABEL) -> str:
    shown = visible(token)
    return shown if len(shown) <= chars else shown[: chars - 1] + "…"


def _hover(node: BeamNode, tree: BeamTree, judged: bool) -> str:
    token = safe_label(visible(node.token))
    if node.parent is None:
        return f"<b>prompt</b><br>{token}"
    lines = [
        f"<b>{token}</b> (id {node.token_id}), step {node.step}",
        f"P(token | beam) = {node.probability:.4f}  (log-prob {node.logprob:.3f})",
        f"cumulative log-prob {node.cumulative:.3f}",
        f"score = {node.cumulative:.3f} / {node.step}^{tree.length_penalty:g} = {node.score:.3f}",
    ]
    if judged:
        lines.append(f"<i>{node.status}</i>: {node.reason}")
        if node.final_rank is not None:
            lines.append(f"returned as hypothesis #{node.final_rank + 1}")
    return "<br>".join(lines)


def tree_figure(
    tree: BeamTree,
    step: int | None = None,
    phase: str = "prune",
    pruned_per_beam: int = 2,
    title: str | None = None,
) -> go.Figure:
    """The tree as it stood at `step` and `phase` (None: the finished search, winning path highlighted).

    expand: the step's candidates appear, unjudged; evaluate: their probabilities
    (on the edges) and cumulative log-probabilities (next to the token) are shown;
    prune: they are coloured kept / pruned / finished.
    """
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}")
    last = step is None or (step >= tree.steps and phase == "prune")
    step = tree.steps if step is None else max(1, min(step, tree.steps))
    nodes = visible_nodes(tree, pruned_per_beam)
    placed = positions(nodes)  # laid out over the whole search, so replaying never moves a node
    nodes = [n for n in nodes if n.step <= step]
    winning = set(tree.winning_path()) if last else set()

    def judged(node: BeamNode) -> bool:
        return node.step < step or phase == "prune"

    def labelled(node: BeamNode) -> bool:
        return node.step < step or phase != "expand"

    figure = go.Figure()
    # edges, one trace per look
    groups: dict[str, list[BeamNode]] = {}
    for node in nodes[1:]:
        key = "win" if node.id in winning else (node.status if judged(node) else "candidate")
        groups.setdefault(key, []).append(node)
    edge_style = {
        KEPT: dict(color=KEPT_COLOUR, width=2),
        PRUNED: dict(color=REMOVED_COLOUR, width=1),
        FINISHED: dict(color=FINISHED_COLOUR, width=2),
        "candidate": dict(color=CANDIDATE, width=1, dash="dot"),
        "win": dict(color=HIGHLIGHT, width=5),
    }
    for key in ("candidate", PRUNED, KEPT, FINISHED, "win"):
        xs, ys = [], []
        for node in groups.get(key, []):
            (x0, y0), (x1, y1) = placed[node.parent], placed[node.id]
            xs += [x0, x1, None]
            ys += [y0, y1, None]
        if xs:
            figure.add_scatter(x=xs, y=ys, mode="lines", line=edge_style[key], hoverinfo="skip", showlegend=False)

    # nodes, one trace per status (legend entries)
    def add_nodes(members: list[BeamNode], name: str, colour: str, symbol: str, size: int, text_colour: str) -> None:
        if not members:
            return
        labels = []
        for node in members:
            if node.parent is None:
                labels.append("prompt")
                continue
            label = safe_label(_label(node.token, chars))
            if last and node.final_rank is not None:
                label += f" <b>#{node.final_rank + 1}</b>"
            second = f"{node.probability:.2f}" if labelled(node) else ""
            if not last and node.step == step and phase != "expand":  # the step being evaluated: its sums
                second += f' <span style="color:{PRUNED_TEXT}">{node.cumulative:.1f}</span>'
            labels.append(f'{label}<br><span style="font-size:11px;color:#495057">{second}</span>' if second
                          else label)
        figure.add_scatter(
            x=[placed[n.id][0] for n in members], y=[placed[n.id][1] for n in members],
            mode="markers+text", name=name, text=labels, textposition="top center",
            textfont=dict(color=text_colour, size=14),
            marker=dict(color=colour, symbol=symbol, size=size, line=dict(width=2, color=colour)),
            hovertext=[_hover(n, tree, judged(n)) for n in members], hovertemplate="%{hovertext}<extra></extra>",
        )

    chars = label_chars(tree.steps)
    root, rest = nodes[0], nodes[1:]
    add_nodes([root], "prompt", "#212529", "square", 14, "#212529")
    unjudged = [n for n in rest if not judged(n)]
    add_nodes(unjudged, "candidate (not judged yet)", CANDIDATE, "circle-open", 11, "#212529")
    done = [n for n in rest if judged(n)]
    add_nodes([n for n in done if n.status == PRUNED], "pruned", REMOVED_COLOUR, SYMBOL[PRUNED], 9, PRUNED_TEXT)
    kept = [n for n in done if n.status == KEPT and n.id not in winning]
    finished = [n for n in done if n.status == FINISHED and n.id not in winning]
    add_nodes(kept, "kept (a running beam)", KEPT_COLOUR, SYMBOL[KEPT], 12, "#212529")
    add_nodes(finished, "finished", FINISHED_COLOUR, SYMBOL[FINISHED], 14, "#212529")
    add_nodes([n for n in done if n.id in winning], "winning path", HIGHLIGHT, "star", 16, "#212529")

    column_sizes: dict[int, int] = {}
    for x, _ in placed.values():
        column_sizes[int(x)] = column_sizes.get(int(x), 0) + 1
    tallest = max(column_sizes.values())
    figure.update_xaxes(
        range=[-0.4, tree.steps + 0.6], tickmode="array", tickvals=list(range(tree.steps + 1)),
        ticktext=["prompt"] + [f"step {s}" for s in range(1, tree.steps + 1)], showgrid=False, zeroline=False,
    )
    figure.update_yaxes(visible=False, range=[-(tallest / 2) - 0.3, tallest / 2 + 0.7])
    figure.update_layout(legend=dict(orientation="h", y=1.0, x=0, yanchor="bottom"), hovermode="closest")
    return style(figure, title, height=max(420, ROW_PX * tallest + 160))


BRANCH_COLOURS = [KEPT_COLOUR, HIGHLIGHT, "#2f9e44", "#ae3ec9", "#1098ad", "#f08c00", "#c2255c", "#5c940d"]


def branches_figure(tree: WhatIfTree, title: str | None = None) -> go.Figure:
    """What-if branches as a tree, laid out like the beam search (steps left to right, no crossing edges):
    each branch in its own colour, the tokens chosen by hand as diamonds, the model's own picks as dots.
    Labels: the token and its probability given the prefix; the hover adds ranks and sums."""
    placed = positions(list(tree.nodes))
    steps = max(node.step for node in tree.nodes)
    chars = label_chars(steps)
    figure = go.Figure()
    for index, branch in enumerate(tree.branches):  # each branch from where it leaves the ones before it
        own = [node for node in tree.nodes[1:] if node.branches[0] == index]
        path = ([tree.nodes[own[0].parent]] if own else []) + own
        figure.add_scatter(x=[placed[n.id][0] for n in path], y=[placed[n.id][1] for n in path], mode="lines",
                           line=dict(color=BRANCH_COLOURS[index % len(BRANCH_COLOURS)], width=3 if index else 4),
                           name=f"{branch_name(index)}: log P = {branch.logprob:.2f}", hoverinfo="skip")
    for chosen in (False, True):
        members = [n for n in tree.nodes[1:] if n.chosen == chosen]
        if not members:
            continue
        figure.add_scatter(
            x=[placed[n.id][0] for n in members], y=[placed[n.id][1] for n in members], mode="markers+text",
            text=[f'{safe_label(_label(n.token, chars))}<br><span style="font-size:11px;color:#495057">'
                  f'{_probability(n.logprob)}</span>' for n in members],
            textposition="top center", textfont=dict(size=14, color="#212529"), showlegend=chosen,
            name="chosen by hand" if chosen else "the model's pick",
            marker=dict(symbol="diamond" if chosen else "circle", size=14 if chosen else 10,
                        color=[BRANCH_COLOURS[n.branches[0] % len(BRANCH_COLOURS)] for n in members]),
            hovertext=[f"<b>{safe_label(visible(n.token))}</b> (id {n.token_id}), step {n.step}<br>"
                       f"P = {math.exp(n.logprob):.4f} (log {n.logprob:.3f}), rank {n.rank}<br>"
                       f"log P of the path so far {n.cumulative:.3f}<br>"
                       + ", ".join(branch_name(b) for b in n.branches) for n in members],
            hovertemplate="%{hovertext}<extra></extra>")
    figure.add_scatter(x=[0], y=[placed[0][1]], mode="markers+text", text=["prompt"], textposition="top center",
                       marker=dict(symbol="square", size=14, color="#212529"), showlegend=False,
                       hovertext=[safe_label(visible(tree.prompt[-200:]))], hovertemplate="%{hovertext}<extra></extra>")
    column_sizes: dict[int, int] = {}
    for x, _ in placed.values():
        column_sizes[int(x)] = column_sizes.get(int(x), 0) + 1
    tallest = max(column_sizes.values())
    figure.update_xaxes(range=[-0.4, steps + 0.6], tickmode="array", tickvals=list(range(steps + 1)),
                        ticktext=["prompt"] + [f"step {s}" for s in range(1, steps + 1)], showgrid=False,
                        zeroline=False)
    figure.update_yaxes(visible=False, range=[-(tallest / 2) - 0.3, tallest / 2 + 0.7])
    figure.update_layout(legend=dict(orientation="h", y=1.0, x=0, yanchor="bottom"), hovermode="closest")
    return style(figure, title, height=max(360, ROW_PX * tallest + 180))


def _probability(logprob: float) -> str:
    p = math.exp(logprob)
    return f"{p:.2f}" if p >= 0.01 else f"{p:.0e}"


def branch_name(index: int) -> str:
    return "greedy" if index == 0 else f"branch {index}"
