"""Swap moves of host parallel tempering: parity, acceptance and what moves together."""

from __future__ import annotations

import jax
import numpy as np

from ppl.samplers.host_parallel_tempering import swap_neighbours


def _keys(seed: int, num_ladders: int) -> jax.Array:
    return jax.random.split(jax.random.key(seed), num_ladders)


def test_swaps_alternate_pairs_and_follow_the_metropolis_ratio():
    ladders = np.arange(6).reshape(2, 3)  # two problems, three levels each
    betas = np.tile([1.0, 0.5, 0.0], 2)
    # group 1 (beta .5) holds a much better path than group 0 (beta 1): always accepted;
    # in ladder 2 the better path is already at the colder level: never accepted
    values = np.asarray([-50.0, 0.0, 0.0, 0.0, -50.0, 0.0])
    references = ["a", "b", "c", "d", "e", "f"]
    attempted, accepted = swap_neighbours(_keys(0, 2), references, values, ladders, betas, parity=0)
    assert attempted.tolist() == [[True, False], [True, False]]
    assert accepted.tolist() == [[True, False], [False, False]]
    assert references == ["b", "a", "c", "d", "e", "f"]
    assert values.tolist() == [0.0, -50.0, 0.0, 0.0, -50.0, 0.0]
    attempted, _ = swap_neighbours(_keys(1, 2), references, values, ladders, betas, 1)
    assert attempted.tolist() == [[False, True], [False, True]]


def test_acceptance_rate_matches_the_ratio():
    ladders = np.arange(2).reshape(1, 2)
    betas = np.asarray([1.0, 0.5])
    values = np.asarray([0.0, -1.0])  # log ratio = 0.5 * (-1) -> accept with e^-0.5
    rates = []
    for seed in range(2000):
        refs, v = ["x", "y"], values.copy()
        _, accepted = swap_neighbours(_keys(seed, 1), refs, v, ladders, betas, 0)
        rates.append(accepted[0, 0])
    p = np.exp(-0.5)
    assert abs(np.mean(rates) - p) < 4 * np.sqrt(p * (1 - p) / 2000)


def test_host_and_jitted_tempering_share_the_swap_decisions():
    import jax.numpy as jnp

    from ppl.samplers.parallel_tempering import swap_decisions

    rng = np.random.default_rng(2)
    betas = np.asarray([1.0, 0.6, 0.3, 0.1])
    for parity in (0, 1):
        values = rng.normal(size=(200, 4)) * 3
        log_uniforms = np.log(rng.uniform(size=(200, 3)))
        host = swap_decisions(log_uniforms, np.tile(betas, (200, 1)), values, parity)
        jitted = jax.jit(
            jax.vmap(lambda u, v, p=parity: swap_decisions(u, jnp.asarray(betas), v, p))
        )(jnp.asarray(log_uniforms), jnp.asarray(values))
        assert host[0][:, parity].all() and not host[0][:, 1 - parity].any()
        np.testing.assert_array_equal(host[0], np.asarray(jitted[0]))
        np.testing.assert_array_equal(host[1], np.asarray(jitted[1]))
        assert 0 < host[1].sum() < host[0].sum()
