"""Beam search: expand, evaluate, prune — the whole tree, replayable step by step (seed 003)."""

import json

import streamlit as st

from lmviz.app import ui
from lmviz.app.settings import Beam
from lmviz.analyses import beam
from lmviz.present.tables import beam as tables
from lmviz.present.plots import beam as plots

ui.title("Beam search", (
    "Greedy decoding keeps one continuation; beam search keeps the K best. Each step it **expands** every "
    "running beam by every token, **evaluates** the candidates by their summed log-probability, and **prunes** "
    "to the K best. Hypotheses that end (end-of-sequence token, or the length limit) go to a finished list, "
    "scored with a length penalty. The finished hypotheses and their scores are exactly those of "
    "`model.generate(num_beams=K, do_sample=False, …)` with the same settings."
))
lm = ui.current_model(kinds=("causal",))
text = ui.current_text()
FIGURE_TOP = 15.5  # rem above the tree in presenter mode (header, title, settings, the replay slider): ui.chart

SETTINGS = (Beam.BEAMS, Beam.NEW_TOKENS, Beam.LENGTH_PENALTY, Beam.EARLY_STOPPING, Beam.PRUNED, Beam.SEED)
for setting in SETTINGS:
    ui.init(setting)

columns = ui.controls().columns(6)
columns[0].slider(Beam.BEAMS.label, 1, 8, key=Beam.BEAMS.key, help="How many hypotheses stay alive after every step.")
columns[1].slider(Beam.NEW_TOKENS.label, 1, 20, key=Beam.NEW_TOKENS.key,
                  help="The longest continuation (max_new_tokens).")
columns[2].number_input(
    Beam.LENGTH_PENALTY.label, -3.0, 3.0, step=0.5, key=Beam.LENGTH_PENALTY.key, format="%.2f",
    help="A finished hypothesis scores log-prob / length^penalty. 0 = plain sum of log-probabilities; "
    "above 0 favours longer hypotheses, below 0 shorter ones.",
)
columns[3].selectbox(
    Beam.EARLY_STOPPING.label, Beam.EARLY_STOPPING.choices, format_func=Beam.EARLY_STOPPING_LABELS.get,
    key=Beam.EARLY_STOPPING.key,
    help="True: stop once K hypotheses have finished. False: stop when the best running beam, scored at its "
    "current length, can no longer beat the worst finished one. never: the same test, but with a positive "
    "length penalty it assumes the longest possible length, so it only stops when no beam can improve.",
)
columns[4].slider(Beam.PRUNED.label, 0, 5, key=Beam.PRUNED.key,
                  help="How many of each beam's most probable pruned candidates to draw.")
columns[5].number_input(Beam.SEED.label, 0, 2**31 - 1, step=1, key=Beam.SEED.key,
                        help="The seed of the sampled continuation shown for comparison.")
ui.sync(*SETTINGS)

settings = dict(
    num_beams=int(ui.value(Beam.BEAMS)),
    max_new_tokens=int(ui.value(Beam.NEW_TOKENS)),
    length_penalty=float(ui.value(Beam.LENGTH_PENALTY)),
    early_stopping=beam.parse_early_stopping(ui.value(Beam.EARLY_STOPPING)),
)
with ui.user_errors(), st.spinner("Searching …"):
    tree = beam.beam_search(lm, text, alternatives=5, **settings)
    greedy = beam.greedy(lm, text, settings["max_new_tokens"])
    sampled = beam.sample(lm, text, settings["max_new_tokens"], seed=int(ui.value(Beam.SEED)))

# the replay slider: one frame per (step, phase); a new search starts at its last frame
frames = plots.frames(tree)
signature = (lm.name, text, tuple(settings.values()))
ui.init(Beam.FRAME, high=len(frames))
settings_changed = st.session_state.get("beam_frame_of") not in (None, signature)
if settings_changed or not 1 <= ui.value(Beam.FRAME) <= len(frames):
    st.session_state[Beam.FRAME.key] = len(frames)
st.session_state.beam_frame_of = signature
if len(frames) > 1:
    st.select_slider(
        Beam.FRAME.label, options=list(range(1, len(frames) + 1)), key=Beam.FRAME.key,
        format_func=lambda i: plots.frame_label(*frames[i - 1]),
        help="Step by step: the candidates appear (expand), get their probabilities (evaluate), "
        "then the K best live on and the rest are pruned (prune).",
    )
ui.sync(Beam.FRAME)
step, phase = frames[ui.value(Beam.FRAME) - 1]
at_end = ui.value(Beam.FRAME) == len(frames)

ui.chart(ui.figure(plots.tree_figure, tree, None if at_end else step, phase,
                   pruned_per_beam=int(ui.value(Beam.PRUNED))), "beam_tree", top=FIGURE_TOP)
st.caption(
    f"{tree.candidates_per_step} candidates are ranked each step (2 × K, so that K survive even if "
    f"every beam's best token is end-of-sequence). Search: {tree.steps} step(s), {tree.stop_reason}. "
    "Hover a node for its log-probability, cumulative log-probability and length-penalised score."
)
if tree.ignored_settings:
    st.warning(
        "This model's generation config sets " + ", ".join(tree.ignored_settings) + "; generate() would apply "
        "that, this page shows the model's own log-probabilities.", icon="⚠️",
    )
if tree.num_beams == 1:
    st.info(
        "With one beam, generate() switches to plain greedy decoding, which stops at the first end-of-sequence "
        "token; this page still applies the beam search rules (finished list, length penalty).", icon="ℹ️",
    )

st.subheader("Finished hypotheses")
st.dataframe(tables.final_table(tree), hide_index=True, width="stretch")

st.subheader("Greedy vs beam search vs sampling")
st.dataframe(tables.comparison_table(tree, greedy, sampled), hide_index=True, width="stretch")
best = tree.final[0]
st.markdown(
    "**Why the default length penalty (1.0) is not neutral.** Every token adds a negative log-probability, so "
    "longer hypotheses have lower sums. Dividing by the length (penalty 1.0) turns the sum into a per-token "
    "average, which no longer punishes length: a longer hypothesis can win although it is less likely as a "
    "whole. Only 0 ranks by the plain sum of log-probabilities. "
    f"Here the winner has log-prob {best.logprob:.3f} over {best.length} token(s), "
    f"so its score is {best.logprob:.3f} / {best.length}^{tree.length_penalty:g} = {best.score:.3f}."
)

st.download_button(
    "Download the tree (JSON)", lambda: json.dumps(tree.to_dict(), ensure_ascii=False, indent=1),
    file_name="beam_tree.json", mime="application/json", on_click="ignore",
)
