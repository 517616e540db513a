"""lmviz: look inside a language model. The backend of the dashboard; usable from a notebook:

    from lmviz.forward import trace
    from lmviz.model import models
    lm = models.load("smollm2-135m")
    t = trace.trace(lm, "This weekend I plan to")   # t.hidden: (layer+1, pos, d_model)

In IPython, results display as their tables (`lmviz.present.notebook`).
"""

import sys

if "IPython" in sys.modules:  # a notebook: no set-up for results to show as tables
    from lmviz.present import notebook

    notebook.register()
