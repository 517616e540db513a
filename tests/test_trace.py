"""The trace: one forward pass with hidden states, cached and shared across threads."""

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from transformers import AutoModelForCausalLM

from lmviz.forward import trace as tracing
from lmviz.forward.cache import Cache
from lmviz.errors import LmvizError


def test_trace_matches_transformers(tiny_dirs, tiny_llama):
    t = tracing.run_trace(tiny_llama, "The capital of France is")
    reference = AutoModelForCausalLM.from_pretrained(tiny_dirs["llama"])
    with torch.no_grad():
        out = reference(t.input_ids[None], output_hidden_states=True)
    assert t.hidden.shape == (4, t.n_tokens, 32)
    assert torch.equal(t.hidden, torch.stack(out.hidden_states)[:, 0])  # the same kernels on the same input
    # the model's own head on one row (logits_to_keep=1) or recomputed from the last hidden state: the same
    # products as the full pass, rounded in another order at most
    bound = tiny_llama.head.error_bound(t.hidden[-1])
    assert ((t.last_logits - out.logits[0, -1]).abs() <= bound[-1]).all()
    assert ((tracing.logits(tiny_llama, t) - out.logits[0]).abs() <= bound).all()


def test_embedded_trace(smollm):
    t = tracing.trace(smollm, "This weekend I plan to")
    assert t.input_ids.tolist() == [1348, 16138, 339, 1252, 288]
    assert t.tokens == ("This", "·weekend", "·I", "·plan", "·to")
    assert t.hidden.shape == (31, 5, 576) and t.last_logits.shape == (49152,)
    assert smollm.tokenizer.decode(t.last_logits.argmax()) == " visit"
    assert tracing.logits(smollm, t).shape == (5, 49152)


def test_second_request_hits_the_cache(tiny_gpt2, monkeypatch):
    first = tracing.trace(tiny_gpt2, "cache me please")
    monkeypatch.setattr(tracing, "run_trace", lambda *a, **k: pytest.fail("recomputed"))
    assert tracing.trace(tiny_gpt2, "cache me please") is first


def test_trace_holds_no_full_logits(tiny_gpt2):
    t = tracing.run_trace(tiny_gpt2, "one text with a few tokens")
    vocab = tiny_gpt2.vocab_size
    assert t.own_logits is None and t.head_input is None  # verified head: logits are recomputed when asked
    assert t.nbytes() < t.hidden.nbytes + 4 * vocab + 8 * t.n_tokens + 1


def test_concurrent_traces_equal_single_threaded(tiny_gpt2):
    texts = [f"Paris is number {i} in the list" for i in range(12)]
    expected = [tracing.run_trace(tiny_gpt2, text).hidden for text in texts]
    cache = Cache(max_bytes=2**30)
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda text: cache.get(text, lambda: tracing.run_trace(tiny_gpt2, text)).hidden,
                            texts * 3))
    for i, hidden in enumerate(got):
        assert torch.equal(hidden, expected[i % len(texts)])
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


def test_the_whole_context_where_its_hidden_states_fit(tiny_gpt2, tiny_llama_f64, monkeypatch):
    """Without $LMVIZ_MAX_TOKENS a trace takes the model's whole context, unless one trace's hidden states
    would not fit the cache budget; then as many tokens as fit, and the message says why."""
    monkeypatch.delenv("LMVIZ_MAX_TOKENS", raising=False)
    assert tracing.max_tokens(tiny_gpt2) == tiny_gpt2.context_length == 128
    assert tracing.limit_reason(tiny_gpt2) == "the model's context"
    per_token = (tiny_gpt2.n_layers + 1) * tiny_gpt2.d_model * 4  # float32
    monkeypatch.setenv("LMVIZ_TRACE_CACHE_MB", str((20.5 * per_token) / 2**20))
    assert tracing.max_tokens(tiny_gpt2) == 20 and "cache budget" in tracing.limit_reason(tiny_gpt2)
    cut = tracing.run_trace(tiny_gpt2, "Paris " * 60, truncate=True)
    assert cut.n_tokens == 20 and cut.hidden.nbytes == 20 * per_token
    # a float64 model keeps float64 hidden states: 8 bytes a number
    per_token_f64 = (tiny_llama_f64.n_layers + 1) * tiny_llama_f64.d_model * 8
    assert tracing.max_tokens(tiny_llama_f64) == int(20.5 * per_token) // per_token_f64
    assert tracing.run_trace(tiny_llama_f64, "Paris is").hidden.dtype == torch.float64
    monkeypatch.setenv("LMVIZ_MAX_TOKENS", "7")
    assert tracing.max_tokens(tiny_gpt2) == 7 and tracing.limit_reason(tiny_gpt2) == "$LMVIZ_MAX_TOKENS=7"
