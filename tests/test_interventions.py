"""The seam's sites and edits against references that know nothing of lmviz's discovery.

Where each site is was written down here by hand for each family, from transformers' modeling code
(`PARTS`); the references are transformers' own `hidden_states` and plain torch hooks on those modules.
Recording reads the tensors the model itself passes on, so a site must equal its reference exactly (the
same tensor in the same pass, or the same kernels on the same input). An edit must give exactly the logits
of a forward pass patched by hand with a plain hook: both run the same kernels on the same values.
The neurons are checked against the maths they stand for: the MLP's output is Σ_n neuron_n · column_n,
within the rounding of one matrix product (tests/bounds.py).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from transformers import MixtralConfig, MixtralForCausalLM

from lmviz.model import interventions, models
from lmviz.forward import trace as tracing
from lmviz.errors import LmvizError
from lmviz.model.interventions import FINAL, Edit, Recording, Site
from tests import bounds

TEXT = "The capital of France is Paris, and the capital of England is"
OTHER = "The capital of England is Paris, and the capital of France is"  # as many tokens as TEXT

# model_type -> where the blocks are, and inside block l: the attention, what it adds to the residual, what
# the MLP adds, the attention's output projection (reads hook_z), the MLP's output projection (reads the neurons)
PARTS = {
    "llama": dict(blocks="model.layers", attn="self_attn", attn_out="self_attn", mlp_out="mlp",
                  z="self_attn.o_proj", neurons="mlp.down_proj", mlp="mlp"),
    "gpt2": dict(blocks="transformer.h", attn="attn", attn_out="attn", mlp_out="mlp",
                 z="attn.c_proj", neurons="mlp.c_proj", mlp="mlp"),
    "gemma3_text": dict(blocks="model.layers", attn="self_attn", attn_out="post_attention_layernorm",
                        mlp_out="post_feedforward_layernorm", z="self_attn.o_proj", neurons="mlp.down_proj", mlp="mlp"),
    "gpt_neox": dict(blocks="gpt_neox.layers", attn="attention", attn_out="attention", mlp_out="mlp",
                     z="attention.dense", neurons="mlp.dense_4h_to_h", mlp="mlp"),
}
MODELS = ["smollm", "tiny_llama", "tiny_gpt2", "tiny_gemma3", "tiny_neox"]


def part(lm: models.LoadedModel, layer: int, name: str) -> torch.nn.Module:
    """A module of block `layer`, found by the path written in PARTS."""
    where = PARTS[lm.model.config.model_type]
    return lm.model.get_submodule(where["blocks"])[layer].get_submodule(where[name])


def ids_of(lm: models.LoadedModel, text: str = TEXT) -> torch.Tensor:
    return torch.tensor([tracing.encode(lm, text)])


def first(value):
    return value[0] if isinstance(value, tuple) else value


class HandHooks:
    """Plain torch hooks on modules, each reading or patching one tensor; removed on exit."""

    def __init__(self):
        self.seen, self.handles = {}, []

    def read_input(self, module: torch.nn.Module, key):
        self.handles.append(module.register_forward_pre_hook(lambda m, args: self.seen.__setitem__(key, args[0])))

    def read_output(self, module: torch.nn.Module, key):
        self.handles.append(module.register_forward_hook(lambda m, args, out: self.seen.__setitem__(key, first(out))))

    def patch_input(self, module: torch.nn.Module, change):
        def hook(m, args):
            x = args[0].clone()
            change(x)
            return (x, *args[1:])
        self.handles.append(module.register_forward_pre_hook(hook))

    def patch_output(self, module: torch.nn.Module, change):
        def hook(m, args, out):
            x = first(out).clone()
            change(x)
            return (x, *out[1:]) if isinstance(out, tuple) else x
        self.handles.append(module.register_forward_hook(hook))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()


@torch.no_grad()
def hand_logits(lm: models.LoadedModel, ids: torch.Tensor) -> torch.Tensor:
    """(pos, vocab) float32: the model's logits from a plain forward pass (with whatever hand hooks are on)."""
    return lm.model(input_ids=ids, use_cache=False).logits[0].float()


@pytest.mark.parametrize("name", MODELS)
def test_every_site_is_the_tensor_the_model_passes_on(name, request):
    lm = request.getfixturevalue(name)
    n_layers, ids = lm.n_layers, ids_of(lm)
    hooks = ["hook_resid_pre", "hook_resid_post", "hook_attn_out", "hook_mlp_out", "attn.hook_out", "attn.hook_z",
             "mlp.hook_post"]
    sites = [Site(f"blocks.{layer}.{hook}") for layer in range(n_layers) for hook in hooks] + [Site(FINAL)]
    recording = Recording(sites)
    with HandHooks() as hand:
        for layer in range(n_layers):
            block = lm.model.get_submodule(PARTS[lm.model.config.model_type]["blocks"])[layer]
            hand.read_output(block, ("hook_resid_post", layer))
            hand.read_output(part(lm, layer, "attn_out"), ("hook_attn_out", layer))
            hand.read_output(part(lm, layer, "mlp_out"), ("hook_mlp_out", layer))
            hand.read_output(part(lm, layer, "attn"), ("attn.hook_out", layer))
            hand.read_input(part(lm, layer, "z"), ("attn.hook_z", layer))
            hand.read_input(part(lm, layer, "neurons"), ("mlp.hook_post", layer))
        hand.read_input(lm.model.get_output_embeddings(), FINAL)
        output = interventions.forward(lm, ids, record=recording, output_hidden_states=True)
    states = output.hidden_states  # transformers' own: (layer+1) x (1, pos, d), the last one after the final norm
    for layer in range(n_layers):
        assert torch.equal(recording[Site(f"blocks.{layer}.hook_resid_pre")], states[layer][0])
        if layer < n_layers - 1:
            assert torch.equal(recording[Site(f"blocks.{layer}.hook_resid_post")], states[layer + 1][0])
        for hook in hooks[1:]:
            assert torch.equal(recording[Site(f"blocks.{layer}.{hook}")], hand.seen[(hook, layer)][0]), (hook, layer)
    assert torch.equal(recording[Site(FINAL)], hand.seen[FINAL][0])
    assert torch.equal(recording[Site(FINAL)], states[-1][0])  # these heads read transformers' last state as it is


@pytest.mark.parametrize("name", MODELS)
def test_units_are_one_head_and_one_neuron(name, request):
    lm = request.getfixturevalue(name)
    parts = lm.arch.decomposition
    layer, head, neuron = lm.n_layers - 1, parts.n_heads - 1, parts.d_mlp // 3
    z, post = Site(f"blocks.{layer}.attn.hook_z"), Site(f"blocks.{layer}.mlp.hook_post")
    one_head, one_neuron = Site(z.name, unit=head), Site(post.name, unit=neuron)
    recording = Recording([z, post, one_head, one_neuron], at=[1, 3])
    interventions.run(lm, ids_of(lm), record=recording)
    width = part(lm, layer, "z").weight.shape[0 if lm.model.config.model_type == "gpt2" else 1] // parts.n_heads
    assert parts.d_head == width
    assert torch.equal(recording[one_head], recording[z][:, head * width:(head + 1) * width])
    assert recording[one_neuron].shape == (2,) and torch.equal(recording[one_neuron], recording[post][:, neuron])


@pytest.mark.parametrize("name", MODELS)
def test_the_mlp_output_is_the_sum_of_its_neurons(name, request):
    """What the MLP module returns = Σ_n neuron_n · column_n + bias: the neurons are the MLP's inputs to a
    linear map and nothing happens after it, within the rounding of one matrix product."""
    lm = request.getfixturevalue(name)
    layer = 1
    projection = part(lm, layer, "neurons")
    assert lm.arch.decomposition.mlp_out_projs[layer] is projection
    post = Site(f"blocks.{layer}.mlp.hook_post")
    recording = Recording([post])
    with HandHooks() as hand:
        hand.read_output(part(lm, layer, "mlp"), "mlp")
        interventions.run(lm, ids_of(lm), record=recording)
    neurons = recording[post]  # (pos, d_mlp)
    weight = projection.weight.detach()
    weight = weight.T if lm.model.config.model_type == "gpt2" else weight  # GPT-2's Conv1D keeps (in, out)
    bias = projection.bias.detach() if projection.bias is not None else None
    assert lm.arch.decomposition.d_mlp == neurons.shape[-1] == weight.shape[1]
    exact = neurons.double() @ weight.double().T + (bias.double() if bias is not None else 0)
    assert ((hand.seen["mlp"][0].double() - exact).abs() <= bounds.linear_bound(neurons, weight, bias)).all()


def edits_and_hand_patches(lm: models.LoadedModel):
    """(edit, a function that puts the same change on the model with plain hooks) for every kind of site
    and operation."""
    torch.manual_seed(0)
    d_model, parts = lm.d_model, lm.arch.decomposition
    v = torch.randn(d_model)
    steer = torch.randn(3, d_model)
    blocks = lm.model.get_submodule(PARTS[lm.model.config.model_type]["blocks"])
    h, dh = 1, parts.d_head

    def at(index, op, value):
        def change(x):
            if op == "replace":
                x[index] = value
            elif op == "add":
                x[index] += value
            else:
                x[index] *= value
        return change

    return [
        (Edit(Site("blocks.1.hook_resid_pre"), v, at=2),
         lambda hand: hand.patch_input(blocks[1], at((slice(None), 2), "replace", v))),
        (Edit(Site("blocks.0.hook_resid_post"), steer, "add", at=[1, 2, 4]),
         lambda hand: hand.patch_output(blocks[0], at((slice(None), [1, 2, 4]), "add", steer))),
        (Edit(Site("blocks.1.hook_attn_out"), 0.5, "scale"),
         lambda hand: hand.patch_output(part(lm, 1, "attn_out"), at((slice(None),), "scale", 0.5))),
        (Edit(Site("blocks.0.hook_mlp_out")),  # zero-ablation
         lambda hand: hand.patch_output(part(lm, 0, "mlp_out"), at((slice(None),), "replace", 0.0))),
        (Edit(Site("blocks.1.attn.hook_z", unit=h), 2.0, "scale", at=slice(3, None)),
         lambda hand: hand.patch_input(part(lm, 1, "z"), at((slice(None), slice(3, None), slice(h * dh, (h + 1) * dh)),
                                                            "scale", 2.0))),
        (Edit(Site("blocks.0.mlp.hook_post", unit=5), 3.0, at=[0, 3]),
         lambda hand: hand.patch_input(part(lm, 0, "neurons"), at((slice(None), [0, 3], 5), "replace", 3.0))),
        (Edit(Site(FINAL), v, "add", at=-1),
         lambda hand: hand.patch_input(lm.model.get_output_embeddings(), at((slice(None), -1), "add", v))),
    ]


@pytest.mark.parametrize("name", MODELS)
def test_each_edit_equals_a_forward_patched_by_hand(name, request):
    lm = request.getfixturevalue(name)
    ids = ids_of(lm)
    clean = interventions.run(lm, ids)
    for edit, patch in edits_and_hand_patches(lm):
        with HandHooks() as hand:
            patch(hand)
            expected = hand_logits(lm, ids)
        got = interventions.run(lm, ids, edits=(edit,))
        assert torch.equal(got, expected), edit.site.label
        assert not torch.equal(got, clean), edit.site.label  # the edit did something
    assert torch.equal(interventions.run(lm, ids), clean)  # and left nothing behind


def test_edits_apply_in_order_and_recordings_see_them(tiny_llama):
    ids = ids_of(tiny_llama)
    site = Site("blocks.1.hook_resid_pre")
    v = torch.randn(tiny_llama.d_model)
    recording = Recording([site, Site("blocks.0.hook_resid_post")])
    got = interventions.run(tiny_llama, ids, record=recording, edits=(Edit(site, v, at=2), Edit(site, 3.0, "scale")))
    blocks = tiny_llama.model.model.layers

    def change(x):
        x[:, 2] = v
        x *= 3.0

    with HandHooks() as hand:
        hand.patch_input(blocks[1], change)
        hand.read_input(blocks[1], "edited")  # registered after the patch: sees its result
        assert torch.equal(got, hand_logits(tiny_llama, ids))
    assert torch.equal(recording[site], hand.seen["edited"][0])
    # block 1's input is edited there, not where block 0 returned it
    assert not torch.equal(recording[Site("blocks.0.hook_resid_post")], recording[site])


@pytest.mark.parametrize("name", ["smollm", "tiny_gpt2", "tiny_gemma3"])
def test_patching_from_another_texts_recording(name, request):
    """Activation patching on this seam: another text's recorded residual, put in at one position or all."""
    lm = request.getfixturevalue(name)
    clean, corrupted = ids_of(lm, TEXT), ids_of(lm, OTHER)
    assert clean.shape == corrupted.shape
    layer, position = 1, 3
    site = Site(f"blocks.{layer}.hook_resid_pre")
    source = Recording([site])
    clean_logits = interventions.run(lm, clean, record=source)
    corrupted_logits = interventions.run(lm, corrupted)
    patched = interventions.run(lm, corrupted, edits=(Edit(site, source[site][position], at=position),))
    blocks = lm.model.get_submodule(PARTS[lm.model.config.model_type]["blocks"])

    def put(x):
        x[:, position] = source[site][position]

    with HandHooks() as hand:
        hand.patch_input(blocks[layer], put)
        assert torch.equal(patched, hand_logits(lm, corrupted))
    assert torch.equal(patched[:position], corrupted_logits[:position])  # earlier positions never change
    assert not torch.equal(patched[position:], corrupted_logits[position:])
    # the whole residual at a layer is all the later blocks read: patching it all gives the clean run
    assert torch.equal(interventions.run(lm, corrupted, edits=(Edit(site, source[site]),)), clean_logits)


def test_threads_record_and_edit_only_their_own_passes(tiny_llama):
    ids = ids_of(tiny_llama)
    torch.manual_seed(1)
    jobs = [(Site(f"blocks.{i % 3}.hook_resid_post"), torch.randn(tiny_llama.d_model), i % ids.shape[1])
            for i in range(8)]

    def job(i):
        site, value, position = jobs[i]
        recording = Recording([Site(f"blocks.{(i + 1) % 3}.hook_mlp_out")], at=[position])
        logits = interventions.run(tiny_llama, ids, record=recording, edits=(Edit(site, value, "add", at=position),))
        return logits, recording.values

    alone = [job(i) for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(job, list(range(8)) * 3))
    for i, (logits, values) in enumerate(together):
        assert torch.equal(logits, alone[i % 8][0])
        assert all(torch.equal(values[key], alone[i % 8][1][key]) for key in values)


def test_sites_that_do_not_exist_are_refused(tiny_llama):
    ids = ids_of(tiny_llama)
    with pytest.raises(LmvizError, match="not a site"):
        Site("blocks.0.resid_pre")
    with pytest.raises(LmvizError, match="not a site"):
        Site("blocks.x.hook_resid_pre")
    with pytest.raises(LmvizError, match="split into units"):
        Site("blocks.0.hook_resid_pre", unit=0)
    with pytest.raises(LmvizError, match="replaces, adds or scales"):
        Edit(Site("blocks.0.hook_resid_pre"), op="mean")
    with pytest.raises(LmvizError, match="blocks 0..2"):
        interventions.run(tiny_llama, ids, record=Recording([Site("blocks.3.hook_resid_pre")]))
    n_heads = tiny_llama.arch.decomposition.n_heads
    with pytest.raises(LmvizError, match=f"heads 0..{n_heads - 1}"):
        interventions.run(tiny_llama, ids, edits=(Edit(Site("blocks.0.attn.hook_z", unit=n_heads)),))


def test_a_mixture_of_experts_has_no_neurons_to_read(tiny_llama):
    """Mixtral's MLP is a router over experts: no one output projection reads its neurons."""
    torch.manual_seed(0)
    config = MixtralConfig(vocab_size=tiny_llama.vocab_size, hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, num_local_experts=4,
                           max_position_embeddings=128)
    lm = models.describe("tiny mixtral", MixtralForCausalLM(config).eval(), tiny_llama.tokenizer, "causal")
    parts = lm.arch.require_decomposition()
    assert parts.mlp_out_projs is None and "\n" not in parts.neurons_refusal
    with pytest.raises(LmvizError, match="can't read the neurons"):
        interventions.run(lm, ids_of(lm), record=Recording([Site("blocks.0.mlp.hook_post")]))
    recording = Recording([Site("blocks.0.hook_mlp_out")])  # what the MLP adds is there all the same
    interventions.run(lm, ids_of(lm), record=recording)
    assert recording[Site("blocks.0.hook_mlp_out")].shape == (ids_of(lm).shape[1], 32)


def test_a_stopping_recording_keeps_the_same_values_and_runs_no_further(tiny_llama):
    """Recording(stop=True) ends the pass at its last site: the values equal a whole pass's, and no block
    after that site runs (a plain hook on the last block counts its calls)."""
    ids = ids_of(tiny_llama)
    sites = [Site("blocks.0.hook_resid_post"), Site("blocks.1.hook_resid_pre")]
    whole = Recording(sites)
    interventions.run(tiny_llama, ids, record=whole)
    calls = []
    handle = tiny_llama.model.model.layers[-1].register_forward_hook(lambda *args: calls.append(1))
    try:
        early = Recording(sites, stop=True)
        assert interventions.forward(tiny_llama, ids, record=early) is None
        assert calls == []
        interventions.forward(tiny_llama, ids, record=Recording(sites))
        assert calls == [1]
    finally:
        handle.remove()
    for site in sites:
        assert torch.equal(early[site], whole[site])
