"""Activation patching, AtP and path patching against forwards patched by hand.

The references know nothing of lmviz's seam or discovery: plain torch hooks on the modules written down
in tests/test_interventions.PARTS read the clean run's tensors and patch them into a single (unbatched)
corrupted run. lmviz batches many experiments into one pass, so the two differ by rounding only: the
comparisons run in float64, where that rounding (~1e-15 relative, a few hundred operations deep) is far
below the 1e-9 allowed, and a wrong cell, row or position is off by orders of magnitude more.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmviz.analyses import patching
from lmviz.errors import LmvizError
from tests.conftest import float64_model
from tests.test_interventions import OTHER, PARTS, TEXT, HandHooks, first, part

ANSWER, WRONG = "5", "9"  # token ids: every tiny vocabulary has them
TOLERANCE = 1e-9
IOI_CLEAN = "When Mary and John went to the store, John gave a drink to"
IOI_CORRUPTED = "When Mary and John went to the store, Mary gave a drink to"


@pytest.fixture(scope="module")
def tiny_gemma3_f64(tiny_lens_dirs):
    return float64_model(tiny_lens_dirs["gemma3"])


@pytest.fixture(scope="module")
def tiny_neox_f64(tiny_lens_dirs):
    return float64_model(tiny_lens_dirs["neox"])


F64 = ["tiny_llama_f64", "tiny_gpt2_f64", "tiny_gemma3_f64", "tiny_neox_f64"]
MODULE = {"resid": None, "attn": "attn_out", "mlp": "mlp_out", "head": "z"}


def ids(lm, text):
    return torch.tensor([lm.tokenizer(text)["input_ids"]])


def block(lm, layer):
    return lm.model.get_submodule(PARTS[lm.model.config.model_type]["blocks"])[layer]


def read_clean(lm, site, layer, text=TEXT):
    """The clean run's tensor at a site, read with a plain hook: (pos, width)."""
    with HandHooks() as hooks:
        if site == "resid":
            hooks.read_input(block(lm, layer), "x")
        elif site == "head":
            hooks.read_input(part(lm, layer, "z"), "x")
        else:
            hooks.read_output(part(lm, layer, MODULE[site]), "x")
        with torch.no_grad():
            lm.model(input_ids=ids(lm, text), use_cache=False)
        return hooks.seen["x"][0].clone()


def hand_patched_metric(lm, site, layer, column, source, text=OTHER, answer=5, wrong=9):
    """logit(answer) − logit(wrong) at the last position of `text` with one cell replaced by `source`."""
    def change(x):
        if site == "head":
            width = x.shape[-1] // lm.model.config.num_attention_heads
            x[0, :, column * width:(column + 1) * width] = source[:, column * width:(column + 1) * width]
        else:
            x[0, column] = source[column]
    with HandHooks() as hooks:
        if site == "resid":
            hooks.patch_input(block(lm, layer), change)
        elif site == "head":
            hooks.patch_input(part(lm, layer, "z"), change)
        else:
            hooks.patch_output(part(lm, layer, MODULE[site]), change)
        with torch.no_grad():
            logits = lm.model(input_ids=ids(lm, text), use_cache=False).logits[0, -1].double()
    return float(logits[answer] - logits[wrong])


def plain_metric(lm, text):
    with torch.no_grad():
        logits = lm.model(input_ids=ids(lm, text), use_cache=False).logits[0, -1].double()
    return float(logits[5] - logits[9])


@pytest.mark.parametrize("name", F64)
@pytest.mark.parametrize("site", list(patching.SITES))
def test_every_cell_equals_a_forward_patched_by_hand(name, site, request):
    lm = request.getfixturevalue(name)
    result = patching.patch(lm, TEXT, OTHER, ANSWER, WRONG, site)
    clean, corrupted = plain_metric(lm, TEXT), plain_metric(lm, OTHER)
    assert result.clean.logit_diff[0] == pytest.approx(clean, abs=TOLERANCE)
    assert result.corrupted.logit_diff[0] == pytest.approx(corrupted, abs=TOLERANCE)
    expected = np.array([[hand_patched_metric(lm, site, layer, column, read_clean(lm, site, layer))
                          for column in range(result.cells.logit_diff.shape[1])]
                         for layer in range(lm.n_layers)])
    assert np.abs(result.values("logit_diff") - expected).max() <= TOLERANCE * (1 + np.abs(expected).max())
    assert np.allclose(result.values(), (expected - corrupted) / (clean - corrupted), rtol=0, atol=1e-7)


def test_noising_patches_the_corrupted_run_into_the_clean_one(tiny_llama_f64):
    lm = tiny_llama_f64
    result = patching.patch(lm, TEXT, OTHER, ANSWER, WRONG, "resid", mode="noise")
    layer, column = 1, 3
    expected = hand_patched_metric(lm, "resid", layer, column, read_clean(lm, "resid", layer, OTHER), text=TEXT)
    assert result.values("logit_diff")[layer, column] == pytest.approx(expected, abs=TOLERANCE)


@pytest.mark.parametrize("name", ["tiny_llama_f64", "tiny_gemma3_f64"])
def test_probability_and_kl_of_a_patched_run(name, request):
    lm = request.getfixturevalue(name)
    result = patching.patch(lm, TEXT, OTHER, ANSWER, WRONG, "mlp")
    trace = patching.patched_trace(lm, TEXT, OTHER, ANSWER, WRONG, "mlp", 1, 2)
    with HandHooks() as hooks:
        source = read_clean(lm, "mlp", 1)
        hooks.patch_output(part(lm, 1, "mlp_out"), lambda x: x.__setitem__((0, 2), source[2]))
        with torch.no_grad():
            log_p = torch.log_softmax(lm.model(input_ids=ids(lm, OTHER), use_cache=False).logits[0, -1].double(), -1)
    with torch.no_grad():
        clean = torch.log_softmax(lm.model(input_ids=ids(lm, TEXT), use_cache=False).logits[0, -1].double(), -1)
    assert result.values("prob")[1, 2] == pytest.approx(float(log_p[5].exp()), abs=TOLERANCE)
    assert result.values("kl")[1, 2] == pytest.approx(float((clean.exp() * (clean - log_p)).sum()), abs=TOLERANCE)
    assert trace.patched and "layer 1" in trace.patched
    assert float(torch.log_softmax(trace.last_logits.double(), -1)[5].exp()) == pytest.approx(
        float(log_p[5].exp()), abs=1e-6)


@pytest.mark.parametrize("name", F64)
def test_patching_a_whole_layer_of_the_residual_restores_the_clean_run(name, request):
    """Invariant: every position of one layer's residual from the clean run gives exactly the clean metric."""
    lm = request.getfixturevalue(name)
    result = patching.patch(lm, TEXT, OTHER, ANSWER, WRONG, "resid")
    for layer in range(lm.n_layers):
        trace = patching.patched_trace(lm, TEXT, OTHER, ANSWER, WRONG, "resid", layer, None)
        logits = trace.last_logits.double()
        m = float(logits[5] - logits[9])
        normalized = patching.normalize(np.array(m), result.clean.logit_diff[0], result.corrupted.logit_diff[0])
        # the trace keeps float32 logits of the float64 pass: each rounded by at most 2^-24 of its size
        bound = (abs(logits[5]) + abs(logits[9])) * 2.0**-24 / abs(result.clean.logit_diff[0] -
                                                                  result.corrupted.logit_diff[0]) + TOLERANCE
        assert abs(normalized - 1) <= bound


@pytest.mark.parametrize("name", F64)
def test_a_patch_leaves_every_earlier_position_unchanged(name, request):
    lm = request.getfixturevalue(name)
    plain = patching.trace_module.run_trace(lm, OTHER)
    first_change = int((ids(lm, TEXT) != ids(lm, OTHER))[0].nonzero()[0])  # the same prefix patches nothing
    for position in (first_change, first_change + 2):
        for site in ("resid", "attn", "mlp"):
            patched = patching.patched_trace(lm, TEXT, OTHER, ANSWER, WRONG, site, 1, position)
            assert torch.equal(patched.hidden[:, :position], plain.hidden[:, :position])
            assert not torch.equal(patched.hidden[-1, position:], plain.hidden[-1, position:])


def test_bad_pairs_are_refused_in_one_line(tiny_llama, tiny_bert):
    with pytest.raises(LmvizError, match="same tokens"):
        patching.patch(tiny_llama, TEXT, TEXT, ANSWER, WRONG)
    with pytest.raises(LmvizError, match=r"has \d+ tokens and the corrupted text \d+.*Clean: .*corrupted: "):
        patching.patch(tiny_llama, TEXT, TEXT + " and more", ANSWER, WRONG)
    with pytest.raises(LmvizError, match="same token"):
        patching.patch(tiny_llama, TEXT, OTHER, ANSWER, ANSWER)
    with pytest.raises(LmvizError, match="Patch one of"):
        patching.patch(tiny_llama, TEXT, OTHER, ANSWER, WRONG, "neurons")
    with pytest.raises(LmvizError, match="denoises"):
        patching.patch(tiny_llama, TEXT, OTHER, ANSWER, WRONG, mode="sideways")
    with pytest.raises(LmvizError):
        patching.patch(tiny_bert, TEXT, OTHER, ANSWER, WRONG)


@pytest.mark.parametrize("name", ["tiny_llama_f64", "tiny_gpt2_f64", "tiny_gemma3_f64"])
@pytest.mark.parametrize("site", list(patching.SITES))
def test_attribution_patching_is_the_first_order_term_computed_by_hand(name, site, request):
    lm = request.getfixturevalue(name)
    result = patching.attribution_patch(lm, TEXT, OTHER, ANSWER, WRONG, site, metric="logit_diff")
    # by hand: the corrupted run with a plain hook keeping each layer's tensor, then torch.autograd.grad
    kept = {}
    with HandHooks() as hooks:
        for layer in range(lm.n_layers):
            if site == "resid":
                hooks.handles.append(block(lm, layer).register_forward_pre_hook(
                    lambda m, args, layer=layer: kept.__setitem__(layer, args[0])))
            elif site == "head":
                hooks.handles.append(part(lm, layer, "z").register_forward_pre_hook(
                    lambda m, args, layer=layer: kept.__setitem__(layer, args[0])))
            else:
                hooks.handles.append(part(lm, layer, MODULE[site]).register_forward_hook(
                    lambda m, args, out, layer=layer: kept.__setitem__(layer, first(out))))
        with torch.enable_grad():
            logits = lm.model(input_ids=ids(lm, OTHER), use_cache=False).logits[0, -1]
            m = logits[5] - logits[9]
            grads = torch.autograd.grad(m, [kept[layer] for layer in range(lm.n_layers)])
    for layer in range(lm.n_layers):
        delta = (read_clean(lm, site, layer) - kept[layer][0].detach()) * grads[layer][0]
        if site == "head":
            expected = delta.sum(0).reshape(lm.model.config.num_attention_heads, -1).sum(-1)
        else:
            expected = delta.sum(-1)
        assert np.allclose(result.estimate[layer], float(m.detach()) + expected.numpy(), rtol=0, atol=TOLERANCE)
    assert -1 <= result.correlation <= 1 or np.isnan(result.correlation)
    assert result.worst[0][2:] == (result.estimate[result.worst[0][:2]], result.exact.values("logit_diff")[
        result.worst[0][:2]])


@pytest.mark.parametrize("name", ["tiny_llama_f64", "tiny_gemma3_f64", "tiny_gpt2_f64"])
def test_a_heads_direct_path_to_the_logits(name, request):
    """By hand: patch the head at every position, then hold every later attention and MLP output (and this
    layer's MLP) at the corrupted run's values: only the residual stream carries the change."""
    lm = request.getfixturevalue(name)
    result = patching.direct_paths(lm, TEXT, OTHER, ANSWER, WRONG)
    n_heads = lm.model.config.num_attention_heads
    corrupted = {(k, key): read_clean(lm, site, k, OTHER) for k in range(lm.n_layers)
                 for key, site in (("attn_out", "attn"), ("mlp_out", "mlp"))}
    for layer in range(lm.n_layers):
        source = read_clean(lm, "head", layer)
        for head in range(n_heads):
            with HandHooks() as hooks:
                width = source.shape[-1] // n_heads
                hooks.patch_input(part(lm, layer, "z"), lambda x: x.__setitem__(
                    (0, slice(None), slice(head * width, (head + 1) * width)),
                    source[:, head * width:(head + 1) * width]))
                for k in range(layer, lm.n_layers):
                    for key in (["mlp_out"] if k == layer else ["attn_out", "mlp_out"]):
                        hooks.patch_output(part(lm, k, key), lambda x, k=k, key=key: x.__setitem__(
                            0, corrupted[(k, key)]))
                with torch.no_grad():
                    logits = lm.model(input_ids=ids(lm, OTHER), use_cache=False).logits[0, -1].double()
            assert result.values("logit_diff")[layer, head] == pytest.approx(float(logits[5] - logits[9]),
                                                                             abs=1e-6)


@pytest.mark.parametrize("name", ["tiny_llama_f64", "tiny_gemma3_f64"])
@pytest.mark.parametrize("reads", ["q", "k", "v"])
def test_a_senders_path_into_a_receivers_query_key_or_value(name, reads, request):
    """By hand, two plain passes: the sender patched and every block in between held at the corrupted run,
    reading what the receiver's projection computes; then the corrupted run with only that slice replaced."""
    lm = request.getfixturevalue(name)
    config = lm.model.config
    receiver = (lm.n_layers - 1, config.num_attention_heads - 1)
    result = patching.receiver_paths(lm, TEXT, OTHER, ANSWER, WRONG, receiver, reads)
    width = config.hidden_size // config.num_attention_heads if not getattr(config, "head_dim", None) \
        else config.head_dim
    group = config.num_attention_heads // config.num_key_value_heads
    unit = receiver[1] if reads == "q" else receiver[1] // group
    proj = part(lm, receiver[0], "attn").get_submodule(f"{reads}_proj")
    held = {(k, key): read_clean(lm, site, k, OTHER) for k in range(lm.n_layers)
            for key, site in (("attn_out", "attn"), ("mlp_out", "mlp"))}
    for layer in range(receiver[0]):
        source = read_clean(lm, "head", layer)
        for head in range(config.num_attention_heads):
            with HandHooks() as hooks:
                hooks.patch_input(part(lm, layer, "z"), lambda x: x.__setitem__(
                    (0, slice(None), slice(head * width, (head + 1) * width)),
                    source[:, head * width:(head + 1) * width]))
                for k in range(layer, receiver[0]):
                    for key in (["mlp_out"] if k == layer else ["attn_out", "mlp_out"]):
                        hooks.patch_output(part(lm, k, key), lambda x, k=k, key=key: x.__setitem__(0, held[(k, key)]))
                hooks.read_output(proj, "into")
                with torch.no_grad():
                    lm.model(input_ids=ids(lm, OTHER), use_cache=False)
                into = hooks.seen["into"][0, :, unit * width:(unit + 1) * width].clone()
            with HandHooks() as hooks:
                hooks.patch_output(proj, lambda x: x.__setitem__(
                    (0, slice(None), slice(unit * width, (unit + 1) * width)), into))
                with torch.no_grad():
                    logits = lm.model(input_ids=ids(lm, OTHER), use_cache=False).logits[0, -1].double()
            assert result.values("logit_diff")[layer, head] == pytest.approx(float(logits[5] - logits[9]),
                                                                             abs=TOLERANCE)
    assert receiver[1] in result.shared_by and len(result.shared_by) == (1 if reads == "q" else group)


def test_fused_projections_are_refused_for_receiver_paths(tiny_gpt2):
    with pytest.raises(LmvizError, match="fused"):
        patching.receiver_paths(tiny_gpt2, TEXT, OTHER, ANSWER, WRONG, (1, 0), "q")


def test_ioi_on_smollm_moves_from_the_second_name_to_the_last_position(smollm):
    """The lesson's claim, as measured: the S2 column carries the answer in the early and middle layers,
    the last column in the late ones."""
    result = patching.patch(smollm, IOI_CLEAN, IOI_CORRUPTED, " Mary", " John", "resid")
    values = result.values()
    s2, last = result.tokens.index("·John", 4), len(result.tokens) - 1
    assert (values[:16, s2] > 0.9).all()
    assert (values[26:, last] > 0.85).all()
    assert np.abs(np.delete(values, [s2, last], axis=1)).max() < 0.1


def test_the_cli_gives_the_hand_patched_values(tiny_dirs, tiny_llama_f64, capsys):
    """`lmviz patch` and `lmviz attribution-patch` --json on the tiny Llama in float64, against hand-patched
    forwards of the same weights."""
    import json

    from lmviz import cli

    args = [TEXT, "--corrupted", OTHER, "--answer", ANSWER, "--wrong", WRONG, "--model", tiny_dirs["llama"],
            "--dtype", "float64", "--metric", "logit_diff", "--json"]
    for site in ("resid", "head"):
        assert cli.main(["patch", *args, "--site", site]) == 0
        output = json.loads(capsys.readouterr().out)
        values = np.array(output["values"])
        assert output["site"] == site and values.shape[0] == tiny_llama_f64.n_layers
        for layer, column in ((0, 3), (2, 1)):
            expected = hand_patched_metric(tiny_llama_f64, site, layer, column, read_clean(tiny_llama_f64, site, layer))
            assert values[layer, column] == pytest.approx(expected, abs=TOLERANCE)
        assert len(output["tokens"]) == len(output["display"]) == len(ids(tiny_llama_f64, TEXT)[0])
    assert cli.main(["attribution-patch", *args]) == 0
    output = json.loads(capsys.readouterr().out)
    assert -1 <= output["exhaustive_correlation"] <= 1
    assert np.abs(np.array(output["values"]) - np.array(output["exhaustive"])).max() == pytest.approx(output["max_error"])
    assert cli.main(["patch", TEXT, "--corrupted", TEXT + " more", "--answer", "5", "--wrong", "9",
                     "--model", tiny_dirs["llama"]]) == 2
    assert "same number" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["smollm", "gemma"])
def test_the_ready_made_pairs_hold_on_the_embedded_models(name, request):
    lm = request.getfixturevalue(name)
    for example in patching.EXAMPLES:
        runs = patching.pair(lm, example.clean, example.corrupted, example.answer, example.wrong)
        assert runs.clean.last_logits.argmax() == runs.answer_id, example.name
        assert runs.corrupted.last_logits[runs.answer_id] < runs.corrupted.last_logits[runs.wrong_id], example.name
