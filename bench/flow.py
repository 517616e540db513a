"""Information flow: the whole graph's cost against a plain forward pass of the same text.

Run from the repo root: `.venv/bin/python bench/flow.py [--runs 3] [--tokens 100,500]`.

On the embedded model (smollm2-135m: 30 layers, 9 heads, d_model 576) and the first 100 and 500 tokens
of the bundled Pride and Prejudice sample, in one process:

- forward: one plain pass of the text, as `model(ids)` runs it (its default attention kernel, every
  position's logits): the unit the issue's goal counts in (≤ 3x at 100 tokens);
- eager: the same pass with eager attention (what the flow must run to see the probabilities);
- flow: `flow.flow` from scratch (the cache cleared): one eager pass recording every block's states, every
  attention edge's importance and its heads' shares computed layer by layer as the pass goes, and the
  graph walked at the default threshold.

Timings are medians of --runs runs, each run timing the three in turn (flow/fwd: the median of the
runs' ratios, so that a machine busy with other work slows both alike); no timing is asserted. The sum
check (the attention's terms against its output) is printed with its rounding bound.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from lmviz.analyses import flow  # noqa: E402
from lmviz.forward import trace  # noqa: E402
from lmviz.forward.cache import CACHE  # noqa: E402
from lmviz.model import interventions, models  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "lmviz" / "data" / "pride_and_prejudice.txt"


def timed(function, runs: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def text_of(lm, n_tokens: int) -> str:
    """The sample's first `n_tokens` tokens as text (re-encoding may merge a piece or two: the count is printed)."""
    ids = trace.encode(lm, SAMPLE.read_text(encoding="utf-8"))[:n_tokens]
    with lm.lock:
        return lm.tokenizer.decode(ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tokens", default="100,500", help="comma-separated text lengths")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    lm = models.load(models.DEFAULT_MODEL)
    if args.threads:  # after the load, which sets lmviz's own
        torch.set_num_threads(args.threads)
    parts = lm.arch.decomposition
    print(f"{lm.name}: {lm.n_layers} layers x {parts.n_heads} heads; torch threads {torch.get_num_threads()}")
    flow.flow(lm, "Warm up the eager twin.")  # made once per model
    print(f"{'tokens':>6} {'forward s':>9} {'eager s':>8} {'flow s':>8} {'flow/fwd':>8} {'flow/eager':>10} "
          f"{'edges':>6} {'sum error':>9} {'bound':>9}")
    for n_tokens in (int(part) for part in args.tokens.split(",")):
        text = text_of(lm, n_tokens)
        ids = torch.tensor([trace.encode(lm, text)])

        def forward():
            with torch.inference_mode():
                lm.model(input_ids=ids, use_cache=False)

        def fresh():
            CACHE.clear()
            return flow.flow(lm, text)
        forward()  # warm
        # interleaved, so that a busy machine slows both alike: the ratio is the median of each run's ratio
        runs = [(timed(forward, 1)[0], timed(lambda: interventions.forward(lm, ids, eager=True), 1)[0],
                 *timed(fresh, 1)) for _ in range(args.runs)]
        plain, eager, whole = (statistics.median(run[i] for run in runs) for i in range(3))
        ratio = statistics.median(run[2] / run[0] for run in runs)
        result = runs[-1][3]
        print(f"{ids.shape[1]:6d} {plain:9.3f} {eager:8.3f} {whole:8.3f} {ratio:8.2f} {whole / eager:10.2f} "
              f"{len(result.edges):6d} {result.sum_error:9.2e} {result.sum_bound:9.2e}")

if __name__ == "__main__":
    main()
