"""The architecture registry: every architecture names every parameter, unknown names are
refused with the supported list by the real loaders, and a new architecture needs no loader
change (one module and its registration)."""

from __future__ import annotations

import dataclasses
import json
from typing import ClassVar

import numpy as np
import pytest

from ppl.models.lm import DecoderConfig, LanguageModel, LayerParams, ModelLoadError, architectures
from ppl.models.lm.architectures import registry
from ppl.models.lm.architectures.llama import Llama
from ppl.models.lm.tiny import tiny_config
from tests.models.lm.gguf_fixtures import write_tiny_gguf
from tests.models.lm.test_safetensors_loader import write_hf_directory

TOKENS = [5, 17, 99, 3, 250, 8, 8, 41, 259]
SUPPORTED = "supported: llama, mistral, qwen2"


def test_registry_lists_the_architectures_and_refuses_unknown_names():
    assert architectures.names() == ("llama", "mistral", "qwen2")
    for name in architectures.names():
        assert architectures.get(name).name == name
    with pytest.raises(ValueError, match=f"unknown architecture 'gptneox'; {SUPPORTED}$"):
        architectures.get("gptneox")
    with pytest.raises(ValueError, match="registered twice"):
        architectures.register("llama")(Llama())


@pytest.mark.parametrize("name", ["llama", "mistral", "qwen2"])
def test_every_architecture_names_every_parameter(name):
    arch = architectures.get(name)
    for tensors, layer_tensors in (
        (arch.gguf_tensors, arch.gguf_layer_tensors),
        (arch.hf_tensors, arch.hf_layer_tensors),
    ):
        assert {"embed", "final_norm", "lm_head"} <= set(tensors)
        assert set(layer_tensors) == set(LayerParams._fields)
        assert all("{i}" in template for template in layer_tensors.values())


def test_config_refuses_an_unregistered_architecture():
    with pytest.raises(ValueError, match=f"unknown architecture 'gptneox'; {SUPPORTED}"):
        tiny_config(architecture="gptneox")


def test_gguf_loader_names_the_unknown_architecture_and_the_supported_ones(tiny_lm, tmp_path):
    path = write_tiny_gguf(tmp_path / "neox.gguf", tiny_lm, architecture="gptneox")
    with pytest.raises(ModelLoadError) as error:
        LanguageModel.from_gguf(path)
    assert str(error.value) == (
        f"unknown architecture 'gptneox'; {SUPPORTED} (GGUF general.architecture)"
    )


def test_safetensors_loader_names_the_unknown_architecture_and_the_supported_ones(
    tiny_lm, tmp_path
):
    directory = write_hf_directory(tmp_path / "ckpt", tiny_lm)
    hf = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**hf, "model_type": "gemma"}))
    with pytest.raises(ModelLoadError) as error:
        LanguageModel.load(directory)
    assert str(error.value) == f"unknown architecture 'gemma'; {SUPPORTED} (config.json model_type)"


def test_llama_with_output_projection_biases_is_refused(tiny_lm, tmp_path):
    directory = write_hf_directory(tmp_path / "ckpt", tiny_lm)
    hf = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**hf, "attention_bias": True}))
    with pytest.raises(ModelLoadError, match="attention_bias: true; the llama layout"):
        LanguageModel.load(directory)


@pytest.mark.parametrize(
    ("fixture", "model_type", "extra", "context_length"),
    [
        ("tiny_lm", "mistral", {"sliding_window": 64}, 64),  # full attention within the window
        ("tiny_lm", "mistral", {"sliding_window": None}, 256),
        ("tiny_lm", "mistral", {"sliding_window": 4096}, 256),
        ("tiny_qwen_lm", "qwen2", {"use_sliding_window": True, "sliding_window": 32}, 32),
        ("tiny_qwen_lm", "qwen2", {"use_sliding_window": False, "sliding_window": 32}, 256),
        ("tiny_lm", "llama", {"sliding_window": 32}, 256),  # not a llama setting
    ],
)
def test_sliding_windows_cap_the_context(
    fixture, model_type, extra, context_length, request, tmp_path
):
    lm = request.getfixturevalue(fixture)
    directory = write_hf_directory(tmp_path / "ckpt", lm)
    hf = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**hf, "model_type": model_type, **extra}))
    loaded = LanguageModel.load(directory)
    assert loaded.config.architecture == model_type
    assert loaded.config.context_length == context_length
    np.testing.assert_allclose(loaded.logits(TOKENS), lm.logits(TOKENS), rtol=1e-6, atol=1e-6)


@pytest.fixture
def scratch_registry():
    """Registrations made in a test are dropped after it."""
    before = set(registry.ARCHITECTURES.names())
    yield
    for name in set(registry.ARCHITECTURES.names()) - before:
        registry.ARCHITECTURES.unregister(name)


def test_a_new_architecture_is_one_class_and_one_registration(scratch_registry, tiny_lm, tmp_path):
    class Toy(Llama):
        """The llama layout, written without llama.cpp's rotary permute."""

        name: ClassVar[str] = "toy"
        gguf_rotary_permuted = False

    architectures.register("toy")(Toy())
    assert "toy" in architectures.names()
    path = write_tiny_gguf(tmp_path / "toy.gguf", tiny_lm, architecture="toy")
    loaded = LanguageModel.from_gguf(path)
    assert loaded.config == dataclasses.replace(tiny_lm.config, architecture="toy")
    np.testing.assert_allclose(loaded.logits(TOKENS), tiny_lm.logits(TOKENS), rtol=1e-6, atol=1e-6)
    assert isinstance(loaded.config, DecoderConfig)
