"""Hugging Face checkpoint directories: a round trip of our own weights, and (when PyTorch and
transformers are installed) logits of transformers' own Llama, Mistral and Qwen2 implementations."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

from ppl.models.lm import LanguageModel, ModelLoadError
from ppl.models.lm.tiny import tiny_config, tiny_language_model

TOKENS = [5, 17, 99, 3, 250, 8, 8, 41, 259, 260, 1, 2]


def write_hf_directory(directory: Path, lm: LanguageModel) -> Path:
    """Save `lm` in the Hugging Face layout: config.json, model.safetensors, tokenizer files."""
    directory.mkdir(parents=True, exist_ok=True)
    c, p = lm.config, lm.params
    tensors = {"model.embed_tokens.weight": p.embed, "model.norm.weight": p.final_norm}
    if not c.tie_embeddings:
        tensors["lm_head.weight"] = np.asarray(p.lm_head).T
    names = {
        "attn_norm": "input_layernorm.weight",
        "ffn_norm": "post_attention_layernorm.weight",
        "wq": "self_attn.q_proj.weight",
        "wk": "self_attn.k_proj.weight",
        "wv": "self_attn.v_proj.weight",
        "wo": "self_attn.o_proj.weight",
        "bq": "self_attn.q_proj.bias",
        "bk": "self_attn.k_proj.bias",
        "bv": "self_attn.v_proj.bias",
        "w_gate": "mlp.gate_proj.weight",
        "w_up": "mlp.up_proj.weight",
        "w_down": "mlp.down_proj.weight",
    }
    for field, name in names.items():
        stacked = getattr(p.layers, field)
        for i in range(c.num_layers) if stacked is not None else ():
            value = np.asarray(stacked[i])
            tensors[f"model.layers.{i}.{name}"] = value.T if value.ndim == 2 else value
    save_file(
        {k: np.ascontiguousarray(v, np.float32) for k, v in tensors.items()},
        str(directory / "model.safetensors"),
    )
    config = {
        "model_type": c.architecture,
        "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_layers,
        "num_attention_heads": c.num_heads,
        "num_key_value_heads": c.num_kv_heads,
        "head_dim": c.head_dim,
        "rms_norm_eps": c.rms_norm_eps,
        "rope_theta": 10000.0,
        "max_position_embeddings": c.context_length,
        "tie_word_embeddings": c.tie_embeddings,
    }
    (directory / "config.json").write_text(json.dumps(config))
    write_tokenizer_files(directory, lm)
    return directory


def write_tokenizer_files(directory: Path, lm: LanguageModel) -> None:
    lm.tokenizer.backend.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "chat_template": lm.tokenizer.chat_template,
                "eos_token": "<|eos|>",
                "bos_token": "<|bos|>",
            }
        )
    )


@pytest.mark.parametrize("fixture", ["tiny_lm", "tiny_qwen_lm"])
def test_round_trip_reproduces_the_model(fixture, request, tmp_path):
    lm = request.getfixturevalue(fixture)
    loaded = LanguageModel.load(write_hf_directory(tmp_path / "ckpt", lm))
    assert loaded.config == lm.config
    np.testing.assert_allclose(loaded.logits(TOKENS), lm.logits(TOKENS), rtol=1e-6, atol=1e-6)
    assert loaded.tokenizer.eos_token_ids == lm.tokenizer.eos_token_ids
    assert loaded.tokenizer.apply_chat_template([{"role": "user", "content": "x"}]) == (
        lm.tokenizer.apply_chat_template([{"role": "user", "content": "x"}])
    )


def test_missing_pieces_are_named(tiny_lm, tmp_path):
    directory = write_hf_directory(tmp_path / "ckpt", tiny_lm)
    (directory / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match=r"no \*.safetensors files"):
        LanguageModel.load(directory)
    (directory / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(ModelLoadError, match="unknown architecture 'gpt2'"):
        LanguageModel.load(directory)
    (directory / "config.json").unlink()
    with pytest.raises(ModelLoadError, match="no config.json"):
        LanguageModel.load(directory)


def test_corrupt_safetensors_is_reported(tiny_lm, tmp_path):
    directory = write_hf_directory(tmp_path / "ckpt", tiny_lm)
    (directory / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ModelLoadError, match="not a readable safetensors file"):
        LanguageModel.load(directory)


# --- against transformers' own implementations (an independent reference) ----------------

HF_CASES = {
    "llama-tied": {"model_type": "llama", "tie_word_embeddings": True},
    "llama3-rope-scaling": {
        "model_type": "llama",
        "tie_word_embeddings": False,
        "rope_theta": 500000.0,
        "rope_scaling": {
            "rope_type": "llama3",
            "factor": 32.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
    },
    "qwen2-biases": {"model_type": "qwen2", "tie_word_embeddings": False},
    # a window longer than the test's 48 tokens: the context is capped at 64, logits agree
    "mistral-sliding-window": {
        "model_type": "mistral",
        "tie_word_embeddings": False,
        "sliding_window": 64,
    },
}


@pytest.mark.reference
@pytest.mark.parametrize("case", sorted(HF_CASES))
def test_logits_match_transformers(case, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    settings = dict(HF_CASES[case])
    model_type = settings.pop("model_type")
    config_cls = {
        "llama": transformers.LlamaConfig,
        "mistral": transformers.MistralConfig,
        "qwen2": transformers.Qwen2Config,
    }[model_type]
    model_cls = {
        "llama": transformers.LlamaForCausalLM,
        "mistral": transformers.MistralForCausalLM,
        "qwen2": transformers.Qwen2ForCausalLM,
    }
    tiny = tiny_config()
    hf_config = config_cls(
        vocab_size=tiny.vocab_size,
        hidden_size=tiny.hidden_size,
        intermediate_size=tiny.intermediate_size,
        num_hidden_layers=tiny.num_layers,
        num_attention_heads=tiny.num_heads,
        num_key_value_heads=tiny.num_kv_heads,
        max_position_embeddings=tiny.context_length,
        rms_norm_eps=1e-5,
        **settings,
    )
    torch.manual_seed(0)
    model = model_cls[model_type](hf_config).eval()
    with torch.no_grad():
        for parameter in model.parameters():  # larger than the default init, for a real test
            parameter.normal_(0.0, 0.2)
    directory = tmp_path / case
    model.save_pretrained(directory)
    write_tokenizer_files(directory, tiny_language_model(jax.random.key(0)))
    ours = LanguageModel.load(directory)
    assert ours.config.architecture == model_type
    with torch.no_grad():
        expected = model(torch.tensor([TOKENS * 4])).logits[0].numpy()
    actual = np.asarray(ours.logits(TOKENS * 4))
    scale = np.abs(expected).max()
    assert np.abs(actual - expected).max() / scale < 1e-4
