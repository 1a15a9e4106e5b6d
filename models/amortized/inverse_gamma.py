"""The inverse-gamma variance task, the first experiment of Whittle et al. 2025.

An unknown variance σ² has the prior InverseGamma(α, β), and N points are observed,
x_n ~ N(0, σ²) (a uniform number of them in [min_data, num_data], the rest masked). The
posterior is conjugate,

    σ² | x ~ InverseGamma(α + n/2, β + Σ_n x_n² / 2),   n = number of points used.

The Distribution Transformer works on the unconstrained z = log σ², whose density is

    p(z) = InvGamma(e^z; α, β) e^z,   log p(z) = α log β − log Γ(α) − α z − β e^{−z},

i.e. z = log β − log G with G ~ Gamma(α, 1): the shape depends on α only, and β shifts it,
with E[z] = log β − ψ(α) and Var[z] = ψ'(α). The network's prior is a K-component Gaussian
mixture fitted to p(z) (`fit_log_inverse_gamma`: EM on a weighted quadrature grid, which
minimises the cross-entropy, i.e. KL(p ‖ q) on the grid); its KL from the true prior
(`prior_fit_kl`) is the representational floor of a K-component answer. Latents are drawn
from the true inverse-gamma prior, not from the mixture, and the expected KL(exact ‖ q) in
z-space over unseen problems (`expected_kl`) is the paper's metric. A NumPyro SVI baseline
(`svi_posterior`) fits a normal in z with `AutoNormal`, whose unconstrained space for a
positive site is exactly log σ².

The meta-priors over (α, β) in `InverseGammaTask.narrow` and `.wide` are this project's
choice; the paper's exact ranges are not reproduced here.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.scipy.special import digamma, gammaln, logsumexp, polygamma
from jax.typing import ArrayLike
from numpyro.infer.autoguide import AutoNormal

from ppl import checks
from ppl.gaussian_mixture import GaussianMixture
from ppl.models.amortized.svi import run_svi
from ppl.models.amortized.tasks import Problem, data_mask

# The standardised grid s = (u − E u) / sd(u), u = −log G, G ~ Gamma(α, 1). The left tail of u
# falls doubly exponentially and the right one like e^{−α u}, i.e. at least like e^{−s} in
# standard units for α ≳ 0.5, so [−7, 18] holds all but ~1e−9 of the mass. The fitted
# components have standard deviations above 0.3 standard units, so 128 points (spacing 0.2) give
# the same fit as 512 to three digits of KL. EM converges linearly: for K = 5 the KL to p(z)
# is still falling at 300 steps (about 1.6x above its 1000-step value at α = 1 and 3).
GRID_LOW = -7.0
GRID_HIGH = 18.0
GRID_SIZE = 128
EM_STEPS = 300
_VARIANCE_FLOOR = 1e-4  # in standard units, so a component never collapses onto grid points


def log_density_z(alpha: ArrayLike, beta: ArrayLike, z: ArrayLike) -> jax.Array:
    """log p(z) = α log β − log Γ(α) − α z − β e^{−z}, the density of z = log σ² (elementwise)."""
    alpha, beta, z = jnp.asarray(alpha), jnp.asarray(beta), jnp.asarray(z)
    return alpha * jnp.log(beta) - gammaln(alpha) - alpha * z - beta * jnp.exp(-z)


def sample_z(rng_key: jax.Array, alpha: ArrayLike, beta: ArrayLike, num_samples: int) -> jax.Array:
    """`num_samples` draws of z = log σ², σ² ~ InverseGamma(α, β): z = log β − log G.

    `jax.random.loggamma` keeps log G finite where G itself would underflow (small α).
    """
    checks.count("num_samples", num_samples)
    return jnp.log(beta) - jax.random.loggamma(rng_key, alpha, (num_samples,))


def check_parameters(alpha: ArrayLike, beta: ArrayLike) -> None:
    """A ValueError unless concrete (untraced) α and β are finite and > 0."""
    for name, value in (("alpha", alpha), ("beta", beta)):
        if checks.is_concrete(value):
            values = np.asarray(value, np.float64)
            if not (np.isfinite(values).all() and (values > 0).all()):
                raise ValueError(f"{name} must be finite and > 0, got {checks.shown(values)}")


def fit_log_inverse_gamma(
    alpha: ArrayLike,
    beta: ArrayLike,
    num_components: int,
    *,
    grid_size: int = GRID_SIZE,
    num_steps: int = EM_STEPS,
) -> GaussianMixture:
    """A K-component mixture fitted to p(z) by `num_steps` EM steps on a weighted grid.

    In standard units s = (z − log β + ψ(α)) / √ψ'(α) the grid s_i carries weights w_i ∝ p(s_i);
    components start at the (k + ½)/K quantiles with weights 1/K and variance 2/K,
    and EM alternates

        r_ik ∝ π_k N(s_i; μ_k, σ_k²),   π_k = Σ_i w_i r_ik,   μ_k = Σ_i w_i r_ik s_i / π_k,
        σ_k² = Σ_i w_i r_ik (s_i − μ_k)² / π_k.

    Every M-step keeps the mixture's mean and variance equal to the grid's, so the fit has the
    exact E[z] = log β − ψ(α) and Var[z] = ψ'(α) up to quadrature error. Deterministic and pure:
    jit it and vmap it over (α, β); `num_components`, `grid_size` and `num_steps` are static.
    Concrete α and β must be finite and > 0 (traced ones are not checked).
    """
    checks.count("num_components", num_components)
    checks.count("grid_size", grid_size, 2)
    checks.count("num_steps", num_steps, 0)
    check_parameters(alpha, beta)
    return _fit_log_inverse_gamma(
        alpha, beta, num_components, grid_size=grid_size, num_steps=num_steps
    )


@partial(jax.jit, static_argnames=("num_components", "grid_size", "num_steps"))
def _fit_log_inverse_gamma(
    alpha: ArrayLike, beta: ArrayLike, num_components: int, *, grid_size: int, num_steps: int
) -> GaussianMixture:
    alpha = jnp.asarray(alpha, jnp.result_type(float))
    beta = jnp.asarray(beta, alpha.dtype)
    center = -digamma(alpha)
    scale = jnp.sqrt(polygamma(1, alpha))
    grid = jnp.linspace(GRID_LOW, GRID_HIGH, grid_size, dtype=alpha.dtype)
    log_mass = log_density_z(alpha, 1.0, center + scale * grid)
    weights = jnp.exp(log_mass - logsumexp(log_mass))

    levels = (jnp.arange(num_components, dtype=alpha.dtype) + 0.5) / num_components
    means = jnp.interp(levels, jnp.cumsum(weights) - 0.5 * weights, grid)
    variances = jnp.full(num_components, 2.0 / num_components, alpha.dtype)
    log_pi = jnp.full(num_components, -jnp.log(num_components), alpha.dtype)

    def em_step(
        _: int, state: tuple[jax.Array, jax.Array, jax.Array]
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        log_pi, means, variances = state
        log_joint = log_pi + jax.scipy.stats.norm.logpdf(grid[:, None], means, jnp.sqrt(variances))
        responsibilities = jnp.exp(log_joint - logsumexp(log_joint, axis=1, keepdims=True))
        weighted = weights[:, None] * responsibilities
        mass = jnp.maximum(weighted.sum(0), 1e-30)
        means = (weighted * grid[:, None]).sum(0) / mass
        variances = (weighted * (grid[:, None] - means) ** 2).sum(0) / mass
        return jnp.log(mass), means, jnp.maximum(variances, _VARIANCE_FLOOR)

    log_pi, means, variances = jax.lax.fori_loop(0, num_steps, em_step, (log_pi, means, variances))
    return GaussianMixture(
        log_pi - logsumexp(log_pi),
        (jnp.log(beta) + center + scale * means)[:, None],
        (scale * jnp.sqrt(variances))[:, None, None],
    )


class KLEstimate(NamedTuple):
    """Monte Carlo KL(exact ‖ q): the mean, its standard error and the per-problem values."""

    mean: jax.Array
    standard_error: jax.Array
    per_problem: jax.Array


@partial(jax.jit, static_argnames=("num_samples",))
def kl_to_exact(
    rng_key: jax.Array,
    alpha: ArrayLike,
    beta: ArrayLike,
    q: GaussianMixture,
    num_samples: int = 10_000,
) -> tuple[jax.Array, jax.Array]:
    """KL(p ‖ q) = E_p[log p(z) − log q(z)] for the log-inverse-gamma p (draws from p), and its
    Monte Carlo standard error."""
    if q.dimension != 1:
        raise ValueError(f"q must be a 1-D mixture over z = log σ², got {q.dimension}-D")
    z = sample_z(rng_key, alpha, beta, num_samples)
    differences = log_density_z(alpha, beta, z) - jax.vmap(q.log_prob)(z[:, None])
    return jnp.mean(differences), jnp.std(differences) / jnp.sqrt(num_samples)


def prior_fit_kl(
    rng_key: jax.Array,
    alpha: ArrayLike,
    beta: ArrayLike,
    num_components: int,
    num_samples: int = 10_000,
) -> tuple[jax.Array, jax.Array]:
    """KL from the log-inverse-gamma p(z) to its K-component fit, and its standard error: the
    smallest KL a K-component answer can reach on a problem with no data."""
    return kl_to_exact(
        rng_key, alpha, beta, fit_log_inverse_gamma(alpha, beta, num_components), num_samples
    )


def posterior_parameters(
    alpha: ArrayLike, beta: ArrayLike, data: jax.Array, mask: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """(α + n/2, β + Σ x_n²/2) over the points of `data` [N, 1] whose `mask` [N] is True."""
    if data.ndim != 2 or data.shape[1] != 1:
        raise ValueError(f"data must be [num_points, 1], got shape {data.shape}")
    if mask is None:
        mask = jnp.ones(data.shape[0], bool)
    elif mask.shape != data.shape[:1]:
        raise ValueError(f"mask must be [{data.shape[0]}], got shape {mask.shape}")
    count = jnp.sum(mask)
    squares = jnp.sum(jnp.where(mask, data[:, 0] ** 2, 0.0))
    return jnp.asarray(alpha) + 0.5 * count, jnp.asarray(beta) + 0.5 * squares


class InverseGammaTask(NamedTuple):
    """Meta-prior over InverseGamma(α, β) priors on σ²; x_n ~ N(0, σ²), n = 1..num_data.

    α is drawn uniformly on [alpha_low, alpha_high] and β on [beta_low, beta_high], both on the
    log scale when `log_uniform`. Each problem observes a uniform number of points in
    [min_data, num_data] (the rest masked; `min_data=None` uses all). The prior given to the
    network is the `num_components`-component fit of p(z), z = log σ², by `em_steps` EM steps
    (fewer make training faster and the prior fit coarser; the task stays well defined).
    """

    num_components: int
    num_data: int = 20
    min_data: int | None = 1
    alpha_low: float = 3.0
    alpha_high: float = 6.0
    beta_low: float = 2.0
    beta_high: float = 5.0
    log_uniform: bool = False
    em_steps: int = EM_STEPS

    @classmethod
    def narrow(
        cls, num_components: int, num_data: int = 20, min_data: int | None = 1
    ) -> InverseGammaTask:
        """α ~ U[3, 6], β ~ U[2, 5]: priors on σ² with means β/(α − 1) in [0.4, 2.5]."""
        return cls(num_components, num_data, min_data, 3.0, 6.0, 2.0, 5.0, False)

    @classmethod
    def wide(
        cls, num_components: int, num_data: int = 20, min_data: int | None = 1
    ) -> InverseGammaTask:
        """log α ~ U[log 1, log 20], log β ~ U[log 0.1, log 10]: from skewed, heavy-tailed
        priors (α = 1 has no mean) to near-log-normal ones, over two decades of scale."""
        return cls(num_components, num_data, min_data, 1.0, 20.0, 0.1, 10.0, True)

    def check(self) -> InverseGammaTask:
        """Raise a ValueError naming a setting that cannot define the task (counts, or bounds
        on α and β that are not finite, positive and ordered)."""
        checks.count("num_components", self.num_components)
        checks.count("num_data", self.num_data)
        checks.count("em_steps", self.em_steps, 0)
        for name in ("alpha", "beta"):
            low = checks.number(f"{name}_low", getattr(self, f"{name}_low"), 0)
            high = checks.number(f"{name}_high", getattr(self, f"{name}_high"), 0)
            if not 0 < low <= high:
                raise ValueError(f"need 0 < {name}_low <= {name}_high, got {low}, {high}")
        return self

    def sample_parameters(self, rng_key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(α, β) from the meta-prior (checks the settings first; see `check`)."""
        self.check()
        alpha_key, beta_key = jax.random.split(rng_key)
        bounds = jnp.array([[self.alpha_low, self.alpha_high], [self.beta_low, self.beta_high]])
        if self.log_uniform:
            bounds = jnp.log(bounds)
        alpha = jax.random.uniform(alpha_key, (), minval=bounds[0, 0], maxval=bounds[0, 1])
        beta = jax.random.uniform(beta_key, (), minval=bounds[1, 0], maxval=bounds[1, 1])
        if self.log_uniform:
            alpha, beta = jnp.exp(alpha), jnp.exp(beta)
        return alpha, beta

    def prior_mixture(self, alpha: ArrayLike, beta: ArrayLike) -> GaussianMixture:
        """The `num_components`-component fit of p(z) (`fit_log_inverse_gamma`)."""
        return fit_log_inverse_gamma(alpha, beta, self.num_components, num_steps=self.em_steps)

    def simulate(self, rng_key: jax.Array, alpha: ArrayLike, beta: ArrayLike) -> Problem:
        """A problem under InverseGamma(α, β): latent z = log σ² [1] from the true prior (not the
        mixture), data [num_data, 1] with x_n ~ N(0, σ²), zeros where masked, and the mask."""
        self.check()
        latent_key, noise_key, mask_key = jax.random.split(rng_key, 3)
        z = sample_z(latent_key, alpha, beta, 1)
        noise = jax.random.normal(noise_key, (self.num_data, 1))
        mask = data_mask(mask_key, self.min_data, self.num_data)
        data = jnp.where(mask[:, None], jnp.exp(0.5 * z) * noise, 0.0)
        return Problem(self.prior_mixture(alpha, beta), z, data, mask)

    def sample(self, rng_key: jax.Array) -> Problem:
        """A fresh problem: `simulate(k2, *sample_parameters(k1))` with `k1, k2 = split(key)`."""
        parameter_key, problem_key = jax.random.split(rng_key)
        return self.simulate(problem_key, *self.sample_parameters(parameter_key))

    def posterior_mixture(
        self, alpha: ArrayLike, beta: ArrayLike, data: jax.Array, mask: jax.Array | None = None
    ) -> GaussianMixture:
        """The `num_components`-component fit of the exact posterior of z (its best answer)."""
        return fit_log_inverse_gamma(
            *posterior_parameters(alpha, beta, data, mask),
            self.num_components,
            num_steps=self.em_steps,
        )

    def expected_kl(
        self,
        rng_key: jax.Array,
        predict: Callable[[jax.Array, jax.Array, jax.Array, Problem], GaussianMixture],
        num_problems: int,
        num_samples: int = 2_000,
    ) -> KLEstimate:
        """The mean over `num_problems` fresh problems of KL(exact posterior ‖ predict(...)).

        `predict(rng_key, alpha, beta, problem)` returns a mixture over z; it is vmapped over
        problems (e.g. `lambda k, a, b, p: network(p.prior, p.data, p.mask)`). The standard
        error is over problems (it includes the per-problem Monte Carlo noise).
        """
        problem_key, predict_key, kl_key = jax.random.split(rng_key, 3)

        def one(keys: jax.Array) -> jax.Array:
            alpha, beta = self.sample_parameters(keys[0])
            problem = self.simulate(keys[1], alpha, beta)
            q = predict(keys[2], alpha, beta, problem)
            posterior = posterior_parameters(alpha, beta, problem.data, problem.mask)
            kl, _ = kl_to_exact(keys[3], *posterior, q, num_samples)
            return kl

        keys = jnp.stack(
            [
                jax.random.split(jax.random.fold_in(problem_key, 0), num_problems),
                jax.random.split(jax.random.fold_in(problem_key, 1), num_problems),
                jax.random.split(predict_key, num_problems),
                jax.random.split(kl_key, num_problems),
            ],
            axis=1,
        )
        values = jax.vmap(one)(keys)
        return KLEstimate(jnp.mean(values), jnp.std(values) / jnp.sqrt(num_problems), values)


def numpyro_model(
    alpha: ArrayLike, beta: ArrayLike, data: jax.Array, mask: jax.Array | None = None
) -> None:
    """σ² ~ InverseGamma(α, β); x_n ~ N(0, σ²) for the points of `data` [N, 1] in `mask`."""
    if mask is None:
        mask = jnp.ones(data.shape[0], bool)
    variance = numpyro.sample("variance", dist.InverseGamma(alpha, beta))
    with numpyro.plate("data", data.shape[0]):
        numpyro.sample("x", dist.Normal(0.0, jnp.sqrt(variance)).mask(mask), obs=data[:, 0])


def svi_posterior(
    rng_key: jax.Array,
    alpha: ArrayLike,
    beta: ArrayLike,
    data: jax.Array,
    mask: jax.Array | None = None,
    *,
    num_steps: int = 2_000,
    learning_rate: float = 0.01,
    num_particles: int = 1,
) -> GaussianMixture:
    """A normal q(z) = N(loc, scale²) over z = log σ² by SVI with `AutoNormal` (1 component).

    NumPyro maps the positive site to ℝ with exp, so the guide's unconstrained normal is a
    normal in z. Vmappable over problems (`run_svi` is one `lax.scan`).
    """
    if mask is None:
        mask = jnp.ones(data.shape[0], bool)
    guide = AutoNormal(numpyro_model)
    result = run_svi(
        rng_key,
        numpyro_model,
        guide,
        (alpha, beta, data, mask),
        num_steps=num_steps,
        learning_rate=learning_rate,
        num_particles=num_particles,
    )
    loc = result.params["variance_auto_loc"]
    scale = result.params["variance_auto_scale"]
    return GaussianMixture(jnp.zeros(1), jnp.reshape(loc, (1, 1)), jnp.reshape(scale, (1, 1, 1)))
