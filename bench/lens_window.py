"""The logit lens over a 24-position window of a ~2,000-token text, against the forward pass it starts from.

Baseline, measured in the same run: the bare forward pass with hidden states (a fresh trace). Goal (issue
14): the window costs at most 2x that, beyond loading. Also printed: the full lens at the same length would
cost ~52 s here (v1's figure); the window computes 24 of the ~2,000 positions.
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lmviz.analyses import lens, loss
from lmviz.forward import trace
from lmviz.model import models  # noqa: E402
from lmviz.forward.cache import CACHE  # noqa: E402


def best_of(runs: int, work, clear: bool = True) -> float:
    """The fastest of `runs` timings of work(), lmviz's cache emptied before each unless clear=False."""
    times = []
    for _ in range(runs):
        if clear:
            CACHE.clear()
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    lm = models.load("smollm2-135m")
    words = loss.sample_texts()["long"].split()
    text = " ".join(words[:1550])
    t = trace.run_trace(lm, text, truncate=True)
    n = t.n_tokens
    forward = best_of(2, lambda: trace.run_trace(lm, text, truncate=True))
    window = (n // 2, n // 2 + 24)
    lens_time = best_of(2, lambda: lens.run_logit_lens(lm, t, k=10, positions=window))
    print(f"{n} tokens; forward pass with hidden states {forward:.2f} s; lens over positions {window[0]}:{window[1]} "
          f"{lens_time:.2f} s = {lens_time / forward:.2f} x the forward pass (goal: forward + window <= 2 x forward, "
          f"i.e. window <= 1 x: {'met' if lens_time <= forward else 'not met'})")


if __name__ == "__main__":
    main()
