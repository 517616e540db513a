"""ui.figure / ui.drawn: a page's figures are built once per content of their arguments and presenter mode, and
kept in the one cache (a class following its teacher draws each step's figures once, not once per student)."""

import torch

from lmviz.analyses import sampling
from lmviz.app import ui
from lmviz.present.plots import sampling as plots

LOGITS = torch.linspace(-4.0, 6.0, 300)


def drawing(temperature: float):
    """The next-token bars at `temperature`, from results computed afresh on every call."""
    shown = sampling.distribution(LOGITS.clone(), sampling.SamplingSettings(temperature=temperature)).top(12)
    return ui.figure(plots.distribution_figure, shown, [f"token {i}" for i in range(12)], title=f"T = {temperature}")


def test_equal_content_draws_the_one_figure_built_as_a_fresh_build_would():
    shown = ui.drawn(drawing(0.7), projector=False)
    assert ui.drawn(drawing(0.7), projector=False) is shown  # other objects, equal content: not built again
    fresh = drawing(0.7)
    assert shown.to_json() == fresh.build(*fresh.args, **fresh.kwargs).to_json()
    other = ui.drawn(drawing(0.8), projector=False)
    assert other is not shown and other.to_json() != shown.to_json()


def test_presenter_mode_has_its_own_figure_and_leaves_the_plain_one_alone():
    plain = ui.drawn(drawing(0.5), projector=False)
    big = ui.drawn(drawing(0.5), projector=True)
    assert big is not plain and ui.drawn(drawing(0.5), projector=True) is big
    assert (big.layout.font.size, plain.layout.font.size) == (22, 16)
    assert big.layout.height == int(plain.layout.height * 1.25)


def test_a_builder_whose_result_is_not_in_its_arguments_is_built_every_time():
    hidden = {"title": "first"}
    build = lambda: plots.toy_figure(sampling.toy_softmax([1.0, 2.0], [1.0]), title=hidden["title"])  # noqa: E731
    first = ui.drawn(ui.figure(build), projector=False)
    hidden["title"] = "second"
    second = ui.drawn(ui.figure(build), projector=False)
    assert second is not first and second.layout.title.text == "second"
