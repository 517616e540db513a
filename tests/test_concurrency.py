"""Many sessions at once: the shared model and trace caches give the same answers as one thread."""

from concurrent.futures import ThreadPoolExecutor

import torch

from lmviz.model import models
from lmviz.forward import trace as tracing
from lmviz.forward.cache import CACHE, Cache

TEXTS = [
    "The capital of France is", "This weekend I plan to", "Once upon a time", "héllo wörld 東京 😀",
    "A language model predicts", "Perplexity is the exponential", "\n\tTabs and newlines", "Paris, London",
]


def test_concurrent_loads_load_once(tiny_dirs, monkeypatch):
    calls = []
    real = models._load_uncached
    monkeypatch.setattr(models, "_load_uncached", lambda name, where, progress: calls.append(name) or real(name, where, progress))
    name = tiny_dirs["llama"] + "/"  # a fresh cache key for the same folder
    with ThreadPoolExecutor(8) as pool:
        loaded = list(pool.map(lambda _: models.load(name), range(16)))
    assert len(calls) == 1 and all(lm is loaded[0] for lm in loaded)


def test_model_cache_is_bounded(tiny_dirs, monkeypatch):
    monkeypatch.setenv("LMVIZ_MAX_MODELS", "1")
    models.load(tiny_dirs["gpt2"])
    models.load(tiny_dirs["bert"])
    assert models.loaded_names() == [tiny_dirs["bert"]]


def test_embedded_traces_from_many_threads(smollm):
    """The real tokenizer and model shared by 8 threads: no 'Already borrowed', identical numbers."""
    expected = {text: tracing.run_trace(smollm, text) for text in TEXTS}
    cache = Cache(max_bytes=2**30)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda text: (text, cache.get(text, lambda: tracing.run_trace(smollm, text))),
                                TEXTS * 4))
    for text, got in results:
        assert got.input_ids.tolist() == expected[text].input_ids.tolist()
        assert got.tokens == expected[text].tokens
        # no lock around forward passes: concurrent passes run the same kernels on the same input
        assert torch.equal(got.hidden, expected[text].hidden)
        assert torch.equal(got.last_logits, expected[text].last_logits)
    assert cache.misses == len(TEXTS)


def test_encode_and_batch_from_many_threads(smollm):
    single = [tracing.encode(smollm, text) for text in TEXTS]
    with ThreadPoolExecutor(8) as pool:
        many = list(pool.map(lambda text: tracing.encode(smollm, text), TEXTS * 8))
        batches = list(pool.map(lambda text: tracing.encode_batch(smollm, ["Hi", text]).input_ids, TEXTS * 4))
    assert many == single * 8
    for text, batch in zip(TEXTS * 4, batches):
        assert batch[1][-len(tracing.encode(smollm, text)):] == tracing.encode(smollm, text)


def test_generations_from_many_threads(smollm):
    """Seeded sampling and beam search run from 8 threads give the single-threaded results."""
    from lmviz.analyses import beam, sampling

    settings = sampling.SamplingSettings(temperature=0.8, top_p=0.9)
    prompts = TEXTS[:4]

    def sampled(prompt):
        return sampling.generate(smollm, prompt, settings, steps=6, seed=7).token_ids

    def searched(prompt):
        return [h.token_ids for h in beam.beam_search(smollm, prompt, num_beams=3, max_new_tokens=5).final]

    CACHE.forget("generation")
    CACHE.forget("beam")
    expected = {prompt: (sampled(prompt), searched(prompt)) for prompt in prompts}
    CACHE.forget("generation")
    CACHE.forget("beam")
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda prompt: (prompt, sampled(prompt), searched(prompt)), prompts * 3))
    for prompt, sample_ids, beam_ids in got:
        assert (sample_ids, beam_ids) == expected[prompt], prompt
