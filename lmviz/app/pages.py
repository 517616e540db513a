"""The dashboard's pages: a name, a title, an icon and a URL path each, and where the script lives.

Everything that links to a page (the navigation, the lessons, the lens's "Which blocks wrote …?"
button) names it by its object here (`pages.LENS`), never by a file path, so the app
runs the same from the repository (`streamlit run app.py`) and from an installed wheel
(`lmviz app`). No Streamlit here: the CLI lists lesson URLs from it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

VIEWS = Path(__file__).resolve().parent / "views"


@dataclass(frozen=True)
class Page:
    name: str  # the script views/<name>.py; also the URL path, except the home page's ""
    title: str
    icon: str

    @property
    def script(self) -> str:
        """The page's script as Streamlit's Page, page_link and switch_page take it (an absolute path)."""
        return str(VIEWS / f"{self.name}.py")

    @property
    def url_path(self) -> str:
        return "" if self.name == "home" else self.name


HOME = Page("home", "Model & tokens", "🏠")
LENS = Page("lens", "Logit lens", "🔭")
SAMPLING = Page("sampling", "Temperature & sampling", "🎲")
BEAM = Page("beam", "Beam search", "🌳")
LOSS = Page("loss", "Loss & perplexity", "📉")
HEADS = Page("heads", "Heads & embeddings", "🧲")
ATTENTION = Page("attention", "Attention & attribution", "🔦")
FLOW = Page("flow", "Information flow", "🔀")
EXPERIMENTS = Page("experiments", "Experiments", "🧪")
FEATURES = Page("features", "Features", "🧩")
PAGES = (HOME, LENS, SAMPLING, BEAM, LOSS, HEADS, ATTENTION, FLOW, EXPERIMENTS, FEATURES)  # the navigation's order
BY_NAME = {page.name: page for page in PAGES}
