# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # The bootstrap particle filter on stochastic volatility
#
# Simulate a stochastic-volatility series, filter it with the bootstrap particle filter
# (`ppl.samplers.smc.run` under `jax.jit`), and look at three things: the particle cloud against
# the true log-variance, the effective sample size and when the filter resampled, and how the
# log-evidence estimate tightens as the number of particles N grows.
#
# Set `PPL_NOTEBOOK_TINY=1` to run everything at small sizes in seconds (the tests do).
#
# ## The state-space view
# A state-space model is a hidden Markov chain x_t seen through noisy observations y_t:
#
#     x_0 ~ p(x_0),   x_t | x_{t-1} ~ f(x_t | x_{t-1}),   y_t | x_t ~ g(y_t | x_t).
#
# In stochastic volatility the hidden state is the log-variance of a return series. It is a
# stationary AR(1) around μ, and each return is Gaussian with that variance:
#
#     x_t = μ + φ (x_{t-1} - μ) + σ e_t,   y_t | x_t ~ N(0, exp(x_t)).
#
# Filtering means tracking p(x_t | y_{0:t}) as observations arrive. Here it has no closed form,
# and neither does the likelihood (evidence) p(y_{0:T-1}).

# %%
import os
import sys

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

if "ipykernel" not in sys.modules and not os.environ.get("DISPLAY"):
    matplotlib.use("Agg")  # no display and no notebook front end: render off screen
import matplotlib.pyplot as plt

from ppl.diagnostics import weighted_mean
from ppl.experiments.plots import show_figure
from ppl.models.ssm.stochastic_volatility import StochasticVolatility, bootstrap, simulate
from ppl.samplers import smc

TINY = os.environ.get("PPL_NOTEBOOK_TINY") == "1"
NUM_STEPS = 50 if TINY else 500  # T
NUM_PARTICLES = 256 if TINY else 1000  # N for the filtering plots
SIZES = [16, 64] if TINY else [100, 1000, 10_000]  # N for the evidence study
NUM_SEEDS = 32 if TINY else 20  # independent runs per N


# The Pitt-Shephard values (also used by benchmarks/pf_stochastic_volatility.py).
model = StochasticVolatility(mu=-1.02, phi=0.9702, sigma=0.178)
states, observations = simulate(jax.random.key(0), model, NUM_STEPS)
print(f"T = {NUM_STEPS}, N = {NUM_PARTICLES}, evidence study over N = {SIZES}")

# %% [markdown]
# ## The bootstrap filter
# The bootstrap filter proposes each particle from the model's own dynamics,
# x_t^i ~ f(· | x_{t-1}^{a_i}), where a_i is the particle's parent (a_i = i unless the filter
# resampled). Because the proposal is the prior, the importance weight keeps only the
# likelihood of the new observation:
#
#     w_t^i = W_{t-1}^{a_i} · g(y_t | x_t^i),   W_t^i = w_t^i / Σ_j w_t^j,
#
# with log g(y | x) = -(log 2π + x + y² exp(-x)) / 2 here, and W_{t-1}^{a_i} = 1/N right after
# resampling. The evidence estimate multiplies the normalizers:
# log Ẑ = Σ_t log Σ_i w_t^i (with the 1/N of the initial weights at t = 0). Ẑ is unbiased for
# p(y_{0:T-1}); log Ẑ is biased low by about half its variance.
#
# The filter resamples (systematic resampling) when ESS = (Σ_i w_i)² / Σ_i w_i² falls
# below N/2.

# %%
fk = bootstrap(model, observations)
run = jax.jit(lambda key: smc.run(key, fk, NUM_PARTICLES, NUM_STEPS))
result = run(jax.random.key(1))
print(f"log-evidence estimate: {float(result.log_evidence):.3f}")


def weighted_quantiles(x: jax.Array, log_weights: jax.Array, qs: jax.Array) -> jax.Array:
    """Quantiles of the weighted sample Σ_i W_i δ(x_i) (midpoint interpolation of the CDF)."""
    order = jnp.argsort(x)
    w = jax.nn.softmax(log_weights)[order]
    cdf = jnp.cumsum(w) - 0.5 * w
    return jnp.interp(qs, cdf, x[order])


qs = jnp.asarray([0.05, 0.5, 0.95])
bands = np.asarray(
    jax.vmap(weighted_quantiles, (0, 0, None))(result.particles, result.log_weights, qs)
)
means = np.asarray(jax.vmap(weighted_mean)(result.log_weights, result.particles))
inside = (np.asarray(states) >= bands[:, 0]) & (np.asarray(states) <= bands[:, 2])
print(f"true state inside the 5%-95% band at {inside.mean():.0%} of the steps")

# %% [markdown]
# ## (a) The particle cloud over time
# Top: the observed returns. Bottom: a thinned sample of the particles (each step's cloud, drawn
# in proportion to the weights), the weighted filtering mean and 5%-95% band, and the true
# log-variance. The band widens where returns are small: a small |y_t| says little about how
# small the variance is.

# %%
steps = np.arange(NUM_STEPS)
thin = min(NUM_PARTICLES, 30)
cloud_idx = jax.vmap(lambda k, lw: jax.random.categorical(k, lw, shape=(thin,)))(
    jax.random.split(jax.random.key(2), NUM_STEPS), result.log_weights
)
cloud = np.take_along_axis(np.asarray(result.particles), np.asarray(cloud_idx), axis=1)

fig, (ax_y, ax_x) = plt.subplots(2, 1, figsize=(10, 6), sharex=True, height_ratios=[1, 2])
ax_y.plot(steps, observations, lw=0.8, color="k")
ax_y.set(ylabel="return y_t", title="stochastic volatility: observations and filtering")
ax_x.scatter(np.repeat(steps, thin), cloud.ravel(), s=2, alpha=0.15, color="C0", label="particles")
ax_x.fill_between(steps, bands[:, 0], bands[:, 2], alpha=0.3, color="C0", label="5%-95% band")
ax_x.plot(steps, means, color="C0", lw=1.5, label="filtering mean")
ax_x.plot(steps, states, color="C3", lw=1.2, label="true x_t")
ax_x.set(xlabel="t", ylabel="log-variance x_t")
ax_x.legend(loc="upper right", ncol=4, fontsize=8)
fig.tight_layout()
show_figure(fig, "sv_filtering")

# %% [markdown]
# ## (b) Effective sample size and resampling
# The ESS after each reweighting, with the steps at which the filter resampled (because the
# previous step's ESS had fallen below N/2, the dashed line). Large returns are informative:
# they concentrate the weights and make the ESS drop.

# %%
ess = np.asarray(result.info.ess)
resampled = np.asarray(result.info.resampled)
fig, ax = plt.subplots(figsize=(10, 3.5))
ax.plot(steps, ess, color="C0", lw=1, label="ESS")
ax.axhline(NUM_PARTICLES / 2, color="gray", ls="--", lw=1, label="threshold N/2")
ax.plot(steps[resampled], ess[resampled], "v", color="C3", ms=5, label="resampled at t")
ax.set(xlabel="t", ylabel="ESS", ylim=(0, NUM_PARTICLES * 1.05), title=f"N = {NUM_PARTICLES}")
ax.legend(loc="lower right", fontsize=8)
fig.tight_layout()
show_figure(fig, "sv_ess")
print(f"resampled at {resampled.sum()} of {NUM_STEPS} steps; smallest ESS {ess.min():.1f}")

# %% [markdown]
# ## (c) The log-evidence estimate against N
# Independent runs (different seeds) at each N. The spread of log Ẑ shrinks roughly like 1/N
# (its variance), and its mean creeps up towards log p(y) as the downward bias, about half the
# variance, goes away.

# %%
log_z = {}
for n in SIZES:
    estimate = jax.jit(
        jax.vmap(lambda key, n=n: smc.run(key, fk, n, NUM_STEPS, keep_history=False).log_evidence)
    )
    log_z[n] = np.asarray(estimate(jax.random.split(jax.random.key(100 + n), NUM_SEEDS)))
mean_z = np.asarray([log_z[n].mean() for n in SIZES])
std_z = np.asarray([log_z[n].std(ddof=1) for n in SIZES])
for n, m, s in zip(SIZES, mean_z, std_z, strict=True):
    print(f"N = {n:6d}: log Z = {m:9.3f} ± {s:.3f} (sd over {NUM_SEEDS} runs)")

fig, (ax_m, ax_v) = plt.subplots(1, 2, figsize=(10, 3.5))
for n in SIZES:
    ax_m.scatter(np.full(NUM_SEEDS, n), log_z[n], s=6, alpha=0.3, color="C0")
ax_m.errorbar(SIZES, mean_z, yerr=std_z, fmt="o-", color="C3", capsize=4, label="mean ± sd")
ax_m.set(xscale="log", xlabel="particles N", ylabel="log Ẑ", title="log-evidence estimates")
ax_m.legend(fontsize=8)
ax_v.plot(SIZES, std_z**2, "o-", color="C3", label="Var[log Ẑ]")
ax_v.plot(SIZES, std_z[0] ** 2 * SIZES[0] / np.asarray(SIZES), ":", color="gray", label="∝ 1/N")
ax_v.set(xscale="log", yscale="log", xlabel="particles N", title="variance across seeds")
ax_v.legend(fontsize=8)
fig.tight_layout()
show_figure(fig, "sv_evidence")

# %% [markdown]
# ## Checks

# %%
assert np.all(np.isfinite(np.asarray(result.log_weights)))
assert np.isfinite(float(result.log_evidence))
assert np.all((ess >= 1 - 1e-3) & (ess <= NUM_PARTICLES * (1 + 1e-4))), (ess.min(), ess.max())
assert not resampled[0]  # t = 0 has nothing to resample
assert np.all(np.isfinite(means)) and np.all(bands[:, 0] <= bands[:, 2])
assert inside.mean() > 0.5, inside.mean()
assert all(np.all(np.isfinite(v)) for v in log_z.values())
assert std_z[-1] < std_z[0], std_z  # more particles, less spread
