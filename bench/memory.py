"""Resident memory over many different long texts, with the cache budget at 256 MB (LMVIZ_TRACE_CACHE_MB).

Each of N texts (~900 tokens of the bundled sample, each a different slice) goes through a trace, the
loss report, the next-token distribution and, every fourth text, the full logit lens: what a busy server
does. Baseline, measured in the same run: resident memory after the model is loaded and the first two
texts are done. Goal: memory stops growing (growth after the warm-up well under the budget), and the
cache never holds more than its budget. Before one cache (v1), the same run grew by 2,848 MB.
"""

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("LMVIZ_TRACE_CACHE_MB", "256")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lmviz.analyses import lens, loss, sampling
from lmviz.forward import trace
from lmviz.model import models  # noqa: E402
from lmviz.forward.cache import CACHE  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


def main(n_texts: int = 12) -> None:
    lm = models.load("smollm2-135m")
    loaded = rss_mb()
    words = loss.sample_texts()["long"].split()
    texts = [" ".join(words[40 * i: 40 * i + 700]) for i in range(n_texts)]
    peak_cache = 0
    for i, text in enumerate(texts):
        started = time.perf_counter()
        t = trace.trace(lm, text, truncate=True)
        loss.loss_report(lm, text, cross_check=False)
        sampling.next_token(lm, text)
        if i % 4 == 0:
            lens.logit_lens(lm, t, k=10)
        n_tokens = t.n_tokens
        del t
        peak_cache = max(peak_cache, CACHE.bytes)
        if i == 1:
            baseline = rss_mb()
        print(f"text {i:2d}: {n_tokens} tokens, {time.perf_counter() - started:5.1f} s, "
              f"resident {rss_mb():6.0f} MB, cache {CACHE.bytes / 2**20:4.0f} MB in {len(CACHE)} entries")
    budget = CACHE.max_bytes / 2**20
    growth = rss_mb() - baseline
    print(f"model loaded: {loaded:.0f} MB resident; after two texts (baseline): {baseline:.0f} MB")
    print(f"growth over {n_texts - 2} more texts: {growth:+.0f} MB = {growth / budget:+.2f} x the {budget:.0f} MB budget"
          f"; cache peak {peak_cache / 2**20:.0f} MB")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 12)
