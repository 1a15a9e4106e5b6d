"""Start-up caches: converted GGUF models on disk, and JAX's persistent compilation cache.

Converting a GGUF (parsing its metadata, dequantizing every tensor) takes seconds; the
result is stored once under `cache_dir()/converted/<sha256>-v<FORMAT_VERSION>-<weights>/`
(weights `quantized` or `float`): the config, the quantized formats and a manifest in
`manifest.json`, the `tokenizer.*` metadata in `tokenizer.json`, and one `.npy` file per
parameter array (`layers.wq.codes.npy`, `.scales`, `.mins` for a quantized one), opened
memory-mapped on later loads. The key is the GGUF's
SHA-256 content hash, remembered by the file's (size, mtime_ns) in `converted/hashes/` so a
file is hashed once, not once per load. An entry is written into a temporary directory and
renamed into place, so a reader sees a whole entry or none; one whose files disagree with its
manifest (a truncated file) is converted again with a warning.

`enable_compilation_cache()` points JAX's persistent compilation cache at `cache_dir()/jax`
(the `ppl` command line does so unless `PPL_JAX_NO_COMPILATION_CACHE=1`), so a second
process loads compiled prefill and decode programs instead of compiling them.

Both can be deleted at any time: `rm -rf ~/.cache/ppl-jax/converted ~/.cache/ppl-jax/jax` on
Linux (or under `$PPL_JAX_CACHE`).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ppl.models.lm.config import DecoderConfig
from ppl.models.lm.default_model import cache_dir, file_sha256, record_sha256, recorded_sha256
from ppl.models.lm.gguf_loader import convert_gguf, gguf_tokenizer
from ppl.models.lm.params import (
    LayerParams,
    Params,
    check_shapes,
    named_params,
    quantized_formats,
)
from ppl.models.lm.qmatmul import QuantizedWeight
from ppl.models.lm.tokenizer import Tokenizer

FORMAT_VERSION = 2  # bump when the layout of an entry or the conversion's output changes
NO_COMPILATION_CACHE_ENV = "PPL_JAX_NO_COMPILATION_CACHE"


def converted_dir() -> Path:
    """Where converted models are cached: `cache_dir()/converted`."""
    return cache_dir() / "converted"


def gguf_sha256(path: Path) -> str:
    """The SHA-256 of a GGUF file, remembered by its resolved path, size and mtime."""
    name = hashlib.sha256(str(path.resolve()).encode()).hexdigest()
    record = converted_dir() / "hashes" / name
    digest = recorded_sha256(path, record)
    if digest is None:
        digest = file_sha256(path)
        record_sha256(path, record, digest)
    return digest


def load_gguf_cached(
    path: str | Path, quantized: bool = False
) -> tuple[DecoderConfig, Params, Tokenizer]:
    """`load_gguf(path, quantized)`, from the converted-model cache when it holds the file's
    content, or converted and stored there (converted without storing, with a warning, when
    the cache directory is not writable)."""
    path = Path(path)
    if not path.is_file():  # load_gguf's own error
        config, params, fields = convert_gguf(path, quantized)
        return config, params, gguf_tokenizer(fields, path)
    weights = "quantized" if quantized else "float"
    entry = converted_dir() / f"{gguf_sha256(path)}-v{FORMAT_VERSION}-{weights}"
    if entry.exists():
        try:
            config, params, fields = _read_entry(entry)
        except (OSError, ValueError, KeyError, TypeError) as error:
            warnings.warn(
                f"the cached conversion {entry} of {path} is unreadable ({error}); converting "
                "the GGUF again",
                stacklevel=2,
            )
            shutil.rmtree(entry, ignore_errors=True)
        else:
            return config, params, gguf_tokenizer(fields, path)
    config, params, fields = convert_gguf(path, quantized)
    tokenizer = gguf_tokenizer(fields, path)  # an unsupported tokenizer fails before storing
    _remove_other_versions(entry)
    try:
        _write_entry(entry, config, params, fields)
    except OSError as error:
        warnings.warn(
            f"cannot cache the converted {path} in {entry.parent} ({error}); it will be "
            "converted again on the next load",
            stacklevel=2,
        )
    return config, params, tokenizer


def _remove_other_versions(entry: Path) -> None:
    """Delete the entries of the same file written by other `FORMAT_VERSION`s (stale)."""
    digest = entry.name.split("-v", 1)[0]
    for other in entry.parent.glob(f"{digest}-v*"):
        version = other.name.split("-v", 1)[1].split("-", 1)[0]
        if version != str(FORMAT_VERSION) and other.is_dir():
            shutil.rmtree(other, ignore_errors=True)


def _leaves(params: Params) -> dict[str, np.ndarray]:
    """Parameter arrays by dotted name ("embed", "layers.wq", "layers.wq.codes" for a
    quantized one); None leaves are left out."""
    arrays = {}
    for name, value in named_params(params).items():
        if isinstance(value, QuantizedWeight):
            for part in ("codes", "scales", "mins"):
                if getattr(value, part) is not None:
                    arrays[f"{name}.{part}"] = np.asarray(getattr(value, part))
        elif value is not None:
            arrays[name] = np.asarray(value)
    return arrays


def _write_entry(
    entry: Path, config: DecoderConfig, params: Params, fields: dict[str, Any]
) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    try:
        files: dict[str, int] = {}
        for name, value in _leaves(params).items():
            np.save(partial / f"{name}.npy", value, allow_pickle=False)
            files[f"{name}.npy"] = (partial / f"{name}.npy").stat().st_size
        (partial / "tokenizer.json").write_text(json.dumps(fields))
        files["tokenizer.json"] = (partial / "tokenizer.json").stat().st_size
        manifest = {
            "format": FORMAT_VERSION,
            "config": dataclasses.asdict(config),
            "quantized": quantized_formats(params),
            "files": files,
        }
        (partial / "manifest.json").write_text(json.dumps(manifest, indent=1))
        try:
            partial.rename(entry)
        except OSError:
            if not (entry / "manifest.json").is_file():
                raise
            # another process stored the same conversion first
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _read_entry(entry: Path) -> tuple[DecoderConfig, Params, dict[str, Any]]:
    """An entry's config, memory-mapped parameters and tokenizer metadata; an OSError or a
    ValueError when a file is missing or its size is not the manifest's."""
    manifest = json.loads((entry / "manifest.json").read_text())
    if manifest["format"] != FORMAT_VERSION:
        raise ValueError(f"format {manifest['format']}, expected {FORMAT_VERSION}")
    for name, size in manifest["files"].items():
        if (entry / name).stat().st_size != size:
            raise ValueError(f"{name} has {(entry / name).stat().st_size} bytes, not {size}")
    arrays: dict[str, Any] = collections.defaultdict(lambda: None)  # absent leaves are None
    for name in manifest["files"]:
        if name.endswith(".npy"):
            try:
                arrays[name.removesuffix(".npy")] = np.load(entry / name, mmap_mode="r")
            except ValueError as error:  # numpy's words (pickled data, bad header) name no file
                raise ValueError(f"{name} is not a readable .npy file") from error
    for name, kind in manifest["quantized"].items():
        arrays[name] = QuantizedWeight(
            arrays.pop(f"{name}.codes"),
            arrays.pop(f"{name}.scales"),
            arrays.pop(f"{name}.mins", None),
            kind,
        )
    layers = LayerParams(*(arrays[f"layers.{k}"] for k in LayerParams._fields))
    params = Params(
        embed=arrays["embed"],
        layers=layers,
        final_norm=arrays["final_norm"],
        lm_head=arrays["lm_head"],
        rope_inv_freq=arrays["rope_inv_freq"],
    )
    config = DecoderConfig(**manifest["config"])
    check_shapes(params, config)
    fields = json.loads((entry / "tokenizer.json").read_text())
    return config, params, fields


def enable_compilation_cache(directory: str | Path | None = None) -> Path | None:
    """Turn on JAX's persistent compilation cache in `directory` (default `cache_dir()/jax`),
    caching every compiled program; call it before the first compilation. Returns the
    directory, or None (with a warning) when it cannot be created. A directory already set
    through JAX's own `JAX_COMPILATION_CACHE_DIR` is kept."""
    import jax

    already = jax.config.values.get("jax_compilation_cache_dir")
    if already:
        return Path(already)
    target = Path(directory) if directory is not None else cache_dir() / "jax"
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        warnings.warn(
            f"cannot use {target} for JAX's compilation cache ({error}); compiling every run",
            stacklevel=2,
        )
        return None
    jax.config.update("jax_compilation_cache_dir", str(target))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return target


def compilation_cache_wanted() -> bool:
    """False when the environment sets `PPL_JAX_NO_COMPILATION_CACHE` to a non-empty value
    other than 0."""
    return os.environ.get(NO_COMPILATION_CACHE_ENV, "") in ("", "0")
