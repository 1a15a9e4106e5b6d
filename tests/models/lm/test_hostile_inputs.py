"""Hostile model files and runtime inputs (issue 18): each runs the real loader or the real CLI
and checks the outcome and the message."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import gguf
import numpy as np
import pytest

from ppl.experiments.cli import main
from ppl.models.lm import LanguageModel, ModelLoadError, SamplingParams
from ppl.models.lm.default_model import verify_sha256
from tests.models.lm.gguf_fixtures import write_tiny_gguf
from tests.models.lm.test_safetensors_loader import write_hf_directory

V = gguf.GGUFValueType
LOOP = "{% for i in range(99999) %}{% for j in range(99999) %}x{% endfor %}{% endfor %}"


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("template", "message"),
    [
        (LOOP, "renders over 1000000 characters"),
        ("{% for i in range(10**9) %}x{% endfor %}", "exceeds 100000"),
        ("{{ raise_exception('no system role') }}", "raised an error while rendering: no system"),
        ("{% for x in %}", "does not parse"),
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "tripped the jinja2 sandbox"),
        ("{{ messages.append(1) }}", "tripped the jinja2 sandbox"),
    ],
)
def test_hostile_chat_template_is_a_clear_error(tiny_lm, tmp_path, capsys, template, message):
    path = write_tiny_gguf(tmp_path / "t.gguf", tiny_lm, chat_template=template)
    start = time.monotonic()
    code, _, err = run_cli(capsys, "generate", "hi", "--chat", "--model", str(path))
    assert time.monotonic() - start < 20  # the loop alone would run for hours
    assert code == 2
    assert f"ppl generate: error: the chat template (tokenizer.chat_template) of {path}" in err
    assert message in err


def test_a_looping_template_fails_within_about_a_second(tiny_lm, tmp_path):
    lm = LanguageModel.from_gguf(write_tiny_gguf(tmp_path / "t.gguf", tiny_lm, chat_template=LOOP))
    start = time.monotonic()
    with pytest.raises(ValueError, match="renders over 1000000 characters"):
        lm.tokenizer.apply_chat_template([{"role": "user", "content": "hi"}])
    assert time.monotonic() - start < 3


def test_a_slow_template_hits_the_time_limit(tiny_lm, tmp_path):
    slow = "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}.{% endfor %}"
    lm = LanguageModel.from_gguf(write_tiny_gguf(tmp_path / "t.gguf", tiny_lm, chat_template=slow))
    start = time.monotonic()
    with pytest.raises(ValueError, match=r"took over 1.0 s to render"):
        lm.tokenizer.apply_chat_template([{"role": "user", "content": "hi"}])
    assert time.monotonic() - start < 5


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (
            "llama.attention.head_count",
            (0, V.UINT32),
            "head_count must be a positive integer, got 0",
        ),
        ("llama.attention.head_count", (3, V.UINT32), "head count 3 does not divide the width"),
        (
            "llama.block_count",
            (-2, V.INT32),
            "llama.block_count must be a positive integer, got -2",
        ),
        (
            "llama.embedding_length",
            ("64", V.STRING),
            "embedding_length must be a positive integer, got '64'",
        ),
        (
            "llama.feed_forward_length",
            ([1, 2], V.ARRAY),
            "feed_forward_length must be a positive integer, got [1, 2]",
        ),
        (
            "llama.context_length",
            (2.5, V.FLOAT32),
            "context_length must be a positive integer, got 2.5",
        ),
        (
            "llama.attention.layer_norm_rms_epsilon",
            (math.nan, V.FLOAT32),
            "layer_norm_rms_epsilon must be a finite number, got nan",
        ),
    ],
)
def test_bad_gguf_config_names_the_key_and_value(tiny_lm, tmp_path, capsys, key, value, message):
    path = write_tiny_gguf(tmp_path / "c.gguf", tiny_lm, metadata={key: value})
    code, _, err = run_cli(capsys, "generate", "hi", "--model", str(path))
    assert code == 2
    assert f"ppl generate: error: {path}: " in err and message in err, err


def test_missing_gguf_key_is_named(tiny_lm, tmp_path):
    path = write_tiny_gguf(tmp_path / "m.gguf", tiny_lm)
    reader = gguf.GGUFReader(str(path))
    fields = {name: field.contents() for name, field in reader.fields.items()}
    del fields["llama.block_count"]
    from ppl.models.lm import architectures

    with pytest.raises(ModelLoadError, match="GGUF metadata lacks llama.block_count"):
        architectures.get("llama").config_from_gguf(fields)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("num_attention_heads", 0, "num_attention_heads must be a positive integer, got 0"),
        ("num_attention_heads", 3, "head count 3 does not divide the width"),
        ("hidden_size", "64", "hidden_size must be a positive integer, got '64'"),
        ("num_hidden_layers", [2], "num_hidden_layers must be a positive integer, got [2]"),
        ("intermediate_size", -1, "intermediate_size must be a positive integer, got -1"),
        ("vocab_size", None, "config.json lacks vocab_size"),
        ("rms_norm_eps", "x", "rms_norm_eps must be a finite number, got 'x'"),
    ],
)
def test_bad_hf_config_names_the_key_and_value(tiny_lm, tmp_path, key, value, message):
    directory = write_hf_directory(tmp_path / "hf", tiny_lm)
    config = json.loads((directory / "config.json").read_text())
    config[key] = value
    config.pop("head_dim", None)  # derived from hidden_size / num_attention_heads
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="config.json") as error:
        LanguageModel.load(directory)
    assert message in str(error.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_gguf_weight_names_the_tensor(tiny_lm, tmp_path, capsys, bad):
    embed = np.asarray(tiny_lm.params.embed, np.float32).copy()
    embed[3, 1] = bad
    path = write_tiny_gguf(
        tmp_path / "n.gguf",
        tiny_lm,
        raw_tensors={"token_embd.weight": (embed, gguf.GGMLQuantizationType.F32)},
    )
    code, _, err = run_cli(capsys, "generate", "hi", "--model", str(path))
    assert code == 2
    assert "tensor token_embd.weight holds 1 NaN or infinite values" in err


def test_non_finite_safetensors_weight_names_the_tensor(tiny_lm, tmp_path):
    from safetensors.numpy import load_file, save_file

    directory = write_hf_directory(tmp_path / "hf", tiny_lm)
    tensors = load_file(directory / "model.safetensors")
    tensors["model.norm.weight"] = np.full_like(tensors["model.norm.weight"], np.nan)
    save_file(tensors, directory / "model.safetensors")
    with pytest.raises(ModelLoadError, match=r"tensor model.norm.weight holds \d+ NaN"):
        LanguageModel.load(directory)


def test_generation_with_nan_logprobs_raises(tiny_lm):
    import jax

    params = tiny_lm.params._replace(final_norm=tiny_lm.params.final_norm * np.nan)
    lm = LanguageModel(tiny_lm.config, params, tiny_lm.tokenizer, name="nan-model")
    with pytest.raises(ValueError, match="nan-model produced NaN log-probabilities in 2 of 2"):
        lm.generate(jax.random.key(0), ["hi"], max_new_tokens=2, num_samples=2)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--temperature", "nan"], "temperature must be a finite number >= 0, got nan"),
        (["--temperature", "inf"], "temperature must be a finite number >= 0, got inf"),
        (["--temperature", "-1"], "temperature must be a finite number >= 0, got -1.0"),
        (["--top-p", "nan"], "top_p must be in (0, 1], got nan"),
        (["--top-p", "0"], "top_p must be in (0, 1], got 0.0"),
        (["--top-p", "1.5"], "top_p must be in (0, 1], got 1.5"),
        (["--top-k", "-3"], "top_k must be an integer >= 1, got -3"),
        (["--max-new-tokens", "0"], "--max-new-tokens must be >= 1, got 0"),
        (["--max-new-tokens", "-5"], "--max-new-tokens must be >= 1, got -5"),
        (["--num-samples", "0"], "--num-samples must be >= 1, got 0"),
        (["--seed", "-1"], "--seed must be in [0, 2**32), got -1"),
        (["--seed", str(10**23)], "--seed must be in [0, 2**32)"),
    ],
)
def test_bad_generate_settings_exit_2(capsys, argv, message):
    code, _, err = run_cli(capsys, "generate", "hi", "--model", "/nonexistent.gguf", *argv)
    assert code == 2
    assert err.startswith("ppl generate: error: ") and message in err, err


def test_seed_as_a_float_is_rejected_by_argparse(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["generate", "hi", "--seed", "1e23"])
    assert exit_.value.code == 2
    assert "invalid int value: '1e23'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("prompt", "message"),
    [("", "the prompt is empty"), ("caf\udce9", "the prompt is not valid UTF-8")],
)
def test_empty_or_undecodable_prompt_exits_2(capsys, prompt, message):
    code, _, err = run_cli(capsys, "generate", prompt, "--model", "/nonexistent.gguf")
    assert code == 2
    assert message in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--batch", "0"], "--batch must be >= 1, got 0"),
        (["--batch", "1,x"], "--batch must be comma-separated integers, got '1,x'"),
        (["--new-tokens", "0"], "--new-tokens must be >= 1, got 0"),
        (["--new-tokens", "-4"], "--new-tokens must be >= 1, got -4"),
        (["--prompt-tokens", "0"], "--prompt-tokens must be >= 1, got 0"),
    ],
)
def test_bad_bench_lm_settings_exit_2(capsys, argv, message):
    code, _, err = run_cli(capsys, "bench-lm", "--model", "/nonexistent.gguf", *argv)
    assert code == 2
    assert err.startswith("ppl bench-lm: error: ") and message in err, err


@pytest.mark.parametrize("bad", [math.nan, math.inf, -0.5])
def test_sampling_params_use_isfinite(bad):
    with pytest.raises(ValueError, match="temperature must be a finite number"):
        SamplingParams(bad)


def test_sha256_mismatch_says_to_delete_and_refetch(tmp_path):
    copy = tmp_path / "model.gguf"
    copy.write_bytes(b"not the model")
    with pytest.raises(ModelLoadError, match="delete it and run `ppl fetch-model`") as error:
        verify_sha256(copy)
    assert str(copy) in str(error.value) and "SHA-256" in str(error.value)
    assert not (tmp_path / "model.gguf.sha256-ok").exists()


def test_verified_file_is_remembered_by_size_and_mtime(tmp_path):
    import hashlib

    copy = tmp_path / "model.gguf"
    copy.write_bytes(b"weights")
    digest = hashlib.sha256(b"weights").hexdigest()
    assert verify_sha256(copy, digest) == copy
    record = Path(str(copy) + ".sha256-ok")
    assert record.read_text().startswith(digest)
    copy.write_bytes(b"altered")  # new size and mtime: hashed again, and caught
    with pytest.raises(ModelLoadError, match="not the pinned"):
        verify_sha256(copy, digest)


def test_a_cache_larger_than_the_device_is_refused_before_it_is_allocated():
    import jax

    from ppl.models.lm.cache import gather_cache, init_cache, memory_limit
    from ppl.models.lm.tiny import alphabet_language_model

    config = alphabet_language_model(jax.random.key(0)).config
    per_row = 2 * config.num_layers * config.num_kv_heads * 16 * config.head_dim * 4
    huge = memory_limit() // per_row + 1
    with pytest.raises(ValueError, match=rf"a KV cache for {huge} sequences of 16 positions"):
        init_cache(config, huge, 16)
    small = init_cache(config, 2, 16)
    with pytest.raises(ValueError, match="use fewer samples or particles"):
        gather_cache(small, jax.numpy.zeros((huge,), jax.numpy.int32))


def test_a_silent_loop_or_a_recursive_macro_is_stopped():
    """Loops that write nothing are bounded by the time check inside `range`; a macro that
    calls itself is a clear error, not a RecursionError traceback."""
    from ppl.models.lm.tokenizer import render_template

    start = time.monotonic()
    silent = "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}"
    with pytest.raises(ValueError, match="T raised an error while rendering: took over 1.0 s"):
        render_template(silent, "T")
    assert time.monotonic() - start < 5
    with pytest.raises(ValueError, match="T failed while rendering: RecursionError"):
        render_template("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "T")
    usual = (
        "{{ range(3)|list }} {{ range(3)|length }} "
        "{% for i in range(2) %}{{ loop.index }}{% endfor %}"
    )
    assert render_template(usual, "T") == "[0, 1, 2] 3 12"
