"""A non-editable install puts one top-level package, `ppl`, on the path: a research repository
with its own `models/` and `samplers/` folders neither shadows the toolkit nor is shadowed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "ppl", "samplers", "models", "experiments")

USER_SCRIPT = """
import sys
import jax, jax.numpy as jnp
import models, samplers  # the user's own packages
import ppl
from ppl.models.lm import LanguageModel
from ppl.models.ssm.linear_gaussian import LinearGaussian, bootstrap, kalman_filter, simulate
from ppl.samplers import smc

assert models.MINE and samplers.MINE
site = sys.argv[1]
for module in (ppl, ppl.models, ppl.samplers, smc):
    assert module.__file__.startswith(site), module.__file__
eye = jnp.eye(1)
model = LinearGaussian(jnp.zeros(1), eye, 0.9 * eye, 0.5 * eye, eye, eye)
_, ys = simulate(jax.random.key(0), model, 20)
result = smc.run(jax.random.key(1), bootstrap(model, ys), 2000, 20)
exact = kalman_filter(model, ys).log_likelihood
assert abs(float(result.log_evidence - exact)) < 0.5, (result.log_evidence, exact)
lm = LanguageModel.load()
print("loaded", type(lm).__name__)
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """`pip install --no-deps --target` of a copy of the sources (so the build writes nothing
    into the checkout); the dependencies come from the test environment."""
    source = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            ignore = shutil.ignore_patterns("__pycache__")
            shutil.copytree(path, source / name, symlinks=True, ignore=ignore)
        else:
            shutil.copy(path, source / name)
    site = tmp_path_factory.mktemp("site")
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"]
    command += ["--no-build-isolation", "--target", str(site), str(source)]
    subprocess.run(command, check=True, capture_output=True)
    return site


def test_one_top_level_package(installed):
    packages = {p.name for p in installed.iterdir() if (p / "__init__.py").exists()}
    assert packages == {"ppl"}
    for name in ("samplers", "models", "experiments"):
        linked = installed / "ppl" / name
        assert linked.is_dir() and not linked.is_symlink(), name  # real files in the wheel
    assert any((installed / "ppl" / "models" / "reasoning" / "organism").glob("*.safetensors"))


@pytest.mark.default_model
def test_user_packages_and_the_toolkit_side_by_side(installed, tmp_path):
    for name in ("models", "samplers"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("MINE = True\n")
    env = {**os.environ, "PYTHONPATH": str(installed)}
    run = subprocess.run(
        [sys.executable, "-c", USER_SCRIPT, str(installed)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "loaded" in run.stdout


def test_bare_folder_names_do_not_import(tmp_path):
    run = subprocess.run(
        [sys.executable, "-c", "import samplers"], cwd=ROOT, capture_output=True, text=True
    )
    assert "import as `ppl.samplers`" in run.stderr
