"""lmviz: the Streamlit entry point. It only routes: shared sidebar, then the chosen page."""

import streamlit as st

import ui
from lmviz import lessons

st.set_page_config(page_title="lmviz", page_icon="🔬", layout="wide",  # presenter mode folds the sidebar away
                   initial_sidebar_state="collapsed" if ui.flag(st.query_params.get("present", "")) else "auto")

PAGES = [
    st.Page("views/home.py", title="Model & tokens", icon="🏠", default=True),
    st.Page("views/lens.py", title="Logit lens", icon="🔭", url_path=lessons.PAGES["views/lens.py"]),
    st.Page("views/sampling.py", title="Temperature & sampling", icon="🎲", url_path=lessons.PAGES["views/sampling.py"]),
    st.Page("views/beam.py", title="Beam search", icon="🌳", url_path=lessons.PAGES["views/beam.py"]),
    st.Page("views/loss.py", title="Loss & perplexity", icon="📉", url_path=lessons.PAGES["views/loss.py"]),
    st.Page("views/heads.py", title="Heads & embeddings", icon="🧲", url_path=lessons.PAGES["views/heads.py"]),
    st.Page("views/attention.py", title="Attention & attribution", icon="🔦", url_path=lessons.PAGES["views/attention.py"]),
]
page = st.navigation(PAGES)  # registers the pages first: the lessons' links in the sidebar point at them
share_slot = ui.sidebar()  # presenter mode: where the QR code of the view goes
page.run()
ui.show_share_code(share_slot)
