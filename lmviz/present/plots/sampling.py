"""Figures for temperature and sampling: a distribution's top tokens, the temperature sweep,
the lecture's toy softmax table, and a generated text coloured by where each token ranked."""

from __future__ import annotations

import html

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lmviz.present.plots import HIGHLIGHT, KEPT_COLOUR, REMOVED_COLOUR, safe_label, style
from lmviz.analyses.sampling import NOT_REMOVED
from lmviz.analyses.sampling import Distribution, Generation, Sweep, ToyTable

BEFORE = "#91a7ff"  # the model's own distribution (T = 1), lighter than KEPT_COLOUR
GREYED_TEXT = "#adb5bd"  # axis labels of removed tokens


def _tick(label: str, removed: bool, chosen: bool) -> str:
    text = safe_label(label)
    if chosen:
        return f"<b>{text}</b>"
    return f'<span style="color:{GREYED_TEXT}">{text}</span>' if removed else text


def distribution_figure(
    dist: Distribution,
    labels: list[str],
    title: str | None = None,
    chosen: int | None = None,
    height: int = 420,
) -> go.Figure:
    """Bars for each row of `dist` (cut it with dist.top(n) first): the probability before the
    filters (grey bar and label where a filter removed the token; preceded by the model's own
    T = 1 bar when temperature or the penalty reshaped it) and the final probability a token is
    drawn with. `chosen` (a vocabulary id) gets a bold label."""
    removed = [code != NOT_REMOVED for code in dist.removed_by.tolist()]
    status = dist.status()
    ids = dist.token_ids.tolist()
    x = list(range(len(ids)))  # positions, so equal labels stay separate bars
    ticks = [_tick(label, gone, token_id == chosen) for label, gone, token_id in zip(labels, removed, ids)]
    hover = [f"{safe_label(label)} (id {token_id}, rank {rank})<br>{state}"
             for label, token_id, rank, state in zip(labels, ids, dist.rank.tolist(), status)]
    figure = go.Figure()
    reshaped = not dist.greedy and (dist.settings.temperature != 1 or dist.settings.repetition_penalty != 1)
    if reshaped:
        figure.add_bar(
            x=x, y=dist.model_probs.tolist(), name="model (T = 1)", marker_color=BEFORE,
            hovertext=hover, hovertemplate="%{hovertext}<br>model p = %{y:.4f}<extra></extra>",
        )
    before = dist.tempered_probs if reshaped else dist.model_probs
    before_name = ("after T" + (" & penalty" if dist.settings.repetition_penalty != 1 else "") + ", before filters"
                   if reshaped else "model (T = 1)")
    figure.add_bar(
        x=x, y=before.tolist(), name=before_name,
        marker_color=[REMOVED_COLOUR if gone else KEPT_COLOUR for gone in removed],
        hovertext=hover, hovertemplate="%{hovertext}<br>before filters p = %{y:.4f}<extra></extra>",
    )
    figure.add_bar(
        x=x, y=dist.probs.tolist(), name="greedy pick" if dist.greedy else "final (sampled from)",
        marker_color=HIGHLIGHT,
        hovertext=hover, hovertemplate="%{hovertext}<br>final p = %{y:.4f}<extra></extra>",
    )
    figure.update_layout(barmode="group", bargap=0.2, legend=dict(orientation="h", y=1.02, x=0, yanchor="bottom"))
    figure.update_xaxes(tickmode="array", tickvals=x, ticktext=ticks, tickangle=-45)
    figure.update_yaxes(title_text="probability", rangemode="tozero")
    return style(figure, title, height)


def sweep_figure(sweep: Sweep, current: float | None = None, title: str | None = None, height: int = 380) -> go.Figure:
    """Entropy (left axis, nats) and the top token's probability (right axis) against T (log scale),
    the current temperature marked."""
    temps = sweep.temperatures.tolist()
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    custom = sweep.effective_vocab.tolist()
    figure.add_scatter(
        x=temps, y=sweep.entropy.tolist(), name="entropy (nats)", mode="lines", line=dict(color=KEPT_COLOUR, width=3),
        customdata=custom,
        hovertemplate="T = %{x:.3g}<br>entropy %{y:.3f} nats<br>%{customdata:,} tokens hold 90%<extra></extra>",
        secondary_y=False,
    )
    figure.add_scatter(
        x=temps, y=sweep.top_prob.tolist(), name="top token's probability", mode="lines",
        line=dict(color=HIGHLIGHT, width=3, dash="dash"),
        hovertemplate="T = %{x:.3g}<br>top p = %{y:.4f}<extra></extra>", secondary_y=True,
    )
    figure.add_hline(y=sweep.max_entropy, line=dict(color=REMOVED_COLOUR, dash="dot"), secondary_y=False,
                     annotation_text=f"uniform: log {sweep.vocab_size:,} = {sweep.max_entropy:.2f}",
                     annotation_position="bottom left")
    if current is not None and current > 0:
        # a trace rather than a shape: shapes on log axes take log10 coordinates, traces take data
        figure.add_scatter(
            x=[current, current], y=[0, sweep.max_entropy], mode="lines+text", name=f"current T = {current:g}",
            line=dict(color="black", width=2), text=["", f"T = {current:g}"], textposition="top center",
            hoverinfo="skip", secondary_y=False,
        )
    figure.update_xaxes(type="log", title_text="temperature T (log scale)")
    figure.update_yaxes(title_text="entropy (nats)", rangemode="tozero", secondary_y=False)
    figure.update_yaxes(title_text="top token's probability", range=[0, 1.02], tickmode="linear", tick0=0,
                        dtick=0.2, showgrid=False, secondary_y=True)
    figure.update_yaxes(range=[0, sweep.max_entropy * 1.1], secondary_y=False)
    figure.update_layout(legend=dict(orientation="h", y=1.02, x=0, yanchor="bottom"))
    return style(figure, title, height)


def toy_figure(toy: ToyTable, title: str | None = None, height: int = 340) -> go.Figure:
    """σ_T of the toy vector: one group of bars per logit, one bar per temperature."""
    labels = [f"x = {value:g}" for value in toy.logits.tolist()]
    x = list(range(len(labels)))
    palette = [HIGHLIGHT, KEPT_COLOUR, "#2f9e44", "#ae3ec9", "#1098ad", "#f08c00"]
    figure = go.Figure()
    for i, (t, row) in enumerate(zip(toy.temperatures, toy.probs.tolist())):
        name = "T = 0 (greedy)" if t == 0 else f"T = {t:g}"
        figure.add_bar(x=x, y=row, name=name, marker_color=palette[i % len(palette)],
                       hovertemplate=f"{name}<br>%{{y:.4f}}<extra></extra>")
    figure.update_layout(barmode="group", legend=dict(orientation="h", y=1.02, x=0, yanchor="bottom"))
    figure.update_xaxes(tickmode="array", tickvals=x, ticktext=labels)
    figure.update_yaxes(title_text="σ_T(x)", range=[0, 1.02])
    return style(figure, title, height)


def generation_html(generation: Generation) -> str:
    """The prompt, then each generated token as a chip: blue when it was the model's top choice,
    orange (darker = lower rank) otherwise; hover shows step, rank and probability. HTML-escaped."""
    parts = [f'<span style="color:#495057">{html.escape(generation.prompt)}</span>']
    for step in generation.steps:
        shade = "#d0ebff" if step.rank == 1 else ("#ffe8cc" if step.rank <= 5 else "#ffc078")
        tip = f"step {step.index + 1} · rank {step.rank} · p {step.prob:.3f} (model {step.model_prob:.3f})"
        parts.append(
            f'<span title="{html.escape(tip)}" style="background:{shade};border-radius:4px;padding:1px 2px;'
            f'margin:0 1px;white-space:pre-wrap">{html.escape(step.text)}</span>'
        )
    if generation.finished:
        parts.append(' <span style="color:#868e96">[end of sequence]</span>')
    return f'<div style="font-size:1.1rem;line-height:2;white-space:pre-wrap">{"".join(parts)}</div>'
