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


# ---------------------------------------------------------------- fingerprints: keys made from results


def test_a_fingerprint_is_the_content_not_the_object():
    from dataclasses import dataclass

    from lmviz.forward.cache import fingerprint

    @dataclass
    class Result:
        values: torch.Tensor
        labels: list
        note: str | None = None

    def make(values, labels=("a", "b"), note=None):
        return Result(torch.tensor(values, dtype=torch.float32), list(labels), note)

    first = fingerprint((make([1.0, 2.0]), {"top": 3}))
    assert fingerprint((make([1.0, 2.0]), {"top": 3})) == first  # built apart, equal content: equal
    changed = [
        (make([1.0, float(torch.nextafter(torch.tensor(2.0), torch.tensor(3.0)))]), {"top": 3}),  # one ulp
        (make([1.0, 2.0]), {"top": 4}),
        (make([1.0, 2.0], ("a", "c")), {"top": 3}),
        (make([1.0, 2.0], note=""), {"top": 3}),  # "" is not None
        (Result(torch.tensor([1.0, 2.0], dtype=torch.float64), ["a", "b"]), {"top": 3}),  # dtype
        (make([1.0, 2.0]), {"top": 3.0}),  # 3.0 is not 3
        (make([1.0, 2.0]), {"top": "3"}),
        (make([1.0, 2.0]), ({"top": 3},)),
    ]
    assert len({fingerprint(value) for value in changed} | {first}) == len(changed) + 1
    assert fingerprint(torch.zeros(2, 3)) != fingerprint(torch.zeros(3, 2))  # the same bytes, another shape
    assert fingerprint(["a", "b"]) != fingerprint(("a", "b")) != fingerprint(["a,b"])
    assert fingerprint(torch.arange(6)[::2]) == fingerprint(torch.tensor([0, 2, 4]))  # a strided view: its values


@pytest.mark.parametrize("value", [torch.nn.Linear(2, 2), lambda: 1, object(), [1, {"model": torch.nn.ReLU()}]])
def test_what_has_no_fingerprint_says_so(value):
    from lmviz.forward.cache import fingerprint

    with pytest.raises(TypeError):
        fingerprint(value)
