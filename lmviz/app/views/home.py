"""Home: what the model is, and how it cuts the text into tokens."""

import pandas as pd
import streamlit as st

from lmviz.app import ui
from lmviz.app.settings import Home
from lmviz.forward import trace
from lmviz.tokens import display_tokens

ui.title("Model & tokens")
lm = ui.current_model()
text = ui.current_text()


def facts() -> None:
    shown = lm.display_facts()
    columns = st.columns(5)
    columns[0].metric("Layers", shown["layers"])
    columns[1].metric("Width (d_model)", shown["d_model"])
    columns[2].metric("Vocabulary", f"{shown['vocabulary']:,}")
    columns[3].metric("Parameters", f"{shown['parameters'] / 1e6:,.1f} M",
                      help=f"{shown['parameters']:,} (tied weights counted once)")
    columns[4].metric("Tied embeddings", "yes" if lm.tied else "no")
    st.caption(
        f"{shown['architecture']} · {lm.kind} model · context {lm.context_length:,} tokens. "
        + ("The output layer reuses the input embedding matrix (tied weights), which saves "
           f"{lm.vocab_size * lm.d_model:,} parameters." if lm.tied else "Input and output embeddings are separate "
           "matrices.")
    )


if not ui.presenting():  # on a projector the tokens come first, on the first screen
    facts()
st.subheader("Tokens")
with ui.user_errors():
    ids = trace.encode(lm, text)
with lm.lock:
    tokens = display_tokens(lm.tokenizer, ids)
st.caption(f"{len(ids)} tokens. A leading `·` is a space, `\\n` a newline; `\\xNN` is a byte that is only part of a "
           "character.")
token_table = pd.DataFrame({"position": range(len(ids)), "token": tokens, "id": ids})
st.dataframe(token_table, hide_index=True, width="stretch", height=min(400, 38 + 35 * len(ids)))
if ui.presenting():
    facts()

st.subheader("A batch: padding and attention mask")
st.caption(
    "Several texts go through the model together only if they have the same length, so the shorter ones are "
    "padded on the left with a pad token (the end-of-sequence token when the tokenizer has none), and the "
    "attention mask (0 = padding) tells the model to ignore the padding."
)
ui.init(Home.BATCH_WITH)
other = st.text_input(Home.BATCH_WITH.label, key=Home.BATCH_WITH.key)
if other.strip():
    with ui.user_errors():
        batch = trace.encode_batch(lm, [other, text])
    left, right = st.columns(2)
    left.markdown("**input_ids**")
    left.dataframe(pd.DataFrame(batch.input_ids), width="stretch")
    right.markdown("**attention_mask**")
    right.dataframe(pd.DataFrame(batch.attention_mask), width="stretch")
    st.markdown("**tokens**")
    st.dataframe(pd.DataFrame(batch.tokens), width="stretch")
    pad = display_tokens(lm.tokenizer, [batch.pad_token_id])[0]
    st.caption(f"Pad token: `{pad}` (id {batch.pad_token_id})" + (" — the end-of-sequence token, since the tokenizer has no pad token." if batch.pad_is_eos else "."))
    ui.sync(Home.BATCH_WITH)
