"""Logit lens: what every layer would predict as the next token, if it were the last layer."""

import streamlit as st

from lmviz.app import pages, ui
from lmviz.app.settings import Attention, Lens
from lmviz.analyses import lens
from lmviz.forward import trace
from lmviz.present.tables import lens as tables
from lmviz.errors import LmvizError
from lmviz.present.plots import lens as plots
from lmviz.tokens import markdown_safe, visible

ui.title("Logit lens", (
    "Each layer's hidden state is sent through the model's own head — final norm, then unembedding — as if it "
    "were the last layer. Layer 0 is the token embeddings, the top row the model's real output. Read a column "
    "bottom-up to watch the prediction for the next token form."
))
lm = ui.current_model(kinds=("causal",))
text = ui.current_text()

SETTINGS = (Lens.STATISTIC, Lens.NORMALIZED, Lens.K, Lens.STRIDE, Lens.TABLE, Lens.VALUES, Lens.WATCH, Lens.SPACE,
            Lens.WATCH_VALUE)
for setting in SETTINGS:
    ui.init(setting)

presenting = ui.presenting()  # on a projector the heatmap comes first: what explains it follows it
FIGURE_TOP = 10.3  # rem above the heatmap in presenter mode (header, title, settings): ui.chart
settings_box = ui.controls()
controls = settings_box.columns([2, 2, 1])
controls[0].selectbox(Lens.STATISTIC.label, Lens.STATISTIC.choices, format_func=lambda key: lens.STATISTICS[key][0],
                      key=Lens.STATISTIC.key)
controls[1].toggle(Lens.NORMALIZED.label, key=Lens.NORMALIZED.key,
                   help="Off = raw: lm_head(hidden_states[i]) with no norm, exactly seed 004's tables.")
controls[2].number_input(Lens.K.label, min_value=1, max_value=20, step=1, key=Lens.K.key)
normalized = ui.value(Lens.NORMALIZED)


def mode_caption() -> None:
    if normalized:
        st.caption(
            "**Normalized:** every layer goes through the model's final norm, then the unembedding, like the last "
            "layer does (the norm is recomputed for each vector, and applied once: the last hidden state already "
            "has it)."
        )
    else:
        st.caption(
            "**Raw** (seed 004): the unembedding applied to the un-normalized hidden states. Early and middle rows "
            "look odd because the residual stream has a different scale there and a few very large dimensions: "
            "with tied weights the embeddings row mostly echoes the input token itself, and middle rows often put "
            "nearly all the mass on the same strange tokens. The top row is the same in both modes."
        )


if not presenting:
    mode_caption()

with ui.user_errors(), st.spinner("Running the model …"):
    t = trace.trace(lm, text, truncate=True)
if t.truncated_from:
    st.warning(f"The text is {t.truncated_from:,} tokens long; only the first {t.n_tokens:,} are shown "
               f"(the most {lm.name} takes at once here: {trace.limit_reason(lm)}).", icon="✂️")
if t.n_tokens == 1:
    st.info("The text is a single token: each layer still predicts what comes after it, but there is no actual "
            "next token to score. Type a longer text to see ranks and cross-entropies.", icon="ℹ️")

# watched tokens (folded into the settings in presenter mode): a bad entry is reported here and the rest of
# the page still runs
watch_columns = (settings_box if presenting else st).columns([3, 1])
watch_columns[0].text_input(Lens.WATCH.label, key=Lens.WATCH.key,
                            help="Each must be a single token of this model, e.g. ' Paris, London'. "
                            "A leading · means a space.")
watch_columns[1].checkbox(Lens.SPACE.label, key=Lens.SPACE.key,
                          help="Words inside a sentence start with a space: ' Paris', not 'Paris'.")
watched: tuple[int, ...] = ()
try:
    watched = lens.resolve_watched(lm, lens.parse_watched(ui.value(Lens.WATCH), ui.value(Lens.SPACE)))
except LmvizError as error:
    st.error(str(error), icon="🚫")

n_pos, n_layers = t.n_tokens, lm.n_layers
k, stat = int(ui.value(Lens.K)), ui.value(Lens.STATISTIC)


def lens_at(first: int, end: int, watched_ids=()) -> lens.LensResult:
    """The lens of positions first .. end-1 only: the page never computes positions it does not show."""
    with ui.user_errors(), st.spinner("Projecting every layer onto the vocabulary …"):
        return lens.logit_lens(lm, t, k=k, normalize=normalized, watched_ids=watched_ids, positions=(first, end))


# ------------------------------------------------------------------ heatmap window (chosen first: it is what runs)
low, high, clipped = ui.window(Lens.WINDOW, n_pos, Lens.SHOWN_COLUMNS, Lens.MAX_COLUMNS)
positions = list(range(low, high + 1))
result = lens_at(low, high + 1)


def facts() -> None:
    columns = st.columns(4)
    columns[0].metric("Layers (+ embeddings)", f"{n_layers} + 1")
    columns[1].metric("Tokens", f"{n_pos:,}")
    last_top = int(t.last_logits.argmax())
    columns[2].metric("Output's top-1 after the last token", visible(lens.token_pieces(lm, [last_top])[last_top]))
    columns[3].metric("max |lens(last) − model logits|", f"{result.max_final_error:.1e}",
                      help="lmviz's head (final norm, unembedding, logit scale or cap) against the model's own logits "
                      "after the last token. It must stay within float rounding: lmviz checks this on every load and "
                      "every trace, and refuses a model whose head it can't reproduce.")


def window_controls() -> None:
    window_columns = st.columns([3, 1])
    if n_pos > 1:
        window_columns[0].slider(Lens.WINDOW.label, 0, n_pos - 1, key=Lens.WINDOW.key,
                                 help=f"Only the positions shown are computed (at most {Lens.MAX_COLUMNS} at once).")
    window_columns[1].number_input(Lens.STRIDE.label, min_value=1, max_value=64, step=1,
                                   key=Lens.STRIDE.key)
    if clipped:
        st.caption(f"Showing the last {Lens.MAX_COLUMNS} positions of the window, so that cells stay readable.")


if not presenting:
    facts()
    st.subheader("Every layer's guess")
    window_controls()
layers = lens.layer_rows(n_layers, int(ui.value(Lens.STRIDE)))
ui.chart(ui.figure(plots.heatmap, result, stat, positions, layers), "logit_lens_heatmap", top=FIGURE_TOP)
st.caption("Cell text: that layer's most likely next token (**bold** when it is the actual next token). "
           "Hover a cell for its top tokens.")
if presenting:
    window_controls()
    facts()
    mode_caption()

# "why this token?": open attribution for one cell (its position, its top-1 token, the blocks below it)
if lm.arch.decomposition is not None and not lm.arch.decomposition.additive_refusal:
    why = st.columns([2, 2, 3], vertical_alignment="bottom")
    if st.session_state.get("lens_why_pos") not in positions:
        st.session_state.lens_why_pos = positions[-1]
    if not 0 <= st.session_state.get("lens_why_layer", -1) <= n_layers:
        st.session_state.lens_why_layer = n_layers
    why[0].selectbox("Why this token? Position", positions, key="lens_why_pos",
                     format_func=lambda p: f"{p} {result.input_token(p)}")
    why[1].selectbox("Layer", list(range(n_layers, -1, -1)), key="lens_why_layer", format_func=result.layer_label)
    why_pos, why_layer = st.session_state.lens_why_pos, st.session_state.lens_why_layer
    why_id = int(result.top_ids[why_layer, result.column(why_pos), 0])
    if why[2].button(f"Which blocks wrote '{markdown_safe(result.token(why_id))}'? →", help="Opens Attention & attribution on this "
                     "cell: the logit of its top token split over the embedding and blocks 0 … layer−1."):
        ui.open_with(pages.ATTENTION, {Attention.POSITION: why_pos, Attention.TARGET: Attention.TYPED,
                                   Attention.TARGET_TEXT: str(why_id), Attention.UP_TO: why_layer})

# ------------------------------------------------------------------ seed-style table
st.subheader("Top-k table")
table_columns = st.columns([1, 2, 1])
table_columns[0].radio(Lens.TABLE.label, Lens.TABLE.choices, key=Lens.TABLE.key, horizontal=True)
table_columns[2].selectbox(Lens.VALUES.label, Lens.VALUES.choices, key=Lens.VALUES.key)
values = ui.value(Lens.VALUES)
if ui.value(Lens.TABLE) == "by layer":
    ui.init(Lens.LAYER, high=n_layers)
    table_columns[1].selectbox(Lens.LAYER.label, list(range(n_layers + 1)), format_func=result.layer_label, key=Lens.LAYER.key)
    frame = tables.lens_table(result, layer=ui.value(Lens.LAYER), values=values)
    frame.columns = [f"{p} {result.input_token(p)}" for p in positions]
    caption = (f"Rows: rank 0 … {result.k - 1}; columns: the positions shown above — like seed 004's "
               "`pd.DataFrame(...).T`.")
    name = f"lens_layer{ui.value(Lens.LAYER)}.csv"
else:
    ui.init(Lens.POSITION, high=n_pos - 1)
    table_columns[1].selectbox(Lens.POSITION.label, list(range(n_pos)), key=Lens.POSITION.key,
                               format_func=lambda p: f"{p} {t.tokens[p]}")
    position = ui.value(Lens.POSITION)
    frame = tables.lens_table(lens_at(position, position + 1), position=position, values=values)
    frame.index = [result.layer_label(layer) for layer in frame.index]
    caption = "Rows: layers, embeddings first; columns: rank. Read down to see the guess settle."
    name = f"lens_position{position}.csv"
st.dataframe(frame, width="stretch", height=min(560, 38 + 35 * len(frame)))
st.caption(caption)
downloads = st.columns(2)
downloads[0].download_button("Download this table (CSV)", lambda: frame.to_csv().encode("utf-8"), file_name=name,
                             mime="text/csv", on_click="ignore")


def download_everything(full: lens.LensResult) -> None:
    downloads[1].download_button(
        "Download every layer × position × rank (CSV)", file_name="logit_lens.csv", mime="text/csv",
        data=lambda: tables.lens_long_table(full).to_csv(index=False).encode("utf-8"), on_click="ignore")


if lens.is_cached(lm, t, k=k, normalize=normalized):
    download_everything(lens.logit_lens(lm, t, k=k, normalize=normalized))
elif downloads[1].button(f"Compute every layer × position ({n_pos:,} positions) for download",
                         help="The page computes only the positions it shows; the whole lens takes about "
                         "five forward passes' time on a long text."):
    bar = downloads[1].progress(0.0, text="Computing every position …")
    full = lens.logit_lens(lm, t, k=k, normalize=normalized,
                           progress=lambda done, total: bar.progress(done / total, text=f"Positions: {done}/{total} blocks"))
    bar.empty()
    download_everything(full)

# ------------------------------------------------------------------ watched tokens
st.subheader("Watched tokens")
if not watched:
    st.caption("Type tokens to watch above (e.g. ' Paris, London') to follow their probability and rank "
               "through the layers.")
else:
    ui.init(Lens.WATCH_POSITION, high=n_pos - 1)
    watch_controls = st.columns([2, 1])
    watch_controls[0].selectbox(Lens.WATCH_POSITION.label, list(range(n_pos)), key=Lens.WATCH_POSITION.key,
                                format_func=lambda p: f"{p} {t.tokens[p]}")
    watch_controls[1].radio(Lens.WATCH_VALUE.label, Lens.WATCH_VALUE.choices, key=Lens.WATCH_VALUE.key, horizontal=True,
                            format_func=lambda v: "probability" if v == "prob" else "rank")
    position = ui.value(Lens.WATCH_POSITION)
    at_position = lens_at(position, position + 1, watched)
    ui.chart(ui.figure(plots.trajectories, at_position, position, ui.value(Lens.WATCH_VALUE)), "watched_tokens")
    watched_frame = tables.watched_table(at_position, position)
    wide = watched_frame.pivot(index="layer", columns="token", values=ui.value(Lens.WATCH_VALUE))
    wide.index = [at_position.layer_label(layer) for layer in wide.index]
    with st.expander("As a table"):
        st.dataframe(wide, width="stretch")
        st.download_button("Download (CSV)", lambda: watched_frame.to_csv(index=False).encode("utf-8"),
                           file_name=f"lens_watched_position{position}.csv", mime="text/csv", on_click="ignore")

ui.sync(*SETTINGS, Lens.WINDOW, Lens.LAYER, Lens.POSITION, Lens.WATCH_POSITION)
