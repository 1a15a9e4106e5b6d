"""Shared fixtures: tiny random models (fast) and the embedded default model (marked)."""

from __future__ import annotations

import os

import jax
import pytest

from models.lm.tiny import tiny_config, tiny_language_model


@pytest.fixture(scope="session")
def tiny_lm():
    return tiny_language_model(jax.random.key(0))


@pytest.fixture(scope="session")
def tiny_qwen_lm():
    """Untied output projection and attention biases (the Qwen2 layout)."""
    config = tiny_config(architecture="qwen2", attention_bias=True, tie_embeddings=False)
    return tiny_language_model(jax.random.key(1), config)


@pytest.fixture(scope="session")
def default_model_path():
    from models.lm.default_model import default_model_path as locate
    from models.lm.errors import ModelLoadError

    try:
        return locate(download=os.environ.get("PPL_JAX_DOWNLOAD_IN_TESTS") == "1")
    except ModelLoadError as error:
        pytest.skip(f"default model not available: {error}")


@pytest.fixture(scope="session")
def default_lm(default_model_path):
    from models.lm import LanguageModel

    return LanguageModel.from_gguf(default_model_path)
