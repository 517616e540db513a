"""Shared fixtures: tiny random models on disk, loaded through the real lmviz.models.load."""

from __future__ import annotations

import os

import pytest

from lmviz import models
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
