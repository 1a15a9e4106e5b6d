"""BlackJAX NUTS/HMC/MALA with warm-up over chains, against an exact Gaussian target."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import weakref

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppl.samplers import mcmc
from ppl.samplers.mcmc import MCMCSettings
from tests.compilations import counting_compilations

MEAN = np.array([1.0, -2.0, 0.5])
SCALES = np.array([1.0, 3.0, 0.3])
CORRELATION = np.array([[1.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 1.0]])
COVARIANCE = CORRELATION * np.outer(SCALES, SCALES)
PRECISION = jnp.asarray(np.linalg.inv(COVARIANCE), jnp.float32)


def logdensity_fn(position):
    """A correlated Gaussian on a pytree position {"a": scalar, "b": [2]}."""
    x = jnp.concatenate([position["a"][None], position["b"]]) - MEAN
    return -0.5 * x @ PRECISION @ x


def starts(num_chains):
    return {"a": jnp.zeros(num_chains), "b": jnp.zeros((num_chains, 2))}


def as_inference_data(samples):
    flat = jnp.concatenate([samples.positions["a"][..., None], samples.positions["b"]], -1)
    return az.from_dict(posterior={"x": np.asarray(flat)})


@pytest.mark.parametrize("kernel", ["nuts", "hmc", "mala"])
def test_moments_match_the_target(kernel):
    samples = mcmc.run(
        jax.random.key(0),
        logdensity_fn,
        starts(2),
        MCMCSettings(
            kernel=kernel,
            num_warmup=400,
            num_samples=1500 if kernel == "mala" else 600,
            num_integration_steps=8,
        ),
        progress=False,
    )
    data = as_inference_data(samples)
    draws = np.asarray(data.posterior["x"]).reshape(-1, 3)
    z_mean = (draws.mean(0) - MEAN) / np.asarray(az.mcse(data, method="mean")["x"])
    z_sd = (draws.std(0) - SCALES) / np.asarray(az.mcse(data, method="sd")["x"])
    assert np.all(np.abs(z_mean) < 4), z_mean
    assert np.all(np.abs(z_sd) < 4), z_sd
    assert samples.step_size.shape == (2,)
    assert samples.inverse_mass_matrix.shape == (2, 3)
    stats = set(samples.sample_stats)
    assert {"lp", "acceptance_rate"} <= stats
    if kernel != "mala":
        assert {"diverging", "energy", "n_steps"} <= stats
        # The adapted diagonal inverse mass matrix estimates the target's variances.
        np.testing.assert_allclose(samples.inverse_mass_matrix.mean(0), SCALES**2, rtol=0.5)


def test_draws_do_not_depend_on_the_progress_chunks():
    settings = MCMCSettings(kernel="hmc", num_warmup=50, num_samples=30)
    coarse = mcmc.run(
        jax.random.key(3), logdensity_fn, starts(3), settings, chunk_size=30, progress=False
    )
    fine = mcmc.run(
        jax.random.key(3), logdensity_fn, starts(3), settings, chunk_size=7, progress=False
    )
    np.testing.assert_allclose(coarse.positions["b"], fine.positions["b"], rtol=1e-5, atol=1e-5)
    assert coarse.positions["b"].shape == (3, 30, 2)


def test_without_warmup_the_chain_starts_where_it_is_told():
    samples = mcmc.run(
        jax.random.key(1),
        logdensity_fn,
        starts(1),
        MCMCSettings(kernel="mala", num_warmup=0, num_samples=5),
        progress=False,
    )
    assert samples.positions["a"].shape == (1, 5)
    assert float(samples.step_size[0]) == pytest.approx(0.1)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown kernel"):
        mcmc.run(
            jax.random.key(0),
            logdensity_fn,
            starts(1),
            MCMCSettings(kernel="gibbs"),
            progress=False,
        )
    with pytest.raises(ValueError, match="leading chain axis"):
        mcmc.run(
            jax.random.key(0),
            logdensity_fn,
            {"a": jnp.zeros(2), "b": jnp.zeros((3, 2))},
            progress=False,
        )
    with pytest.raises(ValueError, match="chain_method"):
        mcmc.run(
            jax.random.key(0),
            logdensity_fn,
            starts(1),
            MCMCSettings(chain_method="pmap"),
            progress=False,
        )


def test_parallel_chains_over_devices_match_sequential_ones():
    """Two forced host devices, one NUTS chain each, against the same chains run in turn."""
    script = textwrap.dedent(
        """
        import jax, jax.numpy as jnp, numpy as np
        from ppl.samplers import mcmc
        assert jax.local_device_count() == 2
        logdensity_fn = lambda p: -0.5 * jnp.sum((p["x"] - 1.0) ** 2 / jnp.array([1.0, 4.0]))
        starts = {"x": jnp.zeros((2, 2))}
        kw = dict(kernel="nuts", num_warmup=100, num_samples=50)
        par = mcmc.MCMCSettings(chain_method="parallel", **kw)
        seq = mcmc.MCMCSettings(chain_method="sequential", **kw)
        par = mcmc.run(jax.random.key(0), logdensity_fn, starts, par, progress=False)
        seq = mcmc.run(jax.random.key(0), logdensity_fn, starts, seq, progress=False)
        np.testing.assert_allclose(par.positions["x"], seq.positions["x"], rtol=1e-3, atol=1e-3)
        print("ok")
        """
    )
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    import os

    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ok" in result.stdout


@pytest.mark.parametrize("chain_method", ["sequential", "vectorized"])
def test_a_second_run_compiles_nothing_and_the_programs_go_with_the_density(chain_method):
    def make_density():
        precision = PRECISION

        def density(position):
            x = jnp.concatenate([position["a"][None], position["b"]]) - MEAN
            return -0.5 * x @ precision @ x

        return density

    density = make_density()
    settings = MCMCSettings(kernel="hmc", num_warmup=20, num_samples=10, chain_method=chain_method)
    mcmc.run(jax.random.key(0), density, starts(2), settings, progress=False)
    with counting_compilations() as compiled:
        mcmc.run(jax.random.key(1), density, starts(2), settings, progress=False)
    assert compiled == [], "a warm run recompiled"
    density_ref = weakref.ref(density)
    del density
    gc.collect()
    assert density_ref() is None, "the compiled programs kept the log density alive"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(num_samples=0), "num_samples >= 1"),
        (dict(num_warmup=-1), "num_warmup >= 0"),
        (dict(num_warmup=1.5), "num_warmup must be an integer, got 1.5"),
        (dict(target_acceptance_rate=float("nan")), "0 < target_acceptance_rate < 1, got nan"),
        (dict(target_acceptance_rate=1.0), "0 < target_acceptance_rate < 1, got 1.0"),
        (dict(max_tree_depth=0), "1 <= max_tree_depth <= 30, got 0"),
        (dict(max_tree_depth=True), "max_tree_depth must be an integer, got True"),
        (dict(num_integration_steps=0), "num_integration_steps >= 1, got 0"),
        (dict(kernel="mala", dense_mass=True), "dense_mass needs a kernel with a mass matrix"),
        (dict(max_reinitializations=-1), "max_reinitializations >= 0, got -1"),
    ],
)
def test_bad_settings_are_refused_with_their_value(settings, message):
    with pytest.raises(ValueError) as caught:
        MCMCSettings(**settings)
    assert message in str(caught.value)


def test_zero_chains_are_refused():
    with pytest.raises(ValueError, match="leading chain axis, of length >= 1"):
        mcmc.run(jax.random.key(0), logdensity_fn, starts(0), progress=False)


def test_tree_depth_is_capped_and_a_dense_mass_matrix_learns_the_covariance():
    settings = MCMCSettings(num_warmup=600, num_samples=200, max_tree_depth=2, dense_mass=True)
    samples = mcmc.run(jax.random.key(3), logdensity_fn, starts(2), settings, progress=False)
    assert int(samples.sample_stats["tree_depth"].max()) <= 2
    assert samples.inverse_mass_matrix.shape == (2, 3, 3)
    # The adapted inverse mass matrix estimates the covariance (Stan's regularised estimate).
    for matrix in np.asarray(samples.inverse_mass_matrix):
        np.testing.assert_allclose(matrix, COVARIANCE, rtol=0.5, atol=0.3)


def cliff_logdensity(position):
    """N(0, 1) with a cliff: for |x| > 3 the log density drops like 1e72·(|x| − 3)²."""
    x = position["x"]
    excess = jnp.maximum(jnp.abs(x) - 3.0, 0.0)
    return -0.5 * x**2 - 1e72 * excess**2


def test_a_chain_warmed_up_into_a_degenerate_step_size_is_restarted():
    """Chain 1 starts at x = 50 (log p ~ -2e75); warm-up leaves it at a tiny step size unless it
    is restarted (and it is, from a uniform point in (-2, 2))."""
    with jax.enable_x64(True):
        initial = {"x": jnp.array([0.5, 50.0, -0.5])}
        settings = MCMCSettings(num_warmup=100, num_samples=100)
        stuck = mcmc.run(
            jax.random.key(0),
            cliff_logdensity,
            initial,
            MCMCSettings(num_warmup=100, num_samples=100, max_reinitializations=0),
            progress=False,
        )
        assert stuck.degenerate.tolist() == [False, True, False]
        assert np.unique(np.asarray(stuck.positions["x"][1])).size < 5
        samples = mcmc.run(jax.random.key(0), cliff_logdensity, initial, settings, progress=False)
    assert samples.reinitialized.tolist() == [0, 1, 0]
    assert not samples.degenerate.any()
    assert np.unique(np.asarray(samples.positions["x"][1])).size > 50
    assert np.abs(np.asarray(samples.positions["x"])).max() < 3.0


def test_degenerate_chains_are_those_with_a_tiny_step_or_a_far_lower_density():
    step = np.array([0.3, 1e-25, 0.25, 0.2, 0.35])
    lp = np.array([-10.0, -11.0, -1e70, -9.0, np.nan])
    assert mcmc.degenerate_chains(step, lp, dimension=4).tolist() == [
        False,
        True,
        True,
        False,
        True,
    ]
    assert mcmc.degenerate_chains(np.array([1e-3]), np.array([-5.0]), 1).tolist() == [False]
