"""The flat public API: `import ppl` is cheap, every documented name resolves, and the names
that type checkers see are the names that load."""

from __future__ import annotations

import ast
import subprocess
import sys
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

import ppl

INIT = Path(ppl.__file__)
HELPERS = {"resampling", "selection", "genealogy", "backward_smoothing"}  # not algorithms


def test_import_ppl_loads_nothing_heavy():
    code = "import sys, ppl; print(sorted(m for m in sys.modules if m.startswith(('jax', 'ppl.'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("name", ppl.__all__)
def test_every_name_resolves(name):
    value = getattr(ppl, name)
    if name in ppl.SAMPLERS:
        assert isinstance(value, types.ModuleType) and value.__name__ == f"ppl.samplers.{name}"
        if name not in HELPERS:  # every algorithm has the one face
            assert callable(value.run), name
    elif name == "METHODS":
        assert "pf" in value
    else:
        assert value.__module__.startswith(ppl.NAMES[name].rsplit(".", 1)[0]), name


def test_type_checking_block_names_the_same_entries():
    tree = ast.parse(INIT.read_text())
    block = next(
        n for n in tree.body if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test)
    )
    seen = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom)
        for alias in node.names:
            seen[alias.name] = node.module
    assert {k for k, v in seen.items() if v == "ppl.samplers"} == set(ppl.SAMPLERS)
    assert {k: v for k, v in seen.items() if v != "ppl.samplers"} == ppl.NAMES


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nuts'"):
        ppl.nuts  # noqa: B018


def test_a_bootstrap_filter_through_the_flat_api_matches_the_kalman_filter():
    from ppl.models.ssm.linear_gaussian import LinearGaussian, kalman_filter, simulate
    from ppl.models.ssm.linear_gaussian import bootstrap as linear_gaussian_bootstrap

    eye = jnp.eye(1)
    model = LinearGaussian(jnp.zeros(1), eye, 0.9 * eye, 0.5 * eye, eye, eye)
    _, ys = simulate(jax.random.key(0), model, 10)
    fk = linear_gaussian_bootstrap(model, ys)
    assert isinstance(fk, ppl.FeynmanKac)
    result = ppl.smc.run(jax.random.key(1), fk, 4000, 10)
    exact = kalman_filter(model, ys).log_likelihood
    ess = ppl.effective_sample_size(result.log_weights[-1])
    assert float(ess) > 100
    assert abs(float(result.log_evidence - exact)) < 0.2
