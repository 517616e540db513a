"""The dashboard: a Streamlit app over the lmviz backend (`lmviz app`, or `streamlit run app.py`).

main.py routes; pages.py names the pages and settings.py their settings; ui.py is the glue the pages
share (sidebar, current model and text, errors, URLs, lesson panel); lessons.py holds the guided tours;
views/ has one thin script per page: read widgets, call lmviz, draw.
"""

from pathlib import Path

MAIN = Path(__file__).resolve().parent / "main.py"  # the script `streamlit run` runs
