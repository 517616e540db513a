"""Max-activating contexts: the windows of a corpus where a latent, or a neuron, fired most.

An SAE folder may carry `contexts.safetensors` (the embedded one does; `lmviz train-sae`
writes it): for each latent its strongest activations over the training corpus, at most one
per 128-token sequence, each with a window of up to 24 tokens around it:

    max_activation  (d_sae, n)          float16  the latent's activation at the window's strongest token
    token_ids       (d_sae, n, window)  uint16   the window's tokens (0 past `length`)
    activations     (d_sae, n, window)  uint8    the latent's activation at each token, 255 = the window's maximum
    length          (d_sae, n)          uint8    tokens in the window (0: no such context)

For an embedded model, lmviz/data/neurons/<model>/ carries the same for every MLP neuron, as pointers:
`bank.safetensors` holds 1,600 corpus sequences of 128 tokens (`token_ids`, uint16), and
`neurons.safetensors` per (layer, neuron) its 8 strongest activations (`activation`, float16) with their
`sequence` and `position` in the bank. A neuron's windows are recomputed exactly when asked (eight
sequences through the model), and each recomputed peak must equal the stored one within float16 rounding,
or the index is refused as not this model's.

No LLM writes labels here: a latent's label is its contexts and the tokens it promotes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from lmviz.analyses.sae import Sae
from lmviz.errors import LmvizError
from lmviz.forward.cache import cached
from lmviz.model.interventions import Recording, Site, forward
from lmviz.tokens import display_tokens

FILE = "contexts.safetensors"
_FIELDS = {"max_activation": 2, "token_ids": 3, "activations": 3, "length": 2}  # name: number of dimensions
_LOADED: dict[tuple, dict[str, torch.Tensor]] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Context:
    """One window where the latent fired: its tokens (display strings) and the latent's activation at each."""

    tokens: tuple[str, ...]
    activations: tuple[float, ...]  # in the latent's units (the stored fraction × the window's maximum)
    peak: int  # the index in `tokens` of the strongest token


@dataclass(frozen=True)
class Contexts:
    """A unit's max-activating contexts, strongest first."""

    unit: str  # "latent 1350 of smollm2-135m-res8-topk", "neuron 7.1213 of smollm2-135m"
    contexts: tuple[Context, ...]


def has_index(sae: Sae) -> bool:
    return (sae.folder / FILE).is_file()


def _index(sae: Sae) -> dict[str, torch.Tensor]:
    """The folder's index, checked against the SAE's shape and kept (one copy per SAE files)."""
    with _LOCK:
        if sae.key not in _LOADED:
            try:
                tensors = load_file(str(sae.folder / FILE))
            except Exception as error:  # a broken or foreign file: say which
                raise LmvizError(f"{sae.folder / FILE} can't be read as safetensors: {error}") from None
            for name, dims in _FIELDS.items():
                tensor = tensors.get(name)
                if tensor is None or tensor.dim() != dims or tensor.shape[0] != sae.d_sae:
                    raise LmvizError(f"{FILE}: '{name}' is missing or not ({sae.d_sae}, …) with {dims} dimensions.")
            _LOADED[sae.key] = tensors
        return _LOADED[sae.key]


def latent_contexts(lm, sae: Sae, latent: int, n: int | None = None) -> Contexts:
    """`latent`'s strongest contexts in the index shipped with `sae` (LmvizError when it has none)."""
    latent = sae.check_latent(latent)
    if not has_index(sae):
        raise LmvizError(f"{sae.name} comes without an index of contexts ({FILE} in its folder).")
    return cached("latent contexts", lm, (sae.key, latent, n), lambda: _latent_contexts(lm, sae, latent, n))


def _latent_contexts(lm, sae: Sae, latent: int, n: int | None) -> Contexts:
    index = _index(sae)
    peaks, lengths = index["max_activation"][latent].float(), index["length"][latent].long()
    contexts = []
    for rank in range(len(peaks) if n is None else min(n, len(peaks))):
        length = int(lengths[rank])
        if length == 0 or peaks[rank] <= 0:
            continue
        ids = index["token_ids"][latent, rank, :length].to(torch.int64).tolist()
        fractions = index["activations"][latent, rank, :length].float() / 255
        with lm.lock:
            tokens = tuple(display_tokens(lm.tokenizer, ids))
        values = tuple(float(f) * float(peaks[rank]) for f in fractions)
        contexts.append(Context(tokens, values, int(fractions.argmax())))
    return Contexts(f"latent {latent} of {sae.name}", tuple(contexts))


def label(found: Contexts) -> str:
    """A latent's honest short name: the token its contexts peak on most often (display form), "" for none."""
    peaks = [context.tokens[context.peak] for context in found.contexts]
    return max(peaks, key=peaks.count) if peaks else ""


NEURONS = Path(__file__).resolve().parent.parent / "data" / "neurons"  # per embedded model: bank + index
WINDOW, BEFORE = 24, 16  # tokens shown around a neuron's peak: 16 before it, 7 after


def has_neuron_index(lm) -> bool:
    return (NEURONS / lm.name / "neurons.safetensors").is_file()


def _neuron_index(lm) -> dict[str, torch.Tensor]:
    key = ("neurons", lm.name, lm.serial)
    with _LOCK:
        if key not in _LOADED:
            folder = NEURONS / lm.name
            tensors = {**load_file(str(folder / "bank.safetensors")), **load_file(str(folder / "neurons.safetensors"))}
            if tensors["activation"].shape[0] != lm.n_layers:
                raise LmvizError(f"The neuron index of {lm.name} has {tensors['activation'].shape[0]} layers, the "
                                 f"model {lm.n_layers}: it is not this model's.")
            _LOADED[key] = tensors
        return _LOADED[key]


def neuron_contexts(lm, layer: int, neuron: int) -> Contexts:
    """Neuron `neuron` of block `layer`'s MLP: its strongest contexts in the embedded model's bank, each
    window's activations recomputed by running its sequence (checked against the stored peaks)."""
    if not has_neuron_index(lm):
        raise LmvizError(f"lmviz ships no neuron index for {lm.name} (only for its embedded models).")
    return cached("neuron contexts", lm, (int(layer), int(neuron)), lambda: _neuron_contexts(lm, layer, neuron))


def _neuron_contexts(lm, layer: int, neuron: int) -> Contexts:
    index = _neuron_index(lm)
    peaks = index["activation"][layer, neuron].float()
    rows = index["sequence"][layer, neuron].long()
    positions = index["position"][layer, neuron].long()
    ids = index["token_ids"][rows].to(torch.int64)  # (n, CONTEXT)
    site = Site(f"blocks.{layer}.mlp.hook_post", unit=neuron)
    record = Recording([site], every_row=True, stop=True)
    forward(lm, ids, record=record)
    values = record[site].float()  # (n, CONTEXT)
    contexts = []
    for row, (peak, position) in enumerate(zip(peaks.tolist(), positions.tolist())):
        again = float(values[row, position])
        if abs(again - peak) > 2e-3 * max(1.0, abs(peak)):  # float16 keeps ~3 digits
            raise LmvizError(f"The neuron index of {lm.name} does not match the model (neuron {layer}.{neuron}: "
                             f"stored {peak:.4f}, recomputed {again:.4f}).")
        low = max(1, position - BEFORE)
        high = min(ids.shape[1], low + WINDOW)
        with lm.lock:
            tokens = tuple(display_tokens(lm.tokenizer, ids[row, low:high].tolist()))
        contexts.append(Context(tokens, tuple(values[row, low:high].tolist()), position - low))
    return Contexts(f"neuron {layer}.{neuron} of {lm.name}", tuple(contexts))
