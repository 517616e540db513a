"""On a projector, every lesson step's main figure is on the first screen, without scrolling.

In presenter mode (?present=1, the sidebar folded away) at 1920×1080 and at 1280×720, the bounding box of
the step's main element lies inside the viewport: top ≥ 0 and bottom ≤ the viewport's height, measured in
chromium right after the step's link opened (the page is not scrolled).

Which element is a step's main one (MAIN_ELEMENT below), decided per page and tab:
  * by default the first plotly chart that is visible (on the open tab): the lens's heatmap, the next-token
    bars, the beam tree, the loss's surprisal bars, the heads' charts, the head grid, the patching grid;
  * on Attention & attribution, presenter mode draws the section a step is about first (patterns, attribution
    or ablation, from the settings the step sets), so its first chart is that section's figure;
  * where the step is about a table, the first visible table: the tokens on Model & tokens, the lecture's
    softmax table on the Toy logits tab, the continuations and the neurons on Features;
  * the Step by step tab draws nothing until "Generate next token" is pressed: there the main element is
    that button.

Each step opens once, at 1920×1080; then the window shrinks to 1280×720 (no reload) and the box is measured
again. One server and one browser serve every step; each step gets a fresh browser context (a new session,
as a class's link opens it). Waits are liveness limits only: a slow machine waits, it does not fail.
Screenshots of every first screen go to test-artifacts/screenshots/first-screen/.
"""

from __future__ import annotations

import time

import pytest

from lmviz.app import lessons, pages
from tests.browser.conftest import SHOTS, assert_no_error_box, wait_idle

pytestmark = pytest.mark.browser

VIEWPORTS = ((1920, 1080), (1280, 720))
LIVENESS_S = 600  # a hung app fails the test; a slow one just takes longer
FIRST_SCREENS = SHOTS / "first-screen"

CHART = '[data-testid="stPlotlyChart"]:visible'
TABLE = '[data-testid="stDataFrame"]:visible, [data-testid="stTable"]:visible'


def main_element(step: lessons.Step) -> tuple[str, str]:
    """(what, selector): the element of the step that has to be on the first screen (see the module's doc)."""
    from lmviz.app.settings import Features, Sampling

    tab = step.params.get(Sampling.TAB)
    if step.page is pages.HOME:
        return "tokens table", TABLE
    if step.page is pages.SAMPLING and tab == Sampling.TOY_TAB:
        return "the lecture's table", TABLE
    if step.page is pages.FEATURES and step.params.get(Features.TAB) in (Features.STEERING_TAB, Features.NEURONS_TAB):
        return "the continuations or the neurons' table", TABLE
    if step.page is pages.SAMPLING and tab == Sampling.STEPS_TAB:
        return "Generate next token button", 'button:visible:has-text("Generate next token")'
    return "first chart", CHART


STEPS = [pytest.param(lesson, number, id=f"{lesson.id}-{number}")
         for lesson in lessons.LESSONS for number in range(1, len(lesson.steps) + 1)]


def settled_box(page, selector: str) -> dict:
    """The element's bounding box in viewport coordinates, once it has stopped moving (plotly draws and
    resizes asynchronously): the same box for a full second."""
    element = page.locator(selector).first
    element.wait_for(state="visible", timeout=LIVENESS_S * 1000)
    if "stPlotlyChart" in selector:
        page.locator(selector).first.locator(".main-svg").first.wait_for(timeout=LIVENESS_S * 1000)
    deadline = time.time() + LIVENESS_S
    last, since = None, time.time()
    while time.time() < deadline:
        box = element.evaluate("e => { const r = e.getBoundingClientRect(); return {top: r.top, bottom: r.bottom, "
                               "left: r.left, right: r.right, scrollY: window.scrollY, "
                               "scrolled: document.querySelector('[data-testid=\"stMain\"]')?.scrollTop ?? 0}; }")
        if box != last:
            last, since = box, time.time()
        elif time.time() - since >= 1.0:
            return box
        time.sleep(0.2)
    raise TimeoutError(f"{selector} kept moving")


@pytest.mark.parametrize(("lesson", "number"), STEPS)
def test_main_figure_is_on_the_first_screen(browser, server_url, lesson, number):
    step = lesson.steps[number - 1]
    what, selector = main_element(step)
    width, height = VIEWPORTS[0]
    context = browser.new_context(viewport={"width": width, "height": height})
    try:
        page = context.new_page()
        page.goto(server_url + lessons.step_url(lesson, number) + "&present=1")
        wait_idle(page, timeout=LIVENESS_S)
        assert_no_error_box(page)
        FIRST_SCREENS.mkdir(parents=True, exist_ok=True)
        failures = []
        for width, height in VIEWPORTS:
            page.set_viewport_size({"width": width, "height": height})
            box = settled_box(page, selector)
            page.screenshot(path=str(FIRST_SCREENS / f"{lesson.id}-{number}-{width}.png"))
            print(f"\n{lesson.id}-{number} ({step.title}) {width}×{height} {what}: "
                  f"top {box['top']:.0f}, bottom {box['bottom']:.0f}")
            assert box["scrollY"] == 0 and box["scrolled"] == 0, "the page scrolled by itself"
            if box["top"] < 0 or box["bottom"] > height:
                failures.append(f"{width}×{height}: {what} spans {box['top']:.0f} … {box['bottom']:.0f} px "
                                f"(the viewport is {height} px high)")
        assert not failures, f"step {lesson.id}-{number} ({step.title!r}): " + "; ".join(failures)
    finally:
        context.close()
