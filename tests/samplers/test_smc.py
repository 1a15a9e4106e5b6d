"""SMC against the Kalman filter: unbiased evidence for every resampling scheme and threshold,
filtering means within Monte Carlo error, resampler offspring counts, determinism, and the
reporting of dead particles and NaN potentials."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppl.feynman_kac import FeynmanKac
from ppl.models.ssm.linear_gaussian import LinearGaussian, bootstrap, kalman_filter, simulate
from ppl.samplers import smc
from ppl.samplers.genealogy import ancestral_indices, trajectories
from ppl.samplers.resampling import SCHEMES, resample
from tests.monte_carlo import evidence_ratio_z, mean_z

Z_BOUND = 4.0  # |z| bound for one test statistic at a fixed seed
NUM_STEPS = 10


def model_1d() -> LinearGaussian:
    return LinearGaussian(
        initial_mean=jnp.zeros(1),
        initial_cov=jnp.eye(1),
        transition=jnp.asarray([[0.9]]),
        transition_cov=jnp.asarray([[0.5]]),
        observation=jnp.eye(1),
        observation_cov=jnp.eye(1),
    )


@functools.cache
def problem():
    model = model_1d()
    _, ys = simulate(jax.random.key(3), model, NUM_STEPS)
    return model, ys, kalman_filter(model, ys)


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
@pytest.mark.parametrize("threshold", [0.5, 1.0])
def test_evidence_is_unbiased_on_the_natural_scale(scheme, threshold):
    model, ys, exact = problem()
    fk = bootstrap(model, ys)

    def one(key):
        result = smc.run(key, fk, 32, NUM_STEPS, scheme, threshold, keep_history=False)
        return result.log_evidence

    runs = 2000
    log_z = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(11), runs))
    z = evidence_ratio_z(log_z, float(exact.log_likelihood))
    assert abs(z) < Z_BOUND, z


def test_filtering_means_match_kalman():
    model, ys, exact = problem()
    fk = bootstrap(model, ys)

    def one(key):
        result = smc.run(key, fk, 1000, NUM_STEPS)
        return jax.vmap(lambda lw, x: jax.nn.softmax(lw) @ x[:, 0])(
            result.log_weights, result.particles
        )

    runs = 100
    means = np.asarray(jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(5), runs)))
    z = mean_z(means, np.asarray(exact.filtered_means[:, 0]))
    assert np.all(np.abs(z) < Z_BOUND + 0.5), z  # max over 10 time steps


def test_a_biased_estimate_would_fail_the_test():
    """The unbiasedness statistic has power: averaging log Z (biased low) is rejected."""
    model, ys, exact = problem()
    fk = bootstrap(model, ys)
    keys = jax.random.split(jax.random.key(1), 2000)
    log_z = jax.jit(
        jax.vmap(lambda k: smc.run(k, fk, 4, NUM_STEPS, keep_history=False).log_evidence)
    )(keys)
    biased = np.exp(np.asarray(log_z).mean() - float(exact.log_likelihood))  # exp E[log Z]
    ratio = np.exp(np.asarray(log_z, np.float64) - float(exact.log_likelihood))
    z = (biased - 1) / (ratio.std(ddof=1) / np.sqrt(2000))
    assert abs(z) > Z_BOUND


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_offspring_counts_have_the_right_expectation(scheme):
    weights = np.asarray(jax.random.dirichlet(jax.random.key(2), jnp.ones(8)))
    reps, n = 4000, 8
    keys = jax.random.split(jax.random.key(9), reps)
    idx = jax.vmap(lambda k: resample(k, jnp.log(weights), n, scheme))(keys)
    counts = np.asarray(jax.vmap(lambda i: jnp.bincount(i, length=n))(idx), np.float64)
    mean, sd = counts.mean(0), counts.std(0, ddof=1)
    target = n * weights
    exact = sd == 0  # deterministic counts (possible for systematic / residual)
    assert np.all(np.abs(mean[exact] - target[exact]) < 1)
    z = (mean[~exact] - target[~exact]) / (sd[~exact] / np.sqrt(reps))
    assert np.all(np.abs(z) < Z_BOUND + 0.5), z


def test_jit_and_eager_runs_are_identical():
    model, ys, _ = problem()
    fk = bootstrap(model, ys)
    run = functools.partial(smc.run, model=fk, num_particles=16, num_steps=NUM_STEPS)
    eager = run(jax.random.key(4))
    compiled = jax.jit(run)(jax.random.key(4))
    np.testing.assert_allclose(eager.log_evidence, compiled.log_evidence, rtol=1e-6)
    np.testing.assert_array_equal(eager.info.ancestors, compiled.info.ancestors)
    np.testing.assert_allclose(eager.particles, compiled.particles, rtol=1e-6)


def constant_model(log_potential) -> FeynmanKac:
    return FeynmanKac(
        initial_sample=lambda key, n: jax.random.normal(key, (n,)),
        initial_log_potential=lambda x: jnp.zeros(x.shape[0]),
        transition_sample=lambda key, t, x: x + jax.random.normal(key, x.shape),
        log_potential=log_potential,
    )


def test_all_dead_is_flagged_and_evidence_is_zero():
    fk = constant_model(lambda t, xp, x: jnp.where(t == 3, -jnp.inf, 0.0) * jnp.ones(x.shape[0]))
    result = smc.run(jax.random.key(0), fk, 16, 6)
    assert result.info.all_dead.tolist() == [False, False, False, True, False, False]
    assert np.isneginf(result.log_evidence)
    assert np.all(np.isfinite(np.asarray(result.log_weights)))


def test_nan_potentials_are_counted_and_get_zero_weight():
    def log_potential(t, xp, x):
        return jnp.where((t == 2) & (jnp.arange(x.shape[0]) < 3), jnp.nan, 0.0)

    result = smc.run(jax.random.key(0), constant_model(log_potential), 16, 4)
    assert result.info.num_nan.tolist() == [0, 0, 3, 0]
    assert np.all(np.isneginf(np.asarray(result.log_weights[2, :3])))
    np.testing.assert_allclose(result.info.log_evidence_increment[2], np.log(13 / 16), rtol=1e-5)


def test_finished_particles_are_absorbed():
    fk = FeynmanKac(
        initial_sample=lambda key, n: jnp.arange(n, dtype=jnp.float32) % 3,
        initial_log_potential=lambda x: jnp.zeros(x.shape[0]),
        transition_sample=lambda key, t, x: x + 1,
        log_potential=lambda t, xp, x: jnp.full(x.shape[0], -1.0),
        finished=lambda x: x >= 3,
    )
    result = smc.run(jax.random.key(0), fk, 6, 6, ess_threshold=0.0)
    np.testing.assert_array_equal(result.particles[-1], 3.0)
    # particle i starts at i % 3, so it is extended 3 - i % 3 times and pays -1 per extension
    np.testing.assert_allclose(
        jax.nn.softmax(result.log_weights[-1]), jax.nn.softmax(-(3.0 - np.arange(6) % 3)), rtol=1e-5
    )


def test_genealogy_traces_parents():
    ancestors = jnp.asarray([[0, 1, 2], [0, 0, 2], [2, 1, 1]])
    np.testing.assert_array_equal(ancestral_indices(ancestors), [[2, 0, 0], [2, 1, 1], [0, 1, 2]])
    history = jnp.asarray([[10.0, 11, 12], [20, 21, 22], [30, 31, 32]])
    np.testing.assert_array_equal(
        trajectories(history, ancestors), [[12, 10, 10], [22, 21, 21], [30, 31, 32]]
    )


def test_bad_arguments_are_named():
    model, ys, _ = problem()
    with pytest.raises(ValueError, match="unknown resampling scheme 'bogus'"):
        smc.run(jax.random.key(0), bootstrap(model, ys), 8, 3, resampling="bogus")
    with pytest.raises(ValueError, match="ess_threshold"):
        smc.run(jax.random.key(0), bootstrap(model, ys), 8, 3, ess_threshold=2.0)


@pytest.mark.parametrize(("num_weights", "num_samples"), [(8, 8), (50, 20), (20, 50)])
def test_linear_time_systematic_matches_blackjax(num_weights, num_samples):
    from blackjax.smc.resampling import systematic as blackjax_systematic

    from ppl.samplers.resampling import systematic

    for seed in range(20):
        key_w, key_r = jax.random.split(jax.random.key(seed))
        weights = jax.random.dirichlet(key_w, jnp.full(num_weights, 0.3))
        ours = systematic(key_r, weights, num_samples)
        theirs = blackjax_systematic(key_r, weights, num_samples)
        np.testing.assert_array_equal(ours, theirs)


def _constant_potential_model(log_g: float):
    """A tiny model: x_t ~ N(0, 1), log G_t = `log_g` for particle 0 at step 2, else 0."""
    import jax.numpy as jnp

    from ppl.feynman_kac import FeynmanKac

    def log_potential(t, parents, particles):
        hit = (t == 2) & (jnp.arange(particles.shape[0]) == 0)
        return jnp.where(hit, log_g, 0.0)

    return FeynmanKac(
        initial_sample=lambda key, n: jax.random.normal(key, (n,)),
        initial_log_potential=lambda x: jnp.zeros(x.shape[0]),
        transition_sample=lambda key, t, x: x + jax.random.normal(key, x.shape),
        log_potential=log_potential,
    )


def test_plus_inf_potential_is_reported_not_all_dead():
    model = _constant_potential_model(float("inf"))
    run = jax.jit(lambda key: smc.run(key, model, 4, 4))
    result = run(jax.random.key(0))
    assert result.info.num_inf.tolist() == [0, 0, 1, 0]
    assert not bool(result.info.all_dead.any())
    assert float(result.log_evidence) == float("inf")
    assert np.isfinite(result.log_weights[2]).tolist() == [True, False, False, False]
    with pytest.raises(ValueError, match=r"smc: 1 log potential\(s\) are \+inf at step 2"):
        smc.run(jax.random.key(0), model, 4, 4)


def test_nan_potential_is_counted_and_finite_runs_have_no_inf():
    result = jax.jit(lambda key: smc.run(key, _constant_potential_model(float("nan")), 4, 4))(
        jax.random.key(0)
    )
    assert result.info.num_nan.tolist() == [0, 0, 1, 0]
    assert result.info.num_inf.tolist() == [0, 0, 0, 0]
    assert np.isfinite(float(result.log_evidence))


@pytest.mark.parametrize(
    ("num_particles", "message"),
    [
        (0, "num_particles must be >= 1, got 0"),
        (-2, "num_particles must be >= 1, got -2"),
        (2.5, "num_particles must be an integer >= 1, got 2.5"),
        (True, "num_particles must be an integer >= 1, got True"),
    ],
)
def test_bad_particle_counts_are_rejected(num_particles, message):
    from ppl.samplers import smc_steer

    model = _constant_potential_model(0.0)
    with pytest.raises(ValueError, match=message):
        smc.run(jax.random.key(0), model, num_particles, 3)
    with pytest.raises(ValueError, match=message):
        smc_steer.run(jax.random.key(0), model, num_particles, 3, 2)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"num_steps": 2.5}, "num_steps must be an integer >= 1, got 2.5"),
        ({"num_steps": 0}, "num_steps must be >= 1, got 0"),
        ({"ess_threshold": float("nan")}, r"ess_threshold must be a finite number in \[0, 1\]"),
        ({"ess_threshold": "0.5"}, r"in \[0, 1\], got '0.5'"),
    ],
)
def test_bad_step_counts_and_thresholds_are_named(change, message):
    model = _constant_potential_model(0.0)
    arguments = {"num_steps": 3, "ess_threshold": 0.5} | change
    with pytest.raises(ValueError, match=message):
        smc.run(jax.random.key(0), model, 4, **arguments)
    if "ess_threshold" in change:  # `step` checks the threshold too
        state, _ = smc.init(jax.random.key(0), model, 4)
        with pytest.raises(ValueError, match=message):
            smc.step(jax.random.key(1), state, model, ess_threshold=change["ess_threshold"])


def _five_observation_models():
    from ppl.models.ssm import hmm, linear_gaussian, stochastic_volatility

    key = jax.random.key(0)
    chain = hmm.HiddenMarkov(
        initial_probs=jnp.asarray([0.5, 0.5]),
        transition_matrix=jnp.asarray([[0.9, 0.1], [0.2, 0.8]]),
        emission_probs=jnp.asarray([[0.7, 0.3], [0.1, 0.9]]),
    )
    volatility = stochastic_volatility.StochasticVolatility(mu=-0.5, phi=0.9, sigma=0.3)
    gaussian = linear_gaussian.LinearGaussian(
        jnp.zeros(1), jnp.eye(1), 0.9 * jnp.eye(1), jnp.eye(1), jnp.eye(1), jnp.eye(1)
    )
    return {
        "hmm": hmm.bootstrap(chain, hmm.simulate(key, chain, 5)[1]),
        "stochastic_volatility": stochastic_volatility.bootstrap(
            volatility, stochastic_volatility.simulate(key, volatility, 5)[1]
        ),
        "linear_gaussian": linear_gaussian.bootstrap(gaussian, jnp.zeros((5, 1))),
    }


@pytest.mark.parametrize("name", ["hmm", "stochastic_volatility", "linear_gaussian"])
def test_a_run_past_the_last_observation_is_refused(name):
    """Before, JAX clamped `observations[t]` and the last observation was silently reused."""
    from ppl.samplers import conditional_smc

    model = _five_observation_models()[name]
    assert model.num_steps == 5
    result = smc.run(jax.random.key(1), model, 8, 5)  # up to the last observation: runs
    assert np.isfinite(float(result.log_evidence))
    message = r"num_steps=6 is more than the 5 time steps the model is defined for"
    with pytest.raises(ValueError, match=message):
        smc.run(jax.random.key(1), model, 8, 6)
    path = jax.tree.map(lambda x: jnp.concatenate([x[:, 0], x[:1, 0]]), result.particles)
    with pytest.raises(ValueError, match=message):
        conditional_smc.run(jax.random.key(1), model, path, 8, 6)
