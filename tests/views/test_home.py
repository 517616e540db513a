"""AppTest of the home page: model facts, token table, batch view, bad input."""

from tests.views import app


def test_home_shows_embedded_model_tokens(smollm):
    at = app().run()
    assert not at.exception
    assert [m.value for m in at.metric][:2] == ["30", "576"]
    tokens = at.dataframe[0].value
    assert tokens["token"].tolist() == ["This", "·weekend", "·I", "·plan", "·to"]
    assert tokens["id"].tolist() == [1348, 16138, 339, 1252, 288]
    mask = at.dataframe[2].value
    assert mask.values.tolist() == [[0, 0, 0, 0, 1], [1, 1, 1, 1, 1]]


def test_home_empty_text_and_unknown_model(smollm, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    at = app()
    at.session_state["text"] = "   "
    at.run()
    assert not at.exception and "Type a text" in at.info[0].value
    at = app()
    at.session_state["text"] = "Hello"
    at.session_state["model_choice"] = "Other (type a name or folder)…"
    at.session_state["model_other"] = "nobody/nothing"
    at.run()
    assert not at.exception
    assert "not embedded" in at.error[0].value
    assert at.text_area(key="text").value == "Hello"
