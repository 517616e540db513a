"""Experiments: cause, not correlation. Two texts that differ in one thing; copy a state of one run into
the other and measure how much of the answer moves with it (activation patching), estimate that from
gradients (AtP) beside the exact values, follow a head's paths, and see which input tokens mattered."""

import numpy as np
import pandas as pd
import streamlit as st

from lmviz.analyses import lens, patching, saliency, sampling, steering
from lmviz.app import ui
from lmviz.app.settings import Experiments
from lmviz.errors import LmvizError
from lmviz.forward import trace as trace_module
from lmviz.present.plots import experiments as plots
from lmviz.present.plots import lens as lens_plots
from lmviz.tokens import display_tokens, markdown_safe

EXAMPLES = {example.name: example for example in patching.EXAMPLES}
FIGURE_TOP = 17.8  # rem above a tab's first figure in presenter mode (header, title, settings, metric line, tabs; 17.1 measured at 1280): ui.chart


def use_example() -> None:
    """Selectbox callback: fill the pair's four boxes from the chosen ready-made pair."""
    example = EXAMPLES[st.session_state[Experiments.EXAMPLE.key]]
    for setting, value in ((Experiments.CLEAN, example.clean), (Experiments.CORRUPTED, example.corrupted),
                           (Experiments.ANSWER, example.answer), (Experiments.WRONG, example.wrong)):
        st.session_state[setting.key] = value


def aligned(lm, clean: str, corrupted: str) -> pd.DataFrame:
    """Both texts' tokens in two rows, one column per position ("" where a text has no token there)."""
    rows = []
    for text in (clean, corrupted):
        ids = trace_module.encode(lm, text)
        with lm.lock:
            rows.append(display_tokens(lm.tokenizer, ids))
    width = max(map(len, rows))
    return pd.DataFrame([row + [""] * (width - len(row)) for row in rows], index=["clean", "corrupted"],
                        columns=[str(p) for p in range(width)])


def patched_grid(site: str, mode: str) -> patching.Patching:
    """Every cell of this site (with a progress bar the first time); the chosen cell starts at the strongest."""
    bar = st.progress(0.0, text="Patching")
    with ui.user_errors():
        result = patching.patch(lm, clean, corrupted, answer, wrong, site, mode, progress=lambda done, total: bar.progress(
            done / total, text=f"Patching: {done} of {total} experiments"))
    bar.empty()
    normalized = result.values("normalized")
    strongest = np.unravel_index(np.nanargmax(np.abs(normalized)), normalized.shape)
    ui.init(Experiments.LAYER, int(strongest[0]), high=n_layers - 1)
    ui.init(Experiments.COLUMN, int(strongest[1]), high=normalized.shape[1] - 1)
    return result


def progress_bar(what: str):
    bar = st.progress(0.0, text=what)
    return bar, lambda done, total: bar.progress(done / total, text=f"{what}: {done} of {total} experiments")


ui.title("Experiments", "Cause, not correlation: run two texts that differ in one thing, copy one internal state "
         "from one run into the other, and measure how much of the answer comes with it. Every number is a real "
         "forward pass; the gradient estimates are shown beside them with their error.")
lm = ui.current_model(kinds=("causal",))
with ui.user_errors():
    parts = lm.arch.require_decomposition()
n_layers, n_heads = lm.n_layers, parts.n_heads

for setting in (Experiments.EXAMPLE, Experiments.CLEAN, Experiments.CORRUPTED, Experiments.ANSWER,
                Experiments.WRONG, Experiments.SITE, Experiments.MODE, Experiments.METRIC,
                Experiments.RECEIVER_INPUT, Experiments.EXPLAIN, Experiments.METHOD, Experiments.STEPS,
                Experiments.STEER_TEXT, Experiments.STEER_FROM, Experiments.STEER_TO, Experiments.STEER_SCALES,
                Experiments.STEER_TOKENS, Experiments.TAB):
    ui.init(setting)
if (cell := ui.clicked("exp_grid")) is not None:  # a click on the patching grid picks that cell
    st.session_state[Experiments.LAYER.key], st.session_state[Experiments.COLUMN.key] = int(cell[0]), int(cell[1])
if (cell := ui.clicked("exp_direct")) is not None:  # a click on the direct paths picks the receiver
    st.session_state[Experiments.RECEIVER_LAYER.key] = int(cell[0])
    st.session_state[Experiments.RECEIVER_HEAD.key] = int(cell[1])

settings = ui.controls()  # the pair and the design: on the page, folded into Settings in presenter mode
row = settings.columns([1.3, 2.4, 2.4, 0.9, 0.9])
row[0].selectbox(Experiments.EXAMPLE.label, list(EXAMPLES), key=Experiments.EXAMPLE.key, on_change=use_example)
row[1].text_input(Experiments.CLEAN.label, key=Experiments.CLEAN.key)
row[2].text_input(Experiments.CORRUPTED.label, key=Experiments.CORRUPTED.key)
row[3].text_input(Experiments.ANSWER.label, key=Experiments.ANSWER.key,
                  help="Its text (Paris, or ·Paris for the exact piece), its id, or a number as text in quotes: \"8\"")
row[4].text_input(Experiments.WRONG.label, key=Experiments.WRONG.key)
ui.sync(Experiments.EXAMPLE, Experiments.CLEAN, Experiments.CORRUPTED, Experiments.ANSWER, Experiments.WRONG)
clean, corrupted = ui.value(Experiments.CLEAN), ui.value(Experiments.CORRUPTED)
answer, wrong = ui.value(Experiments.ANSWER), ui.value(Experiments.WRONG)

with ui.user_errors():
    tokens = aligned(lm, clean, corrupted)
changed = [c for c in tokens.columns if tokens.loc["clean", c] != tokens.loc["corrupted", c]]
settings.dataframe(tokens.style.apply(lambda column: ["background-color: #ffe8cc" if column.name in changed else ""] * 2),
             width="stretch")
try:
    runs = patching.pair(lm, clean, corrupted, answer, wrong)
except LmvizError as error:
    st.error(str(error).split("  ·  ")[0].split(" Clean: ")[0] + (" The rows above show both tokenizations."
                                                                    if "tokens and the corrupted" in str(error) else ""),
             icon="🚫")
    st.stop()
m_clean = float(runs.clean.last_logits[runs.answer_id] - runs.clean.last_logits[runs.wrong_id])
m_corrupted = float(runs.corrupted.last_logits[runs.answer_id] - runs.corrupted.last_logits[runs.wrong_id])
st.markdown(f"Metric m = logit({markdown_safe(runs.answer)}) − logit({markdown_safe(runs.wrong)}) after the last token: "
            f"**{m_clean:.2f}** on the clean text, **{m_corrupted:.2f}** on the corrupted one.")

row = settings.columns([3, 2, 2])  # the experiment's design, shared by the tabs below (Paths ignores the site)
row[0].radio(Experiments.SITE.label, list(patching.SITES), key=Experiments.SITE.key, horizontal=True,
             format_func=plots.SITE_LABELS.get)
row[1].radio(Experiments.MODE.label, list(patching.MODES), key=Experiments.MODE.key, horizontal=True,
             format_func={"denoise": "clean → corrupted", "noise": "corrupted → clean"}.get)
row[2].selectbox(Experiments.METRIC.label, list(patching.METRICS), key=Experiments.METRIC.key,
                 format_func=plots.METRIC_LABELS.get)
ui.sync(Experiments.SITE, Experiments.MODE, Experiments.METRIC)

ui.init(Experiments.TAB)
tabs = st.tabs(Experiments.TAB.choices, key=Experiments.TAB.key, on_change="rerun")
ui.sync(Experiments.TAB)
patch_tab, lens_tab, atp_tab, paths_tab, tokens_tab, steering_tab = tabs

# ------------------------------------------------------------------ activation patching
with patch_tab:
    if patch_tab.open:  # only the open tab computes
        site, mode, metric = ui.value(Experiments.SITE), ui.value(Experiments.MODE), ui.value(Experiments.METRIC)
        result = patched_grid(site, mode)
        values = result.values(metric)
        layer, column = ui.value(Experiments.LAYER), ui.value(Experiments.COLUMN)
        figure_column, detail = st.columns([3, 1])
        ui.chart(ui.figure(plots.patching_grid, result, metric, (layer, column)), "patching", where=figure_column,
                 key="exp_grid", clickable=True, top=FIGURE_TOP)
        with detail:
            st.markdown(f"**Cell: layer {layer}, {plots.column_labels(result)[column]}**  \n"
                        f"{plots.METRIC_LABELS[metric]}: **{values[layer, column]:.3f}**")
            patched = patching.patched_trace(lm, clean, corrupted, answer, wrong, site, layer, column, mode)
            top = sampling.distribution(patched.last_logits).top(8)  # the model's own next-token distribution
            st.dataframe(pd.DataFrame({"next token (patched run)": sampling.label_tokens(lm, top.token_ids.tolist()),
                                       "p": top.model_probs.numpy()}), hide_index=True,
                         column_config={"p": st.column_config.NumberColumn(format="%.3f")})
            st.caption("Click a cell to pick it; the Patch lens tab shows this run layer by layer.")
        st.caption("Each cell is one forward pass of the " + ("corrupted" if mode == "denoise" else "clean") +
                   " text with one state replaced by the other run's. Normalized: (m_patched − m_corrupted) / "
                   "(m_clean − m_corrupted), so 1 means the patch alone restores the clean answer.")
        ui.sync(Experiments.LAYER, Experiments.COLUMN)

# ------------------------------------------------------------------ patch lens
with lens_tab:
    if lens_tab.open:  # only the open tab computes
        site, mode = ui.value(Experiments.SITE), ui.value(Experiments.MODE)
        patched_grid(site, mode)
        layer, column = ui.value(Experiments.LAYER), ui.value(Experiments.COLUMN)
        source_text, target_text = (clean, corrupted) if mode == "denoise" else (corrupted, clean)
        with ui.user_errors(stop=False):
            source = lens.logit_lens(lm, trace_module.trace(lm, source_text), k=5)
            patched = patching.patched_trace(lm, clean, corrupted, answer, wrong, site, layer, column, mode)
            target = lens.logit_lens(lm, patched, k=5)
            rows = list(range(source.n_layers + 1))
            positions = list(range(source.n_tokens))
            st.markdown(f"The {'corrupted' if mode == 'denoise' else 'clean'} run with **{markdown_safe(patched.patched)}**. "
                        "Shaded: what the patch can change (this layer and later, this position and later).")
            first_row = layer if site == "resid" else layer + 1
            first_column = 0 if site == "head" else column
            left, right = st.columns(2)
            ui.chart(ui.figure(lens_plots.heatmap, source, "top1_prob", positions, rows, height=760),
                     "patch_lens_source", where=left)
            ui.chart(ui.figure(plots.cone, lens_plots.heatmap(target, "top1_prob", positions, rows, height=760),
                               first_row, first_column, len(rows), len(positions)), "patch_lens_target", where=right)

# ------------------------------------------------------------------ attribution patching
with atp_tab:
    if atp_tab.open:  # only the open tab computes
        site, mode, metric = ui.value(Experiments.SITE), ui.value(Experiments.MODE), ui.value(Experiments.METRIC)
        with ui.user_errors(stop=False), st.spinner("One backward pass, and the exhaustive grid to compare …"):
            estimate = patching.attribution_patch(lm, clean, corrupted, answer, wrong, site, mode, metric)
            left, right = st.columns(2)
            ui.chart(ui.figure(plots.patching_grid, estimate.exact, metric), "patching_exact", where=left)
            ui.chart(ui.figure(plots.attribution_grid, estimate), "patching_atp", where=right)
            left, right = st.columns([2, 1])
            ui.chart(ui.figure(plots.attribution_scatter, estimate), "patching_atp_scatter", where=left)
            labels = plots.column_labels(estimate.exact)
            right.markdown(f"**Pearson r = {estimate.correlation:.3f}**, max |error| = {estimate.max_error:.3f}. "
                           "Where they disagree most:")
            right.dataframe(pd.DataFrame([{"layer": layer, "cell": labels[c], "AtP": e, "exact": x}
                                          for layer, c, e, x in estimate.worst]), hide_index=True)
            st.caption("AtP estimates every cell at once as (h_source − h_base) · ∂m/∂h, from one backward pass: a "
                       "straight-line guess. It fails where the model is far from straight, e.g. an attention head "
                       "that is saturated in one run (AtP*, Kramár et al. 2024); the exact grid is the truth.")

# ------------------------------------------------------------------ path patching
with paths_tab:
    if paths_tab.open:  # only the open tab computes
        mode, metric = ui.value(Experiments.MODE), ui.value(Experiments.METRIC)
        with ui.user_errors(stop=False), st.spinner("Patching every head's direct path …"):
            direct = patching.direct_paths(lm, clean, corrupted, answer, wrong, mode)
            values = direct.values(metric)
            later = np.abs(direct.values("normalized"))[1:]
            strongest = np.unravel_index(np.nanargmax(later), later.shape)
            ui.init(Experiments.RECEIVER_LAYER, int(strongest[0]) + 1, high=n_layers - 1)
            ui.init(Experiments.RECEIVER_HEAD, int(strongest[1]), high=n_heads - 1)
            receiver = (max(1, ui.value(Experiments.RECEIVER_LAYER)), ui.value(Experiments.RECEIVER_HEAD))
            left, right = st.columns(2)
            ui.chart(ui.figure(plots.grid, values, plots.head_labels(n_heads), metric,
                               "Each head's direct path to the logits", receiver),
                     "direct_paths", where=left, key="exp_direct", clickable=True, top=FIGURE_TOP)
            with right:
                st.radio(Experiments.RECEIVER_INPUT.label, ["q", "k", "v"], key=Experiments.RECEIVER_INPUT.key,
                         horizontal=True, format_func={"q": "query", "k": "key", "v": "value"}.get)
                ui.sync(Experiments.RECEIVER_INPUT, Experiments.RECEIVER_LAYER, Experiments.RECEIVER_HEAD)
                reads = ui.value(Experiments.RECEIVER_INPUT)
                asked = (clean, corrupted, answer, wrong, receiver, reads, mode)
                if st.session_state.get("_exp_traced") != asked:  # about one pass per 5 senders: on request
                    st.button(f"Trace every earlier head's path into L{receiver[0]}.H{receiver[1]}'s "
                              f"{'query' if reads == 'q' else 'key' if reads == 'k' else 'value'}",
                              on_click=lambda: st.session_state.__setitem__("_exp_traced", asked))
                else:
                    bar, progress = progress_bar("Paths into the receiver")
                    paths = patching.receiver_paths(lm, clean, corrupted, answer, wrong, receiver, reads, mode,
                                                    progress=progress)
                    bar.empty()
                    shared = "" if len(paths.shared_by) == 1 else (
                        f" (grouped-query attention: this {reads} also feeds heads "
                        f"{', '.join(map(str, paths.shared_by))})")
                    ui.chart(ui.figure(plots.grid, paths.values(metric), plots.head_labels(n_heads), metric,
                                        f"Into L{receiver[0]}.H{receiver[1]}'s {reads}{shared}", clickable=False),
                             "receiver_paths")
        st.caption("Left: a head's output copied from the other run straight into the residual stream the "
                       "unembedding reads, nothing in between recomputed. Right: each earlier head's output reaching "
                       "the chosen receiver (click a head on the left) only through the residual stream, read only by "
                       "its query, key or value; everything after the receiver runs as usual.")

# ------------------------------------------------------------------ which input tokens mattered
with tokens_tab:
    if tokens_tab.open:  # only the open tab computes
        row = st.columns([2, 2, 1])
        row[0].radio(Experiments.EXPLAIN.label, ["contrast", "top"], key=Experiments.EXPLAIN.key, horizontal=True,
                     format_func={"contrast": f"logit({runs.answer}) − logit({runs.wrong})",
                                  "top": "the top token's logit"}.get)
        row[1].radio(Experiments.METHOD.label, list(saliency.METHODS), key=Experiments.METHOD.key, horizontal=True,
                     format_func=plots.METHOD_LABELS.get)
        row[2].number_input(Experiments.STEPS.label, 1, saliency.MAX_STEPS, key=Experiments.STEPS.key,
                            disabled=ui.value(Experiments.METHOD) != "integrated_gradients")
        ui.sync(Experiments.EXPLAIN, Experiments.METHOD, Experiments.STEPS)
        target, contrast = (answer, wrong) if ui.value(Experiments.EXPLAIN) == "contrast" else (None, None)
        with ui.user_errors(stop=False), st.spinner("Hiding each token in turn, and the gradients …"):
            exact = saliency.knockout(lm, clean, target, contrast)
            estimate = saliency.saliency(lm, clean, ui.value(Experiments.METHOD), ui.value(Experiments.STEPS),
                                         target, contrast)
            if estimate.adds_up is False:
                st.warning(f"{plots.METHOD_LABELS[estimate.method]} does not add up here: its scores miss "
                           f"F(x) − F(0) by {estimate.completeness_gap:.0%} (more than "
                           f"{saliency.COMPLETENESS_LIMIT:.0%}). Trust the knockout bars, not these.", icon="⚠️")
            elif estimate.adds_up:
                st.success(f"The scores add up to F(x) − F(0) within {estimate.completeness_gap:.1%}.", icon="✅")
            ui.chart(ui.figure(plots.token_scores, exact, estimate), "token_scores")
            st.caption("Knockout hides one token from every later token (its attention key masked in every layer, "
                       "positions unchanged) and reruns: an experiment. The gradient methods estimate the same from "
                       "derivatives at the input embeddings: cheaper, and on these models often wrong.")

# ------------------------------------------------------------------ steering
with steering_tab:
    if steering_tab.open:  # only the open tab computes
        ui.init(Experiments.STEER_LAYER, min(steering.DEFAULT_LAYER, n_layers - 1), high=n_layers - 1)
        row = st.columns([3, 1, 1, 1, 2, 1])
        row[0].text_input(Experiments.STEER_TEXT.label, key=Experiments.STEER_TEXT.key)
        row[1].text_input(Experiments.STEER_FROM.label, key=Experiments.STEER_FROM.key)
        row[2].text_input(Experiments.STEER_TO.label, key=Experiments.STEER_TO.key)
        row[3].number_input(Experiments.STEER_LAYER.label, 0, n_layers - 1, key=Experiments.STEER_LAYER.key)
        row[4].text_input(Experiments.STEER_SCALES.label, key=Experiments.STEER_SCALES.key)
        row[5].number_input(Experiments.STEER_TOKENS.label, 1, steering.MAX_NEW_TOKENS, key=Experiments.STEER_TOKENS.key)
        ui.sync(Experiments.STEER_TEXT, Experiments.STEER_FROM, Experiments.STEER_TO, Experiments.STEER_LAYER,
                Experiments.STEER_SCALES, Experiments.STEER_TOKENS)
        with ui.user_errors(stop=False):
            try:
                scales = tuple(float(part) for part in ui.value(Experiments.STEER_SCALES).replace("−", "-").split(",")
                               if part.strip())
            except ValueError:
                raise LmvizError("Scales are numbers separated by commas, e.g. -1, 1, 2.") from None
            with st.spinner("Generating, once per scale …"):
                steered = steering.steer(lm, ui.value(Experiments.STEER_TEXT), ui.value(Experiments.STEER_LAYER),
                                         ui.value(Experiments.STEER_FROM), ui.value(Experiments.STEER_TO), scales,
                                         ui.value(Experiments.STEER_TOKENS))
            rows = [{"scale": "0 (as it is)", "‖added‖": 0.0, "continuation": steered.unsteered.text}]
            rows += [{"scale": f"{c.scale:g}", "‖added‖": c.added_norm, "continuation": c.text} for c in steered.sweep]
            st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch",
                         column_config={"‖added‖": st.column_config.NumberColumn(format="%.1f")})
            st.caption(f"v = block {steered.layer}'s input at the last token of B minus the same for A "
                       f"(‖v‖ = {steered.vector_norm:.1f}), times the scale, added at every position while the "
                       "model continues greedily. A negative scale pushes toward A; too large a scale drowns what "
                       "the residual stream carried and the text falls apart.")

