"""The Streamlit entry point (`lmviz app`, or `streamlit run app.py` from the repository). It only
routes: the shared sidebar, then the chosen page."""

import streamlit as st

from lmviz.app import classroom_ui, pages, ui
from lmviz.app.settings import Sidebar


def main() -> None:
    st.set_page_config(page_title="lmviz", page_icon="🔬", layout="wide",  # presenter mode folds the sidebar away
                       initial_sidebar_state="collapsed" if Sidebar.PRESENT.parse(st.query_params.get("present", "")) else "auto")
    page = st.navigation([st.Page(page.script, title=page.title, icon=page.icon, url_path=page.url_path,
                                  default=page.name == "home") for page in pages.PAGES])
    classroom_ui.run(page)  # a class: the teacher's view published, a student brought to it
    slots = ui.sidebar()  # pages registered first: the lessons' links in the sidebar point at them
    page.run()
    classroom_ui.published(page)  # the settings the page wrote into the URL, for the class
    ui.after_page(slots)


if __name__ == "__main__":  # Streamlit runs this file as a script
    main()
