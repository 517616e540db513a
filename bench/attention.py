"""The Attention & attribution page's three computations against the forward pass they start from.

Baseline, measured in the same run: a fresh trace (the forward pass with hidden states every page
starts from). Printed for SmolLM2-135M at ~100 and ~500 tokens: the eager pass that gives every head's
probabilities and statistics, the recorded pass plus the float64 split of one logit (direct logit
attribution), and one ablation (its patched pass; the clean pass it compares with is cached), each as a
ratio to the baseline. Usage: `.venv/bin/python bench/attention.py`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.lens_window import best_of  # noqa: E402
from lmviz.analyses import ablation, attention, attribution, loss
from lmviz.forward import trace
from lmviz.model import models  # noqa: E402
from lmviz.model.interventions import Component  # noqa: E402


def main() -> None:
    lm = models.load("smollm2-135m")
    words = loss.sample_texts()["long"].split()
    print(f"{'tokens':>7} {'forward':>9} {'attention':>17} {'attribution':>17} {'ablation':>17}")
    for n_words in (75, 380):
        text = " ".join(words[:n_words])
        n = len(trace.encode(lm, text))
        forward = best_of(3, lambda: trace.run_trace(lm, text))
        eager = best_of(3, lambda: attention.run_attention(lm, text))
        split = best_of(3, lambda: attribution.attribute(lm, text))
        head = Component("head", 23, 4)
        ablation.ablate(lm, text, Component("head", 0, 0))  # the clean pass, cached as on the page

        def patched():
            ablation._ablate(lm, text, trace.encode(lm, text), ablation.edit_for(lm, text, head, "zero"), "zero", 10)

        ablate = best_of(3, patched, clear=False)
        print(f"{n:>7} {forward:>8.2f}s {eager:>7.2f}s ({eager / forward:4.2f}x) {split:>7.2f}s ({split / forward:4.2f}x) "
              f"{ablate:>7.2f}s ({ablate / forward:4.2f}x)")


if __name__ == "__main__":
    main()
