"""The Distribution Transformer's structure: tokens, identity at initialisation, symmetries."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppl.gaussian_mixture import mixture
from ppl.models.amortized.distribution_transformer import (
    DistributionTransformer,
    from_tokens,
    to_tokens,
    token_size,
)

DIMENSION = 2


@pytest.fixture
def prior():
    return mixture(
        jnp.array([0.2, 0.5, 0.3]),
        jnp.array([[-2.0, 0.0], [1.0, 1.5], [0.5, -1.0]]),
        jnp.array([[[1.0, 0.3], [0.3, 0.5]], [[0.4, -0.1], [-0.1, 0.8]], [[2.0, 0.0], [0.0, 0.3]]]),
    )


def perturbed(network, key):
    """The network with a random (non-zero) output projection, so its output depends on input."""
    weight = 0.1 * jax.random.normal(key, network.unembed.weight.shape)
    return eqx.tree_at(lambda n: n.unembed.weight, network, weight)


def test_tokens_round_trip(prior):
    tokens = to_tokens(prior)
    assert tokens.shape == (3, token_size(DIMENSION)) == (3, 6)
    back = from_tokens(tokens, DIMENSION)
    for ours, theirs in zip(back, prior, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="need 6"):
        from_tokens(tokens[:, :5], DIMENSION)


def test_an_untrained_network_returns_its_prior(prior):
    network = DistributionTransformer(DIMENSION, 3, width=32, depth=2, key=jax.random.key(0))
    data = jax.random.normal(jax.random.key(1), (7, 3))
    posterior = network(prior, data)
    for ours, theirs in zip(posterior, prior, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_equivariant_in_components_and_invariant_in_data(prior):
    network = perturbed(
        DistributionTransformer(DIMENSION, 3, width=32, depth=2, key=jax.random.key(0)),
        jax.random.key(5),
    )
    data = jax.random.normal(jax.random.key(1), (7, 3))
    posterior = network(prior, data)
    assert not np.allclose(posterior.means, prior.means)  # the perturbation does something
    order = jnp.array([2, 0, 1])
    permuted_prior = jax.tree.map(lambda x: x[order], prior)
    permuted = network(permuted_prior, data)
    for ours, theirs in zip(permuted, posterior, strict=True):
        np.testing.assert_allclose(ours, theirs[order], rtol=1e-4, atol=1e-5)
    shuffled = network(prior, data[jnp.array([6, 3, 0, 1, 5, 2, 4])])
    for ours, theirs in zip(shuffled, posterior, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


def test_batched_over_problems_with_vmap(prior):
    network = perturbed(
        DistributionTransformer(
            DIMENSION, 1, width=16, depth=1, num_heads=2, key=jax.random.key(2)
        ),
        jax.random.key(3),
    )
    priors = jax.tree.map(lambda x: jnp.stack([x, x]), prior)
    data = jax.random.normal(jax.random.key(4), (2, 5, 1))
    batched = jax.vmap(network)(priors, data)
    single = network(prior, data[1])
    np.testing.assert_allclose(batched.means[1], single.means, rtol=1e-5, atol=1e-6)
    assert np.all(np.diagonal(np.asarray(batched.cholesky), axis1=-2, axis2=-1) > 0)
    np.testing.assert_allclose(np.exp(batched.log_weights).sum(-1), 1.0, rtol=1e-5)


def test_masked_points_are_ignored_and_no_data_is_allowed(prior):
    network = perturbed(
        DistributionTransformer(DIMENSION, 3, width=32, depth=2, key=jax.random.key(0)),
        jax.random.key(5),
    )
    data = jax.random.normal(jax.random.key(1), (6, 3))
    mask = jnp.array([True, False, True, True, False, False])
    masked = network(prior, data, mask)
    subset = network(prior, data[mask])
    garbage = network(prior, jnp.where(mask[:, None], data, 1e3), mask)
    for ours, theirs, junk in zip(masked, subset, garbage, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(ours, junk, rtol=1e-4, atol=1e-5)
    # With every point masked the network sees only its null token: same as no data at all.
    nothing = network(prior, jnp.zeros((0, 3)))
    all_masked = network(prior, data, jnp.zeros(6, bool))
    for ours, theirs in zip(nothing, all_masked, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
    assert not np.allclose(nothing.means, masked.means)


def test_bad_inputs_are_named(prior):
    network = DistributionTransformer(DIMENSION, 3, width=32, key=jax.random.key(0))
    with pytest.raises(ValueError, match="data must be"):
        network(prior, jnp.zeros(3))
    with pytest.raises(ValueError, match=r"data must be \[num_points, 3\]"):
        network(prior, jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match="mask must be"):
        network(prior, jnp.zeros((4, 3)), jnp.ones(3, bool))
    with pytest.raises(ValueError, match="multiple of num_heads"):
        DistributionTransformer(DIMENSION, 3, width=30, num_heads=4, key=jax.random.key(0))


@pytest.mark.parametrize(
    ("sizes", "message"),
    [
        ({"dimension": 0}, "dimension must be >= 1, got 0"),
        ({"dimension": 2.5}, "dimension must be an integer >= 1, got 2.5"),
        ({"data_size": -1}, "data_size must be >= 1, got -1"),
        ({"width": 0}, "width must be >= 1, got 0"),
        ({"depth": 0}, "depth must be >= 1, got 0"),
        ({"depth": -1}, "depth must be >= 1, got -1"),
        ({"num_heads": 0}, "num_heads must be >= 1, got 0"),
        ({"num_heads": 3}, "width 8 must be a multiple of num_heads 3"),
    ],
)
def test_bad_sizes_are_named(sizes, message):
    arguments = {"dimension": 1, "data_size": 1, "width": 8, "depth": 1, "num_heads": 2} | sizes
    with pytest.raises(ValueError, match=message):
        DistributionTransformer(**arguments, key=jax.random.key(0))
