"""Benchmark: the 50-point full-vocabulary temperature sweep for one position.

Run from the repo root: `.venv/bin/python bench/sampling.py [--points 50] [--repeat 7]`.

On the embedded model's next-token logits for "This weekend I plan to"
(vocabulary 49,152) it measures, in one run:
- the sweep: `lmviz.analyses.sampling.temperature_sweep` (one batched (temp, vocab)
  softmax, the logits sorted once, since temperature never changes the order);
- the baseline: the straightforward loop, one temperature at a time through
  transformers' TemperatureLogitsWarper, softmax, entropy, top probability, and
  a sort per temperature for the effective vocabulary;
- for scale, one full `distribution()` (temperature + top-k + top-p over the
  whole vocabulary, every stage recorded).
Each timing is the median of --repeat runs (the machine may be shared).
Goal: the sweep under 100 ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from transformers import TemperatureLogitsWarper  # noqa: E402

from lmviz.analyses import sampling
from lmviz.forward import trace
from lmviz.model import compute, models  # noqa: E402

GOAL_MS = 100.0


def timed(function, repeat: int) -> tuple[float, object]:
    """Median wall time in ms over `repeat` calls, and the last result."""
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = function()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), result


def baseline_sweep(logits: torch.Tensor, temps: torch.Tensor):
    """One temperature at a time, as a notebook would write it."""
    entropy, top, effective = [], [], []
    for t in temps.tolist():
        scores = TemperatureLogitsWarper(float(t))(None, logits.unsqueeze(0))[0]
        p = torch.softmax(scores, -1)
        entropy.append(float(-(p * torch.log_softmax(scores, -1)).sum()))
        top.append(float(p.max()))
        cumulative = torch.sort(p, descending=True).values.cumsum(0)
        effective.append(int((cumulative < sampling.MASS * cumulative[-1]).sum()) + 1)
    return entropy, top, effective


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    compute.configure_threads()
    lm = models.load(models.DEFAULT_MODEL)
    logits = trace.trace(lm, "This weekend I plan to").last_logits
    temps = sampling.temperatures(0.05, 10.0, args.points)
    print(f"model {lm.name}, vocabulary {logits.numel():,}, {args.points} temperatures 0.05..10, "
          f"torch threads {torch.get_num_threads()}, median of {args.repeat}")

    sweep_ms, sweep = timed(lambda: sampling.temperature_sweep(logits, temps), args.repeat)
    base_ms, (entropy, top, effective) = timed(lambda: baseline_sweep(logits, temps), args.repeat)
    settings = sampling.SamplingSettings(temperature=0.7, top_k=50, top_p=0.9)
    dist_ms, _ = timed(lambda: sampling.distribution(logits, settings), args.repeat)

    agree = (
        torch.allclose(sweep.entropy, torch.tensor(entropy, dtype=torch.float64), atol=1e-4)
        and torch.allclose(sweep.top_prob, torch.tensor(top, dtype=torch.float64), atol=1e-5)
        and max(abs(a - b) for a, b in zip(sweep.effective_vocab.tolist(), effective)) <= 1
    )
    print(f"sweep ({args.points} points, full vocabulary): {sweep_ms:.1f} ms  "
          f"[goal < {GOAL_MS:.0f} ms: {'met' if sweep_ms < GOAL_MS else 'NOT met'}]")
    print(f"baseline loop (per-temperature processor + sort): {base_ms:.1f} ms")
    print(f"ratio baseline / sweep: {base_ms / sweep_ms:.1f}x  (results agree: {agree})")
    print(f"one full distribution (T 0.7, top-k 50, top-p 0.9, all stages): {dist_ms:.1f} ms")


if __name__ == "__main__":
    main()
