"""Every page in a real chromium: it renders, reacts to a control, and shows no error box.

Each test opens the page by its URL (as a shared link would), changes one
control the way a person does (typing, arrow keys on a slider, picking from a
select box), and checks what is on screen afterwards. Screenshots land in
test-artifacts/screenshots/.
"""

import urllib.parse

import pytest

from tests.browser.conftest import assert_no_error_box, screenshot, wait_idle

pytestmark = pytest.mark.browser


def open_page(page, server_url: str, path: str = "", **params) -> None:
    page.goto(f"{server_url}/{path}" + ("?" + urllib.parse.urlencode(params) if params else ""))
    wait_idle(page)


def set_sidebar_text(page, text: str) -> None:
    area = page.locator('[data-testid="stSidebarUserContent"] textarea')
    area.fill(text)
    area.press("Control+Enter")  # st.text_area applies its value on Ctrl+Enter (or on blur)
    wait_idle(page)


def press_slider(page, label: str, key: str, times: int = 1) -> None:
    """Move the slider labelled `label` by `times` steps with the keyboard."""
    slider = page.locator('[data-testid="stSlider"]').filter(has_text=label).locator('input[type="range"]').first
    for _ in range(times):
        slider.focus()
        slider.press(key)
        wait_idle(page)


def set_number(page, label: str, value) -> None:
    box = page.locator('[data-testid="stNumberInput"]').filter(has_text=label).locator("input").first
    box.fill(str(value))
    box.press("Enter")
    wait_idle(page)


def pick(page, label: str, option: str) -> None:
    """Choose `option` in the select box labelled `label` (type to filter, Enter to pick)."""
    page.locator('[data-testid="stSelectbox"]').filter(has_text=label).first.click()
    page.keyboard.type(option)
    page.keyboard.press("Enter")
    wait_idle(page)


def tables_text(page) -> str:
    """The text of every visible table (st.dataframe draws on a canvas; its text is in a hidden table;
    tables on tabs that are not open are skipped)."""
    page.wait_for_selector('[data-testid="stDataFrame"], [data-testid="stTable"]', timeout=300_000)
    tables = page.locator('[data-testid="stDataFrame"]:visible, [data-testid="stTable"]:visible').all()
    texts = []
    for table in tables:
        table.scroll_into_view_if_needed()  # the grid fills its cells only once it is on screen
        page.wait_for_timeout(300)
        texts.append(table.text_content() or "")
    return " ".join(texts)


def charts(page) -> int:
    """How many plotly charts are on screen (plotly loads lazily, so wait for the first)."""
    page.wait_for_selector('[data-testid="stPlotlyChart"]', timeout=300_000)
    return page.locator('[data-testid="stPlotlyChart"]').count()


def test_home_page(page, server_url):
    open_page(page, server_url)
    body = page.inner_text("body")
    assert "Model & tokens" in body and "49,152" in body
    assert "·weekend" in tables_text(page) and "16138" in tables_text(page)
    assert_no_error_box(page)
    screenshot(page, "home")

    set_sidebar_text(page, "Paris is the capital of France")
    assert "·capital" in tables_text(page)
    assert "capital" in urllib.parse.unquote_plus(page.url)  # the text is in the URL: the view can be shared
    assert page.locator('[data-testid="stSidebarUserContent"] textarea').input_value() == "Paris is the capital of France"
    assert_no_error_box(page)


def test_shared_link_opens_the_page_with_its_text(page, server_url):
    """A link straight to a sub-page, on a server that has not served the home page to this browser."""
    open_page(page, server_url, "lens", text="The capital of France is")
    assert page.locator('[data-testid="stSidebarUserContent"] textarea').input_value() == "The capital of France is"
    assert "Logit lens" in page.inner_text("body")
    assert_no_error_box(page)


def test_lens_page(page, server_url):
    open_page(page, server_url, "lens")
    assert "Logit lens" in page.inner_text("body") and charts(page) >= 1
    assert "visit" in tables_text(page)
    screenshot(page, "lens")
    pick(page, "Layer", "15")
    set_number(page, "top-k", 5)
    assert page.url.count("lens_k=5") == 1
    assert_no_error_box(page)


def test_lens_page_on_a_long_text(page, server_url):
    """About 2,000 tokens: the page shows the last 24 positions at once, a slider moves the window, and the
    whole lens is computed only on click (then offered as a CSV)."""
    from lmviz.analyses import loss

    text = " ".join(loss.sample_texts()["long"].split()[:1500])
    page.set_viewport_size({"width": 1920, "height": 1080})  # a projector
    open_page(page, server_url, "lens", text=text)
    body = page.inner_text("body")
    assert "Logit lens" in body and charts(page) >= 1
    tokens = int(page.locator('[data-testid="stMetric"]').filter(has_text="Tokens").inner_text().split()[-1]
                 .replace(",", ""))
    assert 1_900 <= tokens <= 2_300 and "only the first" not in body  # the whole text, no truncation
    screenshot(page, "lens-2000-tokens")
    press_slider(page, "Positions shown", "ArrowLeft", 3)
    assert "lens_window=" in page.url and charts(page) >= 1
    page.get_by_role("button", name="Compute every layer × position").click()
    page.get_by_role("button", name="Download every layer × position × rank (CSV)").wait_for(timeout=600_000)
    assert_no_error_box(page)


def test_sampling_page(page, server_url):
    open_page(page, server_url, "sampling")
    assert "Temperature" in page.inner_text("body") and charts(page) >= 1
    assert "visit" in tables_text(page)
    screenshot(page, "sampling")
    press_slider(page, "Temperature T", "ArrowRight", 4)  # 1.00 -> 1.20
    assert "sampling_temperature=1.2" in page.url
    assert_no_error_box(page)


def test_beam_page(page, server_url):
    open_page(page, server_url, "beam")
    assert "Beam search" in page.inner_text("body") and charts(page) >= 1
    screenshot(page, "beam")
    before = page.url
    press_slider(page, "Beams K", "ArrowRight")
    assert page.url != before and "beam_beams=" in page.url
    assert charts(page) >= 1
    assert_no_error_box(page)


TEXT_BOXES = """(chart) => [...chart.querySelectorAll('g.textpoint text')].filter(t => t.textContent.trim())
    .map(t => { const r = t.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom, t.textContent]; })"""


def overlapping_labels(page) -> list[tuple[str, str]]:
    """Pairs of text labels of the first chart whose drawn boxes overlap by more than a pixel each way."""
    chart = page.locator('[data-testid="stPlotlyChart"]').first
    page.wait_for_selector('[data-testid="stPlotlyChart"] g.textpoint text', timeout=600_000)
    boxes = chart.evaluate(TEXT_BOXES)
    assert len(boxes) > 10
    return [(a[4], b[4]) for i, a in enumerate(boxes) for b in boxes[i + 1:]
            if min(a[2], b[2]) - max(a[0], b[0]) > 1 and min(a[3], b[3]) - max(a[1], b[1]) > 1]


@pytest.mark.parametrize("width", [1280, 1920])
def test_beam_tree_labels_do_not_overlap(page, server_url, width):
    """On a projector (1280 or 1920 pixels wide) no two labels of the tree overlap, up to K = 5 and 12 steps,
    at the end and while a step is evaluated."""
    page.set_viewport_size({"width": width, "height": 1080})
    for beams, steps in [(3, 6), (5, 12)]:
        open_page(page, server_url, "beam", beam_beams=beams, beam_new=steps)
        assert overlapping_labels(page) == []
    screenshot(page, f"beam-K5-12-steps-{width}")
    open_page(page, server_url, "beam", beam_beams=5, beam_new=12, beam_frame=17)  # step 6: evaluate (the sums)
    assert "step 6: evaluate" in page.inner_text("body")
    assert overlapping_labels(page) == []
    assert_no_error_box(page)


def test_loss_page(page, server_url):
    open_page(page, server_url, "loss")
    page.get_by_text("Mean NLL = H").first.wait_for(timeout=600_000)  # the metric cards, once rendered
    assert "erplexity" in page.inner_text("body")
    screenshot(page, "loss")
    set_sidebar_text(page, "The cat sat on the mat. The dog sat on the log.")
    assert "erplexity" in page.inner_text("body")
    assert "·mat" in tables_text(page) or "mat" in page.inner_text("body")
    assert_no_error_box(page)


def test_heads_page(page, server_url):
    open_page(page, server_url, "heads")
    assert "Heads & embeddings" in page.inner_text("body")
    assert "·weekend" in tables_text(page)
    screenshot(page, "heads")
    press_slider(page, "Neighbours per token", "ArrowLeft", 5)
    assert "heads_k=5" in page.url
    assert_no_error_box(page)


@pytest.mark.parametrize("text", ["", "😀🙂 東京 שלום עולם \x07\u202e", "x" * 20000])
def test_bad_text_on_every_page(page, server_url, text):
    """Empty, exotic and very long texts: a message, never a traceback, and the text stays in the box."""
    for path in ["", "lens", "sampling", "beam", "loss", "heads", "attention"]:
        open_page(page, server_url, path, text=text)
        assert_no_error_box(page)
        assert page.locator('[data-testid="stSidebarUserContent"] textarea').input_value() == text
    screenshot(page, f"bad-text-{len(text)}")


def test_an_exported_chart_opens_offline(page, tmp_path):
    """The "⬇ HTML" file of a chart draws itself in a browser with the network off."""
    import plotly.graph_objects as go

    from lmviz.present.plots import standalone_html

    exported = tmp_path / "chart.html"
    exported.write_text(standalone_html(go.Figure(go.Bar(x=["·visit", "<b>"], y=[0.4, 0.1]))), encoding="utf-8")
    page.context.set_offline(True)
    try:
        page.goto(exported.as_uri())
        page.wait_for_selector(".main-svg g.point", timeout=60_000)
        assert page.locator(".main-svg g.point").count() == 2
    finally:
        page.context.set_offline(False)


@pytest.mark.parametrize("path", ["lens", "sampling"])
def test_presenter_mode(page, server_url, path):
    """?present=1 on a projector: larger type, the sidebar folded away, a QR code of the view, and chart
    titles clear of their legends."""
    page.set_viewport_size({"width": 1920, "height": 1080})
    open_page(page, server_url, path, present=1, text="The capital of France is")
    charts(page)
    assert page.evaluate("getComputedStyle(document.documentElement).fontSize") == "21px"
    sidebar = page.locator('[data-testid="stSidebar"]').bounding_box()
    assert sidebar is None or sidebar["x"] + sidebar["width"] <= 1 or sidebar["width"] <= 1  # folded away
    assert page.get_by_text("Scan to open this view").count() == 1
    assert page.get_by_text("Settings").first.is_visible()  # the page's controls are folded into "Settings"
    assert page.locator('[data-testid="stImage"] img').count() >= 1
    assert "present=1" in page.url
    boxes = page.locator('[data-testid="stPlotlyChart"]').first.evaluate("""(chart) => ['.gtitle', '.legend']
        .map(s => chart.querySelector(s)).filter(e => e).map(e => { const r = e.getBoundingClientRect();
        return [r.left, r.top, r.right, r.bottom]; })""")
    if len(boxes) == 2:
        (a, b) = boxes
        assert min(a[3], b[3]) - max(a[1], b[1]) <= 1 or min(a[2], b[2]) - max(a[0], b[0]) <= 1  # no overlap
    assert_no_error_box(page)
    screenshot(page, f"presenter-{path}")


def test_a_lesson_in_presenter_mode(page, server_url):
    """A lesson on a projector: its text above the page, Next → opens the next step with its settings."""
    page.set_viewport_size({"width": 1920, "height": 1080})
    open_page(page, server_url, "sampling", lesson="logits", step=2, present=1, text="The capital of France is")
    assert "The model's real distribution" in page.inner_text("body") and charts(page) >= 1
    screenshot(page, "lesson-logits-step2-presenter")
    page.get_by_role("link", name="Next →").click()
    wait_idle(page)
    assert "step=3" in page.url and "Cooler: T = 0.5" in page.inner_text("body")
    assert "sampling_temperature=0.5" in page.url
    open_page(page, server_url, "lens", lesson="notebook", step=3, present=1, text="This weekend I plan to",
              lens_normalized="False", lens_table="by layer")
    assert "The logit lens, raw" in page.inner_text("body") and charts(page) >= 1
    screenshot(page, "lesson-notebook-step3-presenter")
    assert_no_error_box(page)


def click_cell(page, chart_title: str, x, y) -> None:
    """Click the point (x, y), in data coordinates, of the plotly chart whose title contains chart_title."""
    chart = page.locator('[data-testid="stPlotlyChart"]').filter(has_text=chart_title).first
    chart.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    left, top = chart.evaluate("""(chart, [x, y]) => { const gd = chart.querySelector('.js-plotly-plot');
        const box = gd.getBoundingClientRect(), xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
        return [box.left + xa._offset + xa.d2p(x), box.top + ya._offset + ya.d2p(y)]; }""", [x, y])
    page.mouse.click(left, top)
    wait_idle(page)


def test_attention_page(page, server_url):
    """Patterns, attribution and ablation in a browser; a click on a head or a bar selects it."""
    open_page(page, server_url, "attention", text="The capital of France is Paris. The capital of Germany is")
    assert charts(page) >= 6  # the head grid, a pattern, the lines, two attribution charts, the ablation
    body = page.inner_text("body")
    assert "·Berlin" in body and "Sum of the parts" in body
    screenshot(page, "attention")
    click_cell(page, "Heads by", 3, 5)  # the overview grid: head 3 of layer 5
    assert "att_layer=5" in page.url and "att_head=3" in page.url
    assert "Layer 5, head 3" in page.inner_text("body")
    bars = page.locator('[data-testid="stPlotlyChart"]').filter(has_text="Which blocks wrote").first
    bars.locator(".barlayer .trace").nth(2).locator(".point").nth(28).click(force=True)  # the MLP of layer 28
    wait_idle(page)
    assert "att_ablate=mlp" in page.url and "att_ablate_layer=28" in page.url
    click_cell(page, "Every head", 4, 23)  # the heads' attribution: head 4 of layer 23
    assert "att_ablate=head" in page.url and "att_ablate_layer=23" in page.url and "att_ablate_head=4" in page.url
    assert "head L23.H4 zero-ablated" in page.inner_text("body")
    assert_no_error_box(page)
    page.set_viewport_size({"width": 1920, "height": 1080})
    open_page(page, server_url, "attention", present=1, text="The capital of France is Paris. The capital of Germany is")
    charts(page)
    assert_no_error_box(page)
    screenshot(page, "presenter-attention")


def test_what_if_tree_after_two_branches(page, server_url):
    """Step by step: generate 8 tokens, fork at step 3, fork that branch at step 6: the tree shows three
    branches, each with its log-probability in the legend."""
    open_page(page, server_url, "sampling")
    page.get_by_role("tab", name="Step by step").click()
    wait_idle(page)
    page.get_by_role("button", name="+10 tokens").click()
    wait_idle(page)
    set_number(page, "at step", 3)
    page.get_by_role("button", name="Continue from here").click()
    wait_idle(page)
    assert "sampling_branches=" in page.url
    pick(page, "Fork", "branch 1")
    set_number(page, "at step", 6)
    page.get_by_role("button", name="Continue from here").click()
    wait_idle(page)
    tree = page.locator('[data-testid="stPlotlyChart"]').filter(has_text="Branches").first
    tree.scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    legend = tree.inner_text()
    assert "greedy: log P" in legend and "branch 1: log P" in legend and "branch 2: log P" in legend
    assert page.url.split("sampling_branches=")[1].split("&")[0].count("%7C") == 1  # two forks, '|' between
    assert_no_error_box(page)
    tree.screenshot(path=str(screenshot(page, "what-if-two-branches").with_name("what-if-tree.png")))
