"""Token strings become plotly text only HTML-escaped."""

from lmviz.plots import safe_label


def test_safe_label_escapes_html():
    assert safe_label("<b>bold</b> & <|im_start|>") == "&lt;b&gt;bold&lt;/b&gt; &amp; &lt;|im_start|&gt;"
    assert safe_label("·to") == "·to"
