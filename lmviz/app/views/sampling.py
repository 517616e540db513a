"""Temperature & sampling: logits -> probabilities -> the next token, and text one token at a time."""

from dataclasses import replace

import pandas as pd
import streamlit as st

from lmviz.app import ui
from lmviz.app.settings import Sampling
from lmviz.analyses import sampling, whatif
from lmviz.present.tables import sampling as tables
from lmviz.errors import LmvizError
from lmviz.present.plots import sampling as plots
from lmviz.present.plots.beam import branch_name, branches_figure
from lmviz.tokens import markdown_safe

ui.title("Temperature & sampling", (
    "The model gives one score (logit) per token; softmax turns them into probabilities, and decoding picks the "
    "next token from them. Everything below uses transformers' own logits processors, in the order "
    "`generate()` applies them, over the full vocabulary."
))
lm = ui.current_model(kinds=("causal",))
text = ui.current_text()
FIGURE_TOP = 13.7  # rem above a tab's first figure in presenter mode (header, title, settings, tabs): ui.chart


SETTINGS = (Sampling.TEMPERATURE, Sampling.TOP_K, Sampling.TOP_P, Sampling.MIN_P, Sampling.TYPICAL_P,
            Sampling.PENALTY, Sampling.TOP_N, Sampling.SEED)
for setting in SETTINGS:
    ui.init(setting)

columns = ui.controls().columns(6)
columns[0].slider(Sampling.TEMPERATURE.label, 0.0, 5.0, step=0.05, key=Sampling.TEMPERATURE.key,
                  help="Logits are divided by T before softmax. 0 = greedy: always the most probable token.")
columns[1].number_input(Sampling.TOP_K.label, min_value=0, step=1, key=Sampling.TOP_K.key,
                        help="Keep only the k most probable tokens.")
columns[2].slider(Sampling.TOP_P.label, 0.01, 1.0, step=0.01, key=Sampling.TOP_P.key,
                  help="Keep the smallest set of most probable tokens whose probabilities add up to p.")
columns[3].slider(Sampling.MIN_P.label, 0.0, 1.0, step=0.01, key=Sampling.MIN_P.key,
                  help="Drop tokens less probable than min-p × the top token's probability.")
columns[4].slider(Sampling.TYPICAL_P.label, 0.01, 1.0, step=0.01, key=Sampling.TYPICAL_P.key,
                  help="Keep the tokens whose surprise is closest to the average surprise (entropy), up to this mass.")
columns[5].slider(Sampling.PENALTY.label, 0.5, 2.0, step=0.05, key=Sampling.PENALTY.key,
                  help="Logits of tokens already in the text are divided by this (multiplied when negative).")
ui.sync(*SETTINGS, Sampling.TAB)

with ui.user_errors():
    settings = sampling.SamplingSettings(
        temperature=ui.value(Sampling.TEMPERATURE),
        top_k=ui.value(Sampling.TOP_K) or None,
        top_p=ui.value(Sampling.TOP_P),
        min_p=ui.value(Sampling.MIN_P),
        typical_p=ui.value(Sampling.TYPICAL_P),
        repetition_penalty=ui.value(Sampling.PENALTY),
    )

ui.init(Sampling.TAB)
next_tab, steps_tab, toy_tab = st.tabs(Sampling.TAB.choices, key=Sampling.TAB.key, on_change="rerun")  # stays open across reruns

# ------------------------------------------------------------------ next token
def next_token_facts(dist: sampling.Distribution) -> None:
    """The notes, the distribution's numbers and how many bars to draw."""
    for note in dist.notes:
        st.info(note, icon="ℹ️")
    metrics = st.columns(4)
    top_label = sampling.label_tokens(lm, [dist.top_id])[0]
    metrics[0].metric("Greedy pick", top_label, help="The most probable token: what T = 0 always chooses.")
    change = dist.entropy - dist.model_entropy
    metrics[1].metric("Entropy", f"{dist.entropy:.3f} nats",
                      f"{change:+.3f} vs. the model (T = 1)" if abs(change) >= 5e-4 else "same as the model (T = 1)",
                      delta_color="off", delta_arrow="off",
                      help="How uncertain the final distribution is (0 = one certain token).")
    metrics[2].metric("Tokens that can be drawn", f"{dist.n_kept:,}", f"of {dist.vocab_size:,}",
                      delta_color="off", delta_arrow="off")
    metrics[3].metric("Tokens holding 90% of the mass", f"{dist.effective_vocab:,}",
                      f"{dist.model_effective_vocab:,} for the model (T = 1)", delta_color="off", delta_arrow="off",
                      help="The effective vocabulary: fewest tokens whose probabilities add up to 0.9.")
    st.slider(Sampling.TOP_N.label, 5, 60, key=Sampling.TOP_N.key)


with next_tab:
    with ui.user_errors():
        dist = sampling.next_token(lm, text, settings)
    if not ui.presenting():
        next_token_facts(dist)
    shown = dist.top(ui.value(Sampling.TOP_N))
    labels = sampling.label_tokens(lm, shown.token_ids.tolist())
    ui.chart(ui.figure(plots.distribution_figure,
        shown, labels, title=f"Next token after “{text[-60:]}” — {dist.settings.describe()}"), "next_token",
        top=FIGURE_TOP)
    if ui.presenting():  # on a projector the figure comes first, on the first screen
        next_token_facts(dist)
    st.caption(
        "**What T does:** dividing every logit by T < 1 stretches the gaps between them, so the top tokens take "
        "more of the mass; T > 1 shrinks the gaps and flattens the distribution. **Why the order never changes:** "
        "dividing by the same positive number keeps every logit where it was relative to the others, so rank 1 "
        "stays rank 1 at any T; the filters then cut from the bottom (grey bars) and the rest is renormalized."
    )
    frame = tables.distribution_table(shown, labels)
    st.dataframe(
        frame, hide_index=True, width="stretch", height=min(420, 38 + 35 * len(frame)),
        column_config={name: st.column_config.NumberColumn(format="%.4f")
                       for name in ["logit", "p (model, T=1)", "log p (model)", "p after T", "p final", "log p final"]},
    )
    st.download_button("Download these rows (CSV)", lambda: frame.to_csv(index=False).encode("utf-8"),
                       file_name="next_token.csv", mime="text/csv", on_click="ignore")

    st.subheader("Temperature sweep")
    sweep = sampling.next_token_sweep(lm, text)
    ui.chart(ui.figure(plots.sweep_figure, sweep, current=settings.temperature or None), "temperature_sweep")
    st.caption(
        f"Temperature alone, over all {sweep.vocab_size:,} tokens (no filters). As T → 0 the entropy falls to 0 "
        "and the top token takes everything (greedy); as T grows the distribution tends to uniform, entropy "
        f"log {sweep.vocab_size:,} = {sweep.max_entropy:.2f} nats."
        + (" The current T is 0 (greedy), the left limit of the plot." if settings.greedy else "")
    )

# ---------------------------------------------------------------- step by step
MAX_SHOWN_STEPS = 100


def add_steps(count: int) -> None:
    st.session_state.sampling_steps = min(MAX_SHOWN_STEPS, st.session_state.get("sampling_steps", 0) + count)
    st.session_state.sampling_inspect = st.session_state.sampling_steps  # follow the newest step


def reset_steps() -> None:
    st.session_state.sampling_steps = 0


def what_if(length: int) -> None:
    """Forks: another token at any step of any branch, the model continuing greedily from there."""
    st.subheader("What if…?")
    st.caption("Take another token at any step and let the model continue from there (its greedy pick at "
               "T = 1, no penalties or filters). Branches share their common start; **log P** adds up each "
               "branch's token log-probabilities: how likely the model finds the whole continuation.")
    ui.init(Sampling.BRANCHES)
    if st.session_state.get("sampling_branches_for", (lm.name, text)) != (lm.name, text):
        st.session_state[Sampling.BRANCHES.key] = [()]  # forks of another text or model mean nothing here
    st.session_state.sampling_branches_for = (lm.name, text)
    branches, kept = [], []
    for forced in ui.value(Sampling.BRANCHES):
        try:
            branches.append(whatif.branch(lm, text, forced, length))
            kept.append(forced)
        except LmvizError:  # forked after the last step shown, or ids from a link for another vocabulary
            pass
    if len(kept) < len(ui.value(Sampling.BRANCHES)):
        st.info(f"{len(ui.value(Sampling.BRANCHES)) - len(kept)} branch(es) forked after step {length} or "
                "not made of this model's tokens were put aside.", icon="ℹ️")
        st.session_state[Sampling.BRANCHES.key] = kept or [()]
    if not branches:
        with ui.user_errors():
            branches = [whatif.branch(lm, text, (), length)]
    names = [branch_name(i) for i in range(len(branches))]
    fork = st.columns([2, 1, 3, 2], vertical_alignment="bottom")
    if st.session_state.get("sampling_fork_from", 0) >= len(branches):
        st.session_state.sampling_fork_from = 0
    source = fork[0].selectbox("Fork", range(len(branches)), format_func=names.__getitem__, key="sampling_fork_from")
    tokens = branches[source].token_ids
    if not 1 <= st.session_state.get("sampling_fork_step", 1) <= len(tokens):
        st.session_state.sampling_fork_step = 1
    step = int(fork[1].number_input("at step", 1, len(tokens), step=1, key="sampling_fork_step"))
    with ui.user_errors():
        options = whatif.alternatives(lm, text, tokens[:step - 1])
    choice = fork[2].selectbox("take instead", options, format_func=lambda a: f"{a.token}  (p {a.prob:.3f})",
                               index=1 if len(options) > 1 else 0, key=f"sampling_fork_token_{source}_{step}")

    def add_branch() -> None:
        forced = tuple(tokens[:step - 1]) + (choice.token_id,)
        if forced not in ui.value(Sampling.BRANCHES):
            st.session_state[Sampling.BRANCHES.key] = [*ui.value(Sampling.BRANCHES), forced]

    fork[3].button("Continue from here", on_click=add_branch, type="primary")
    tree = whatif.tree(text, branches)
    ui.chart(ui.figure(branches_figure, tree, "Branches"), "what_if_tree")
    side_by_side = {}
    for name, b in zip(names, branches):
        side_by_side[f"{name} (log P {b.logprob:.2f})"] = [f"{'➜ ' if i < b.forced and r != 1 else ''}{t}  {lp:.2f}"
                                                           for i, (t, lp, r) in enumerate(zip(b.tokens, b.logprobs,
                                                                                               b.ranks))]
    rows = max(len(column) for column in side_by_side.values())
    frame = pd.DataFrame({k: v + [""] * (rows - len(v)) for k, v in side_by_side.items()},
                         index=range(1, rows + 1))
    st.dataframe(frame, width="stretch", height=min(420, 38 + 35 * rows))
    st.caption("Each cell: the token and its log-probability given everything before it; ➜ marks a token "
               "chosen by hand.")
    if len(branches) > 1:
        st.button("Remove the branches", on_click=lambda: st.session_state.update({Sampling.BRANCHES.key: [()]}))
    if len(branches) > 1:  # shareable: the forks go into the URL
        ui.sync(Sampling.BRANCHES)
    else:
        st.query_params.pop(Sampling.BRANCHES.key, None)


with steps_tab:
    st.caption(
        "Generate one token at a time. Greedy always takes the top token; sampling draws from the final "
        "distribution with a seeded random generator, so the same seed and settings give the same text (and the "
        "same text as `model.generate`). Colours: blue = the model's top choice, orange = a lower-ranked token."
    )
    controls = st.columns([1, 1, 1, 1, 2])
    controls[0].number_input(Sampling.SEED.label, min_value=0, max_value=2**31 - 1, step=1, key=Sampling.SEED.key)
    controls[1].button("Generate next token", on_click=add_steps, args=(1,), type="primary")
    controls[2].button("+10 tokens", on_click=add_steps, args=(10,))
    controls[3].button("Reset", on_click=reset_steps)
    n_steps = st.session_state.get("sampling_steps", 0)
    if n_steps == 0:
        st.info("Press **Generate next token** to start.")
    else:
        greedy_settings = replace(settings, temperature=0.0)
        with ui.user_errors():
            greedy = sampling.generate(lm, text, greedy_settings, n_steps)
            sampled = sampling.generate(lm, text, settings, n_steps, seed=ui.value(Sampling.SEED))
        runs = [("Greedy (T = 0)", greedy), (f"Sampling: {sampled.settings.describe()}, seed {sampled.seed}", sampled)]
        if settings.greedy:
            runs[1] = ("Sampling: T is 0, so this is greedy too — raise T to sample", sampled)
        columns = st.columns(2)
        for column, (title, generation) in zip(columns, runs):
            with column:
                st.markdown(f"**{title}** · {len(generation.steps)} tokens")
                st.html(plots.generation_html(generation))
                st.dataframe(
                    [{"step": s.index + 1, "token": s.token, "rank": s.rank, "p": round(s.prob, 4),
                      "p model": round(s.model_prob, 4), "H model": round(s.distribution.model_entropy, 3),
                      "H final": round(s.distribution.entropy, 3)}
                     for s in generation.steps],
                    hide_index=True, width="stretch", height=min(300, 38 + 35 * len(generation.steps)),
                )
        st.caption(
            "**Why greedy repeats itself:** it is deterministic, so once the text gets back into a state it was in "
            "before, the most probable continuation is the same as last time, and the loop goes on. Sampling can "
            "leave the loop, and the repetition penalty pushes down tokens already used."
        )
        longest = max(len(greedy.steps), len(sampled.steps))
        st.session_state.sampling_inspect = min(st.session_state.get("sampling_inspect", longest), longest)
        inspect = st.slider("Inspect step", 1, longest, key="sampling_inspect") if longest > 1 else 1
        columns = st.columns(2)
        for column, (title, generation) in zip(columns, runs):
            with column:
                if inspect > len(generation.steps):
                    st.caption(f"{title}: ended (end-of-sequence) before step {inspect}.")
                    continue
                step = generation.steps[inspect - 1]
                step_dist = step.distribution
                st.markdown(f"Step {inspect} chose **{markdown_safe(step.token)}** (rank {step.rank}, "
                            f"p {step.prob:.3f}); "
                            "grey: removed by a filter.")
                ui.chart(ui.figure(plots.distribution_figure,
                    step_dist, sampling.label_tokens(lm, step_dist.token_ids.tolist()), chosen=step.token_id,
                    height=380), f"generation_step_{inspect}", key=f"sampling_step_{title[:6]}")
        what_if(n_steps)
        call = "".join(f",\n    {k}={v!r}" for k, v in sampled.settings.generate_kwargs().items())
        st.markdown("The sampled tokens straight from transformers:")
        st.code(
            (f"torch.manual_seed({sampled.seed})\n" if sampled.seed is not None else "")
            + f"model.generate(input_ids, max_new_tokens={n_steps}{call},\n)",
            language="python",
        )

# ------------------------------------------------------------------ toy logits
with toy_tab:
    st.caption(
        "Softmax with temperature on a few hand-typed logits: σ_T(x)_i = exp(x_i / T) / Σ_j exp(x_j / T). "
        "The default is the lecture's example; its table comes out digit for digit."
    )
    ui.init(Sampling.TOY_LOGITS)
    ui.init(Sampling.TOY_TEMPERATURES)
    ui.init(Sampling.TOY_SHIFT)
    left, right = st.columns(2)
    left.text_input(Sampling.TOY_LOGITS.label, key=Sampling.TOY_LOGITS.key, help="Numbers separated by commas.")
    right.text_input(Sampling.TOY_TEMPERATURES.label, key=Sampling.TOY_TEMPERATURES.key, help="Numbers separated by commas; 0 = greedy.")
    ui.sync(Sampling.TOY_LOGITS, Sampling.TOY_TEMPERATURES, Sampling.TOY_SHIFT)
    try:
        toy_logits = sampling.parse_numbers(ui.value(Sampling.TOY_LOGITS), "logits")
        toy_temps = sampling.parse_numbers(ui.value(Sampling.TOY_TEMPERATURES), "temperatures")
        toy = sampling.toy_softmax(toy_logits, toy_temps, st.session_state.get(Sampling.TOY_SHIFT.key, 0.0))
    except LmvizError as error:  # only this panel stops; the rest of the page stays
        st.error(str(error), icon="🚫")
        toy = None
    if toy is not None:
        st.dataframe(tables.toy_table(toy), width="stretch")
        ui.chart(ui.figure(plots.toy_figure, toy), "softmax_toy")
        st.markdown("**Adding a constant changes nothing.** Softmax only sees differences between logits, so logits "
                    "are not probabilities and have no unit: shift them all by c and every σ stays the same.")
    st.slider(Sampling.TOY_SHIFT.label, -50.0, 50.0, step=0.5, key=Sampling.TOY_SHIFT.key)
    if toy is not None:
        st.dataframe(tables.toy_table(toy, shifted=True), width="stretch")
        st.caption(f"Largest change in any probability: {toy.max_shift_change:.1e} (floating-point rounding).")
