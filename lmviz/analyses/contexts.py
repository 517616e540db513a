"""Max-activating contexts: the windows of a corpus where a latent fired most.

An SAE folder may carry `contexts.safetensors` (the embedded one does; `lmviz train-sae`
writes it): for each latent its strongest activations over the training corpus, at most one
per 128-token sequence, each with a window of up to 24 tokens around it:

    max_activation  (d_sae, n)          float16  the latent's activation at the window's strongest token
    token_ids       (d_sae, n, window)  uint16   the window's tokens (0 past `length`)
    activations     (d_sae, n, window)  uint8    the latent's activation at each token, 255 = the window's maximum
    length          (d_sae, n)          uint8    tokens in the window (0: no such context)

No LLM writes labels here: a latent's label is its contexts and the tokens it promotes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch
from safetensors.torch import load_file

from lmviz.analyses.sae import Sae
from lmviz.errors import LmvizError
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
class LatentContexts:
    """A latent's max-activating contexts, strongest first."""

    sae_name: str
    latent: int
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


def latent_contexts(lm, sae: Sae, latent: int, n: int | None = None) -> LatentContexts:
    """`latent`'s strongest contexts in the index shipped with `sae` (LmvizError when it has none)."""
    latent = sae.check_latent(latent)
    if not has_index(sae):
        raise LmvizError(f"{sae.name} comes without an index of contexts ({FILE} in its folder).")
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
    return LatentContexts(sae.name, latent, tuple(contexts))


def label(found: LatentContexts) -> str:
    """A latent's honest short name: the token its contexts peak on most often (display form), "" for none."""
    peaks = [context.tokens[context.peak] for context in found.contexts]
    return max(peaks, key=peaks.count) if peaks else ""
