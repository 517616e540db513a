"""Lessons: every step of every lesson opens without error, with its text and its settings."""

import json
import urllib.parse

import pytest

from lmviz import cli
from lmviz.app import lessons
from lmviz.app.settings import LAST
from tests.views import app

STEPS = [(lesson, index) for lesson in lessons.LESSONS for index in range(1, len(lesson.steps) + 1)]


def shown(at) -> dict[str, object]:
    """What the page shows for each keyed control: a widget's value (a list as a tuple), or the label of the
    open tab of a keyed st.tabs."""
    found = {}

    def walk(node):
        if getattr(node, "type", None) == "tab_container":
            tabs = node.proto.tab_container
            key = tabs.id.rsplit("-", 1)[-1]
            found[key] = list(node.children.values())[tabs.default_tab_index].label
        elif getattr(node, "key", None) is not None and hasattr(node, "value"):
            found[node.key] = tuple(node.value) if isinstance(node.value, list) else node.value
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at.main)
    walk(at.sidebar)
    return found


DEFAULTS: dict[str, dict[str, object]] = {}  # page -> what it shows opened without a lesson


def shown_by_default(page: str) -> dict[str, object]:
    if page not in DEFAULTS:
        at = app(page)
        at.session_state["text"] = "This weekend I plan to"
        DEFAULTS[page] = shown(at.run())
    return DEFAULTS[page]


@pytest.mark.parametrize("lesson, index", STEPS, ids=[f"{lesson.id}-{index}" for lesson, index in STEPS])
def test_every_step_opens(smollm, lesson, index):
    step = lesson.steps[index - 1]
    url = urllib.parse.urlsplit(lessons.step_url(lesson, index))
    at = app(step.page.name)
    for key, value in urllib.parse.parse_qsl(url.query):
        at.query_params[key] = value
    at.session_state["text"] = "This weekend I plan to"
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    text = " ".join(m.value for m in at.markdown)
    assert step.title in text and lesson.title in text
    on_page = shown(at)
    for setting, value in step.params.items():  # the step's settings reached the page's widgets
        expected = smollm.n_layers if value is LAST else value  # LAST: the output layer (att_upto)
        assert setting.key in on_page, f"no control {setting.key} on the page"
        assert on_page[setting.key] == expected, (setting.key, on_page[setting.key], expected)
        if value != setting.default:  # and the page shows something else without the lesson's URL
            assert shown_by_default(step.page.name).get(setting.key) != expected, setting.key


def test_steps_with_other_settings_before(smollm):
    """Arriving at a step resets the settings it names, even after the user moved them."""
    lesson = lessons.find("logits")
    at = app("sampling")
    at.session_state["sampling_temperature"] = 3.0
    at.run()
    for key, value in urllib.parse.parse_qsl(urllib.parse.urlsplit(lessons.step_url(lesson, 3)).query):
        at.query_params[key] = value
    at.run()
    assert at.session_state["sampling_temperature"] == 0.5


def test_cli_lessons_json(capsys):
    assert cli.main(["lessons", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    ids = [lesson["id"] for lesson in out["lessons"]]
    assert ids == ["logits", "decoding", "evaluating", "notebook", "heads", "why", "cause", "features"]
    first = out["lessons"][0]["steps"][1]
    assert first["page"] == "sampling" and first["url"].startswith("/sampling?lesson=logits&step=2")


def test_the_induction_step_opens_an_induction_head_and_comes_back_to_its_example(smollm):
    lesson = lessons.find("why")
    index = next(i for i, step in enumerate(lesson.steps, start=1) if step.title == "An induction head")
    at = app("attention")
    for key, value in urllib.parse.parse_qsl(urllib.parse.urlsplit(lessons.step_url(lesson, index)).query):
        at.query_params[key] = value
    at.run()
    from lmviz.analyses import attention  # the page's head, scored independently of the page's own choice

    scores = attention.attention(smollm, lessons.example(lesson, index)).stats["induction"]
    layer, head = at.session_state["att_layer"], at.session_state["att_head"]
    assert scores[layer, head] >= 0.4 and scores[layer, head] == scores.nan_to_num(-1).max()
    at.session_state["text"] = "Quick brown foxes leap."  # the student explores ...
    at.run()
    [back] = [b for b in at.button if "Back to the lesson's example" in b.label]
    back.click().run()  # ... and comes back
    assert at.session_state["text"] == lessons.example(lesson, index)
    assert not [b for b in at.button if "Back to the lesson's example" in b.label]


def test_a_causal_step_on_a_masked_model_says_so_and_offers_the_switch(smollm):
    lesson = lessons.find("heads")
    at = app("heads")
    for key, value in urllib.parse.parse_qsl(urllib.parse.urlsplit(lessons.step_url(lesson, 2)).query):
        at.query_params[key] = value
    at.query_params["model"] = "antiberty"  # e.g. kept from the masked-LM step before it
    at.run()
    assert any("needs a causal model; antiberty is a masked model" in w.value for w in at.warning)
    [switch] = [b for b in at.button if b.label == "Switch to smollm2-135m"]
    switch.click().run()
    assert at.session_state["model_choice"] == "smollm2-135m" and not at.exception
