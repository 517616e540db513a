"""Lessons: every step of every lesson opens without error, with its text and its settings."""

import json
import urllib.parse

import pytest

from lmviz import cli, lessons
from tests.views import app

STEPS = [(lesson, index) for lesson in lessons.LESSONS for index in range(1, len(lesson.steps) + 1)]


@pytest.mark.parametrize("lesson, index", STEPS, ids=[f"{lesson.id}-{index}" for lesson, index in STEPS])
def test_every_step_opens(smollm, lesson, index):
    step = lesson.steps[index - 1]
    url = urllib.parse.urlsplit(lessons.step_url(lesson, index))
    at = app(step.page.removeprefix("views/").removesuffix(".py"))
    for key, value in urllib.parse.parse_qsl(url.query):
        at.query_params[key] = value
    at.session_state["text"] = "This weekend I plan to"
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    shown = " ".join(m.value for m in at.markdown)
    assert step.title in shown and lesson.title in shown
    for key, value in step.params.items():  # the step's settings reached the page
        assert at.query_params.get(key) == value or str(at.session_state[key]) == value, key


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
    assert ids == ["logits", "decoding", "evaluating", "notebook", "heads", "why"]
    first = out["lessons"][0]["steps"][1]
    assert first["page"] == "views/sampling.py" and first["url"].startswith("/sampling?lesson=logits&step=2")
