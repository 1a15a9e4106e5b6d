"""Shared fixtures: tiny random models (fast) and the embedded default model (marked)."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import jax
import pytest

from ppl.models.lm.tiny import tiny_config, tiny_language_model

MAPS = Path("/proc/self/maps")
# Linux refuses new memory mappings past vm.max_map_count (65 530 by default). Every program
# XLA compiles for the CPU keeps several mappings, a tiny-mode notebook leaves about 8 000, and
# a pytest-xdist worker runs hundreds of tests in one process: past the limit the next
# compilation aborts the worker (seen once in CI, in the last notebook a worker ran).
MAX_MAPPINGS = 30_000


@pytest.fixture(autouse=True)
def _bounded_compilation_cache():
    """After a test, drop JAX's compiled programs if the process holds too many mappings."""
    yield
    if MAPS.exists():
        with MAPS.open() as maps:
            if sum(1 for _ in maps) > MAX_MAPPINGS:
                jax.clear_caches()
                gc.collect()


@pytest.fixture(autouse=True, scope="session")
def _private_start_up_caches(tmp_path_factory):
    """Tests store converted GGUFs in a session directory, not the user's cache (the default
    model is still found there), and compile without JAX's persistent cache (the command line
    would turn it on in this process; subprocesses inherit the switch)."""
    from ppl.models.lm import model_cache

    converted = tmp_path_factory.mktemp("ppl-jax-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(model_cache, "cache_dir", lambda: converted)
        patch.setenv(model_cache.NO_COMPILATION_CACHE_ENV, "1")
        yield


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
    from ppl.models.lm.default_model import default_model_path as locate
    from ppl.models.lm.errors import ModelLoadError

    try:
        return locate(download=os.environ.get("PPL_JAX_DOWNLOAD_IN_TESTS") == "1")
    except ModelLoadError as error:
        pytest.skip(f"default model not available: {error}")


@pytest.fixture(scope="session")
def default_lm(default_model_path):
    from ppl.models.lm import LanguageModel

    return LanguageModel.from_gguf(default_model_path, cache=False)  # no 515 MB entry per session


@pytest.fixture(scope="session")
def llamacpp(default_model_path, tmp_path_factory):
    """llama.cpp's OpenAI-compatible server on the embedded GGUF (a real server process on a
    free loopback port; `tests/llamacpp_server.py`)."""
    from tests.llamacpp_server import llamacpp_server

    log = tmp_path_factory.mktemp("llamacpp") / "server.log"
    with llamacpp_server(Path(default_model_path), log) as server:
        yield server


@pytest.fixture(scope="session")
def llamacpp_f32(default_model_path, tmp_path_factory):
    """The server on a float32 copy of the embedded GGUF, and that copy's path."""
    from tests.llamacpp_server import float32_copy, llamacpp_server

    directory = tmp_path_factory.mktemp("llamacpp_f32")
    model = float32_copy(Path(default_model_path), directory / "smollm2-f32.gguf")
    with llamacpp_server(model, directory / "server.log") as server:
        yield server
