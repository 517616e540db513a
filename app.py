"""lmviz: the Streamlit entry point. It only routes: shared sidebar, then the chosen page."""

import streamlit as st

st.set_page_config(page_title="lmviz", page_icon="🔬", layout="wide")

import ui  # noqa: E402  (set_page_config must come first)

ui.sidebar()
PAGES = [
    st.Page("views/home.py", title="Model & tokens", icon="🏠", default=True),
]
st.navigation(PAGES).run()
