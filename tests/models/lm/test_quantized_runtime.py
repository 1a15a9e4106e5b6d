"""Quantized weights in the runtime: GGUF matrices kept in their block layout, multiplied by the
`qmatmul` kernel, against the same file loaded with every tensor dequantized to float32."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from ppl.models.lm import LanguageModel, SamplingParams
from ppl.models.lm.params import MATRIX_FIELDS, quantized_formats
from ppl.models.lm.qmatmul import QuantizedWeight
from ppl.models.lm.tiny import tiny_config, tiny_language_model
from tests.models.lm.gguf_fixtures import Q, write_tiny_gguf
from tests.models.lm.test_gguf_loader import _k_quant_bytes

TOKENS = [5, 17, 99, 3, 250, 8, 8, 41, 259]


def both(path) -> tuple[LanguageModel, LanguageModel]:
    return LanguageModel.from_gguf(path, cache=False), LanguageModel.from_gguf(
        path, cache=False, weights="float"
    )


def greedy(lm: LanguageModel, prompts: list[str], tokens: int) -> list[list[int]]:
    out = lm.generate(
        jax.random.key(0), prompts, max_new_tokens=tokens, sampling=SamplingParams(0.0)
    )
    return out.token_ids


@pytest.mark.parametrize("kind", [Q.Q8_0, Q.Q4_0, Q.Q4_1])
@pytest.mark.parametrize("fixture", ["tiny_lm", "tiny_qwen_lm"])
def test_quantized_logits_equal_the_dequantized_model(request, tmp_path, kind, fixture):
    """Llama's rotary row permute and Qwen2's untied head and biases, in each 32-block format."""
    path = write_tiny_gguf(tmp_path / "m.gguf", request.getfixturevalue(fixture), kind)
    quantized, float_lm = both(path)
    expected = {f"layers.{f}": kind.name for f in MATRIX_FIELDS} | {"embed": kind.name}
    if not quantized.config.tie_embeddings:
        expected["lm_head"] = kind.name
    assert quantized_formats(quantized.params) == expected
    assert quantized_formats(float_lm.params) == {}
    np.testing.assert_allclose(
        quantized.logits(TOKENS), float_lm.logits(TOKENS), rtol=1e-5, atol=1e-5
    )
    prompts = ["the 12", "ab"]
    assert greedy(quantized, prompts, 12) == greedy(float_lm, prompts, 12)


def test_k_quant_stacks_stay_quantized(tmp_path):
    """Q4_K and Q6_K (super-blocks of 256) on every layer's MLP; attention stays float32."""
    config = tiny_config(hidden_size=256, intermediate_size=256, num_heads=8, head_dim=32)
    lm = tiny_language_model(jax.random.key(0), config)
    raw = {}
    for i in range(config.num_layers):
        raw[f"blk.{i}.ffn_up.weight"] = (_k_quant_bytes(Q.Q4_K, 256, seed=i) // 4, Q.Q4_K)
        raw[f"blk.{i}.ffn_gate.weight"] = (_k_quant_bytes(Q.Q6_K, 256, seed=10 + i), Q.Q6_K)
    path = write_tiny_gguf(tmp_path / "k.gguf", lm, raw_tensors=raw)
    quantized, float_lm = both(path)
    assert quantized_formats(quantized.params) == {
        "layers.w_up": "Q4_K",
        "layers.w_gate": "Q6_K",
    }
    reference = np.asarray(float_lm.logits(TOKENS))
    assert np.isfinite(reference).all()
    np.testing.assert_allclose(quantized.logits(TOKENS), reference, rtol=1e-4, atol=1e-4)


def test_a_stack_mixing_formats_is_dequantized(tmp_path):
    """One layer's Q4_K among float32 layers: that parameter loads as float, the others stay."""
    config = tiny_config(hidden_size=256, intermediate_size=256, num_heads=8, head_dim=32)
    lm = tiny_language_model(jax.random.key(0), config)
    raw = {"blk.0.ffn_up.weight": (_k_quant_bytes(Q.Q4_K, 256, seed=1), Q.Q4_K)}
    path = write_tiny_gguf(tmp_path / "mixed.gguf", lm, matrix_type=Q.Q8_0, raw_tensors=raw)
    quantized, float_lm = both(path)
    assert not isinstance(quantized.params.layers.w_up, QuantizedWeight)
    assert isinstance(quantized.params.layers.w_gate, QuantizedWeight)
    np.testing.assert_allclose(
        quantized.logits(TOKENS), float_lm.logits(TOKENS), rtol=1e-4, atol=1e-4
    )


def test_bfloat16_activations_over_quantized_weights(tiny_lm, tmp_path):
    path = write_tiny_gguf(tmp_path / "m.gguf", tiny_lm, Q.Q8_0)
    bf16 = LanguageModel.from_gguf(path, dtype="bfloat16", cache=False)
    assert bf16.params.layers.wq.codes.dtype == np.int8  # the codes are not cast
    assert bf16.params.final_norm.dtype == bf16.dtype
    reference = LanguageModel.from_gguf(path, cache=False).logits(TOKENS)
    np.testing.assert_allclose(bf16.logits(TOKENS), reference, rtol=0.1, atol=0.15)


def test_unknown_weights_option_is_named(tiny_lm, tmp_path):
    path = write_tiny_gguf(tmp_path / "m.gguf", tiny_lm, Q.Q8_0)
    with pytest.raises(ValueError, match=r"weights must be one of \('quantized', 'float'\)"):
        LanguageModel.from_gguf(path, weights="int4")


@pytest.mark.default_model
def test_default_model_quantized_matches_float32_and_fits_in_the_file(
    default_lm, default_model_path
):
    """SmolLM2's Q4_1 layers and Q8_0 embedding kept quantized: the greedy texts of the float32
    path, logits within float32 summation error, and resident weights at most 1.3x the GGUF."""
    path = default_model_path
    float_lm = LanguageModel.from_gguf(path, cache=False, weights="float")
    assert quantized_formats(default_lm.params)["layers.wq"] == "Q4_1"
    assert quantized_formats(default_lm.params)["embed"] == "Q8_0"
    prompts = ["The capital of France is", "def fibonacci(n):", "Once upon a time,"]
    assert greedy(default_lm, prompts, 24) == greedy(float_lm, prompts, 24)
    ids = default_lm.tokenizer.encode("Sequential Monte Carlo methods approximate")
    expected = np.asarray(float_lm.logits(ids))
    np.testing.assert_allclose(default_lm.logits(ids), expected, rtol=0, atol=1e-3)
    resident = sum(int(leaf.nbytes) for leaf in jax.tree.leaves(default_lm.params))
    assert resident <= 1.3 * path.stat().st_size, (resident, path.stat().st_size)
