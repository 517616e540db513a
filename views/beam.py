"""Beam search: expand, evaluate, prune — the whole tree, replayable step by step (seed 003)."""

import json

import streamlit as st

import ui
from lmviz import beam, tables
from lmviz.plots import beam as plots

st.title("Beam search")
st.caption(
    "Greedy decoding keeps one continuation; beam search keeps the K best. Each step it **expands** every "
    "running beam by every token, **evaluates** the candidates by their summed log-probability, and **prunes** "
    "to the K best. Hypotheses that end (end-of-sequence token, or the length limit) go to a finished list, "
    "scored with a length penalty. The finished hypotheses and their scores are exactly those of "
    "`model.generate(num_beams=K, do_sample=False, …)` with the same settings."
)
lm = ui.current_model(kinds=("causal",))
text = ui.current_text()

EARLY_STOPPING = {"false": "False (default)", "true": "True", "never": "never"}


def early_stopping_choice(raw):
    if raw not in EARLY_STOPPING:
        raise ValueError(raw)
    return raw


SETTINGS = {  # key: (default, parser)
    "beam_beams": (3, ui.in_range(int, 1, 8)),
    "beam_new": (6, ui.in_range(int, 1, 20)),
    "beam_lp": (1.0, ui.in_range(float, -3.0, 3.0)),
    "beam_es": ("false", early_stopping_choice),
    "beam_pruned": (2, ui.in_range(int, 0, 5)),
    "beam_seed": (0, ui.in_range(int, 0, 2**31 - 1)),
}
ui.init_settings(SETTINGS)

columns = ui.controls().columns(6)
columns[0].slider("Beams K", 1, 8, key="beam_beams", help="How many hypotheses stay alive after every step.")
columns[1].slider("New tokens", 1, 20, key="beam_new", help="The longest continuation (max_new_tokens).")
columns[2].number_input(
    "Length penalty", -3.0, 3.0, step=0.5, key="beam_lp", format="%.2f",
    help="A finished hypothesis scores log-prob / length^penalty. 0 = plain sum of log-probabilities; "
    "above 0 favours longer hypotheses, below 0 shorter ones.",
)
columns[3].selectbox(
    "Early stopping", list(EARLY_STOPPING), format_func=EARLY_STOPPING.get, key="beam_es",
    help="True: stop once K hypotheses have finished. False: stop when the best running beam, scored at its "
    "current length, can no longer beat the worst finished one. never: the same test, but with a positive "
    "length penalty it assumes the longest possible length, so it only stops when no beam can improve.",
)
columns[4].slider("Pruned shown per beam", 0, 5, key="beam_pruned",
                  help="How many of each beam's most probable pruned candidates to draw.")
columns[5].number_input("Sampling seed", 0, 2**31 - 1, step=1, key="beam_seed",
                        help="The seed of the sampled continuation shown for comparison.")
ui.sync_to_url(*SETTINGS)

settings = dict(
    num_beams=int(st.session_state.beam_beams),
    max_new_tokens=int(st.session_state.beam_new),
    length_penalty=float(st.session_state.beam_lp),
    early_stopping=beam.parse_early_stopping(st.session_state.beam_es),
)
with ui.user_errors(), st.spinner("Searching …"):
    tree = beam.beam_search(lm, text, alternatives=5, **settings)
    greedy = beam.greedy(lm, text, settings["max_new_tokens"])
    sampled = beam.sample(lm, text, settings["max_new_tokens"], seed=int(st.session_state.beam_seed))

# the replay slider: one frame per (step, phase); a new search starts at its last frame
frames = plots.frames(tree)
signature = (lm.name, text, tuple(settings.values()))
ui.init_from_url("beam_frame", len(frames), ui.in_range(int, 1, 3 * 20))
settings_changed = st.session_state.get("beam_frame_of") not in (None, signature)
if settings_changed or not 1 <= st.session_state.beam_frame <= len(frames):
    st.session_state.beam_frame = len(frames)
st.session_state.beam_frame_of = signature
if len(frames) > 1:
    st.select_slider(
        "Replay the search", options=list(range(1, len(frames) + 1)), key="beam_frame",
        format_func=lambda i: plots.frame_label(*frames[i - 1]),
        help="Step by step: the candidates appear (expand), get their probabilities (evaluate), "
        "then the K best live on and the rest are pruned (prune).",
    )
ui.sync_to_url("beam_frame")
step, phase = frames[st.session_state.beam_frame - 1]
at_end = st.session_state.beam_frame == len(frames)

ui.chart(plots.tree_figure(tree, None if at_end else step, phase, pruned_per_beam=int(st.session_state.beam_pruned)),
         "beam_tree")
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
