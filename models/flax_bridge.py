"""A Flax NNX network as the pure function the toolkit takes (a twist, a verifier's head, ...).

The toolkit's own networks are Equinox modules: pytrees whose arrays pass through `jax.jit`,
`vmap` and `grad` as they are. A `flax.nnx.Module` is a mutable Python object instead.
`from_nnx(module)` splits it, with `nnx.split(module, nnx.Param, ...)`, into its graph
definition (static and hashable), its parameters and the rest of its state (two `nnx.State`
pytrees), and the resulting `NNXFunction` merges them back on every call:

    f(*args) = nnx.merge(graphdef, params, rest)(*args).

So f is a pytree like an Equinox module: it is traced by `jax.jit` / `eqx.filter_jit`
(the arrays are arguments, the graph definition is static), vmapped and differentiated, and it
plugs in wherever the toolkit takes a function with its weights, e.g. as the twist of twisted
SMC, `steer(..., "twisted", twist=from_nnx(network))`, in place of a `TwistHead`.

Training: `f.params` is the network's `nnx.Param` state (what `nnx.state(module, nnx.Param)`
returns); differentiate a loss of `f.with_params(params)` in `params` and update it with optax.
`f.module()` (or `nnx.update(module, f.params)`) takes the result back to NNX. The call must
be pure: state a network writes while running (batch statistics, dropout's RNG counters) is
dropped, since `rest` goes in and does not come back out.
"""

from __future__ import annotations

from typing import Any, final

import equinox as eqx
from flax import nnx


@final
class NNXFunction(eqx.Module):
    """`f(*args)`: the NNX module `nnx.merge(graphdef, params, rest)` applied to `args`."""

    graphdef: nnx.GraphDef = eqx.field(static=True)
    params: nnx.State  # the nnx.Param variables: what training updates
    rest: nnx.State  # every other variable (constants, statistics, RNG state)

    def __call__(self, *args: Any) -> Any:
        return nnx.merge(self.graphdef, self.params, self.rest)(*args)

    def with_params(self, params: nnx.State) -> NNXFunction:
        """The same network with other parameters (of the same structure)."""
        return NNXFunction(self.graphdef, params, self.rest)

    def module(self) -> nnx.Module:
        """A fresh NNX module holding this function's state."""
        return nnx.merge(self.graphdef, self.params, self.rest)


def from_nnx(module: nnx.Module) -> NNXFunction:
    """The pure function of `module` at its current state (the module itself is not kept)."""
    graphdef, *states = nnx.split(module, nnx.Param, ...)
    params, rest = states
    return NNXFunction(graphdef, params, rest)
