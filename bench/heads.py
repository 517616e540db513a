"""Benchmark: the embedding-neighbour table and the fitted classification head.

Run from the repo root: `.venv/bin/python bench/heads.py [--tokens 2048] [--repeat 2]`.

On the embedded model it measures, in one run:
- the seed's cell, `lm_head(embed(ids)).topk(10)` on the whole text at once
  (a (pos, vocab) matrix) plus `tokenizer.decode` of every neighbour
  (the baseline), against `embeddings.neighbours` (CHUNK_BYTES of scores at a
  time, reduced to top-k at once, each distinct token decoded once);
- cosine neighbours: normalizing both whole matrices per call (baseline)
  against `embeddings.neighbours(metric="cosine")`;
- fitting a head on six labelled sentences (features from cold traces, then
  from cached ones), the page's "fitted in a second".
Timings are the best of --repeat runs (the machine may be shared). Peak extra
memory is the resident-set growth during one call, sampled every ms.
"""

from __future__ import annotations

import argparse
import gc
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from lmviz.analyses import classification, embeddings
from lmviz.forward import trace
from lmviz.model import compute, models  # noqa: E402
from lmviz.forward.cache import CACHE  # noqa: E402

PARAGRAPH = (
    "This weekend I plan to visit Paris with my friends. The capital of France is Paris, and the capital "
    "of England is London. A language model predicts the next token from the tokens before it. "
)
EXAMPLES = [
    ("positive", "What a lovely day, I enjoyed every minute."),
    ("positive", "The food was delicious and the staff were friendly."),
    ("positive", "I loved this film, it was wonderful."),
    ("negative", "This was a terrible waste of time."),
    ("negative", "The service was awful and the room was dirty."),
    ("negative", "I hated the ending, it was boring."),
]


def measure(function, repeat: int):
    """(best seconds, peak extra RSS in MB of the first call, result)."""
    process = psutil.Process()
    best, peak_mb, result = float("inf"), 0.0, None
    for attempt in range(repeat):
        gc.collect()
        base = process.memory_info().rss
        peak = [base]
        done = threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], process.memory_info().rss)
                time.sleep(0.001)

        sampler = threading.Thread(target=sample)
        sampler.start()
        started = time.perf_counter()
        result = function()
        elapsed = time.perf_counter() - started
        done.set()
        sampler.join()
        best = min(best, elapsed)
        if attempt == 0:
            peak_mb = (peak[0] - base) / 2**20
    return best, peak_mb, result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    compute.configure_threads()
    lm = models.load(models.DEFAULT_MODEL)
    model, tokenizer = lm.model, lm.tokenizer
    ids = tokenizer(PARAGRAPH * (args.tokens // 30 + 2))["input_ids"][: args.tokens]
    text = tokenizer.decode(ids)
    ids = trace.encode(lm, text)
    print(f"model {lm.name}, {len(ids)} tokens, vocab {lm.vocab_size}, k 10, threads {torch.get_num_threads()}")

    def seed_cell():
        with torch.no_grad():
            logits = model.lm_head(model.model.embed_tokens(torch.tensor([ids])))  # (1, pos, vocab)
            top = logits.topk(k=10).indices[0]
        return top, [[tokenizer.decode(x) for x in row] for row in top]

    base_time, base_mem, base = measure(seed_cell, args.repeat)
    ours_time, ours_mem, ours = measure(lambda: embeddings.neighbours(lm, text, k=10), args.repeat)
    same = torch.equal(ours.top_ids, base[0])
    chunk = max(1, embeddings.CHUNK_BYTES // (4 * lm.vocab_size))
    print(f"largest score matrix: seed cell ({len(ids)}, {lm.vocab_size}) = {len(ids) * lm.vocab_size * 4 / 2**20:.0f} MB"
          f" | lmviz ({min(chunk, len(ids))}, {lm.vocab_size}) = {min(chunk, len(ids)) * lm.vocab_size * 4 / 2**20:.0f} MB")
    print(f"dot neighbours   seed cell {base_time:.3f} s, +{base_mem:.0f} MB | lmviz {ours_time:.3f} s, "
          f"+{ours_mem:.0f} MB | time ratio {ours_time / base_time:.2f}x, memory ratio "
          f"{ours_mem / max(base_mem, 1):.2f}x | same top ids: {same}")

    def naive_cosine():
        with torch.no_grad():
            e = F.normalize(model.model.embed_tokens(torch.tensor(ids)), dim=-1)
            w = F.normalize(model.lm_head.weight, dim=-1)
            return (e @ w.T).topk(10).indices

    base_time, base_mem, base = measure(naive_cosine, args.repeat)
    ours_time, ours_mem, ours = measure(lambda: embeddings.neighbours(lm, text, k=10, metric="cosine"), args.repeat)
    agree = float((ours.top_ids == base).float().mean())
    print(f"cosine neighbours naive {base_time:.3f} s, +{base_mem:.0f} MB | lmviz {ours_time:.3f} s, "
          f"+{ours_mem:.0f} MB | time ratio {ours_time / base_time:.2f}x | same ids: {agree:.4f}")

    CACHE.clear()
    cold, _, head = measure(lambda: classification.fit_head(lm, EXAMPLES), 1)
    CACHE.forget("fitted head")  # keep the traces
    warm, _, _ = measure(lambda: classification.fit_head(lm, EXAMPLES), args.repeat)
    print(f"fit head (6 sentences) cold traces {cold:.3f} s | cached traces {warm:.3f} s | "
          f"train accuracy {head.train_accuracy:.2f}")


if __name__ == "__main__":
    main()
