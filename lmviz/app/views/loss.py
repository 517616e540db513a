"""Loss & perplexity: how surprised the model is by every token, and comparisons side by side."""

import math

import pandas as pd
import streamlit as st

from lmviz.app import ui
from lmviz.app.settings import Loss
from lmviz.analyses import compare, loss
from lmviz.model import models
from lmviz.present.tables import loss as tables
from lmviz.present.plots import loss as plots

ui.title("Loss & perplexity", (
    "At every position the model gives a probability to each possible next token. The loss is how little "
    "probability it gave to the token that actually came: NLL = −ln p, in nats (÷ ln 2 for bits). Averaged over "
    "the text it is the cross-entropy H, the number training minimizes; perplexity is e^H."
))
lm = ui.current_model(kinds=("causal",))
FIGURE_TOP = 13.3  # rem above a view's first figure in presenter mode (header, title, views, settings): ui.chart
presenting = ui.presenting()  # on a projector a view's figure comes first: its numbers and text follow it

SAMPLES = loss.sample_texts()
OTHER_MODEL = ui.OTHER_MODEL


default_window = min(1024, lm.context_length)
ui.init(Loss.VIEW)
ui.init(Loss.SOURCE)
ui.init(Loss.COLOUR)
ui.init(Loss.WINDOW_LENGTH, default_window)
ui.init(Loss.STRIDE, default_window // 2)
ui.init(Loss.TEXT_A, SAMPLES["normal"])
ui.init(Loss.TEXT_B, SAMPLES["scrambled"])
st.session_state.setdefault("loss_check", True)

view = st.segmented_control(Loss.VIEW.label, Loss.VIEW.choices, key=Loss.VIEW.key, required=True, label_visibility="collapsed")
ui.sync(Loss.VIEW)


def progress_bar(label: str):
    """A progress callback that draws a bar, and the bar (to clear when done)."""
    bar = st.progress(0.0, text=label)

    def update(done: int, total: int) -> None:
        bar.progress(done / max(1, total), text=f"{label} {done}/{total}")

    return update, bar


def chosen_text(where=st) -> str:
    """The text the single-text views analyse: the sidebar's or the long sample (its choice drawn in `where`)."""
    source = where.radio(Loss.SOURCE.label, Loss.SOURCE.choices, key=Loss.SOURCE.key, horizontal=True)
    ui.sync(Loss.SOURCE)
    if source == Loss.LONG_SAMPLE:
        return SAMPLES["long"]
    return ui.current_text()


def window_settings(where=None) -> tuple[int, int, bool]:
    columns = (where or ui.controls()).columns([1, 1, 2])
    columns[0].number_input(Loss.WINDOW_LENGTH.label, min_value=1, step=64, key=Loss.WINDOW_LENGTH.key,
                            help=f"Most tokens the model sees at once (its context is {lm.context_length:,}).")
    columns[1].number_input(Loss.STRIDE.label, min_value=0, step=64, key=Loss.STRIDE.key,
                            help="Each window scores this many new tokens and keeps the rest as context.")
    columns[2].checkbox("Cross-check with the model's own `labels=` loss", key="loss_check",
                        help="Runs every window a second time through transformers' loss function.")
    ui.sync(Loss.WINDOW_LENGTH, Loss.STRIDE)
    return int(ui.value(Loss.WINDOW_LENGTH)), int(ui.value(Loss.STRIDE)), bool(st.session_state.loss_check)


def report_for(model, text: str, max_length: int, stride: int, check: bool, label: str) -> loss.LossReport:
    update, bar = progress_bar(label)
    try:
        with ui.user_errors():
            return loss.loss_report(model, text, max_length=max_length, stride=stride, cross_check=check,
                                    progress=update)
    finally:
        bar.empty()


def fmt(value) -> str:
    if isinstance(value, int):
        return f"{value:,}"
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.4g}"


def metric_cards(report: loss.LossReport) -> None:
    metrics = tables.loss_metrics(report)
    for start in range(0, len(metrics), 5):
        columns = st.columns(5)
        for column, metric in zip(columns, metrics[start:start + 5]):
            column.metric(metric.label, fmt(metric.value), help=metric.note, border=True)


def formulas(report: loss.LossReport) -> None:
    h, n = report.mean_nll, report.scored
    st.latex(rf"N = {n:,} \text{{ tokens scored}},\qquad \text{{accuracy}} = "
             rf"\frac{{{int(report.correct.sum()):,}}}{{{n:,}}} = {report.accuracy:.4f}")
    st.latex(rf"\log L = \sum_i \ln p(x_i \mid x_{{<i}}) = {report.log_likelihood:,.4f}\ \text{{nats}}")
    st.latex(rf"H = -\frac{{1}}{{N}} \sum_i \ln p(x_i \mid x_{{<i}}) = \frac{{{-report.log_likelihood:,.4f}}}{{{n:,}}}"
             rf" = {h:.4f}\ \text{{nats}} = {report.bits_per_token:.4f}\ \text{{bits}}")
    st.latex(rf"\mathrm{{PPL}} = e^{{H}} = e^{{{h:.4f}}} = {report.perplexity:,.4f}"
             rf"\qquad 2^{{H_2}} = 2^{{{report.bits_per_token:.4f}}} = {report.perplexity_base2:,.4f}")
    st.latex(rf"\text{{bits per byte}} = \frac{{{-report.log_likelihood / math.log(2):,.1f}\ \text{{bits}}}}"
             rf"{{{report.n_bytes:,}\ \text{{bytes}}}} = {report.bits_per_byte:.4f}"
             rf"\qquad \mathrm{{PPL}}_\text{{word}} = e^{{{-report.log_likelihood:,.2f} / {report.n_words:,}}}"
             rf" = {report.word_perplexity:,.2f}")
    if report.model_loss is not None:
        st.latex(rf"\texttt{{model(ids, labels=ids).loss}} = {report.model_loss:.6f}"
                 rf"\quad\text{{vs.}}\quad H = {h:.6f}")
    st.caption("Base e or base 2 gives the same perplexity: the base cancels out as long as the log and the power "
               "share it. Cross-entropy with one-hot targets is exactly the mean NLL.")


def window_caption(report: loss.LossReport) -> None:
    low, high = report.context_range()
    if report.n_windows == 1:
        st.caption(f"The whole text ({report.n_tokens:,} tokens) fits in one window: token i sees all i tokens "
                   "before it.")
        return
    st.caption(
        f"{report.n_tokens:,} tokens don't fit in one window of {report.max_length:,}: {report.n_windows} windows, "
        f"{min(report.stride, report.max_length - 1):,} new tokens apart, each scoring only the tokens the last one "
        f"didn't reach ({report.scored:,} scored, each exactly once) with the rest as context: {low:,} to "
        f"{high:,} tokens of context per token."
    )
    ui.chart(ui.figure(plots.windows_figure, report), "loss_windows")


# ------------------------------------------------------------------ token by token
if view == Loss.TOKENS_VIEW:
    box = ui.controls() if presenting else st  # presenter mode: the text's source and the colours are settings too
    text = chosen_text(box)
    max_length, stride, check = window_settings(box if presenting else None)
    report = report_for(lm, text, max_length, stride, check, "Scoring windows…")
    surprisal = ui.figure(plots.surprisal_figure, report, "Surprisal of every token"
                          + (" (coloured by rank bucket)" if report.scored <= 300 else ""))
    if presenting:
        ui.chart(surprisal, "surprisal", top=FIGURE_TOP)
    else:
        metric_cards(report)
    colour = box.radio(Loss.COLOUR.label, Loss.COLOUR.choices, key=Loss.COLOUR.key, horizontal=True,
                      help="Surprisal: redder = less expected. Rank bucket: where the actual token stood in the "
                      "model's ranking.")
    ui.sync(Loss.COLOUR)
    mode = "surprisal" if colour == Loss.SURPRISAL else "rank"
    st.html(plots.legend_html(mode))
    with st.container(height=360 if report.n_tokens > 250 else "content"):
        st.html(plots.surprisal_html(report, mode))
    st.caption("Hover a token for its probability, rank, the model's top guess and how much context it had.")
    if presenting:
        metric_cards(report)
    with st.expander("The formulas, with this text's numbers", expanded=True):
        formulas(report)
    window_caption(report)
    if not presenting:
        ui.chart(surprisal, "surprisal")
    frame = tables.loss_table(report)
    st.dataframe(frame, hide_index=True, width="stretch", height=min(420, 38 + 35 * len(frame)),
                 column_config={c: st.column_config.NumberColumn(format="%.4f")
                                for c in ["nll (nats)", "surprisal (bits)", "probability", "p(top guess)"]})
    st.download_button("Download the per-token table (CSV)", lambda: frame.to_csv(index=False).encode("utf-8"),
                       file_name="loss_per_token.csv", mime="text/csv", on_click="ignore")

# ------------------------------------------------------------------ two texts
elif view == Loss.TWO_TEXTS:
    def use_class_pair() -> None:
        st.session_state[Loss.TEXT_A.key], st.session_state[Loss.TEXT_B.key] = SAMPLES["normal"], SAMPLES["scrambled"]

    box = ui.controls() if presenting else st  # presenter mode: the two texts fold into the settings
    if not presenting:
        st.caption("One model, two texts. The ready-made pair is a sentence and the same words in a random order: "
                   "the words are the same, so the difference is what word order is worth to the model.")
    left, right = box.columns(2)
    left.text_area(Loss.TEXT_A.label, key=Loss.TEXT_A.key, height=100, max_chars=ui.MAX_CHARS)
    right.text_area(Loss.TEXT_B.label, key=Loss.TEXT_B.key, height=100, max_chars=ui.MAX_CHARS)
    box.button("Use the class example (normal vs. scrambled)", on_click=use_class_pair)
    ui.sync(Loss.TEXT_A, Loss.TEXT_B)
    reports = [report_for(lm, st.session_state[f"loss_text_{name}"], None, None, True, f"Scoring text {name.upper()}…")
               for name in ("a", "b")]
    a, b = reports
    rows = []
    for ma, mb in zip(tables.loss_metrics(a)[1:], tables.loss_metrics(b)[1:]):  # the token counts are in the headings
        rows.append({"metric": ma.label, "A": ma.value, "B": mb.value, "B − A": mb.value - ma.value})
    top = max(float(r.surprisal_bits.max()) for r in reports) * 1.05
    columns = st.columns(2)
    for column, name, report in zip(columns, "AB", reports):
        with column:
            st.markdown(f"**Text {name}** — {report.scored} tokens scored")
            bars = ui.figure(plots.surprisal_figure, report, y_max=top)
            if presenting:
                ui.chart(bars, f"surprisal_{name}", key=f"loss_bars_{name}", top=FIGURE_TOP + 2.5)
            cards = st.columns(3)
            cards[0].metric("Mean NLL (nats)", f"{report.mean_nll:.3f}", border=True)
            cards[1].metric("Perplexity", f"{report.perplexity:,.1f}", border=True)
            cards[2].metric("Accuracy", f"{report.accuracy:.1%}", border=True)
            st.html(plots.surprisal_html(report))
            if not presenting:
                ui.chart(bars, f"surprisal_{name}", key=f"loss_bars_{name}")
    st.html(plots.legend_html("rank"))
    st.caption("Bars: surprisal of each token, coloured by where the actual token stood in the model's ranking.")
    if presenting:
        st.caption("One model, two texts. The ready-made pair is a sentence and the same words in a random order: "
                   "the words are the same, so the difference is what word order is worth to the model.")
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch",
                 column_config={c: st.column_config.NumberColumn(format="%.4f") for c in ["A", "B", "B − A"]})
    st.caption(f"Perplexity B / A = {b.perplexity / a.perplexity:,.2f}: on average the model found each token of B "
               f"{b.perplexity / a.perplexity:,.2f} times less likely than a token of A (geometric mean).")

# ------------------------------------------------------------------ two models
elif view == Loss.TWO_MODELS:
    text = chosen_text()
    max_length, stride, check = window_settings()
    others = [name for name in models.EMBEDDED if name != lm.name]
    st.session_state.setdefault("loss_model_b", others[0] if others else OTHER_MODEL)
    columns = st.columns([1, 2])
    columns[0].selectbox("Model B", others + [OTHER_MODEL], key="loss_model_b")
    name_b = st.session_state.loss_model_b
    if name_b == OTHER_MODEL:
        columns[1].text_input("Model B: name or folder", key="loss_model_b_other",
                              placeholder="e.g. ./my-gpt2 (a save_pretrained folder)")
        name_b = (st.session_state.get("loss_model_b_other") or "").strip()
    st.caption(f"Model A is the sidebar's ({lm.name}). Different tokenizers cut the text differently, so per-token "
               "perplexities don't compare: the words and bits per byte do.")
    if not name_b:
        st.info("Pick or type a second causal model to compare with. Without a model hub, give a folder written "
                "by `save_pretrained` (safetensors weights).")
        st.stop()
    lm_b = ui.load_with_progress(name_b)
    a = report_for(lm, text, max_length, stride, check, f"Scoring with {lm.name}…")
    with ui.user_errors():
        lm_b.require_causal("the comparison")
    b = report_for(lm_b, text, min(max_length, lm_b.context_length), min(stride, lm_b.context_length), check,
                   f"Scoring with {lm_b.name}…")
    with ui.user_errors():
        comparison = compare.compare_models(a, b)
    cards = st.columns(4)
    cards[0].metric("Bits per byte, A", f"{comparison.bits_per_byte_a:.4f}", border=True,
                    help="Total bits over the bytes of text scored: fair across vocabularies.")
    cards[1].metric("Bits per byte, B", f"{comparison.bits_per_byte_b:.4f}",
                    f"{comparison.bits_per_byte_b - comparison.bits_per_byte_a:+.4f} vs. A", delta_color="inverse",
                    border=True)
    cards[2].metric("Bits on shared words, A", f"{comparison.common_bits_a:,.1f}", border=True,
                    help="Words both models scored completely (not the first word of a model without BOS).")
    cards[3].metric("Bits on shared words, B", f"{comparison.common_bits_b:,.1f}",
                    f"{comparison.common_bits_b - comparison.common_bits_a:+,.1f}", delta_color="inverse", border=True)
    st.caption(f"Per-token perplexity: A {comparison.perplexity_a:,.2f} over {a.scored:,} tokens, "
               f"B {comparison.perplexity_b:,.2f} over {b.scored:,} tokens"
               + (" — the same tokens, so these compare too." if comparison.same_tokens else
                  " — different tokens, so these two numbers don't compare."))
    st.markdown("**Per word: NLL(B) − NLL(A)** — red: B more surprised, blue: A more surprised.")
    with st.container(height=360 if len(comparison.words) > 200 else "content"):
        st.html(plots.diff_html(comparison))
    ui.chart(ui.figure(plots.word_diff_figure, comparison), "two_models_per_word")
    frame = tables.token_comparison_table(comparison) if comparison.same_tokens else tables.word_comparison_table(comparison)
    st.caption("Both tokenizers cut this text the same way: one row per token." if comparison.same_tokens else
               "The tokenizers differ: one row per word (a word's NLL is the sum over the tokens ending in it).")
    st.dataframe(frame, hide_index=True, width="stretch", height=min(420, 38 + 35 * len(frame)))
    st.download_button("Download (CSV)", lambda: frame.to_csv(index=False).encode("utf-8"),
                       file_name="loss_two_models.csv", mime="text/csv", on_click="ignore")

# ------------------------------------------------------------------ by layer
elif view == Loss.BY_LAYER:
    text = chosen_text()
    limit = 256
    st.checkbox("Final norm at every layer", value=True, key="loss_layer_norm",
                help="Off = the raw lens: hidden states go to the unembedding without the final norm.")
    normalize = st.session_state.loss_layer_norm
    with ui.user_errors():
        head = loss.first_tokens_text(lm, text, limit)
    if head != text:
        st.caption(f"The logit lens runs over every layer at once, so this view uses the first {limit} tokens.")
    with st.spinner("Running the logit lens…"), ui.user_errors():
        result = loss.layer_loss(lm, head, normalize=normalize)
    ui.chart(ui.figure(plots.layer_loss_figure,
        result, f"Cross-entropy of each layer's prediction of the next token ({'final norm' if normalize else 'raw'})"),
        "loss_by_layer")
    st.caption(
        "Each layer's hidden state is sent through the model's head (final norm, then unembedding), as if the "
        "model stopped there — the logit lens — and scored on the actual next tokens. The last point is the model's "
        "own output: the text's loss. "
        + ("" if normalize else "Without the norm the early rows look odd: the unembedding was trained on normalized "
           "vectors, and raw hidden states have a very different scale.")
    )
    st.dataframe(tables.layer_loss_table(result), hide_index=True, width="stretch",
                 column_config={c: st.column_config.NumberColumn(format="%.4f")
                                for c in ["cross-entropy (nats)", "bits per token", "perplexity"]})

# ------------------------------------------------------------------ context length
else:
    text = chosen_text()
    columns = st.columns(2)
    columns[0].select_slider("Tokens of the text used", [32, 64, 128, 256, 512, 1024], value=256,
                             key="loss_curve_limit")
    fractions = {"stride = length / 2": 0.5, "stride = length / 4": 0.25, "stride = length": 1.0,
                 "stride = 1 (exact, slow)": 1e-9}
    columns[1].selectbox("Windows", list(fractions), key="loss_curve_stride",
                         help="With stride s, a scored token sees between length − s and length − 1 tokens.")
    update, bar = progress_bar("Window lengths")
    try:
        with ui.user_errors():
            curve = loss.context_curve(lm, text, limit=st.session_state.loss_curve_limit,
                                       stride_fraction=fractions[st.session_state.loss_curve_stride], progress=update)
    finally:
        bar.empty()
    ui.chart(ui.figure(plots.context_figure, curve, "Loss against how much of the text the model may see"),
             "loss_by_context")
    st.caption(
        f"Every point scores the same {curve.scored:,} tokens with sliding windows of that length; the last point "
        "sees the whole text. The more context, the better the model predicts — most of the gain comes from the "
        "first few tokens."
    )
    st.dataframe(tables.context_table(curve), hide_index=True, width="stretch",
                 column_config={c: st.column_config.NumberColumn(format="%.4f")
                                for c in ["mean context", "cross-entropy (nats)", "perplexity"]})
