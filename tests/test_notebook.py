"""In a notebook, results display as their table and `notebook.show(result)` returns their figure."""

import plotly.graph_objects as go
import pytest
import torch
from IPython.core.interactiveshell import InteractiveShell

from lmviz.analyses import attention, attribution, lens, loss, sampling
from lmviz.forward import trace
from lmviz.present import notebook

TEXT = "The capital of France is"


@pytest.fixture(scope="module")
def shell():
    shell = InteractiveShell.instance()
    notebook.register(shell)
    return shell


def test_a_lens_result_displays_as_its_table_and_shows_its_heatmap(smollm, shell):
    result = lens.logit_lens(smollm, trace.trace(smollm, TEXT), k=5)
    formats, _ = shell.display_formatter.format(result)  # what a notebook cell shows for `result`
    ids = smollm.tokenizer(TEXT).input_ids
    with torch.no_grad():  # the output layer's top token after the text, from transformers' own forward
        top = int(smollm.model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
    assert "<table" in formats["text/html"] and smollm.tokenizer.decode([top]).strip() in formats["text/html"]
    figure = notebook.show(result, statistic="entropy")
    assert isinstance(figure, go.Figure) and figure.data[0].type == "heatmap"


@pytest.mark.parametrize("make", [
    lambda lm: attention.attention(lm, TEXT),
    lambda lm: attribution.attribute(lm, TEXT),
    lambda lm: loss.loss_report(lm, TEXT),
], ids=["attention", "attribution", "loss"])
def test_other_results_show_a_figure(smollm, make):
    assert isinstance(notebook.show(make(smollm)), go.Figure)


def test_a_result_without_a_figure_says_where_its_table_is(smollm, shell):
    dist = sampling.next_token(smollm, TEXT)
    assert "<table" in shell.display_formatter.format(dist)[0]["text/html"]
    with pytest.raises(TypeError, match="no figure"):
        notebook.show(dist)
