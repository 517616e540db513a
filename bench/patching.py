"""Activation patching: lmviz's batched experiments against the naive loop, and AtP against both.

Run from the repo root: `.venv/bin/python bench/patching.py [--runs 2]`.

On the embedded model (smollm2-135m: 30 layers, 9 heads) and the IOI pair ("When Mary and John went to
the store, John gave a drink to" / "... Mary gave ...", 14 tokens; answer " Mary", wrong " John"):

- forward: one plain pass of the text (the unit the issue counts in), and forward + backward;
- naive: one pass per cell, each with one `Edit` (batch 1, last logits only): L·T passes for resid,
  L·H for heads, the loop TransformerLens' patching helpers run;
- lmviz: `patching.patch` (the corrupted text copied into a batch, one patch per row; the two plain runs
  recorded once), the cache cleared before each run;
- AtP: `patching.attribution_patch`'s estimate alone (the clean and corrupted runs and the backward pass),
  against one forward + backward, and its Pearson correlation with the exhaustive values per site.

Also checked on the spot: the naive loop's values equal lmviz's within 1e-3 (float32, batched vs
single passes); the max difference is printed. Timings are medians of --runs runs; no timing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from lmviz.analyses import patching  # noqa: E402
from lmviz.forward.cache import CACHE  # noqa: E402
from lmviz.model import interventions, models  # noqa: E402
from lmviz.model.interventions import Edit, Site  # noqa: E402

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPTED = "When Mary and John went to the store, Mary gave a drink to"
ANSWER, WRONG = " Mary", " John"


def timed(function, runs: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def naive(lm, site: str) -> np.ndarray:
    """One pass per cell, as a loop over (layer, column) would run it."""
    runs = patching.pair(lm, CLEAN, CORRUPTED, ANSWER, WRONG)
    base, source = runs.base_and_source("denoise")
    hook = patching.SITES[site]
    n_layers, n_columns = lm.n_layers, (lm.arch.decomposition.n_heads if site == "head" else base.ids.shape[1])
    width = lm.arch.decomposition.d_head
    out = np.empty((n_layers, n_columns))
    for layer in range(n_layers):
        for column in range(n_columns):
            if site == "head":
                edit = Edit(Site(f"blocks.{layer}.{hook}", unit=column),
                            source.states[hook][layer][:, column * width:(column + 1) * width])
            else:
                edit = Edit(Site(f"blocks.{layer}.{hook}"), source.states[hook][layer][column], at=column)
            logits = interventions.run(lm, base.ids, edits=[edit], logits_at=-1).double()
            out[layer, column] = float(logits[runs.answer_id] - logits[runs.wrong_id])
    return patching.normalize(out, float(runs.clean.last_logits[runs.answer_id] - runs.clean.last_logits[runs.wrong_id]),
                              float(runs.corrupted.last_logits[runs.answer_id] -
                                    runs.corrupted.last_logits[runs.wrong_id]))


def fresh(function):
    def run():
        CACHE.clear()
        return function()
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    lm = models.load(models.DEFAULT_MODEL)
    ids = patching.pair(lm, CLEAN, CORRUPTED, ANSWER, WRONG).corrupted.ids
    n_pos, n_layers, n_heads = ids.shape[1], lm.n_layers, lm.arch.decomposition.n_heads
    print(f"{lm.name}: {n_layers} layers x {n_heads} heads; IOI pair of {n_pos} tokens; torch threads "
          f"{torch.get_num_threads()}")

    forward, _ = timed(lambda: interventions.run(lm, ids, logits_at=-1), max(5, args.runs))

    def forward_backward():
        output = interventions.forward(lm, ids, grad=True)
        output.logits[0, -1, 0].backward()
        lm.model.zero_grad(set_to_none=True)
    both, _ = timed(forward_backward, max(3, args.runs))
    print(f"forward {forward * 1e3:.1f} ms; forward + backward {both * 1e3:.1f} ms\n")

    print(f"{'site':6} {'cells':>6} {'naive s':>8} {'lmviz s':>8} {'lmviz/naive':>11} {'in forwards':>11} "
          f"{'goal T/2*L/2':>12} {'max |diff|':>10}")
    for site in ("resid", "head"):
        naive_time, slow = timed(lambda: naive(lm, site), 1)
        fast_time, result = timed(fresh(lambda: patching.patch(lm, CLEAN, CORRUPTED, ANSWER, WRONG, site)), args.runs)
        cells = slow.size
        print(f"{site:6} {cells:6d} {naive_time:8.2f} {fast_time:8.2f} {fast_time / naive_time:11.3f} "
              f"{fast_time / forward:11.0f} {n_pos / 2 * n_layers / 2:12.0f} "
              f"{np.abs(slow - result.values()).max():10.2e}")

    print(f"\n{'AtP site':8} {'estimate s':>10} {'/ fwd+bwd':>9} {'r exhaustive':>12} {'max |error|':>11}")
    for site in patching.SITES:
        patching.patch(lm, CLEAN, CORRUPTED, ANSWER, WRONG, site)  # exhaustive, and both runs, in the cache

        def estimate():
            CACHE.forget("attribution-patching")
            return patching.attribution_patch(lm, CLEAN, CORRUPTED, ANSWER, WRONG, site)
        # AtP's cost as the issue counts it: the two plain runs too (they are shared with exhaustive patching)
        runs_time, _ = timed(fresh(lambda: patching.pair(lm, CLEAN, CORRUPTED, ANSWER, WRONG)), args.runs)
        patching.patch(lm, CLEAN, CORRUPTED, ANSWER, WRONG, site)
        atp_time, result = timed(estimate, args.runs)
        total = runs_time + atp_time
        print(f"{site:8} {total:10.3f} {total / both:9.2f} {result.correlation:12.3f} {result.max_error:11.3f}")


if __name__ == "__main__":
    main()
