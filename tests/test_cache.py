"""lmviz.forward.cache: single-flight, bounded in bytes, keyed by content; and the memory it really holds."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from lmviz.analyses import lens, loss, sampling
from lmviz.forward import trace as tracing
from lmviz.forward.cache import CACHE, Cache, nbytes


def test_one_computation_per_key_and_stored_before_waiters_wake():
    cache = Cache(max_bytes=2**20)
    started, calls = threading.Event(), []

    def compute():
        calls.append(1)
        started.set()
        time.sleep(0.05)  # hold the key while others arrive (not a timing assertion)
        return torch.zeros(10)

    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(cache.get, "key", compute)
        started.wait()
        others = [pool.submit(cache.get, "key", compute) for _ in range(7)]
        results = [first.result()] + [f.result() for f in others]
    assert len(calls) == 1 and all(r is results[0] for r in results)
    assert "key" in cache and cache.misses == 1 and cache.hits == 7


def test_a_failed_computation_is_not_cached_and_waiters_retry():
    cache = Cache(max_bytes=2**20)
    attempts = []

    def fails():
        attempts.append(1)
        raise ValueError("no")

    for _ in range(2):
        with pytest.raises(ValueError):
            cache.get("key", fails)
    assert len(attempts) == 2 and "key" not in cache


def test_bounded_in_bytes_least_recently_used_out():
    cache = Cache(max_bytes=3 * 4000)
    for key in "abc":
        cache.get(key, lambda: torch.zeros(1000))  # 4,000 bytes each
    cache.get("a", lambda: pytest.fail("recomputed"))  # a is now the most recent
    cache.get("d", lambda: torch.zeros(1000))
    assert "b" not in cache and {"a", "c", "d"} <= {k for k in "abcd" if k in cache}
    assert cache.bytes <= cache.max_bytes
    cache.get("huge", lambda: torch.zeros(10**5))  # larger than the whole budget: returned, not kept
    assert "huge" not in cache and cache.bytes <= cache.max_bytes


def test_sizes_count_tensors_inside_results(tiny_gpt2):
    t = tracing.run_trace(tiny_gpt2, "a few tokens of text")
    assert nbytes(t) >= t.nbytes()
    assert nbytes(tiny_gpt2.model) == 0  # models are not the cache's to count


def test_results_hold_no_trace(tiny_gpt2):
    t = tracing.trace(tiny_gpt2, "The capital of France is")
    result = lens.logit_lens(tiny_gpt2, t, k=3)
    for value in vars(result).values():
        assert value is not t and not isinstance(value, tracing.Trace)


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


def test_many_long_texts_stay_within_the_budget(smollm, monkeypatch):
    """Different ~600-token texts through trace, loss, sampling and the lens, with a 64 MB budget (each trace
    is 43 MB): the cache never holds more than its budget, and resident memory stops growing after the first
    texts. The allowance is the budget plus 128 MB for what the allocator keeps of freed activations."""
    budget = 64 * 2**20
    monkeypatch.setattr(CACHE, "max_bytes", budget)
    words = loss.sample_texts()["long"].split()
    texts = [" ".join(words[40 * i: 40 * i + 450]) for i in range(8)]
    after_warm_up = None
    for i, text in enumerate(texts):
        t = tracing.trace(smollm, text)
        loss.loss_report(smollm, text, cross_check=False)
        sampling.next_token(smollm, text)
        if i in (0, 4):
            lens.logit_lens(smollm, t, k=10)
        del t
        assert CACHE.bytes <= budget
        if i == 1:
            after_warm_up = rss_mb()
    growth = rss_mb() - after_warm_up
    print(f"resident memory growth over {len(texts) - 2} more texts: {growth:.0f} MB (budget 64 MB)")
    assert growth <= 64 + 128
