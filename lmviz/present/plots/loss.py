"""Loss results -> pictures: the text coloured by surprisal or by rank, and plotly charts.

The coloured text is HTML built here (every piece of the text and every token
string is HTML-escaped); the charts are plotly figures styled with `style`.
"""

from __future__ import annotations

import html
import math

import plotly.graph_objects as go

from lmviz.analyses.compare import ModelComparison
from lmviz.analyses.loss import LN2, RANK_BUCKETS, ContextCurve, LayerLoss, LossReport, rank_bucket
from lmviz.present.plots import HIGHLIGHT, KEPT_COLOUR, safe_label, style
from lmviz.tokens import visible

SURPRISAL_CAP = 16.0  # bits at which the colour saturates (p = 1/65536)
RANK_COLOURS = {"top-1": "#b2f2bb", "top-10": "#a5d8ff", "top-100": "#ffd8a8", "rest": "#ffa8a8"}
UNSCORED = "#e9ecef"
BOX = ("font-size:18px;line-height:1.9;white-space:pre-wrap;word-wrap:break-word;"
       "font-family:ui-sans-serif,system-ui,sans-serif;padding:8px 4px")


def _attr(text: str) -> str:
    return html.escape(text, quote=True)


def _red(t: float) -> str:
    """Background for a surprisal fraction t in [0, 1]: transparent to strong red."""
    return f"rgba(224,49,49,{0.05 + 0.8 * max(0.0, min(1.0, t)):.3f})"


def _groups(report: LossReport) -> list[tuple[str, list[int]]]:
    """The text cut at token boundaries: [(text piece, token positions)]. Pieces without tokens are the
    characters no token claims (kept so the text reads as typed); tokens that share characters, such as the
    byte pieces of one emoji, form one group; tokens without characters (BOS) show their own string."""
    text, groups, cursor = report.text, [], 0
    for position, (start, end) in enumerate(report.offsets):
        if end <= start:
            groups.append((report.pieces[position], [position]))
        elif start < cursor and groups and groups[-1][1]:
            piece, members = groups[-1]
            groups[-1] = (piece + text[cursor:end] if end > cursor else piece, members + [position])
            cursor = max(cursor, end)
        else:
            if start > cursor:
                groups.append((text[cursor:start], []))
            groups.append((text[start:end], [position]))
            cursor = end
    if cursor < len(text):
        groups.append((text[cursor:], []))
    return groups


def surprisal_html(report: LossReport, mode: str = "surprisal") -> str:
    """The text with every token's background showing how surprised the model was.

    mode "surprisal": red, stronger for more bits (saturating at SURPRISAL_CAP);
    mode "rank": the rank bucket of the actual token (top-1 / top-10 / top-100 / rest).
    Hovering a token shows its probability, surprisal, rank and the model's top guess.
    """
    if mode not in ("surprisal", "rank"):
        raise ValueError(f"mode must be 'surprisal' or 'rank', not {mode!r}")
    spans = []
    for piece, members in _groups(report):
        if not members:
            spans.append(html.escape(piece))
            continue
        scored = [p for p in members if p > 0]
        shown = html.escape(piece)
        if not scored:
            tip = "first token: nothing before it to predict it from, so it is not scored"
            spans.append(f'<span title="{_attr(tip)}" style="background:{UNSCORED};color:#868e96">{shown}</span>')
            continue
        nll = sum(float(report.nll[p - 1]) for p in scored)
        bits = nll / LN2
        rank = max(int(report.rank[p - 1]) for p in scored)
        lines = []
        for p in scored:
            j = p - 1
            lines.append(
                f"{report.tokens[p]!r}: p = {float(report.probs[j]):.4f}, {float(report.surprisal_bits[j]):.2f} bits, "
                f"rank {int(report.rank[j]):,}; top guess {report.top_tokens[j]!r} "
                f"(p = {float(report.top_probs[j]):.3f})"
                f"; {int(report.context[j]):,} tokens of context"
            )
        colour = _red(bits / SURPRISAL_CAP) if mode == "surprisal" else RANK_COLOURS[rank_bucket(rank)]
        spans.append(f'<span title="{_attr(chr(10).join(lines))}" style="background:{colour};'
                     f'border-radius:3px">{shown}</span>')
    return f'<div style="{BOX}">' + "".join(spans) + "</div>"


def legend_html(mode: str = "surprisal") -> str:
    """A small key for surprisal_html."""
    if mode == "rank":
        items = [f'<span style="background:{RANK_COLOURS[label]};padding:2px 8px;border-radius:3px">'
                 f'{"rank 1" if upper == 1 else f"rank ≤ {upper}" if upper else "rank > 100"}</span>'
                 for upper, label in RANK_BUCKETS]
    else:
        items = [f'<span style="background:{_red(b / SURPRISAL_CAP)};padding:2px 8px;border-radius:3px">'
                 f'{b:g} bits (p = {2 ** -b:.3g})</span>' for b in (0, 2, 4, 8, 12, 16)]
    items.append(f'<span style="background:{UNSCORED};color:#868e96;padding:2px 8px;border-radius:3px">'
                 'not scored</span>')
    return '<div style="font-size:14px;display:flex;gap:6px;flex-wrap:wrap">' + "".join(items) + "</div>"


def diff_html(comparison: ModelComparison, cap: float | None = None) -> str:
    """The text with every word coloured by NLL(B) - NLL(A): red where B is more surprised, blue where A is.
    Words not scored fully by both models stay grey."""
    diffs = [d for d in comparison.diff.tolist() if not math.isnan(d)]
    cap = cap or max([abs(d) for d in diffs] + [1.0])
    spans = []
    for word, a, b, d, both in zip(comparison.words, comparison.nll_a.tolist(), comparison.nll_b.tolist(),
                                   comparison.diff.tolist(), comparison.both.tolist()):
        shown = html.escape(word)
        if not both:
            tip = "not scored fully by both models (e.g. the first word of a model without a BOS token)"
            spans.append(f'<span title="{_attr(tip)}" style="background:{UNSCORED};color:#868e96">{shown}</span>')
            continue
        alpha = 0.08 + 0.8 * min(1.0, abs(d) / cap)
        colour = f"rgba(224,49,49,{alpha:.3f})" if d > 0 else f"rgba(28,126,214,{alpha:.3f})"
        tip = (f"{visible(word.strip())!r}\nA {comparison.model_a}: {a:.3f} nats\nB {comparison.model_b}: {b:.3f} nats"
               f"\nB - A = {d:+.3f} nats ({d / LN2:+.2f} bits)")
        spans.append(f'<span title="{_attr(tip)}" style="background:{colour};border-radius:3px">{shown}</span>')
    return f'<div style="{BOX}">' + "".join(spans) + "</div>"


def surprisal_figure(report: LossReport, title: str | None = None, y_max: float | None = None,
                     max_bars: int = 300) -> go.Figure:
    """Surprisal (bits) of every scored token: bars coloured by rank bucket; for more than max_bars tokens,
    faint points with a running mean over 50 tokens instead."""
    x = list(range(1, report.n_tokens))
    bits = report.surprisal_bits.tolist()
    hover = [
        f"{safe_label(report.tokens[p])}<br>p = {float(report.probs[p - 1]):.4f}<br>rank {int(report.rank[p - 1]):,}"
        f"<br>top guess {safe_label(report.top_tokens[p - 1])}" for p in x
    ]
    if len(x) <= max_bars:
        figure = go.Figure(go.Bar(
            x=x, y=bits, marker_color=[RANK_COLOURS[b] for b in report.rank_bucket()],
            marker_line_color="#495057", marker_line_width=0.5, hovertext=hover, hoverinfo="text",
        ))
        if len(x) <= 60:
            figure.update_xaxes(tickmode="array", tickvals=x, ticktext=[safe_label(report.tokens[p]) for p in x])
    else:
        span = 50
        cumulative = [0.0]
        for value in bits:
            cumulative.append(cumulative[-1] + value)
        running = [(cumulative[i + 1] - cumulative[max(0, i + 1 - span)]) / min(i + 1, span) for i in range(len(bits))]
        figure = go.Figure([
            go.Scattergl(x=x, y=bits, mode="markers", marker=dict(size=3, color="#adb5bd"), hovertext=hover,
                         hoverinfo="text", name="token"),
            go.Scatter(x=x, y=running, mode="lines", line=dict(color=KEPT_COLOUR, width=2), name=f"mean of last {span}",
                       hoverinfo="skip"),
        ])
        figure.update_layout(legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0))
    figure.add_hline(y=report.bits_per_token, line_dash="dash", line_color=HIGHLIGHT,
                     annotation_text=f"mean {report.bits_per_token:.2f} bits", annotation_position="top right")
    figure.update_yaxes(title="surprisal (bits)", range=[0, y_max] if y_max else None)
    figure.update_xaxes(title="token")
    return style(figure, title, height=360)


def layer_loss_figure(result: LayerLoss, title: str | None = None) -> go.Figure:
    """Cross-entropy (nats) of the logit-lens prediction at every layer; the last point is the model's output."""
    layers = list(range(result.n_layers + 1))
    mean = result.mean_nll.tolist()
    hover = [f"layer {i}<br>{h:.3f} nats = {h / LN2:.2f} bits<br>perplexity {math.exp(h):,.1f}"
             for i, h in zip(layers, mean)]
    figure = go.Figure(go.Scatter(x=layers, y=mean, mode="lines+markers", line_color=KEPT_COLOUR,
                                  hovertext=hover, hoverinfo="text", name="cross-entropy"))
    figure.add_trace(go.Scatter(x=[layers[-1]], y=[mean[-1]], mode="markers", marker=dict(size=14, color=HIGHLIGHT),
                                name="model output", hoverinfo="skip"))
    figure.update_xaxes(title="layer (0 = embeddings)")
    positive = [h for h in mean if h > 0]
    wide = bool(positive) and max(positive) / min(positive) > 20
    figure.update_yaxes(title="cross-entropy (nats / token)" + (", log scale" if wide else ""),
                        type="log" if wide else "linear", dtick="D2" if wide else None)
    figure.update_layout(showlegend=False)
    return style(figure, title, height=380)


def context_figure(curve: ContextCurve, title: str | None = None) -> go.Figure:
    """Cross-entropy against window length (log scale)."""
    hover = [f"window {w:,} (stride {s:,})<br>mean context {c:.1f} tokens<br>{h:.3f} nats, "
             f"perplexity {math.exp(h):,.1f}"
             for w, s, c, h in zip(curve.lengths, curve.strides, curve.mean_context, curve.mean_nll)]
    figure = go.Figure(go.Scatter(x=list(curve.lengths), y=list(curve.mean_nll), mode="lines+markers",
                                  line_color=KEPT_COLOUR, hovertext=hover, hoverinfo="text"))
    figure.update_xaxes(title="window length (tokens the model may see)", type="log", tickvals=list(curve.lengths),
                        ticktext=[str(w) for w in curve.lengths])
    figure.update_yaxes(title="cross-entropy (nats / token)")
    return style(figure, title, height=380)


def windows_figure(report: LossReport, title: str | None = None) -> go.Figure:
    """Tokens of context each scored token had, coloured by the window that scored it (a sawtooth when
    the text needs several windows)."""
    x = list(range(1, report.n_tokens))
    figure = go.Figure(go.Scatter(
        x=x, y=report.context.tolist(), mode="markers",
        marker=dict(size=5, color=report.window_of.tolist(), colorscale="Viridis", showscale=report.n_windows > 1,
                    colorbar=dict(title="window")),
        hovertext=[f"token {p}: {safe_label(report.tokens[p])}<br>window {int(report.window_of[p - 1])}"
                   f"<br>context {int(report.context[p - 1]):,} tokens" for p in x],
        hoverinfo="text",
    ))
    figure.update_xaxes(title="token position")
    figure.update_yaxes(title="tokens of context", rangemode="tozero")
    return style(figure, title, height=300)


def word_diff_figure(comparison: ModelComparison, title: str | None = None) -> go.Figure:
    """NLL(B) - NLL(A) per word, red where B is more surprised."""
    diff = comparison.diff.tolist()
    keep = [i for i, d in enumerate(diff) if not math.isnan(d)]
    labels = [safe_label(visible(comparison.words[i].strip())) for i in keep]
    figure = go.Figure(go.Bar(
        x=list(range(len(keep))), y=[diff[i] for i in keep],
        marker_color=["#e03131" if diff[i] > 0 else "#1c7ed6" for i in keep],
        hovertext=[f"{label}<br>B - A = {diff[i]:+.3f} nats" for label, i in zip(labels, keep)], hoverinfo="text",
    ))
    if len(keep) <= 60:
        figure.update_xaxes(tickmode="array", tickvals=list(range(len(keep))), ticktext=labels)
    figure.update_yaxes(title="NLL B − A (nats)")
    return style(figure, title, height=340)
