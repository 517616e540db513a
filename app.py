"""`streamlit run app.py` from the repository: the dashboard, which ships inside the package
(lmviz/app; installed, `lmviz app` serves it)."""

from lmviz.app.main import main

main()
