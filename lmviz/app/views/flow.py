"""Information flow: the graph of what moved where into one position (Ferrando & Voita 2024), with links
from any of its nodes to the lens, attribution and patching there."""

import pandas as pd
import streamlit as st

from lmviz.analyses import flow, patching
from lmviz.app import pages, ui
from lmviz.app.settings import Attention, Experiments, InformationFlow, Lens
from lmviz.present.plots import flow as plots
from lmviz.tokens import display_tokens, markdown_safe

ui.title("Information flow", (
    "What the prediction at one position drew on: every block's attention split into one term per token it "
    "read, every term scored by its share of the sum it joins (proximity, Ferrando & Voita 2024), and the graph "
    "walked down from the output keeping the edges above a threshold."
))
lm = ui.current_model(kinds=("causal",))
text = ui.current_text()
with ui.user_errors():
    flow.require_flow(lm)
    ids = flow.check_ids(lm, text)
with lm.lock:
    tokens = display_tokens(lm.tokenizer, ids)
n_tokens, n_layers = len(ids), lm.n_layers

LIMITS = {InformationFlow.POSITION: n_tokens - 1, InformationFlow.THRESHOLD: None,
          InformationFlow.NODE_LAYER: n_layers, InformationFlow.NODE_POSITION: n_tokens - 1,
          InformationFlow.NODE_MID: None}  # setting: its limit on this text and model
for setting, high in LIMITS.items():
    ui.init(setting, high=high)
if (node := ui.clicked("flow_graph")) is not None:  # a click on a node picks it, before the widgets are drawn
    st.session_state[InformationFlow.NODE_LAYER.key] = int(node[0])
    st.session_state[InformationFlow.NODE_POSITION.key] = int(node[1])
    st.session_state[InformationFlow.NODE_MID.key] = bool(node[2])

FIGURE_TOP = 10.3  # rem above the graph in presenter mode (header, title, settings): ui.chart
row = ui.controls().columns([2, 2, 3])
row[0].selectbox(InformationFlow.POSITION.label, list(range(n_tokens)), key=InformationFlow.POSITION.key,
                 format_func=lambda p: f"{p} {tokens[p]}")
row[1].number_input(InformationFlow.THRESHOLD.label, 0.0, 1.0, step=0.01, format="%.3f",
                    key=InformationFlow.THRESHOLD.key,
                    help=f"Default {flow.DEFAULT_THRESHOLD}. Lower shows more of the graph (0: every edge).")
position, threshold = int(ui.value(InformationFlow.POSITION)), float(ui.value(InformationFlow.THRESHOLD))
with ui.user_errors(), st.spinner("One pass with eager attention, every attention split by token …"):
    result = flow.flow(lm, text, position, threshold)
selected = flow.Node(int(ui.value(InformationFlow.NODE_LAYER)), int(ui.value(InformationFlow.NODE_POSITION)),
                     bool(ui.value(InformationFlow.NODE_MID)) and ui.value(InformationFlow.NODE_LAYER) < n_layers)


def facts() -> None:
    st.caption(f"**{len(result.nodes):,}** nodes, **{len(result.edges_of('attn')):,}** attention and "
               f"**{len(result.edges_of('mlp')):,}** MLP edges. Blue: a token's part of a block's attention (hover "
               "an edge for the heads that carry it); orange: the MLP; grey: the residual carried past. Width = "
               "importance, a share of the one sum the edge joins. Click a node for links. The attention's terms "
               f"add up to its output within {result.sum_error:.1e} (float rounding allows {result.sum_bound:.1e}).")


ui.chart(ui.figure(plots.graph, result, selected if selected in result.nodes else None,
                     height=min(860, max(420, 16 * n_layers + 150))),
         f"flow_position{position}", key="flow_graph", clickable=True, top=FIGURE_TOP)
facts()

# ------------------------------------------------------------------ the chosen node, and where to look next
where = ("inside the block, after its attention" if selected.mid else
         "the final residual, before the final norm" if selected.layer == n_layers else
         "the embeddings" if selected.layer == 0 else f"the input of block {selected.layer}")
st.markdown(f"**Node:** position {selected.position} (**{markdown_safe(tokens[selected.position])}**), "
            f"layer {selected.layer}: {where}"
            + ("" if selected in result.nodes else " — not in the graph at this threshold."))
links = st.columns(3)
if links[0].button("Logit lens at this position →", help="Opens the logit lens with this position's table: "
                   "every layer's top tokens, this node's layer among them."):
    ui.open_with(pages.LENS, {Lens.TABLE: "by position", Lens.POSITION: selected.position,
                              Lens.WINDOW: (max(0, selected.position - Lens.SHOWN_COLUMNS + 1), selected.position)})
block_boundary = not selected.mid
if links[1].button("Which blocks wrote it? →", disabled=not block_boundary,
                   help="Direct logit attribution of the top token read from this node (the logit lens at its layer): "
                   "the embeddings and blocks 0 … layer−1. A node inside a block has no such split."):
    ui.open_with(pages.ATTENTION, {Attention.POSITION: selected.position, Attention.TARGET: Attention.TOP_PREDICTION,
                                   Attention.UP_TO: selected.layer})
example = next((e for e in patching.EXAMPLES if e.clean == text), None)
pair = {Experiments.EXAMPLE: example.name, Experiments.CLEAN: example.clean, Experiments.CORRUPTED: example.corrupted,
        Experiments.ANSWER: example.answer, Experiments.WRONG: example.wrong} if example else {}
if links[2].button("Patch it →", disabled=not block_boundary or selected.layer == n_layers,
                   help="Activation patching of this residual (block input) on the Experiments page"
                   + (f", with the ready-made pair '{example.name}'." if example else
                      ", on that page's pair of texts (a clean and a corrupted one).")):
    ui.open_with(pages.EXPERIMENTS, {**pair, Experiments.SITE: "resid", Experiments.LAYER: selected.layer,
                                     Experiments.COLUMN: selected.position, Experiments.TAB: Experiments.PATCHING_TAB})

with st.expander("How is importance computed?"):
    st.markdown(
        "A block adds two terms to the residual stream at position j: **mid = x + a** (its attention's output a) "
        "and **out = mid + m** (its MLP's output m). With the attention probabilities fixed, a splits into one "
        "term per token it read, **c(i→j) = Σ_h A_h[j, i] · W_O,h v_h(i)**, plus the output projection's bias "
        "(a post-attention norm, as in Gemma, is held at its scale, so the terms still add up exactly). "
        "For a sum y = Σ c, a term's **proximity** is max(0, ‖y‖₁ − ‖y − c‖₁): how much of y's size would go "
        "without it. Its **importance** is its proximity divided by the sum of all the terms' proximities. "
        "The graph starts at the chosen position's output and walks down, keeping each edge whose importance is "
        "at least τ, and the node it comes from. A head's share of an attention edge is the same computation one "
        "level down, over the heads' terms of that edge.")
with st.expander("Every edge of the graph as a table"):
    frame = pd.DataFrame([{"kind": e.kind, "into": "after the attention" if e.sublayer == "attn" else "block output",
                           "block": e.layer, "from": f"{e.from_pos} {tokens[e.from_pos]}",
                           "to": f"{e.to_pos} {tokens[e.to_pos]}", "importance": e.importance,
                           "heads": ", ".join(f"H{h} {s:.0%}" for h, s in e.heads)} for e in result.edges])
    st.dataframe(frame, width="stretch", height=320, hide_index=True,
                 column_config={"importance": st.column_config.NumberColumn(format="%.3f")})
    st.download_button("Download (CSV)", lambda: frame.to_csv(index=False).encode("utf-8"),
                       file_name=f"flow_position{position}.csv", mime="text/csv", on_click="ignore")

ui.sync(*LIMITS)
