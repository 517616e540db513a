"""AppTest tests of the pages (faster than the browser tests, no server)."""

from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = Path(__file__).resolve().parents[2] / "app.py"


def app(page: str | None = None) -> AppTest:
    """The whole app (sidebar and navigation) ready to run, optionally switched to `views/<page>.py`."""
    at = AppTest.from_file(str(APP), default_timeout=120)
    if page:
        at.switch_page(f"views/{page}.py")
    return at
