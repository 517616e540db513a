"""The neurons' max-activating contexts: pointers into a bank of corpus sequences, whose windows are
recomputed through the seam when asked. Checked against a plain torch hook on the MLP's output projection
(transformers' own module, nothing of lmviz's discovery), and the stored peaks against the recomputed ones."""

import pytest
import torch

from lmviz.analyses import contexts
from lmviz.errors import LmvizError

LAYER = 7


def test_a_neurons_windows_are_what_the_model_computes(smollm):
    index = contexts._neuron_index(smollm)
    neuron = int(index["activation"][LAYER, :, 0].float().argmax())  # the block's most active neuron
    found = contexts.neuron_contexts(smollm, LAYER, neuron)
    assert len(found.contexts) == contexts._neuron_index(smollm)["activation"].shape[-1]
    ids = index["token_ids"][index["sequence"][LAYER, neuron].long()].to(torch.int64)
    seen = {}

    def read(module, args):  # the neurons are what the output projection reads
        seen["x"] = args[0][..., neuron].detach().clone()

    hook = smollm.model.model.layers[LAYER].mlp.down_proj.register_forward_pre_hook(read)
    try:
        with torch.no_grad():
            smollm.model(input_ids=ids)
    finally:
        hook.remove()
    peaks = index["activation"][LAYER, neuron].float()
    for row, context in enumerate(found.contexts):
        position = int(index["position"][LAYER, neuron, row])
        low = position - context.peak
        expected = seen["x"][row, low:low + len(context.tokens)].float()
        assert torch.allclose(torch.tensor(context.activations), expected, rtol=1e-4, atol=1e-5)
        assert context.activations[context.peak] == max(context.activations)  # the window's peak is the neuron's
        assert abs(context.activations[context.peak] - float(peaks[row])) <= 2e-3 * max(1.0, float(peaks[row]))
    assert peaks.tolist() == sorted(peaks.tolist(), reverse=True)  # strongest first


def test_an_index_that_is_not_this_models_is_refused(smollm, monkeypatch):
    index = dict(contexts._neuron_index(smollm))
    index["activation"] = index["activation"].clone()
    index["activation"][LAYER, 3, 0] += 1.0
    monkeypatch.setitem(contexts._LOADED, ("neurons", smollm.name, smollm.serial), index)
    with pytest.raises(LmvizError, match="does not match the model"):
        contexts.neuron_contexts(smollm, LAYER, 3)


def test_models_without_an_index_say_so(tiny_llama):
    with pytest.raises(LmvizError, match="no neuron index"):
        contexts.neuron_contexts(tiny_llama, 0, 0)
