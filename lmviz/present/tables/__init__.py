"""Results -> pandas tables with display column names: what the pages, the CLI and a notebook show.

One module per analysis, like `lmviz.present.plots`: the analysis modules compute, these
only arrange their numbers in rows and name the columns for a reader
("nll (nats)", "p final", …).
"""
