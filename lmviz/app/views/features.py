"""Features: what the model represents at one place in its residual stream, read through a sparse
autoencoder (SAE): which latents are active at each token, where else each one fires, what it writes, and
what happens when it is turned up. The SAE's own error on this text is shown first: a latent explains only
what the SAE reconstructs."""

import math

import pandas as pd
import streamlit as st

from lmviz.analyses import contexts as contexts_module
from lmviz.analyses import features, neurons
from lmviz.analyses import sae as sae_module
from lmviz.app import ui
from lmviz.app.settings import Features
from lmviz.present.plots import features as plots
from lmviz.tokens import markdown_safe

SHORT = 32  # tokens: up to here a low explained variance alone raises no warning
FIGURE_TOP = 16.0  # rem above the grid in presenter mode (header, title, settings, tabs; the cards follow): ui.chart

ui.title("Features", "Which directions of the residual stream are active at each token, read through a sparse "
         "autoencoder (SAE) trained on it: click a cell to see where else that latent fires, which tokens it "
         "promotes, and what it does to the text when you turn it up.")
lm = ui.current_model(kinds=("causal",))
text = ui.current_text()

ui.init(Features.SAE)
settings = ui.controls()
settings.text_input(Features.SAE.label, key=Features.SAE.key,
                    help=f"Embedded: {', '.join(sae_module.EMBEDDED)}. Or a folder holding cfg.json and "
                         "sae_weights.safetensors (standard, topk or jumprelu; hook blocks.L.hook_resid_pre or "
                         "hook_resid_post).")
ui.sync(Features.SAE)
with ui.user_errors(), st.spinner("Reading the text through the SAE …"):
    sae = sae_module.load(ui.value(Features.SAE), lm)
    result = features.features(lm, text, sae)
n = result.n_tokens

ui.init(Features.POSITION, high=n - 1)
ui.init(Features.TAB)
if (cell := ui.clicked("feat_grid")) is not None:  # a click picks the latent of that row at that position
    shown = plots.shown_latents(result, keep=st.session_state.get(Features.LATENT.key))
    st.session_state[Features.LATENT.key] = shown[int(cell[0])]
    st.session_state[Features.POSITION.key] = int(cell[1])
position = ui.value(Features.POSITION)
strongest = result.top_features(position)
ui.init(Features.LATENT, strongest[0][0] if strongest else 0, high=sae.d_sae - 1)
ui.init(Features.NEURON_LAYER, max(0, sae.layer - 1), high=lm.n_layers - 1)
for setting in (Features.ALPHA, Features.STEER_TOKENS):
    ui.init(setting)

row = settings.columns([1, 1, 1, 1])
row[0].number_input(Features.POSITION.label, 0, n - 1, step=1, key=Features.POSITION.key)
row[1].number_input(Features.LATENT.label, 0, sae.d_sae - 1, step=1, key=Features.LATENT.key)
ui.sync(Features.POSITION, Features.LATENT)
latent = ui.value(Features.LATENT)

# ------------------------------------------------------------------ how well the SAE stands in for the site
def quality() -> None:
    """The SAE's error on this text, as four cards (after the figures in presenter mode)."""
    cards = st.columns(4)
    cards[0].metric("Explained variance", f"{result.explained_variance:.2f}",
                    help="1 − Σ‖x − x̂‖² / Σ‖x − mean‖² over this text's positions after the first (the first is the "
                         "attention sink, left out of training too). On a short text the mean is of a few tokens, "
                         "so this runs low; the loss recovered is the better guide there.")
    cards[1].metric("Cross-entropy, clean → with the SAE", f"{result.ce_clean:.3f} → {result.ce_sae:.3f}",
                    help="Mean loss (nats per token) of this text; 'with the SAE': its reconstruction replaces the site "
                         "at every position but the first.")
    cards[2].metric("Loss recovered", "—" if math.isnan(result.ce_recovered) else f"{result.ce_recovered:.2f}",
                    help=f"(CE_zero − CE_sae) / (CE_zero − CE_clean), with CE_zero = {result.ce_zero:.3f} when the site "
                         "is zeroed instead: 1 = the SAE loses nothing.")
    cards[3].metric("Active latents per token", f"{float(result.l0[1:].double().mean()) if n > 1 else 0:.1f}",
                    help=f"of {sae.d_sae} ({sae.architecture}{f', k = {sae.k}' if sae.k else ''}), at {sae.hook}")
    few = n <= SHORT  # on a few tokens, explained variance is measured against their own small spread
    if not math.isnan(result.explained_variance) and (result.ce_recovered < 0.5 or
                                                      (result.explained_variance < 0.5 and not few)):
        st.warning(f"The SAE does not stand in well for {sae.hook} on this text (explained variance "
                   f"{result.explained_variance:.2f}, loss recovered {result.ce_recovered:.2f}): its latents describe "
                   "only part of what the model computes here.", icon="⚠️")


presenting = ui.presenting()
if not presenting:
    quality()
tabs = st.tabs(Features.TAB.choices, key=Features.TAB.key, on_change="rerun")
ui.sync(Features.TAB)
latent_tab, steering_tab, neurons_tab = tabs

# ------------------------------------------------------------------ the text's latents, and one of them
with latent_tab:
    if latent_tab.open:
        shown = plots.shown_latents(result, keep=latent)
        names = {j: contexts_module.label(contexts_module.latent_contexts(lm, sae, j)) for j in shown} \
            if contexts_module.has_index(sae) else {}
        ui.chart(ui.figure(plots.feature_grid, result, shown, (latent, position), names), "features", key="feat_grid",
                 clickable=True, top=FIGURE_TOP)
        st.caption(f"Each row is one latent of {markdown_safe(sae.name)} (beside its number, the token its corpus "
                   "contexts peak on most often), each column a token; the colour is the latent's activation there. "
                   "Click a cell to pick that latent and position.")
        left, right = st.columns([3, 2])
        with left:
            ui.chart(ui.figure(plots.latent_across_text, result, latent), f"latent_{latent}", key="feat_trace")
            st.subheader("Where it fires most in the corpus")
            if contexts_module.has_index(sae):
                with ui.user_errors(stop=False):
                    found = contexts_module.latent_contexts(lm, sae, latent)
                    st.html(plots.contexts_html(found, limit=12) if found.contexts else
                            "<i>This latent never fired on the corpus.</i>")
                    st.caption("Its strongest activations over the SAE's training corpus (at most one per "
                               "128-token sequence), shaded by its activation; the number is the peak.")
            else:
                st.info(f"{sae.name} comes without an index of contexts (contexts.safetensors).")
        with right:
            with ui.user_errors(stop=False):
                effects = sae_module.latent_tokens(lm, sae, latent, result.final_residuals[position])
                table = pd.DataFrame({"promotes": effects.promoted_tokens, "logit +": effects.promoted_values,
                                      "suppresses": effects.suppressed_tokens, "logit −": effects.suppressed_values})
                st.markdown(f"**What latent #{latent} writes** (per unit, through the final norm and the unembedding)")
                st.dataframe(table, hide_index=True, column_config={
                    "logit +": st.column_config.NumberColumn(format="%.3f"),
                    "logit −": st.column_config.NumberColumn(format="%.3f")})
                split = features.contributions(lm, result, sae, position)
                mine = (split.latents == latent).nonzero()
                value = float(split.contributions[mine[0, 0]]) if len(mine) else 0.0
                st.markdown(f"At position {position} ({markdown_safe(result.tokens[position])}) it is "
                            f"**{float(result.activations[position, latent]):.2f}**, and adds **{value:+.3f}** to the "
                            f"logit of the model's next token {markdown_safe(split.target_token)} directly.")
                top = pd.DataFrame({"latent": split.latents[:8].tolist(), "activation": split.activations[:8].tolist(),
                                    "direct effect": split.contributions[:8].tolist()})
                st.dataframe(top, hide_index=True, column_config={
                    "activation": st.column_config.NumberColumn(format="%.2f"),
                    "direct effect": st.column_config.NumberColumn(format="%+.3f")})
                st.caption("Direct effect: activation × the latent's decoder row through the final norm (held "
                           "at this position's final residual) · the target's unembedding. Later blocks also read "
                           "the latent; that indirect effect is not in this number.")

# ------------------------------------------------------------------ steering with it
with steering_tab:
    if steering_tab.open:
        row = ui.controls().columns([1, 1, 2])
        row[0].number_input(Features.ALPHA.label, -1000.0, 1000.0, step=1.0, key=Features.ALPHA.key)
        row[1].number_input(Features.STEER_TOKENS.label, 1, Features.STEER_TOKENS.high, step=1,
                            key=Features.STEER_TOKENS.key)
        ui.sync(Features.ALPHA, Features.STEER_TOKENS)
        with ui.user_errors(stop=False), st.spinner("Generating with and without the latent …"):
            steered = features.steer_feature(lm, text, sae, latent, ui.value(Features.ALPHA),
                                             ui.value(Features.STEER_TOKENS))
            st.dataframe(pd.DataFrame({"": ["unsteered", f"α = {steered.alpha:g} × latent #{latent}"],
                                       "continuation": [steered.unsteered.text, steered.steered.text]}),
                         hide_index=True, width="stretch")
            st.caption(f"The prompt “{markdown_safe(text)}” continued greedily; α × the latent's decoder row (a vector "
                       f"of norm {abs(steered.alpha) * steered.vector_norm:.1f}) is added to {sae.hook} at every "
                       "position, the prompt's and each new token's.")

# ------------------------------------------------------------------ neurons
with neurons_tab:
    if neurons_tab.open:
        row = ui.controls().columns([1, 3])
        row[0].number_input(Features.NEURON_LAYER.label, 0, lm.n_layers - 1, step=1, key=Features.NEURON_LAYER.key)
        ui.sync(Features.NEURON_LAYER)
        with ui.user_errors(stop=False):
            split = neurons.neurons(lm, text, ui.value(Features.NEURON_LAYER), position)
            rows = [{"neuron": f"{split.layer}.{neuron}", "activation": float(split.activations[neuron]),
                     "contribution": float(split.contributions[neuron]),
                     "promotes": " ".join(effects.promoted_tokens[:5]),
                     "suppresses": " ".join(effects.suppressed_tokens[:5])}
                    for neuron, effects in zip(split.top[:6] if presenting else split.top, split.top_tokens)]
            st.dataframe(pd.DataFrame(rows), hide_index=True, column_config={
                "activation": st.column_config.NumberColumn(format="%.3f"),
                "contribution": st.column_config.NumberColumn(format="%+.3f")})
            st.markdown(f"Block {split.layer}'s MLP at position {position}: its part in the logit of "
                        f"{markdown_safe(split.target_token)} is **{split.mlp_part:+.3f}**; its {split.d_mlp} neurons' "
                        f"contributions and the bias add up to {split.total:+.3f} (difference "
                        f"{abs(split.total - split.mlp_part):.1e}, bound {split.bound:.1e}). Half of Σ|contribution| "
                        f"takes the **{split.half_count}** largest neurons.")
            if contexts_module.has_neuron_index(lm):
                ui.init(Features.NEURON, split.top[0], high=split.d_mlp - 1)
                st.number_input(Features.NEURON.label, 0, split.d_mlp - 1, step=1, key=Features.NEURON.key)
                ui.sync(Features.NEURON)
                neuron = ui.value(Features.NEURON)
                with st.spinner("Running the neuron's strongest sequences …"):
                    found = contexts_module.neuron_contexts(lm, split.layer, neuron)
                st.html(plots.contexts_html(found))
                st.caption(f"Neuron {split.layer}.{neuron}'s strongest activations over a bank of 1,600 corpus "
                           "sequences (204,800 tokens, the SAE's corpus), recomputed now; compare how many different "
                           "things one neuron fires on with a latent's contexts.")
            st.caption("A neuron is one entry of the MLP's hidden vector; its contribution is its activation × its "
                       "output column through the frozen norm(s) · the target's unembedding, so the neurons and the "
                       "bias sum to the MLP's bar on the attribution page.")

if presenting:
    quality()
