"""GGUF loading: layout (rotary un-permute, transposes, tying), quantization types, errors."""

from __future__ import annotations

import gguf
import jax
import numpy as np
import pytest

from ppl.models.lm import LanguageModel, ModelLoadError
from ppl.models.lm.gguf_loader import _dequantize, open_gguf
from ppl.models.lm.tiny import tiny_config, tiny_language_model
from tests.models.lm.gguf_fixtures import Q, write_tiny_gguf

TOKENS = [5, 17, 99, 3, 250, 8, 8, 41, 259]


def test_float32_gguf_reproduces_the_model_exactly(tiny_lm, tmp_path):
    path = write_tiny_gguf(tmp_path / "tiny.gguf", tiny_lm)
    loaded = LanguageModel.from_gguf(path)
    assert loaded.config == tiny_lm.config
    for a, b in zip(jax.tree.leaves(loaded.params), jax.tree.leaves(tiny_lm.params), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(loaded.logits(TOKENS), tiny_lm.logits(TOKENS), rtol=1e-6, atol=1e-6)
    assert loaded.tokenizer.encode("the 12") == tiny_lm.tokenizer.encode("the 12")
    assert loaded.tokenizer.eos_token_ids == tiny_lm.tokenizer.eos_token_ids
    assert loaded.tokenizer.chat_template == tiny_lm.tokenizer.chat_template


def test_qwen2_layout_with_biases_and_untied_head(tiny_qwen_lm, tmp_path):
    path = write_tiny_gguf(tmp_path / "qwen.gguf", tiny_qwen_lm)
    loaded = LanguageModel.from_gguf(path)
    assert loaded.config == tiny_qwen_lm.config
    np.testing.assert_allclose(loaded.logits(TOKENS), tiny_qwen_lm.logits(TOKENS), atol=1e-6)


@pytest.mark.parametrize("kind", [Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1])
def test_quantized_matrices_load_as_their_dequantized_values(tiny_lm, tmp_path, kind):
    path = write_tiny_gguf(tmp_path / f"{kind.name}.gguf", tiny_lm, matrix_type=kind)
    loaded = LanguageModel.from_gguf(path, weights="float")

    def round_trip(weight):  # rows are quantized in blocks along the input axis
        return gguf.quants.dequantize(gguf.quants.quantize(np.asarray(weight), kind), kind)

    layers, original = loaded.params.layers, tiny_lm.params.layers
    # quantization acts within rows, so it commutes with the rotary row permutation
    np.testing.assert_array_equal(layers.wq[1], round_trip(original.wq[1].T).T)
    np.testing.assert_array_equal(layers.w_up[0], round_trip(original.w_up[0].T).T)
    np.testing.assert_array_equal(loaded.params.embed, round_trip(tiny_lm.params.embed))
    np.testing.assert_array_equal(layers.attn_norm, original.attn_norm)  # norms stay float32


def _k_quant_bytes(kind: Q, rows: int, seed: int) -> np.ndarray:
    """Random but finite super-blocks of a k-quant type (f16 scales set to small values)."""
    _, size = gguf.GGML_QUANT_SIZES[kind]
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(rows, size), dtype=np.uint8)
    scale = np.frombuffer(np.float16(0.01).tobytes(), np.uint8)
    offsets = {
        Q.Q4_K: (0, 2),
        Q.Q5_K: (0, 2),
        Q.Q2_K: (size - 4, size - 2),
        Q.Q3_K: (size - 2,),
        Q.Q6_K: (size - 2,),
    }[kind]
    for offset in offsets:
        data[:, offset : offset + 2] = scale
    return data


@pytest.mark.parametrize("kind", [Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K])
def test_k_quant_tensors_dequantize_with_gguf(tmp_path, kind):
    config = tiny_config(hidden_size=256, intermediate_size=256, num_heads=8, head_dim=32)
    lm = tiny_language_model(jax.random.key(0), config)
    raw = _k_quant_bytes(kind, 256, seed=1)
    path = write_tiny_gguf(
        tmp_path / "k.gguf", lm, raw_tensors={"blk.0.ffn_up.weight": (raw, kind)}
    )
    loaded = LanguageModel.from_gguf(path)  # one layer of a stack: dequantized, not kept
    expected = gguf.quants.dequantize(raw, kind).T
    assert np.isfinite(expected).all()
    np.testing.assert_allclose(loaded.params.layers.w_up[0], expected)
    tensor = next(t for t in open_gguf(path).tensors if t.name == "blk.0.ffn_up.weight")
    assert _dequantize(tensor, path).shape == (256, 256)


def test_unsupported_quantization_names_the_type(tiny_lm, tmp_path):
    block, size = gguf.GGML_QUANT_SIZES[Q.IQ2_XXS]
    config = tiny_config(hidden_size=256, intermediate_size=256, num_heads=8, head_dim=32)
    lm = tiny_language_model(jax.random.key(0), config)
    raw = np.zeros((256, 256 // block * size), np.uint8)
    path = write_tiny_gguf(
        tmp_path / "iq.gguf", lm, raw_tensors={"blk.0.ffn_up.weight": (raw, Q.IQ2_XXS)}
    )
    with pytest.raises(ModelLoadError, match="blk.0.ffn_up.weight uses quantization type IQ2_XXS"):
        LanguageModel.from_gguf(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ModelLoadError, match="not found.*nothing.gguf"):
        LanguageModel.load(tmp_path / "nothing.gguf")


def test_corrupt_file_is_reported(tmp_path):
    path = tmp_path / "corrupt.gguf"
    path.write_bytes(b"GGUF" + bytes(range(200)))
    with pytest.raises(ModelLoadError, match="not a readable GGUF file"):
        LanguageModel.from_gguf(path)


def test_truncated_file_is_reported(tiny_lm, tmp_path):
    path = write_tiny_gguf(tmp_path / "tiny.gguf", tiny_lm)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError):
        LanguageModel.from_gguf(path)


def test_unknown_architecture_is_named(tiny_lm, tmp_path):
    path = write_tiny_gguf(tmp_path / "gpt.gguf", tiny_lm, architecture="gptneox")
    with pytest.raises(ModelLoadError, match="unknown architecture 'gptneox'"):
        LanguageModel.from_gguf(path)
