"""AppTest tests of the pages (faster than the browser tests, no server)."""

from pathlib import Path

from streamlit.testing.v1 import AppTest

from lmviz.app import pages, ui

APP = Path(__file__).resolve().parents[2] / "app.py"


def app(page: str | None = None) -> AppTest:
    """The whole app (sidebar and navigation) ready to run, optionally switched to `views/<page>.py`."""
    at = AppTest.from_file(str(APP), default_timeout=120)
    if page:
        at.switch_page(pages.BY_NAME[page].script)
    return at


def run_page(page: str, text: str, model: str | None = None, query: dict | None = None, **state) -> AppTest:
    """Run `views/<page>.py` once with this sidebar text, optionally another model (a name or folder, picked
    as "Other"), URL query parameters and widget values set before the run."""
    at = app(page)
    at.session_state["text"] = text
    if model:
        at.session_state["model_choice"] = ui.OTHER_MODEL
        at.session_state["model_other"] = model
    for key, value in (query or {}).items():
        at.query_params[key] = value
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


def frame_with(at: AppTest, column: str):
    """The first dataframe on the page that has this column."""
    return next(frame.value for frame in at.dataframe if column in frame.value.columns)
