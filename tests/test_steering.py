"""Steering against transformers' own generate() with the vector added by a hook written here.

The reference reads block l's input at the last token of each prompt with a plain forward pre-hook, takes
the float64 difference, and adds scale × it (in the model's dtype) to the block's input in a second hook
while `lm.model.generate(do_sample=False)` runs: every prompt position on the first pass, the new token
on each cached step. The greedy ids must be identical.
"""

from __future__ import annotations

import json

import pytest
import torch

from lmviz import cli
from lmviz.analyses import steering
from lmviz.errors import LmvizError
from lmviz.forward.cache import CACHE

TEXT = "I think that you are"
FROM, TO = " hate", " love"
GREEDY = dict(do_sample=False, num_beams=1, repetition_penalty=1.0, no_repeat_ngram_size=0, top_k=None, top_p=None,
              temperature=None)


def block(lm, layer: int):
    model = lm.model
    return (model.transformer.h if hasattr(model, "transformer") else model.model.layers)[layer]


def vector_by_hand(lm, layer: int) -> torch.Tensor:
    """Block `layer`'s input at the last token of TO minus FROM, float64, read with a plain hook."""
    seen = []
    handle = block(lm, layer).register_forward_pre_hook(lambda module, args: seen.append(args[0][0, -1]))
    try:
        with torch.no_grad():
            for prompt in (TO, FROM):
                lm.model(input_ids=torch.tensor([lm.tokenizer(prompt)["input_ids"]]))
    finally:
        handle.remove()
    return seen[0].double() - seen[1].double()


def generate_steered(lm, layer: int, value: torch.Tensor | None, max_new_tokens: int) -> list[int]:
    """generate()'s greedy continuation of TEXT with `value` added to block `layer`'s input at every position."""
    ids = torch.tensor([lm.tokenizer(TEXT)["input_ids"]])
    handle = None if value is None else block(lm, layer).register_forward_pre_hook(
        lambda module, args: (args[0] + value.to(args[0].dtype), *args[1:]))
    try:
        with torch.no_grad():
            out = lm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, **GREEDY)
    finally:
        if handle is not None:
            handle.remove()
    return out[0, ids.shape[1]:].tolist()


@pytest.mark.parametrize(("model", "layer", "scales", "n"), [
    ("tiny_llama", 1, (4.0, -3.0, 0.0, 12.0), 12),
    ("tiny_gpt2", 1, (2.0, -6.0, 20.0), 12),
    ("tiny_gemma3", 1, (3.0, -3.0), 10),
    ("smollm", steering.DEFAULT_LAYER, (steering.DEFAULT_SCALE, -1.0), 10),
    ("gemma", 9, (-2.0,), 8),
])
def test_steering_is_generate_with_the_vector_hooked_by_hand(model, layer, scales, n, request):
    lm = request.getfixturevalue(model)
    result = steering.steer(lm, TEXT, layer, FROM, TO, scales, max_new_tokens=n)
    v = vector_by_hand(lm, layer)
    assert result.vector_norm == pytest.approx(float(v.norm()), rel=1e-12)
    assert list(result.unsteered.token_ids) == generate_steered(lm, layer, None, n)
    assert [c.scale for c in result.sweep] == list(scales)
    for continuation in result.sweep:
        expected = generate_steered(lm, layer, continuation.scale * v, n)
        assert list(continuation.token_ids) == expected, continuation.scale
        assert continuation.added_norm == pytest.approx(abs(continuation.scale) * result.vector_norm)
        assert len(continuation.tokens) == len(continuation.token_ids)
    assert any(c.token_ids != result.unsteered.token_ids for c in result.sweep)  # the vector did something
    assert all(c.token_ids == result.unsteered.token_ids for c in result.sweep if c.scale == 0)


def test_a_continuation_stops_at_end_of_sequence(tiny_llama):
    steered = steering.steer(tiny_llama, TEXT, 1, FROM, TO, (4.0,), max_new_tokens=8).sweep[0].token_ids
    eos = steered[2]
    config = tiny_llama.model.generation_config
    saved = config.eos_token_id
    config.eos_token_id = eos
    try:
        CACHE.clear()  # the cache keys on the text, not on the end-of-sequence ids
        ended = steering.steer(tiny_llama, TEXT, 1, FROM, TO, (4.0,), max_new_tokens=8).sweep[0].token_ids
        expected = generate_steered(tiny_llama, 1, 4.0 * vector_by_hand(tiny_llama, 1), 8)
    finally:
        config.eos_token_id = saved
    assert list(ended) == list(steered[:steered.index(eos) + 1]) == expected


def test_the_default_layer_and_scale_steer_smollm_towards_love(smollm):
    result = steering.steer(smollm, TEXT, steering.DEFAULT_LAYER, FROM, TO, (steering.DEFAULT_SCALE,),
                            max_new_tokens=20)
    assert "love" not in result.unsteered.text
    assert result.sweep[0].text.count("love") >= 3


def test_refusals_are_one_line(tiny_llama, tiny_bert):
    cases = [
        (tiny_bert, dict(), "causal"),
        (tiny_llama, dict(layer=-1), r"outside .*layers \(0\.\.2\)"),
        (tiny_llama, dict(layer=3), r"outside .*layers \(0\.\.2\)"),
        (tiny_llama, dict(from_text=" "), "empty"),
        (tiny_llama, dict(to_text=""), "empty"),
        (tiny_llama, dict(max_new_tokens=0), f"between 1 and {steering.MAX_NEW_TOKENS}"),
        (tiny_llama, dict(max_new_tokens=steering.MAX_NEW_TOKENS + 1), f"between 1 and {steering.MAX_NEW_TOKENS}"),
        (tiny_llama, dict(scales=()), f"1 to {steering.MAX_SCALES} finite scales"),
        (tiny_llama, dict(scales=range(steering.MAX_SCALES + 1)), f"1 to {steering.MAX_SCALES} finite scales"),
        (tiny_llama, dict(scales=(1.0, float("nan"))), "finite"),
    ]
    for lm, change, message in cases:
        arguments = dict(text=TEXT, layer=1, from_text=FROM, to_text=TO, scales=(1.0,), max_new_tokens=4) | change
        with pytest.raises(LmvizError, match=message) as error:
            steering.steer(lm, **arguments)
        assert "\n" not in str(error.value)


def test_cli_json_and_table(tiny_dirs, tiny_llama, capsys):
    common = ["steer", TEXT, "--model", tiny_dirs["llama"], "--layer", "1", "--from", FROM, "--to", TO,
              "--max-new-tokens", "6"]
    assert cli.main([*common, "--scale", "4", "--json"]) == 0
    one = json.loads(capsys.readouterr().out)
    expected = steering.steer(tiny_llama, TEXT, 1, FROM, TO, (4.0, -2.0), max_new_tokens=6)
    assert one["new_ids"] == list(expected.sweep[0].token_ids)
    assert one["unsteered_ids"] == list(expected.unsteered.token_ids)
    assert one["vector_norm"] == pytest.approx(expected.vector_norm)
    assert "".join(one["sweep"][0]["tokens"]) == one["sweep"][0]["text"]
    assert cli.main([*common, "--scale", "4", "--scale=-2", "--json"]) == 0
    two = json.loads(capsys.readouterr().out)
    assert two["new_ids"] == [list(c.token_ids) for c in expected.sweep]
    assert [row["scale"] for row in two["sweep"]] == [4.0, -2.0]
    assert cli.main([*common, "--scale", "4", "--scale=-2"]) == 0
    table = capsys.readouterr().out
    assert "unsteered: " in table and "scale 4 " in table and "scale -2 " in table
    assert cli.main([*common, "--max-new-tokens", "0"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
