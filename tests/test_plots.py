"""Token strings become plotly text only HTML-escaped."""

from lmviz.present.plots import safe_label


def test_safe_label_escapes_html():
    assert safe_label("<b>bold</b> & <|im_start|>") == "&lt;b&gt;bold&lt;/b&gt; &amp; &lt;|im_start|&gt;"
    assert safe_label("·to") == "·to"


def test_standalone_html_works_offline():
    """The exported chart carries plotly.js itself: no script or stylesheet loaded from the network (plotly.js
    names a map-tiles address inside, used only by geographic charts)."""
    import plotly.graph_objects as go

    from lmviz.present.plots import standalone_html

    html = standalone_html(go.Figure(go.Bar(x=["·visit", "<b>"], y=[0.4, 0.1])))
    assert "<html>" in html[:100] and "Plotly.newPlot" in html and len(html) > 1_000_000  # plotly.js inside
    assert "<script src=" not in html and '<link rel="stylesheet" href="http' not in html
