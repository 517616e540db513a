"""Heads & embeddings: where a model's scores come from (seeds 000, 001, 002, 004).

Three tabs: tied input/output embeddings with the embedding-neighbour table,
the masked-LM head with its predictions and loss, and a classification head
whose logit i is label i.
"""


import pandas as pd
import streamlit as st

from lmviz.app import ui
from lmviz.app.settings import Heads, Sidebar
from lmviz.analyses import classification, embeddings, masked_lm
from lmviz.present.tables import heads as tables
from lmviz.model.embedded import antiberty
from lmviz.present.plots import heads as plots

MAX_GRID_ROWS = 40  # the neighbour grid shows the first tokens; the table below has them all
EXAMPLES = """positive: What a lovely day, I enjoyed every minute.
positive: The food was delicious and the staff were friendly.
positive: I loved this film, it was wonderful.
negative: This was a terrible waste of time.
negative: The service was awful and the room was dirty.
negative: I hated the ending, it was boring."""


def switch_to_antiberty(name: str, text: str) -> None:
    """Button callback: point the sidebar at one of AntiBERTy's models (converted on first load) and a fitting text."""
    st.session_state.model_choice = name
    st.session_state[Sidebar.TEXT.key] = text


ui.title("Heads & embeddings", (
    "A model ends in a head: a small module that turns the last hidden state into one score per class "
    "(per vocabulary token, or per label). The scores are logits; softmax makes them probabilities."
))
lm = ui.current_model()
text = ui.current_text()
presenting = ui.presenting()  # on a projector a tab's figure comes first: its settings folded, its text after it
FIGURE_TOP = 13.7  # rem above a tab's first figure in presenter mode (header, title, tabs, settings): ui.chart

ui.init(Heads.K)
ui.init(Heads.METRIC)
ui.init(Heads.MASK_K)
ui.init(Heads.SOURCE)
ui.init(Heads.LABELS)
ui.init(Heads.SEED)
if st.session_state.get("heads_pooling_for", lm.kind) != lm.kind:  # another kind of model: its own default
    st.session_state[Heads.POOLING.key] = "first" if lm.kind == "masked" else "last"
st.session_state.heads_pooling_for = lm.kind
ui.init(Heads.POOLING, "first" if lm.kind == "masked" else "last")

ui.init(Heads.TAB)
tied_tab, masked_tab, class_tab = st.tabs(Heads.TAB.choices, key=Heads.TAB.key, on_change="rerun")  # stays open across reruns
ui.sync(Heads.TAB)

# ------------------------------------------------------------------ tied embeddings (seed 004)
def tie_facts(report: embeddings.TieReport) -> None:
    columns = st.columns(4)
    columns[0].metric("Tied", "yes" if report.tied else "no")
    columns[1].metric("Input embedding", "{:,} × {}".format(*report.input_shape))
    columns[2].metric("Output layer", "{:,} × {}".format(*report.output_shape))
    columns[3].metric("Parameters saved", f"{report.saved_parameters:,}")
    if report.tied:
        how = "the same tensor in memory" if report.same_storage else "separate tensors with equal values"
        st.caption(f"Tied: {how}." + (" The output layer adds its own bias per token; the embedding has none."
                                      if report.output_bias else ""))
    else:
        st.warning(f"{lm.name} does not tie its embeddings: the output matrix is a separate, differently trained "
                   "matrix. The table still scores each input embedding against every output embedding "
                   "(untied neighbours), so the token itself need not come first.", icon="⚠️")


def tied_intro() -> None:
    st.markdown(
        "**Are the input and output embeddings one matrix?** The embedding turns a token id into a row of a "
        "(vocab × d_model) matrix, and the output layer scores a hidden state against every row of a matrix of "
        "the same shape; many models use *one* matrix for both (tied weights), which saves vocab × d_model "
        "parameters. Feeding each input token's embedding straight to the output layer, `lm_head(embed(ids))`, "
        "then lists the tokens whose embeddings point the same way: usually the token itself and its variants."
    )


with tied_tab:
    if not presenting:
        tied_intro()
    report = embeddings.tie_report(lm)
    if report.output_shape is None:
        st.info(f"{lm.name} is a {lm.kind} model: its head predicts labels, so it has no output embeddings to "
                "compare. Pick a causal or masked LM in the sidebar for this tab.", icon="ℹ️")
    else:
        if not presenting:
            tie_facts(report)
        left, right = (ui.controls() if presenting else st).columns([2, 1])
        k = left.slider(Heads.K.label, 1, 20, key=Heads.K.key)
        metric = right.radio(Heads.METRIC.label, ["dot", "cosine"], key=Heads.METRIC.key, horizontal=True,
                             format_func={"dot": "dot product (what lm_head computes)", "cosine": "cosine"}.get)
        with ui.user_errors(stop=False):
            result = embeddings.neighbours(lm, text, k=k, metric=metric)
            if len(result.tokens) > MAX_GRID_ROWS:
                st.caption(f"The grid shows the first {MAX_GRID_ROWS} of {len(result.tokens)} tokens; "
                           "the table below has them all.")
            ui.chart(ui.figure(plots.neighbours_figure, result, max_rows=MAX_GRID_ROWS), "embedding_neighbours",
                     top=FIGURE_TOP)
            if presenting:
                tie_facts(report)
            st.dataframe(tables.neighbours_table(result), hide_index=True, width="stretch",
                         column_config={"|e|": st.column_config.NumberColumn(format="%.2f")})
            worst = int(result.self_rank.argmax())
            if metric == "dot" and int(result.self_rank[worst]) > 0:
                above = int(result.self_rank[worst])
                st.info(
                    f"`{result.tokens[worst]}` is not even its own nearest token by dot product: "
                    f"{above} {'token scores' if above == 1 else 'tokens score'} higher. A dot product is |e|·|w|·cos(angle), and "
                    "embeddings are not normalized, so tokens with long output embeddings (large |w|, see the hover) "
                    "rise in the list. Switch to cosine to compare directions only.", icon="💡")
            else:
                st.caption("Dot product = |e|·|w|·cos(angle). Embeddings are not normalized, so a token with a long "
                           "embedding can outrank a closer direction by dot product; cosine ignores the lengths. "
                           "'own rank' counts the tokens that score above the input token itself (0 = first).")
        if presenting:
            tied_intro()
        ui.sync(Heads.K, Heads.METRIC)

# ------------------------------------------------------------------ masked LM (seeds 000, 001)
def masked_intro() -> None:
    st.markdown(
        "**What are the prediction scores of a masked LM?** They are logits: unnormalized, unitless scores, one per "
        "vocabulary token at each position; adding a constant to all of them changes nothing after the softmax. "
        "Training never looks at them directly: it takes log-softmax and the negative log-probability of the true "
        "token at the masked positions (cross-entropy), and BERT's head makes them by multiplying with the "
        "*input* embedding matrix, plus an output-only bias."
    )


def head_anatomy() -> None:
    st.subheader("The head, read from the model")
    with ui.user_errors(stop=False):
        anatomy = masked_lm.mlm_head_anatomy(lm, text)
        st.dataframe(pd.DataFrame([vars(step) for step in anatomy.steps]), hide_index=True, width="stretch")
        tie = ("is the very same tensor as" if anatomy.decoder_same_storage else
               "holds the same values as" if anatomy.decoder_equal_values else "is NOT")
        st.markdown(
            f"`{anatomy.decoder_path}` {tie} `{anatomy.embedding_path}`. Rebuilt by hand as "
            "LayerNorm(act(h·W_denseᵀ + b)) · Eᵀ + b_out with E taken from the **input** embedding, the logits "
            f"differ from the model's by at most {anatomy.recompute_max_diff:.1e} on this text."
        )


with masked_tab:
    if not presenting or lm.kind != "masked":
        masked_intro()
    if lm.kind != "masked":
        st.info(f"{lm.name} is a {lm.kind} model. This tab needs a masked LM (BERT family), which sees the whole "
                "text and fills in mask tokens: in the sidebar pick *Other* and give a BERT-style folder "
                "written by save_pretrained, or a Hugging Face name where the hub is reachable.", icon="ℹ️")
        if antiberty.antiberty_available():
            st.button("Use AntiBERTy (a real BERT masked LM over antibody sequences, works offline)",
                      on_click=switch_to_antiberty,
                      args=("antiberty", antiberty.ANTIBODY_HEAVY[:25] + "[MASK]" + antiberty.ANTIBODY_HEAVY[26:]))
    else:
        if not presenting:
            head_anatomy()
            st.subheader("Predictions at the masks")
        mask_k = (ui.controls() if presenting else st).slider(Heads.MASK_K.label, 1, 20, key=Heads.MASK_K.key)
        with ui.user_errors(stop=False):
            predictions = masked_lm.fill_mask(lm, text, k=mask_k)
            for m in range(len(predictions.mask_positions)):
                chart, table = st.columns([3, 2])
                ui.chart(ui.figure(plots.mask_figure, predictions, m), f"masked_lm_{m}", where=chart, top=FIGURE_TOP)
                table.dataframe(tables.mask_table(predictions, m), hide_index=True, width="stretch")
                table.caption(f"log-probability = logit − logsumexp(logits) = logit − "
                              f"{float(predictions.logsumexp[m]):.3f}")
        if presenting:
            masked_intro()
            head_anatomy()
        st.subheader("The masked-LM loss, three ways")
        with ui.user_errors(stop=False):
            options = masked_lm.maskable_tokens(lm, text)
            shown = dict(options)
            key = f"heads_mask_positions_{abs(hash((lm.name, text))) % 10**8}"  # new text, new choices
            chosen = st.multiselect("Tokens to mask (their true tokens become the labels)", list(shown),
                                    default=masked_lm.default_mask_positions(lm, text), key=key,
                                    format_func=lambda p: f"{p}: {shown[p]}")
            pad_to = st.number_input("Pad the predictions to (BERT's max_predictions_per_seq; 0 = no padding)",
                                     min_value=0, max_value=512, value=0, key="heads_max_predictions")
            loss = masked_lm.mlm_loss(lm, text, chosen, max_predictions=pad_to or None)
            columns = st.columns(3)
            columns[0].metric("Seed's way (BERT's TensorFlow code)", f"{loss.seed_loss:.6f}")
            columns[1].metric("CrossEntropyLoss(ignore_index=-100)", f"{loss.cross_entropy:.6f}")
            columns[2].metric("The model's own loss", f"{loss.model_loss:.6f}")
            st.markdown(
                f"Seed's way: gather the final hidden states at the masked positions, run the head on them only, "
                f"log-softmax, pick the true token with a one-hot vector: per_example_loss = −log p(true token). "
                f"Then numerator = Σ label_weight · per_example_loss = {loss.numerator:.6f} and denominator = "
                f"Σ label_weight + 1e-5 = {loss.denominator:.5f}: the 1e-5 (which only guards against dividing by 0) "
                "is the whole difference from CrossEntropyLoss, which averages over the tokens whose label is not −100. "
                "Padding rows have label_weight 0 and count for nothing."
            )
            st.dataframe(tables.mlm_loss_table(loss), hide_index=True, width="stretch")

# ------------------------------------------------------------------ classification (seed 002)
def class_intro() -> None:
    st.markdown(
        "**Which logit is which label?** A classification head is one linear layer on a pooled hidden state: "
        "row i of its weight matrix produces logit i, and logit i is label i of `config.id2label`, the numbering "
        "fixed when the labels were encoded for training (not the order the data came in). The layer knows no "
        "label names; cross-entropy training makes logit i large when label i is the truth."
    )
    if lm.kind != "classifier":
        st.caption(f"{lm.name} has no classification head, so here is one on top of it: a linear layer on its "
                   "pooled final hidden state, random like the seed's `nn.Linear(768, 2)` or fitted to examples.")


with class_tab:
    if not presenting:
        class_intro()
    result = None
    if lm.kind == "classifier":
        with ui.user_errors(stop=False):
            result = classification.classify(lm, text)
    else:
        box = ui.controls() if presenting else st
        left, right = box.columns(2)
        source = left.radio(Heads.SOURCE.label, ["random", "fitted"], key=Heads.SOURCE.key, horizontal=True,
                            format_func={"random": "random (as in the seed)", "fitted": "fitted to examples"}.get)
        pooling = right.selectbox(
            Heads.POOLING.label, list(classification.POOLINGS), key=Heads.POOLING.key,
            format_func={"last": "last token (decoder classifiers)", "first": "first token (BERT's [CLS])",
                         "mean": "mean over tokens"}.get)
        with ui.user_errors(stop=False):
            if source == "random":
                left, right = box.columns([3, 1])
                labels = left.text_input(Heads.LABELS.label, key=Heads.LABELS.key)
                seed = right.number_input(Heads.SEED.label, min_value=0, max_value=2**31 - 1, step=1,
                                          key=Heads.SEED.key)
                head = classification.random_head(lm, [label for label in labels.split(",")], pooling, seed=int(seed))
            else:
                if "heads_examples" not in st.session_state:
                    st.session_state.heads_examples = EXAMPLES
                examples = box.text_area("Examples, one `label: sentence` per line", key="heads_examples", height=170)
                head = classification.fit_head(lm, classification.parse_examples(examples), pooling)
                box.caption(f"Labels numbered in order of first appearance. Fitted by logistic regression on the "
                            f"pooled states: training accuracy {head.train_accuracy:.0%}, mean loss "
                            f"{head.train_loss:.3f}.")
            result = classification.classify_with_head(lm, head, text)
        ui.sync(Heads.SOURCE, Heads.POOLING, Heads.LABELS, Heads.SEED)
    if result is not None:
        if result.generic_labels:
            st.warning(
                "This model's config names no labels: `id2label` holds only transformers' defaults (LABEL_0, "
                "LABEL_1, …). The order is still fixed — logit i is label i — but what each label means is known "
                "only to whoever encoded the labels for training.", icon="⚠️")
        chart, table = st.columns([2, 3])
        ui.chart(ui.figure(plots.classification_figure, result), "classification", where=chart, top=FIGURE_TOP)
        table.dataframe(tables.classification_table(result), hide_index=True, width="stretch")
        facts = [f"Head: {result.head_origin}. Input: {result.pooling}."]
        if result.weight is not None:
            facts.append(f"Weight matrix {tuple(result.weight.shape)}: row i → logit i → label i "
                         f"({', '.join(f'{i} = {label}' for i, label in enumerate(result.labels))}).")
        if result.logits_by_hand is not None:
            gap = float((result.logits - result.logits_by_hand).abs().max())
            facts.append(f"pooled · Wᵀ + b, computed by hand, matches the head's logits to {gap:.1e}.")
        facts.append("'loss if this label were true' is CrossEntropyLoss(logits, label) = −log p(label).")
        table.caption(" ".join(facts))
    if presenting:
        class_intro()
    if lm.kind != "classifier" and antiberty.antiberty_available():
        st.caption("A real trained classifier works offline too: AntiBERTy's heavy/light-chain head "
                   "(labels from its config's id2label).")
        st.button("Use AntiBERTy's chain classifier", on_click=switch_to_antiberty,
                  args=("antiberty-chain", antiberty.ANTIBODY_HEAVY))
