"""The trace: one forward pass with hidden states, cached and shared across threads."""

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from transformers import AutoModelForCausalLM

from lmviz import trace as tracing
from lmviz.errors import LmvizError


def test_trace_matches_transformers(tiny_dirs, tiny_llama):
    t = tracing.run_trace(tiny_llama, "The capital of France is")
    reference = AutoModelForCausalLM.from_pretrained(tiny_dirs["llama"])
    with torch.no_grad():
        out = reference(t.input_ids[None], output_hidden_states=True)
    assert t.hidden.shape == (4, t.n_tokens, 32)
    assert torch.allclose(t.hidden, torch.stack(out.hidden_states)[:, 0], atol=1e-6)
    assert torch.allclose(t.logits, out.logits[0], atol=1e-6)


def test_embedded_trace(smollm):
    t = tracing.trace(smollm, "This weekend I plan to")
    assert t.input_ids.tolist() == [1348, 16138, 339, 1252, 288]
    assert t.tokens == ("This", "·weekend", "·I", "·plan", "·to")
    assert t.hidden.shape == (31, 5, 576) and t.logits.shape == (5, 49152)
    assert smollm.tokenizer.decode(t.logits[-1].argmax()) == " visit"


def test_second_request_hits_the_cache(tiny_gpt2, monkeypatch):
    first = tracing.trace(tiny_gpt2, "cache me please")
    monkeypatch.setattr(tracing, "run_trace", lambda *a, **k: pytest.fail("recomputed"))
    assert tracing.trace(tiny_gpt2, "cache me please") is first


def test_cache_is_bounded_in_bytes(tiny_gpt2):
    cache = tracing.TraceCache(max_bytes=1)
    cache.get(tiny_gpt2, "one text")
    cache.get(tiny_gpt2, "another text")
    assert len(cache) == 1


def test_concurrent_traces_equal_single_threaded(tiny_gpt2):
    texts = [f"Paris is number {i} in the list" for i in range(12)]
    expected = [tracing.run_trace(tiny_gpt2, text).logits for text in texts]
    cache = tracing.TraceCache(max_bytes=2**30)
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda text: cache.get(tiny_gpt2, text).logits, texts * 3))
    for i, logits in enumerate(got):
        assert torch.equal(logits, expected[i % len(texts)])
    assert cache.misses == len(texts)


def test_empty_and_too_long_text(tiny_gpt2):
    with pytest.raises(LmvizError, match="empty"):
        tracing.run_trace(tiny_gpt2, "   ")
    long_text = "Paris " * 400  # the tiny GPT-2 takes 128 tokens
    with pytest.raises(LmvizError, match="at most 128"):
        tracing.run_trace(tiny_gpt2, long_text)
    cut = tracing.run_trace(tiny_gpt2, long_text, truncate=True)
    assert cut.n_tokens == 128 and cut.truncated_from > 128


def test_batch_matches_the_tokenizers_own_padding(tiny_gpt2):
    """Seed 004: left padding, pad = eos when the tokenizer has none."""
    batch = tracing.encode_batch(tiny_gpt2, ["Hi", "This weekend I plan to"])
    tokenizer = type(tiny_gpt2.tokenizer).from_pretrained(tiny_gpt2.name)  # a private copy to mutate
    tokenizer.pad_token, tokenizer.padding_side = tokenizer.eos_token, "left"
    reference = tokenizer(["Hi", "This weekend I plan to"], padding=True)
    assert batch.input_ids == reference["input_ids"]
    assert batch.attention_mask == reference["attention_mask"]
    assert batch.pad_is_eos and tiny_gpt2.tokenizer.pad_token is None
