"""A Flax NNX network through `from_nnx` plugs into twisted SMC and trains with optax exactly
as the Equinox `TwistHead` with the same weights does (the oracle: the in-repo network)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from ppl.experiments.steering import steer, steering_problem
from ppl.models.constraints.automata import regex
from ppl.models.flax_bridge import NNXFunction, from_nnx
from ppl.models.lm.tiny import alphabet_language_model
from ppl.models.steering.twist import TwistHead

WIDTH = 8


class NNXTwist(nnx.Module):
    """TwistHead's network written in NNX: log ψ = MLP((u − μ) / σ), u = (h, tokens left)."""

    def __init__(self, in_size: int, rngs: nnx.Rngs):
        self.feature_mean = nnx.Variable(jnp.zeros(in_size))
        self.feature_scale = nnx.Variable(jnp.ones(in_size))
        self.hidden = nnx.Linear(in_size, WIDTH, rngs=rngs)
        self.output = nnx.Linear(WIDTH, 1, rngs=rngs)

    def __call__(self, features: jax.Array, tokens_left: jax.Array) -> jax.Array:
        inputs = jnp.concatenate([features, tokens_left[:, None].astype(features.dtype)], -1)
        u = (inputs - self.feature_mean[...]) / self.feature_scale[...]
        return self.output(jnp.tanh(self.hidden(u)))[:, 0]


def equinox_twist(hidden_size: int, seed: int) -> TwistHead:
    in_size = hidden_size + 1
    mean_key, scale_key, mlp_key = jax.random.split(jax.random.key(seed), 3)
    mlp = eqx.nn.MLP(in_size, "scalar", WIDTH, 1, jnp.tanh, key=mlp_key)
    mean = jax.random.normal(mean_key, (in_size,))
    scale = jnp.exp(0.3 * jax.random.normal(scale_key, (in_size,)))
    return TwistHead(mlp, mean, scale)


def nnx_twin(head: TwistHead) -> NNXTwist:
    """An `NNXTwist` holding `head`'s weights (Equinox stores W [out, in], NNX W^T)."""
    first, last = head.mlp.layers
    net = NNXTwist(first.in_features, nnx.Rngs(123))
    net.feature_mean = nnx.Variable(head.feature_mean)
    net.feature_scale = nnx.Variable(head.feature_scale)
    net.hidden.kernel = nnx.Param(first.weight.T)
    net.hidden.bias = nnx.Param(first.bias)
    net.output.kernel = nnx.Param(last.weight.T)
    net.output.bias = nnx.Param(last.bias)
    return net


@pytest.fixture(scope="module")
def lm():
    return alphabet_language_model(jax.random.key(0), scale=0.3)


def test_an_nnx_twist_runs_twisted_smc_exactly_as_the_equinox_twist(lm):
    head = equinox_twist(lm.config.hidden_size, seed=3)
    twist = from_nnx(nnx_twin(head))
    assert isinstance(twist, NNXFunction)
    features = jax.random.normal(jax.random.key(1), (5, lm.config.hidden_size))
    left = jnp.arange(5)
    np.testing.assert_allclose(twist(features, left), head(features, left), rtol=1e-5, atol=1e-6)
    # a pytree of arrays: it jits and vmaps like the Equinox module
    batched = jnp.stack([features, -features])
    np.testing.assert_allclose(
        jax.vmap(eqx.filter_jit(lambda f, x: f(x, left)), in_axes=(None, 0))(twist, batched),
        jax.vmap(lambda x: head(x, left))(batched),
        rtol=1e-5,
        atol=1e-6,
    )
    problem = steering_problem(lm, ("ab",), 3, regex("a*b?a*"), chat=False)
    for seed in range(3):
        key = jax.random.key(seed)
        ours = steer(key, lm, problem, "twisted", 4, twist=twist, ess_threshold=1.0)
        theirs = steer(key, lm, problem, "twisted", 4, twist=head, ess_threshold=1.0)
        assert ours.token_ids == theirs.token_ids
        np.testing.assert_allclose(ours.log_weights, theirs.log_weights, rtol=1e-5, atol=1e-6)
        assert ours.log_evidence == pytest.approx(theirs.log_evidence, rel=1e-5, abs=1e-6)


def test_an_nnx_network_trains_with_optax_like_its_equinox_twin():
    head = equinox_twist(6, seed=4)
    net = nnx_twin(head)
    twist = from_nnx(net)
    x_key, left_key, y_key = jax.random.split(jax.random.key(5), 3)
    features = jax.random.normal(x_key, (64, 6))
    left = jax.random.randint(left_key, (64,), 0, 5)
    targets = jax.random.normal(y_key, (64,))
    optimizer = optax.adam(3e-2)

    def mse(f):
        return jnp.mean((f(features, left) - targets) ** 2)

    @jax.jit
    def nnx_step(params, state):
        grads = jax.grad(lambda p: mse(twist.with_params(p)))(params)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    # The Equinox twin trains its MLP only (the NNX normalisers are plain Variables, not Params).
    def mlp_loss(mlp):
        return mse(TwistHead(mlp, head.feature_mean, head.feature_scale))

    @eqx.filter_jit
    def eqx_step(mlp, state):
        grads = eqx.filter_grad(mlp_loss)(mlp)
        updates, state = optimizer.update(grads, state, eqx.filter(mlp, eqx.is_array))
        return eqx.apply_updates(mlp, updates), state

    params, nnx_state = twist.params, optimizer.init(twist.params)
    mlp, eqx_state = head.mlp, optimizer.init(eqx.filter(head.mlp, eqx.is_array))
    assert mse(twist) == pytest.approx(float(mse(head)), rel=1e-5)
    for _ in range(25):
        params, nnx_state = nnx_step(params, nnx_state)
        mlp, eqx_state = eqx_step(mlp, eqx_state)
    trained = TwistHead(mlp, head.feature_mean, head.feature_scale)
    assert float(mse(twist.with_params(params))) < 0.8 * float(mse(twist))
    np.testing.assert_allclose(
        twist.with_params(params)(features, left), trained(features, left), rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(params["hidden"]["kernel"][...], mlp.layers[0].weight.T, atol=1e-5)
    # Back to NNX: the module itself now computes the trained function.
    nnx.update(net, params)
    np.testing.assert_allclose(net(features, left), trained(features, left), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        twist.with_params(params).module()(features, left), net(features, left), rtol=1e-6
    )
