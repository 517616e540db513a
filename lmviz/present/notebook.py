"""Results in a notebook: each displays as its table, and `show(result)` returns its figure.

    from lmviz.analyses import lens
    from lmviz.present import notebook
    r = lens.logit_lens(lm, trace.trace(lm, "The capital of France is"))
    r                                      # the top-k table of the output layer (seed 004's layout)
    notebook.show(r, statistic="entropy")  # the Logit lens page's heatmap, a plotly Figure

The tables and figures are the ones the pages draw (`lmviz.present.tables`, `lmviz.present.plots`).
`register()` tells IPython to display results as their tables; `import lmviz`
calls it inside IPython, so a notebook needs no set-up. The results themselves
know nothing of pandas or plotly: this module sits above them.
"""

from __future__ import annotations

from lmviz.analyses import ablation, attention, attribution, beam, classification, compare, embeddings, lens, loss, sampling
from lmviz.analyses import whatif
from lmviz.present.plots import attention as attention_plots
from lmviz.present.plots import beam as beam_plots
from lmviz.present.plots import heads as heads_plots
from lmviz.present.plots import lens as lens_plots
from lmviz.present.plots import loss as loss_plots
from lmviz.present.plots import sampling as sampling_plots
from lmviz.present.tables import beam as beam_tables
from lmviz.present.tables import heads as heads_tables
from lmviz.present.tables import lens as lens_tables
from lmviz.present.tables import loss as loss_tables
from lmviz.present.tables import sampling as sampling_tables

TABLES = {  # result type -> its main table (a pandas DataFrame)
    lens.LensResult: lambda r: lens_tables.lens_table(r, layer=-1),
    sampling.Distribution: lambda r: sampling_tables.distribution_table(r.top(20)),
    sampling.ToyTable: sampling_tables.toy_table,
    beam.BeamTree: beam_tables.final_table,
    loss.LossReport: loss_tables.loss_table,
    loss.LayerLoss: loss_tables.layer_loss_table,
    loss.ContextCurve: loss_tables.context_table,
    compare.ModelComparison: loss_tables.word_comparison_table,
    embeddings.Neighbours: heads_tables.neighbours_table,
    classification.Classification: heads_tables.classification_table,
    attribution.Attribution: lambda r: __import__("pandas").DataFrame(r.components()),
}
FIGURES = {  # result type -> its main figure (a plotly Figure); options go to the figure's function
    lens.LensResult: lambda r, statistic="top1_prob": lens_plots.heatmap(r, statistic, list(r.positions),
                                                                        list(range(r.n_layers + 1))),
    sampling.ToyTable: sampling_plots.toy_figure,
    sampling.Sweep: sampling_plots.sweep_figure,
    beam.BeamTree: beam_plots.tree_figure,
    whatif.WhatIfTree: beam_plots.branches_figure,
    loss.LossReport: loss_plots.surprisal_figure,
    loss.LayerLoss: loss_plots.layer_loss_figure,
    loss.ContextCurve: loss_plots.context_figure,
    compare.ModelComparison: loss_plots.word_diff_figure,
    embeddings.Neighbours: heads_plots.neighbours_figure,
    classification.Classification: heads_plots.classification_figure,
    attention.AttentionResult: lambda r, statistic="previous": attention_plots.head_grid(r, statistic),
    attribution.Attribution: attention_plots.attribution_bars,
    ablation.AblationResult: attention_plots.ablation_bars,
}


def table(result):
    """The result's main table as a pandas DataFrame, or None where it has none."""
    make = TABLES.get(type(result))
    return None if make is None else make(result)


def show(result, **options):
    """The result's main figure, as its page draws it (a plotly Figure: a notebook draws it)."""
    make = FIGURES.get(type(result))
    if make is None:
        raise TypeError(f"A {type(result).__name__} has no figure; lmviz.present.notebook.table(result) is its table.")
    return make(result, **options)


def register(shell=None) -> None:
    """Display every result with a table as that table in IPython (the current shell by default)."""
    if shell is None:
        from IPython import get_ipython

        shell = get_ipython()
    if shell is None:
        return
    html = shell.display_formatter.formatters["text/html"]
    for kind, make in TABLES.items():
        html.for_type(kind, lambda result, make=make: make(result).to_html(max_rows=40))
