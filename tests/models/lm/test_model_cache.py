"""Start-up caches: converted GGUFs on disk (hit, new content, corrupt entry, unwritable
directory, bypass) and the switch of JAX's persistent compilation cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from ppl.models.lm import LanguageModel, SamplingParams, model_cache
from ppl.models.lm.default_model import cache_dir
from ppl.models.lm.qmatmul import QuantizedWeight
from tests.models.lm.gguf_fixtures import Q, write_tiny_gguf

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def user_cache(tmp_path, monkeypatch):
    """`PPL_JAX_CACHE` in a temporary directory, read as the real cache location."""
    monkeypatch.setattr(model_cache, "cache_dir", cache_dir)  # undo the session's redirect
    monkeypatch.setenv("PPL_JAX_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def gguf_path(tmp_path, tiny_lm):
    return write_tiny_gguf(tmp_path / "tiny.gguf", tiny_lm, matrix_type=Q.Q8_0)


def entries(cache: Path) -> list[Path]:
    return sorted(p for p in (cache / "converted").glob("*-v*") if p.is_dir())


def greedy(lm: LanguageModel) -> list[int]:
    out = lm.generate(jax.random.key(0), ["the 12"], max_new_tokens=8, sampling=SamplingParams(0))
    return out.token_ids[0]


def assert_same_model(a: LanguageModel, b: LanguageModel) -> None:
    assert a.config == b.config
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))  # bitwise: no tolerance
    assert greedy(a) == greedy(b)
    assert a.tokenizer.encode("the 12") == b.tokenizer.encode("the 12")
    assert a.tokenizer.chat_template == b.tokenizer.chat_template


def test_second_load_comes_from_the_cache_and_is_the_same_model(user_cache, gguf_path, recwarn):
    first = LanguageModel.from_gguf(gguf_path)
    [entry] = entries(user_cache)
    assert entry.name.endswith(f"-v{model_cache.FORMAT_VERSION}-quantized")
    assert (entry / "manifest.json").is_file() and (entry / "layers.wq.codes.npy").is_file()
    _, params, _ = model_cache.load_gguf_cached(gguf_path, quantized=True)
    assert isinstance(params.layers.wq, QuantizedWeight) and params.layers.wq.format == "Q8_0"
    assert isinstance(params.layers.wq.codes, np.memmap)  # read from the entry, not converted
    second = LanguageModel.from_gguf(gguf_path)
    assert_same_model(first, second)
    assert_same_model(first, LanguageModel.from_gguf(gguf_path, cache=False))
    assert "tiny.gguf" in second.tokenizer.template_name
    assert not recwarn.list


def test_float_and_quantized_conversions_are_separate_entries(user_cache, gguf_path):
    digest = model_cache.gguf_sha256(gguf_path)
    stale = user_cache / "converted" / f"{digest}-v{model_cache.FORMAT_VERSION - 1}"
    stale.mkdir(parents=True)  # an older format's entry: removed when the new one is written
    quantized = LanguageModel.from_gguf(gguf_path)
    assert not stale.exists()
    float_lm = LanguageModel.from_gguf(gguf_path, weights="float")
    assert sorted(e.name.rsplit("-", 1)[1] for e in entries(user_cache)) == ["float", "quantized"]
    _, params, _ = model_cache.load_gguf_cached(gguf_path)
    assert isinstance(params.layers.wq, np.memmap)
    assert_same_model(float_lm, LanguageModel.from_gguf(gguf_path, weights="float"))
    tokens = [5, 17, 99, 3]
    np.testing.assert_allclose(quantized.logits(tokens), float_lm.logits(tokens), atol=1e-4)


def test_changed_content_under_the_same_name_gets_a_new_entry(user_cache, gguf_path, tiny_lm):
    before = np.array(LanguageModel.from_gguf(gguf_path).params.final_norm)  # a copy
    size, stat = gguf_path.stat().st_size, gguf_path.stat()
    altered = tiny_lm.params._replace(final_norm=np.asarray(tiny_lm.params.final_norm) + 1.0)
    tiny_lm_altered = LanguageModel(tiny_lm.config, altered, tiny_lm.tokenizer)
    write_tiny_gguf(gguf_path, tiny_lm_altered, matrix_type=Q.Q8_0)
    os.utime(gguf_path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert gguf_path.stat().st_size == size
    after = LanguageModel.from_gguf(gguf_path)
    assert len(entries(user_cache)) == 2
    np.testing.assert_array_equal(after.params.final_norm, before + 1.0)


@pytest.mark.parametrize("damage", ["truncate", "garble_header", "drop_manifest"])
def test_a_damaged_entry_is_rebuilt_with_a_warning(user_cache, gguf_path, damage):
    reference = LanguageModel.from_gguf(gguf_path, cache=False)
    LanguageModel.from_gguf(gguf_path)
    [entry] = entries(user_cache)
    wq = entry / "layers.wq.codes.npy"
    if damage == "truncate":
        wq.write_bytes(wq.read_bytes()[:-100])
        expected = "layers.wq.codes.npy has"
    elif damage == "garble_header":
        wq.write_bytes(b"\0" * wq.stat().st_size)
        expected = "layers.wq.codes.npy is not a readable .npy file"
    else:
        (entry / "manifest.json").unlink()
        expected = "manifest.json"
    with pytest.warns(UserWarning, match="is unreadable .*; converting the GGUF again") as caught:
        rebuilt = LanguageModel.from_gguf(gguf_path)
    assert str(entry) in str(caught[0].message) and expected in str(caught[0].message)
    assert_same_model(rebuilt, reference)
    [again] = entries(user_cache)
    assert (again / "manifest.json").is_file() and wq.stat().st_size > 100


def test_an_unwritable_cache_directory_falls_back_with_one_warning(
    tmp_path, gguf_path, monkeypatch
):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setattr(model_cache, "cache_dir", lambda: blocker / "cache")
    with pytest.warns(UserWarning) as caught:
        lm = LanguageModel.from_gguf(gguf_path)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "cannot cache the converted" in message and "converted again on the next load" in message
    assert_same_model(lm, LanguageModel.from_gguf(gguf_path, cache=False))


def test_cache_false_bypasses_the_cache(user_cache, gguf_path):
    LanguageModel.from_gguf(gguf_path, cache=False)
    LanguageModel.load(gguf_path, cache=False)
    assert not (user_cache / "converted").exists()


def test_bad_files_keep_the_loaders_errors(user_cache, tmp_path, tiny_lm):
    from ppl.models.lm import ModelLoadError

    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(b"GGUF" + b"\xff" * 64)
    with pytest.raises(ModelLoadError, match="is not a readable GGUF file"):
        LanguageModel.from_gguf(corrupt)
    with pytest.raises(ModelLoadError, match="model file not found"):
        LanguageModel.from_gguf(tmp_path / "missing.gguf")
    nan = tiny_lm.params._replace(final_norm=np.full_like(tiny_lm.params.final_norm, np.nan))
    path = write_tiny_gguf(
        tmp_path / "nan.gguf", LanguageModel(tiny_lm.config, nan, tiny_lm.tokenizer)
    )
    with pytest.raises(ModelLoadError, match="tensor output_norm.weight holds 32 NaN"):
        LanguageModel.from_gguf(path)
    assert entries(user_cache) == []


def _subprocess(code: str, cache: Path, **env: str) -> str:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "PPL_JAX_CACHE": str(cache)}
    environment.pop(model_cache.NO_COMPILATION_CACHE_ENV, None)
    environment.update(env)
    result = subprocess.run(
        [sys.executable, "-c", code], env=environment, capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


CLI_CACHE_DIR = (
    "import jax\n"
    "from ppl.experiments import cli\n"
    "cli.main(['generate', 'x', '--model', '/nonexistent.gguf'])\n"
    "print(jax.config.values['jax_compilation_cache_dir'])\n"
)


def test_the_command_line_turns_the_compilation_cache_on_and_the_env_var_off(tmp_path):
    assert _subprocess(CLI_CACHE_DIR, tmp_path) == str(tmp_path / "jax")
    assert (tmp_path / "jax").is_dir()
    off = _subprocess(CLI_CACHE_DIR, tmp_path / "off", PPL_JAX_NO_COMPILATION_CACHE="1")
    assert off == "None"
    assert not (tmp_path / "off" / "jax").exists()


def test_a_second_process_hits_the_compilation_cache(tmp_path):
    code = (
        "import collections, jax\n"
        "from ppl.models.lm.model_cache import enable_compilation_cache\n"
        "events = collections.Counter()\n"
        "jax.monitoring.register_event_listener(lambda name, **_: events.update([name]))\n"
        "print(enable_compilation_cache())\n"
        "jax.jit(lambda x: x * 2 + 1)(jax.numpy.ones(3)).block_until_ready()\n"
        "print(events['/jax/compilation_cache/cache_hits'], "
        "events['/jax/compilation_cache/cache_misses'])\n"
    )
    first, second = (_subprocess(code, tmp_path).splitlines() for _ in range(2))
    assert first[0] == second[0] == str(tmp_path / "jax")
    assert first[1].split()[0] == "0" and int(first[1].split()[1]) >= 1
    assert int(second[1].split()[0]) >= 1 and second[1].split()[1] == "0"


def test_enable_compilation_cache_warns_on_an_unusable_directory(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code = (
        "import warnings; warnings.simplefilter('always')\n"
        "from ppl.models.lm.model_cache import enable_compilation_cache\n"
        f"print(enable_compilation_cache({str(blocker / 'jax')!r}))\n"
    )
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", code], env=environment, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "None"
    assert "for JAX's compilation cache" in result.stderr
    assert "compiling every run" in result.stderr
