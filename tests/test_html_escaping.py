"""Wherever lmviz renders HTML (st.html), a hostile text or token stays text."""

import pytest

from lmviz.analyses import compare, loss, sampling
from lmviz.present.plots import loss as loss_plots
from lmviz.present.plots import sampling as sampling_plots

HOSTILE = 'Hi <script>alert(1)</script> <img src=x onerror="alert(2)"> & done'


def assert_inert(markup: str) -> None:
    lowered = markup.lower()
    assert "<script" not in lowered and "<img" not in lowered and "onerror=\"alert" not in lowered
    assert "&lt;script&gt;" in markup or "&lt;" in markup


def test_surprisal_and_diff_html_escape_tokens(tiny_gpt2, tiny_llama):
    report = loss.loss_report(tiny_gpt2, HOSTILE)
    for mode in ("surprisal", "rank"):
        assert_inert(loss_plots.surprisal_html(report, mode))
    other = loss.loss_report(tiny_llama, HOSTILE)
    assert_inert(loss_plots.diff_html(compare.compare_models(report, other)))


@pytest.mark.parametrize("seed", [None, 3])
def test_generation_html_escapes_prompt_and_tokens(tiny_gpt2, seed):
    settings = sampling.SamplingSettings(temperature=0.0 if seed is None else 1.0)
    generation = sampling.generate(tiny_gpt2, HOSTILE, settings, steps=4, seed=seed)
    assert_inert(sampling_plots.generation_html(generation))


def test_tokens_inside_markdown_stay_text():
    """Labels and st.markdown read Markdown (and $…$ as LaTeX): a token like '**', '$$' or a backslash is
    shown as itself, and the escaped text renders back to the token under CommonMark's backslash rule."""
    import re

    from lmviz.tokens import markdown_safe

    for token in ["**", "$$", "\\", "`x`", "[a](b)", "·_name_", ":red[x]", "~~", "<b>", "# h"]:
        escaped = markdown_safe(token)
        assert re.sub(r"\\(.)", r"\1", escaped) == token  # what Markdown shows
        assert not re.search(r"(?<!\\)[*_`$\[\]~<#:]", escaped)  # nothing left for Markdown to act on
