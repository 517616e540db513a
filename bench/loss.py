"""Sliding-window perplexity of a ~8k-token text: lmviz.analyses.loss against the Hugging Face documentation's recipe.

Both run in this process on the embedded model with the same window and
stride (max_length 1024, stride 512), in the order recipe, lmviz, lmviz,
recipe so that a machine getting busier or quieter favours neither; each
side reports its faster run. The recipe ("Perplexity of fixed-length
models") runs `model(window, labels=...)` per window with the context
labels set to -100 and weights each window's loss by (its labels - 1).
lmviz scores the same windows, but batches equal windows, computes logits
only for the scored positions and also returns each token's rank and the
model's top guess. Goal (issue 6): at least as fast, with the same
per-token losses. Tokens are counted directly by lmviz; the recipe's
"subtract one per window" undercounts, which is printed too.
"""

import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from lmviz.analyses import loss
from lmviz.model import models  # noqa: E402
from lmviz.forward.cache import CACHE  # noqa: E402

MAX_LENGTH, STRIDE, TOKENS = 1024, 512, 8192


def bench_text(lm) -> str:
    """The bundled public-domain passage, repeated, cut at about TOKENS tokens."""
    passage = loss.sample_texts()["long"]
    text = passage
    while len(lm.tokenizer(text)["input_ids"]) <= TOKENS:
        text += "\n\n" + passage
    offsets = lm.tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
    return text[: offsets[TOKENS][0]]


def hf_recipe(lm, text: str) -> dict:
    """The documentation's loop, as published (apart from reading the per-window figures out)."""
    encodings = lm.tokenizer(text, return_tensors="pt")
    seq_len = encodings.input_ids.size(1)
    nll_sum, n_tokens, prev_end_loc = 0.0, 0, 0
    weighted_by_true_count, true_count = 0.0, 0
    for begin_loc in range(0, seq_len, STRIDE):
        end_loc = min(begin_loc + MAX_LENGTH, seq_len)
        trg_len = end_loc - prev_end_loc  # may be different from stride on last loop
        input_ids = encodings.input_ids[:, begin_loc:end_loc]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            outputs = lm.model(input_ids, labels=target_ids)
            neg_log_likelihood = outputs.loss
        num_valid_tokens = (target_ids != -100).sum().item()
        batch_size = target_ids.size(0)
        num_loss_tokens = num_valid_tokens - batch_size
        nll_sum += neg_log_likelihood * num_loss_tokens
        n_tokens += num_loss_tokens
        scored = int((target_ids[:, 1:] != -100).sum())  # what the shifted loss really averaged over
        weighted_by_true_count += float(neg_log_likelihood) * scored
        true_count += scored
        prev_end_loc = end_loc
        if end_loc == seq_len:
            break
    avg_nll = nll_sum / n_tokens
    return {"tokens": seq_len, "counted": n_tokens, "mean_nll": float(avg_nll), "ppl": float(torch.exp(avg_nll)),
            "true_count": true_count, "true_mean_nll": weighted_by_true_count / true_count}


def lmviz_loss(lm, text: str) -> loss.LossReport:
    CACHE.forget("loss")  # measure the computation, not the cache
    return loss.loss_report(lm, text, max_length=MAX_LENGTH, stride=STRIDE, cross_check=False)


def timed(function, *args):
    started = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - started, result


def main() -> None:
    lm = models.load(models.DEFAULT_MODEL)
    text = bench_text(lm)
    n = len(lm.tokenizer(text)["input_ids"])
    lmviz_loss(lm, text[:2000])  # warm up both code paths once
    hf_recipe(lm, text[:2000])
    t_hf1, recipe = timed(hf_recipe, lm, text)
    t_lm1, report = timed(lmviz_loss, lm, text)
    t_lm2, _ = timed(lmviz_loss, lm, text)
    t_hf2, _ = timed(hf_recipe, lm, text)
    t_hf, t_lm = min(t_hf1, t_hf2), min(t_lm1, t_lm2)
    print(f"text: {n:,} tokens ({len(text):,} characters), {lm.name}, torch threads {torch.get_num_threads()}, "
          f"max_length {MAX_LENGTH}, stride {STRIDE}, {report.n_windows} windows")
    print(f"HF docs recipe   {t_hf:7.2f} s  {n / t_hf:8.1f} tokens/s   (runs {t_hf1:.2f} s, {t_hf2:.2f} s)")
    print(f"lmviz.analyses.loss       {t_lm:7.2f} s  {n / t_lm:8.1f} tokens/s   (runs {t_lm1:.2f} s, {t_lm2:.2f} s)")
    print(f"speed-up         {t_hf / t_lm:.2f}x  (lmviz / recipe, tokens per second; goal >= 1.00: "
          f"{'met' if t_hf / t_lm >= 1 else 'NOT met'})")
    print(f"tokens scored    lmviz {report.scored:,} (= tokens - 1); recipe counts {recipe['counted']:,} "
          f"(one less per window after the first) but averages over {recipe['true_count']:,}")
    print(f"mean NLL         lmviz {report.mean_nll:.6f}   recipe as published {recipe['mean_nll']:.6f}   "
          f"recipe with direct counts {recipe['true_mean_nll']:.6f}")
    print(f"perplexity       lmviz {report.perplexity:.4f}   recipe as published {recipe['ppl']:.4f}   "
          f"|difference with direct counts| {abs(report.mean_nll - recipe['true_mean_nll']):.1e} nats")
    assert report.scored == recipe["true_count"] == n - 1
    assert math.isclose(report.mean_nll, recipe["true_mean_nll"], abs_tol=1e-4)


if __name__ == "__main__":
    main()
