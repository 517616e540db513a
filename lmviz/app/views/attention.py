"""Attention & attribution: which heads look where, which blocks wrote the prediction, and what breaks
when a part is taken out."""

import math

import pandas as pd
import streamlit as st

from lmviz.app import ui
from lmviz.app.settings import Attention
from lmviz.analyses import ablation, attention, attribution
from lmviz.forward import trace
from lmviz.errors import LmvizError
from lmviz.model.interventions import Component
from lmviz.present.plots import attention as plots
from lmviz.tokens import markdown_safe

ui.title("Attention & attribution", (
    "Where every head looks, which blocks and heads pushed the prediction up, and what changes when one "
    "is taken out — all from the model's own computation, checked against it."
))
lm = ui.current_model(kinds=("causal",))
text = ui.current_text()
with ui.user_errors():
    parts = lm.arch.require_decomposition(additive=False)  # patterns need the attention modules only
    n_tokens = len(trace.encode(lm, text))
n_layers, n_heads = lm.n_layers, parts.n_heads

LIMITS = {Attention.STATISTIC: None, Attention.QUERY: n_tokens - 1, Attention.POSITION: n_tokens - 1,
          Attention.TARGET: None, Attention.TARGET_TEXT: None, Attention.UP_TO: n_layers,
          Attention.ABLATE: None, Attention.ABLATE_LAYER: n_layers - 1, Attention.ABLATE_HEAD: n_heads - 1,
          Attention.MODE: None}  # setting: its limit on this text and model
for setting, high in LIMITS.items():
    ui.init(setting, high=high)

# clicks on the clickable charts (last run's) set the widgets they stand for, before those are drawn
if (cell := ui.clicked("att_grid")) is not None:
    st.session_state[Attention.LAYER.key], st.session_state[Attention.HEAD.key] = int(cell[0]), int(cell[1])
for chart_key in ("att_bars", "att_head_grid"):
    if (part := ui.clicked(chart_key)) is not None and part[0] in ("attn", "mlp", "head"):
        st.session_state[Attention.ABLATE.key], st.session_state[Attention.ABLATE_LAYER.key] = part[0], int(part[1])
        if part[0] == "head":
            st.session_state[Attention.ABLATE_HEAD.key] = int(part[2])


# ------------------------------------------------------------------ the patterns (every section labels tokens by them)
low, high, _ = ui.window(Attention.WINDOW, n_tokens, attention.DEFAULT_WINDOW, attention.MAX_WINDOW)
with ui.user_errors(), st.spinner("Running the model with eager attention …"):
    patterns = attention.attention(lm, text, (low, high + 1))
scores = patterns.stats[ui.value(Attention.STATISTIC)]
scores = -scores if ui.value(Attention.STATISTIC) == "entropy" else scores  # the most focused head
strongest = divmod(int(scores.nan_to_num(-math.inf).argmax()), n_heads)
ui.init(Attention.LAYER, strongest[0], high=n_layers - 1)  # first look: the strongest head
ui.init(Attention.HEAD, strongest[1], high=n_heads - 1)
if st.session_state.get("_att_stat_seen", ui.value(Attention.STATISTIC)) != ui.value(Attention.STATISTIC):
    # another statistic: its strongest head
    st.session_state[Attention.LAYER.key], st.session_state[Attention.HEAD.key] = strongest
st.session_state._att_stat_seen = ui.value(Attention.STATISTIC)
try:  # attribution and ablation need parts that add up to each block's output
    lm.arch.require_decomposition()
    not_additive = None
except LmvizError as error:
    not_additive = error

presenting = ui.presenting()  # on a projector a section's figure comes first: its settings folded, numbers after
FIGURE_TOP = 12.5  # rem above the first section's figure in presenter mode (header, title, section, settings): ui.chart


def patterns_section(top: float | None) -> None:
    st.header("Where the heads look")
    controls = ui.controls().columns([2, 1, 1])
    controls[0].selectbox(Attention.STATISTIC.label, list(attention.STATISTICS), key=Attention.STATISTIC.key,
                          format_func=lambda key: attention.STATISTICS[key].split(" (")[0])
    controls[1].number_input(Attention.LAYER.label, 0, n_layers - 1, step=1, key=Attention.LAYER.key)
    controls[2].number_input(Attention.HEAD.label, 0, n_heads - 1, step=1, key=Attention.HEAD.key)

    def caption() -> None:
        st.caption(f"**{ui.value(Attention.STATISTIC)}**: {attention.STATISTICS[ui.value(Attention.STATISTIC)]}. "
                   "Averaged over every query but the first. Click a cell to look at that head.")

    if not presenting:
        caption()
    overview, detail = st.columns([2, 3])
    layer, head = int(ui.value(Attention.LAYER)), int(ui.value(Attention.HEAD))
    ui.chart(ui.figure(plots.head_grid, patterns, ui.value(Attention.STATISTIC), (layer, head)), "attention_heads",
             where=overview, key="att_grid", clickable=True, top=top)
    with detail:
        ui.chart(ui.figure(plots.pattern, patterns, layer, head), f"attention_L{layer}_H{head}", top=top)
    if presenting:
        caption()
    start, stop = patterns.queries
    if n_tokens > 1:
        st.slider(Attention.WINDOW.label, 0, n_tokens - 1, key=Attention.WINDOW.key,
                  help=f"The patterns keep these query positions (at most {attention.MAX_WINDOW}) and every key "
                  "before them; the head statistics always cover the whole text.")
    queries = list(range(start, stop))
    if ui.value(Attention.QUERY) not in queries:
        st.session_state[Attention.QUERY.key] = queries[-1]
    st.selectbox(Attention.QUERY.label, queries, key=Attention.QUERY.key,
                 format_func=lambda p: f"{p} {patterns.tokens[p]}")
    ui.chart(ui.figure(plots.query_lines, patterns, layer, head, int(ui.value(Attention.QUERY))),
             f"attention_lines_L{layer}_H{head}")


def attribution_section(top: float | None) -> None:
    st.header("Which parts wrote the prediction")
    if not_additive is not None:
        st.error(str(not_additive), icon="🚫")
        return
    row = (ui.controls() if presenting else st).columns([1, 1, 1, 1])
    row[0].selectbox(Attention.POSITION.label, list(range(n_tokens)), key=Attention.POSITION.key,
                     format_func=lambda p: f"{p} {patterns.tokens[p]}")
    row[1].radio(Attention.TARGET.label, Attention.TARGET.choices, key=Attention.TARGET.key)
    row[2].text_input(Attention.TARGET_TEXT.label, key=Attention.TARGET_TEXT.key,
                      disabled=ui.value(Attention.TARGET) != Attention.TYPED,
                      help="A word is read with a leading space (' Paris') when that is one token; · stands for a "
                      "space.")
    row[3].number_input(f"Up to layer ({n_layers} = the output)", 0, n_layers, step=1, key=Attention.UP_TO.key,
                        help="Below the output, explain the logit lens's logit at that layer: blocks 0 .. layer−1.")
    position, kind = int(ui.value(Attention.POSITION)), ui.value(Attention.TARGET)
    target = None
    with ui.user_errors():
        if kind == Attention.NEXT_TOKEN:
            if position + 1 >= n_tokens:
                raise LmvizError("The last position has no actual next token: pick an earlier position.")
            target = int(trace.encode(lm, text)[position + 1])
        elif kind == Attention.TYPED:
            target = attribution.resolve_target(lm, ui.value(Attention.TARGET_TEXT))
        with st.spinner("Recording every block's part …"):
            result = attribution.attribute(lm, text, position, target, int(ui.value(Attention.UP_TO)))

    def facts() -> None:
        what = "the model's logit" if result.layer == n_layers else f"the logit lens's logit at layer {result.layer}"
        columns = st.columns(4)
        columns[0].metric("Target", result.target_token, help=f"token id {result.target_id}")
        columns[1].metric(f"Logit ({what})", f"{result.logit:.4f}")
        columns[2].metric("Sum of the parts", f"{result.total:.4f}")
        columns[3].metric("Difference", f"{result.total - result.logit:.1e}",
                          help=f"Float rounding alone allows up to {result.bound:.1e} (derived from the dtype's unit "
                          "roundoff).")
        if abs(result.total - result.logit) > result.bound:
            st.error("The parts do not add up to the logit within rounding: lmviz can't attribute this model exactly.")
        with st.expander("What does holding the norm fixed mean?"):
            st.markdown(
                "The residual stream before the final norm is a sum: the embedding plus what every attention and MLP "
                "block added. The final norm divides that sum by its own size, which is not linear. **Holding the "
                "norm fixed** means dividing every part by the size of the *whole* sum, the number the model "
                "actually used. Then the norm is linear, the logit splits into one number per part, and the numbers "
                "add up to the logit exactly (up to float rounding, shown above). Each number is a part's *direct* "
                "effect: how hard it pushed the residual towards the target's unembedding row. What a part did by "
                "changing later blocks' inputs is not in it — the ablation section measures that. "
                + (f"The constant {result.constant:.4f} is the norm's and unembedding's bias, which no part owns."
                   if result.constant else ""))

    if not presenting:
        facts()
    ui.chart(ui.figure(plots.attribution_bars, result), "attribution_blocks", key="att_bars", clickable=True, top=top)
    if presenting:
        facts()
    ui.chart(ui.figure(plots.head_attribution, result), "attribution_heads", key="att_head_grid", clickable=True)
    st.caption("Click a bar or a head to take it out. Heads sum to their attention block"
               + (" (plus the output projection's bias)." if bool((result.head_bias != 0).any()) else "."))
    with st.expander("Every part as a table"):
        frame = pd.DataFrame(result.components())
        st.dataframe(frame, width="stretch", height=320)
        st.download_button("Download (CSV)", lambda: frame.to_csv(index=False).encode("utf-8"),
                           file_name="attribution.csv", mime="text/csv", on_click="ignore")


def ablation_section(top: float | None) -> None:
    if not_additive is not None:
        return
    st.header("Take a part out")
    row = (ui.controls() if presenting else st).columns([1, 1, 1, 1])
    row[0].radio(Attention.ABLATE.label, ["head", "attn", "mlp"], key=Attention.ABLATE.key, horizontal=True,
                 format_func={"head": "one head", "attn": "attention block", "mlp": "MLP block"}.get)
    row[1].number_input(Attention.ABLATE_LAYER.label, 0, n_layers - 1, step=1, key=Attention.ABLATE_LAYER.key)
    row[2].number_input(Attention.ABLATE_HEAD.label, 0, n_heads - 1, step=1, key=Attention.ABLATE_HEAD.key,
                        disabled=ui.value(Attention.ABLATE) != "head")
    row[3].radio(Attention.MODE.label, ["zero", "mean"], key=Attention.MODE.key, horizontal=True,
                 help="zero: its output becomes 0. mean: its output becomes its mean over this text's positions.")
    kind = ui.value(Attention.ABLATE)
    component = Component(kind, int(ui.value(Attention.ABLATE_LAYER)),
                          int(ui.value(Attention.ABLATE_HEAD)) if kind == "head" else None)
    with ui.user_errors(), st.spinner(f"Running the model without {component.label} …"):
        effect = ablation.ablate(lm, text, component, ui.value(Attention.MODE))

    def facts() -> None:
        columns = st.columns(3)
        columns[0].metric("KL(before ‖ after), next token", f"{effect.kl:.4g} nats")
        if math.isnan(effect.loss_after):  # a one-token text: no token after the first to score
            columns[1].metric("Text loss (mean NLL)", "—", help="A one-token text has no next token to score.")
        else:
            columns[1].metric("Text loss (mean NLL)", f"{effect.loss_after:.4f}", f"{effect.loss_change:+.4f} nats",
                              delta_color="inverse")
        columns[2].metric(f"p('{markdown_safe(effect.before_tokens[0])}') after", f"{effect.after_of_before[0]:.4f}",
                          f"{effect.after_of_before[0] - effect.before_probs[0]:+.4f}")

    if not presenting:
        facts()
    ui.chart(ui.figure(plots.ablation_bars, effect), f"ablation_{component.kind}_L{component.layer}", top=top)
    if presenting:
        facts()


def focus() -> str:
    """The section a lesson's step is about, from the settings it sets; presenter mode draws it first, so that
    its figure is on the first screen."""
    at = ui.current_lesson()
    params = at[0].steps[at[1] - 1].params if at is not None and presenting else {}
    if Attention.ABLATE in params or Attention.MODE in params:
        return "ablation"
    if Attention.TARGET in params or Attention.UP_TO in params or Attention.POSITION in params:
        return "attribution"
    return "patterns"


SECTIONS = {"patterns": (patterns_section, attribution_section, ablation_section),
            "attribution": (attribution_section, ablation_section, patterns_section),
            "ablation": (ablation_section, attribution_section, patterns_section)}
for number, section in enumerate(SECTIONS[focus()]):
    section(FIGURE_TOP if number == 0 else None)

ui.sync(*LIMITS, Attention.LAYER, Attention.HEAD, Attention.WINDOW)
