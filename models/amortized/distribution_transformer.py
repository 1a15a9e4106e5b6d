"""The Distribution Transformer (Whittle et al. 2025): a Gaussian-mixture prior and a data set
in, a Gaussian-mixture posterior out.

Each mixture component becomes a token of P = 1 + D + D(D+1)/2 numbers,

    t_k = [log w_k, m_k, vech(L̃_k)],   L̃_k = L_k with its diagonal replaced by log diag(L_k),

so every entry is unconstrained. Data points become tokens through their own embedding, and a
learned null token is always appended to them, so a problem with no data (every point masked)
still has something to attend to; the prior-reconstruction term of the training loss teaches
the network to return the prior there. A stack
of blocks updates the component tokens with self-attention among components, cross-attention
from components to data, and an MLP, each pre-normalised and residual. There are no positional
encodings, so the map is equivariant to permuting components and invariant to permuting data.
The unembedding adds its output to the input token,

    t_k' = t_k + U h_k,   U initialised to zero,

so an untrained network maps every prior to itself; the weights are renormalised by
log-softmax. Written from the paper's description; sizes are arguments.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from ppl import checks
from ppl.gaussian_mixture import GaussianMixture


def token_size(dimension: int) -> int:
    """P = 1 + D + D(D+1)/2 numbers per component."""
    return 1 + dimension + dimension * (dimension + 1) // 2


def to_tokens(mixture: GaussianMixture) -> jax.Array:
    """Component tokens [K, P] (module docstring)."""
    dimension = mixture.dimension
    rows, cols = jnp.tril_indices(dimension)
    diagonal = jnp.arange(dimension)
    log_cholesky = mixture.cholesky.at[:, diagonal, diagonal].set(
        jnp.log(jnp.diagonal(mixture.cholesky, axis1=-2, axis2=-1))
    )
    return jnp.concatenate(
        [mixture.log_weights[:, None], mixture.means, log_cholesky[:, rows, cols]], axis=-1
    )


def from_tokens(tokens: jax.Array, dimension: int) -> GaussianMixture:
    """Inverse of `to_tokens`; the weights are renormalised (log-softmax)."""
    if tokens.shape[-1] != token_size(dimension):
        raise ValueError(
            f"tokens of size {tokens.shape[-1]} do not hold {dimension}-dimensional components "
            f"(need {token_size(dimension)})"
        )
    log_weights = jax.nn.log_softmax(tokens[:, 0])
    means = tokens[:, 1 : 1 + dimension]
    rows, cols = jnp.tril_indices(dimension)
    diagonal = jnp.arange(dimension)
    packed = tokens[:, 1 + dimension :]
    lower = jnp.zeros((tokens.shape[0], dimension, dimension), tokens.dtype)
    lower = lower.at[:, rows, cols].set(packed)
    lower = lower.at[:, diagonal, diagonal].set(jnp.exp(lower[:, diagonal, diagonal]))
    return GaussianMixture(log_weights, means, lower)


class Block(eqx.Module):
    """Self-attention among components, cross-attention to data, MLP; pre-norm residuals."""

    self_norm: eqx.nn.LayerNorm
    self_attention: eqx.nn.MultiheadAttention
    cross_norm: eqx.nn.LayerNorm
    data_norm: eqx.nn.LayerNorm
    cross_attention: eqx.nn.MultiheadAttention
    mlp_norm: eqx.nn.LayerNorm
    mlp: eqx.nn.MLP

    def __init__(self, width: int, num_heads: int, *, key: jax.Array):
        self_key, cross_key, mlp_key = jax.random.split(key, 3)
        self.self_norm = eqx.nn.LayerNorm(width)
        self.self_attention = eqx.nn.MultiheadAttention(num_heads, width, key=self_key)
        self.cross_norm = eqx.nn.LayerNorm(width)
        self.data_norm = eqx.nn.LayerNorm(width)
        self.cross_attention = eqx.nn.MultiheadAttention(num_heads, width, key=cross_key)
        self.mlp_norm = eqx.nn.LayerNorm(width)
        self.mlp = eqx.nn.MLP(width, width, 2 * width, 1, activation=jax.nn.gelu, key=mlp_key)

    def __call__(self, components: jax.Array, data: jax.Array, mask: jax.Array) -> jax.Array:
        """`components` [K, W], `data` [N, W], `mask` [N] (False: the point is ignored)."""
        normed = jax.vmap(self.self_norm)(components)
        components = components + self.self_attention(normed, normed, normed)
        normed = jax.vmap(self.cross_norm)(components)
        data = jax.vmap(self.data_norm)(data)
        cross_mask = jnp.broadcast_to(mask, (components.shape[0], data.shape[0]))
        components = components + self.cross_attention(normed, data, data, mask=cross_mask)
        return components + jax.vmap(self.mlp)(jax.vmap(self.mlp_norm)(components))


class DistributionTransformer(eqx.Module):
    """`dt(prior, data) -> posterior` for D-dimensional mixtures and data points [N, data_size].

    Batch over problems with `jax.vmap`. The number of components K and of data points N may
    differ between calls (attention has no fixed length); `mask` [N] marks the points to use,
    so problems with different numbers of points share one padded batch.
    """

    dimension: int = eqx.field(static=True)
    embed_components: eqx.nn.Linear
    embed_data: eqx.nn.MLP
    null_data: jax.Array
    blocks: tuple[Block, ...]
    final_norm: eqx.nn.LayerNorm
    unembed: eqx.nn.Linear

    def __init__(
        self,
        dimension: int,
        data_size: int,
        *,
        width: int = 64,
        depth: int = 2,
        num_heads: int = 4,
        key: jax.Array,
    ):
        for name, value in {
            "dimension": dimension,
            "data_size": data_size,
            "width": width,
            "depth": depth,
            "num_heads": num_heads,
        }.items():
            checks.count(name, value)
        if width % num_heads:
            raise ValueError(f"width {width} must be a multiple of num_heads {num_heads}")
        component_key, data_key, blocks_key, unembed_key, null_key = jax.random.split(key, 5)
        size = token_size(dimension)
        self.dimension = dimension
        self.embed_components = eqx.nn.Linear(size, width, key=component_key)
        self.embed_data = eqx.nn.MLP(
            data_size, width, width, 1, activation=jax.nn.gelu, key=data_key
        )
        self.null_data = jax.random.normal(null_key, (width,)) / jnp.sqrt(width)
        self.blocks = tuple(
            Block(width, num_heads, key=k) for k in jax.random.split(blocks_key, depth)
        )
        self.final_norm = eqx.nn.LayerNorm(width)
        unembed = eqx.nn.Linear(width, size, key=unembed_key)
        # Zero output projection: the untrained network returns its prior unchanged.
        self.unembed = eqx.tree_at(
            lambda layer: (layer.weight, layer.bias),
            unembed,
            (jnp.zeros_like(unembed.weight), jnp.zeros(size)),
        )

    @eqx.filter_jit
    def __call__(
        self, prior: GaussianMixture, data: jax.Array, mask: jax.Array | None = None
    ) -> GaussianMixture:
        """The posterior mixture given `data` [N, data_size]; `mask` [N] bool (default all).

        Compiled on first call per shape (`eqx.filter_jit`), so a direct call from Python is
        fast; inside `jax.jit`, `vmap` or `grad` it is traced inline as usual.
        """
        if prior.dimension != self.dimension:
            raise ValueError(f"prior is {prior.dimension}-D, the network is {self.dimension}-D")
        if data.ndim != 2 or data.shape[1] != self.embed_data.in_size:
            raise ValueError(
                f"data must be [num_points, {self.embed_data.in_size}], got shape {data.shape}"
            )
        if mask is None:
            mask = jnp.ones(data.shape[0], bool)
        elif mask.shape != data.shape[:1]:
            raise ValueError(f"mask must be [{data.shape[0]}], got shape {mask.shape}")
        tokens = to_tokens(prior)
        hidden = jax.vmap(self.embed_components)(tokens)
        data_tokens = jnp.concatenate(
            [jax.vmap(self.embed_data)(data), self.null_data[None].astype(data.dtype)]
        )
        mask = jnp.concatenate([mask.astype(bool), jnp.ones(1, bool)])
        for block in self.blocks:
            hidden = block(hidden, data_tokens, mask)
        update = jax.vmap(self.unembed)(jax.vmap(self.final_norm)(hidden))
        return from_tokens(tokens + update, self.dimension)
