# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Bayesian models from NumPyro: eight schools
#
# Write a model in NumPyro, hand it to `ppl.numpyro_bridge.from_numpyro`, and run the
# toolkit's samplers on it: NUTS (and HMC, MALA) from BlackJAX with Stan-style warm-up, and
# adaptive tempered SMC, which also estimates the evidence p(y). The draws come back as ArviZ
# `InferenceData`, and are checked against NumPyro's own NUTS, against the reference draws of
# posteriordb, and against the exact posterior, which this model allows by one-dimensional
# quadrature.
#
# Set `PPL_NOTEBOOK_TINY=1` to run everything at tiny sizes in under a minute (the tests do);
# such short runs do not converge, and their convergence warnings are silenced.
#
# ## The model
# Eight schools ran the same coaching programme; school j reports an estimated effect y_j with
# a known standard error σ_j (Rubin 1981). The hierarchical model lets the true effects θ_j
# share a population mean μ and spread τ:
#
#     μ ~ N(0, 5²),   τ ~ HalfCauchy(5),   θ_j ~ N(μ, τ²),   y_j ~ N(θ_j, σ_j²),   j = 1..8.
#
# With eight noisy observations the posterior of τ reaches down to 0, where the θ_j are pinned
# to μ: a funnel whose neck a sampler with one step size enters badly, if at all (divergent
# transitions are the symptom). The *non-centred* form samples
# standardised effects instead and builds θ deterministically,
#
#     θ̃_j ~ N(0, 1),   θ_j = μ + τ θ̃_j,
#
# which is the same model with a posterior that is much rounder in (μ, log τ, θ̃). This is
# posteriordb's `eight_schools-eight_schools_noncentered`; the data come from there.

# %%
import os
import sys
import time
import warnings

import matplotlib

if "ipykernel" not in sys.modules and not os.environ.get("DISPLAY"):
    matplotlib.use("Agg")  # no display and no notebook front end: render off screen
import arviz as az
import jax
import matplotlib.pyplot as plt
import numpy as np
import numpyro
import numpyro.distributions as dist
import pandas as pd
from matplotlib.ticker import MaxNLocator
from numpyro.infer import MCMC, NUTS
from numpyro.infer.util import log_density as numpyro_log_density
from scipy import stats

from ppl.experiments.bayes import MCMCSettings, run_mcmc, run_tempered_smc
from ppl.experiments.plots import show_figure
from ppl.mcmc_diagnostics import ConvergenceWarning
from ppl.models.bayes import load_posterior, load_reference_draws, stan_names
from ppl.numpyro_bridge import from_numpyro

TINY = os.environ.get("PPL_NOTEBOOK_TINY") == "1"
NUM_CHAINS = 2 if TINY else 4
NUM_WARMUP = 100 if TINY else 1000
NUM_SAMPLES = 100 if TINY else 1000
NUM_PARTICLES = 200 if TINY else 2000
SMC_SEEDS = 2 if TINY else 5
PROGRESS = not TINY
if TINY:
    warnings.filterwarnings("ignore", category=ConvergenceWarning)


posterior_db = load_posterior("eight_schools-eight_schools_noncentered")
data = posterior_db.data  # {"sigma": [8], "y": [8]}, float64 NumPy arrays
print(
    f"{NUM_CHAINS} chains x {NUM_WARMUP} warm-up x {NUM_SAMPLES} draws, "
    f"{NUM_PARTICLES} particles, {SMC_SEEDS} SMC seeds"
)
print("y     =", data["y"])
print("sigma =", data["sigma"])

# %% [markdown]
# The model is an ordinary NumPyro function of the data. Passing `y=None` would make `y` a
# latent site (prior predictive sampling); here it is observed.


# %%
def eight_schools(sigma, y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("schools", sigma.shape[0]):
        theta_trans = numpyro.sample("theta_trans", dist.Normal(0.0, 1.0))
        theta = numpyro.deterministic("theta", mu + tau * theta_trans)
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


# %% [markdown]
# ## The bridge
# `from_numpyro` binds the model to its data and exposes the functions the samplers need, all
# on the *unconstrained* space. Each latent site z_s with support S_s is written z_s = T_s(u_s)
# with T_s = `biject_to(S_s)` (here T = exp for τ > 0, the identity for the others), and
#
#     log π(u) = log p(T(u), y) + log |det J_T(u)|
#              = log p(μ) + log p(τ) + log τ + Σ_j log N(θ̃_j; 0, 1)   ← log prior (with Jacobian)
#                + Σ_j log N(y_j; μ + τ θ̃_j, σ_j²)                    ← log likelihood
#
# which is minus NumPyro's potential energy. The likelihood is every observed site (and every
# `numpyro.factor`); the prior is the rest, so log prior + β · log likelihood is the tempering
# path SMC follows from β = 0 to β = 1. Positions are dicts of arrays, keyed by latent site.

# %%
model = from_numpyro(eight_schools, rng_key=jax.random.key(0), model_kwargs=data)
print("latent sites:       ", model.latent_sites)
print("observed sites:     ", model.observed_sites)
print("deterministic sites:", model.deterministic_sites)
print("dimension:          ", model.dimension, "(unconstrained scalars)")

u0 = model.initial_position  # NumPyro's init_to_uniform point, in (-2, 2) on each coordinate
log_density = float(model.logdensity_fn(u0))
log_prior = float(model.log_prior_fn(u0))
log_likelihood = float(model.log_likelihood_fn(u0))
print(
    f"at the initial point: log density {log_density:.4f} = "
    f"log prior {log_prior:.4f} + log likelihood {log_likelihood:.4f}"
)

# The same numbers by hand, from the formula above (scipy, float64):
z0 = model.constrain(u0)  # mu, tau, theta_trans and the deterministic theta
mu0, tau0 = float(z0["mu"]), float(z0["tau"])
theta_trans0 = np.asarray(z0["theta_trans"], np.float64)
by_hand_prior = (
    stats.norm.logpdf(mu0, 0, 5)
    + stats.halfcauchy.logpdf(tau0, scale=5)
    + np.log(tau0)
    + stats.norm.logpdf(theta_trans0).sum()
)
by_hand_likelihood = stats.norm.logpdf(data["y"], mu0 + tau0 * theta_trans0, data["sigma"]).sum()
print(
    f"by hand:              log prior {by_hand_prior:.4f}, log likelihood {by_hand_likelihood:.4f}"
)
for name, value in z0.items():
    print(f"  {name:<12}", np.round(np.asarray(value, np.float64), 3))

# The model is the one posteriordb's eight_schools_noncentered writes: the same joint density
latent0 = {name: z0[name] for name in model.latent_sites}
ours0, _ = numpyro_log_density(eight_schools, (), data, latent0)
library0, _ = numpyro_log_density(posterior_db.model, (), data, latent0)
print(f"log p(z, y) here {float(ours0):.4f}, in ppl.models.bayes {float(library0):.4f}")

# %% [markdown]
# ## NUTS from this toolkit
# `run_mcmc` starts each chain from its own `init_to_uniform` point, warms it up with Stan's
# windowed adaptation (step size by dual averaging toward acceptance 0.8, diagonal mass matrix
# from the warm-up draws; BlackJAX's `window_adaptation`), then samples. On one device NUTS
# chains run one after another through the same compiled program: vmapped NUTS would make every
# chain wait for the longest trajectory at every step. The result holds ArviZ `InferenceData`
# (posterior, sample_stats, log_likelihood, observed_data) and a convergence report: split
# R-hat ≤ 1.01, bulk and tail ESS ≥ 100 per chain, no divergences, energy BFMI ≥ 0.3; each
# failure is a `ConvergenceWarning`.

# %%
fit = run_mcmc(
    jax.random.key(1),
    model,
    MCMCSettings(kernel="nuts", num_warmup=NUM_WARMUP, num_samples=NUM_SAMPLES),
    num_chains=NUM_CHAINS,
    progress=PROGRESS,
)
idata = fit.inference_data
print(idata)
print(
    f"warm-up {fit.samples.warmup_seconds:.1f} s, sampling {fit.samples.sampling_seconds:.1f} s "
    "(compilation included)"
)
print("adapted step sizes:", np.round(np.asarray(fit.samples.step_size), 3))
report = fit.report
print(
    f"max R-hat {report.max_rhat:.3f}, min bulk ESS {report.min_ess_bulk:.0f}, "
    f"min tail ESS {report.min_ess_tail:.0f}, divergences {report.divergences}, "
    f"BFMI {np.round(report.bfmi, 2)}"
)
print("convergence checks passed" if report.ok else f"failed: {report.messages}")
print(az.summary(idata, var_names=["mu", "tau", "theta"]).to_string())

# %% [markdown]
# At full size a handful of the 4000 transitions diverge at the default target acceptance 0.8
# (the remnant of the funnel at small τ), which raises a `ConvergenceWarning`;
# `run_mcmc(..., MCMCSettings(target_acceptance_rate=0.9))` takes smaller steps and leaves none
# here.
#
# The trace of μ and τ, one line per chain: the chains should overlap and look like noise. The
# energy plot compares the marginal energy distribution with the distribution of the energy
# changes between draws; when the second is much narrower (low BFMI) the momentum resampling
# cannot move the chain across energy levels fast enough.

# %%
fig, axes = plt.subplots(2, 2, figsize=(9, 4.5))
az.plot_trace(idata, var_names=["mu", "tau"], axes=axes)
fig.tight_layout()
show_figure(fig, "trace")
ax = az.plot_energy(idata, figsize=(6, 3.5))
show_figure(ax.figure, "energy")

# %% [markdown]
# The funnel, seen in the sampled coordinates and in the model's: (log τ, θ̃_1) is nearly
# Gaussian, (log τ, θ_1) is the funnel the centred model would have to sample. Divergent
# transitions, if any, are the large dots.

# %%
posterior = idata.posterior
funnel = az.from_dict(
    posterior={
        "log_tau": np.log(posterior["tau"].values),
        "theta_trans_1": posterior["theta_trans"].values[..., 0],
        "theta_1": posterior["theta"].values[..., 0],
    },
    sample_stats={"diverging": idata.sample_stats["diverging"].values},
)
fig, axes = plt.subplots(1, 2, figsize=(8, 3.5), sharey=True)
for ax, name in zip(axes, ["theta_trans_1", "theta_1"], strict=True):
    az.plot_pair(
        funnel,
        var_names=[name, "log_tau"],
        divergences=True,
        ax=ax,
        scatter_kwargs={"alpha": 0.3, "s": 6},
    )
fig.tight_layout()
show_figure(fig, "funnel")

# %% [markdown]
# Leave-one-out cross-validation (PSIS-LOO) from the pointwise log likelihood. Each school is
# one data point; a Pareto k above ArviZ's threshold (0.7 for a few thousand draws, lower for
# fewer) means that school's importance-sampling LOO estimate is unreliable, and ArviZ warns.
# With eight points, each of which moves τ, a school or two near the threshold is common.

# %%
loo = az.loo(idata, pointwise=True)
print(loo)
print("Pareto k per school:", np.round(loo.pareto_k.values, 2))

# %% [markdown]
# ## NumPyro's own NUTS
# The same model and data through `numpyro.infer.MCMC`. NumPyro's NUTS is its own
# implementation (iterative tree building, its own warm-up schedule), so agreement is a check
# on both. `az.from_numpyro` gives the same groups.

# %%
numpyro_mcmc = MCMC(
    NUTS(eight_schools),
    num_warmup=NUM_WARMUP,
    num_samples=NUM_SAMPLES,
    num_chains=NUM_CHAINS,
    chain_method="sequential",
    progress_bar=PROGRESS,
)
start = time.perf_counter()
numpyro_mcmc.run(jax.random.key(2), **data)
numpyro_seconds = time.perf_counter() - start
numpyro_idata = az.from_numpyro(numpyro_mcmc)
numpyro_divergences = int(numpyro_idata.sample_stats["diverging"].values.sum())
print(
    f"NumPyro NUTS: {numpyro_seconds:.1f} s (warm-up and sampling, compilation included), "
    f"{numpyro_divergences} divergences"
)
print(f"ppl-jax NUTS: {fit.samples.warmup_seconds + fit.samples.sampling_seconds:.1f} s")
print(az.summary(numpyro_idata, var_names=["mu", "tau"]).to_string())

# %% [markdown]
# ## Tempered SMC
# Tempered SMC moves N particles from the prior to the posterior through
#
#     π_β(u) ∝ p(u) L(u)^β,   0 = β_0 < β_1 < ... < β_T = 1.
#
# Each iteration at temperature β chooses the next β' by bisection, so that the incremental
# weights L^{β'−β} of the particles would keep an effective sample size of 0.8 N; then it
# resamples, moves every particle with HMC steps that leave π_β invariant (mass matrix: the
# particles' covariance; one step size, adapted between iterations toward acceptance 0.65 and
# jittered per move), and weights the moved particles by L^{β'−β}. The product of the mean
# incremental weights is an unbiased estimate of the evidence,
#
#     log Ẑ = Σ_t log (1/N) Σ_i L(u_t^i)^{β_t − β_{t−1}}.
#
# Here it starts from prior draws (`reference="prior"`, which needs a proper prior); the default
# starts from an inflated Laplace approximation q of the posterior instead, on the path
# q^{1−β} p(y, u)^β, which is shorter when the data are informative (docs/bayesian.md). The
# particles at β = 1 come back as one
# `InferenceData` chain. Several seeds give the run-to-run spread of log Ẑ and of the
# posterior means, which the table below uses as the Monte Carlo standard error of one run.

# %%
smc_fits = [
    run_tempered_smc(
        jax.random.key(100 + seed),
        model,
        num_particles=NUM_PARTICLES,
        reference="prior",
        progress=PROGRESS,
    )
    for seed in range(SMC_SEEDS)
]
smc = smc_fits[0]
betas = np.concatenate([[0.0], smc.result.temperatures])
print(
    f"{len(smc.result.temperatures) - 1} tempering iterations and a final move at β = 1, "
    f"{smc.result.seconds:.1f} s"
)
print("β schedule:", np.round(betas, 4))
print("acceptance:", np.round(smc.result.acceptance_rates, 2))
print("step size: ", np.round(smc.result.step_sizes, 3))
log_evidences = np.array([f.log_evidence for f in smc_fits])
print("log evidence per seed:", np.round(log_evidences, 3))
print(f"mean {log_evidences.mean():.3f}, sd {log_evidences.std(ddof=1):.3f} over {SMC_SEEDS} seeds")

# %%
fig, axes = plt.subplots(1, 2, figsize=(8, 3))
for i, f in enumerate(smc_fits):
    axes[0].plot(np.concatenate([[0.0], f.result.temperatures]), "o-", ms=3, color=f"C{i}")
    axes[1].plot(
        np.arange(1, len(f.result.acceptance_rates) + 1),
        f.result.acceptance_rates,
        "o-",
        ms=3,
        color=f"C{i}",
    )
axes[0].set(xlabel="iteration", ylabel="β", title="temperature schedule")
axes[1].axhline(0.65, color="grey", lw=0.8, ls="--")
axes[1].set(
    xlabel="iteration",
    ylabel="mean HMC acceptance",
    ylim=(0, 1.05),
    title="acceptance (last: the move at β = 1)",
)
axes[1].xaxis.set_major_locator(MaxNLocator(integer=True))
fig.tight_layout()
show_figure(fig, "smc_schedule")

# %% [markdown]
# Eight data points say little, so the posterior is not far from the prior and a few tempering
# steps suffice. The HMC step size starts at 0.5 · d^(−1/4) and is multiplied by at most
# exp(1 − 0.65) ≈ 1.4 per iteration, so in so short a run it may not reach the size that
# would bring acceptance down to 0.65: then the moves are shorter than they could be, which
# shows as acceptance near 1.

# %% [markdown]
# ### The exact answer
# Eight schools is small enough to be solved exactly. Given τ, θ and μ are Gaussian and
# integrate out: y | τ ~ N(0, D_τ + 5² 11ᵀ) with D_τ = diag(σ_j² + τ²), so
#
#     p(y) = ∫ HalfCauchy(τ; 5) N(y; 0, D_τ + 25·11ᵀ) dτ,
#
# one dimension of quadrature. The same grid in τ gives the posterior of τ and, through the
# Gaussian conditionals of μ | τ, y and θ_j | μ, τ, y_j, the exact posterior means and sds of
# μ and θ (w_j = 1/(σ_j² + τ²), V_τ = 1/(1/25 + Σ w_j), m_τ = V_τ Σ w_j y_j;
# θ_j | τ, y has mean a_j y_j + (1 − a_j) m_τ and variance a_j σ_j² + (1 − a_j)² V_τ, with
# a_j = τ²/(σ_j² + τ²)).

# %%
y64, sigma64 = data["y"], data["sigma"]
log_tau_grid = np.linspace(-15.0, 10.0, 50_001)  # in log τ, so the mass near τ = 0 is resolved
tau_grid = np.exp(log_tau_grid)
variances = sigma64**2 + tau_grid[:, None] ** 2  # [grid, J]: the diagonal of D_τ
w = 1.0 / variances
V = 1.0 / (1.0 / 25.0 + w.sum(1))
m = V * (w * y64).sum(1)
# log N(y; 0, D + 25·11ᵀ) by the matrix determinant lemma and Sherman-Morrison, on the whole grid
log_marginal = -0.5 * (
    8 * np.log(2 * np.pi)
    + np.log(variances).sum(1)
    + np.log(1 + 25.0 * w.sum(1))
    + (w * y64**2).sum(1)
    - 25.0 * (w * y64).sum(1) ** 2 / (1 + 25.0 * w.sum(1))
)
check = stats.multivariate_normal.logpdf(y64, np.zeros(8), np.diag(variances[30_000]) + 25.0)
assert np.isclose(log_marginal[30_000], check), (log_marginal[30_000], check)
log_joint = stats.halfcauchy.logpdf(tau_grid, scale=5) + log_marginal + log_tau_grid  # dτ = τ du
peak = log_joint.max()
exact_log_evidence = peak + np.log(np.trapezoid(np.exp(log_joint - peak), log_tau_grid))
weights = np.exp(log_joint - peak)
weights /= np.trapezoid(weights, log_tau_grid)


def expect(values):
    """Posterior expectation of a function of τ given on the grid ([grid] or [grid, J])."""
    return np.trapezoid(np.moveaxis(values, 0, -1) * weights, log_tau_grid)


a = tau_grid[:, None] ** 2 / variances
theta_mean_given_tau = a * y64 + (1 - a) * m[:, None]
theta_var_given_tau = a * sigma64**2 + (1 - a) ** 2 * V[:, None]
exact = {
    "mu": (expect(m), np.sqrt(expect(V + m**2) - expect(m) ** 2)),
    "tau": (expect(tau_grid), np.sqrt(expect(tau_grid**2) - expect(tau_grid) ** 2)),
}
theta_means = expect(theta_mean_given_tau)
theta_sds = np.sqrt(expect(theta_var_given_tau + theta_mean_given_tau**2) - theta_means**2)
exact.update({f"theta[{j + 1}]": (theta_means[j], theta_sds[j]) for j in range(8)})
print(f"exact log evidence (quadrature): {exact_log_evidence:.4f}")
print(
    f"tempered SMC:                    {log_evidences.mean():.4f} ± "
    f"{log_evidences.std(ddof=1) / np.sqrt(SMC_SEEDS):.4f} (mean ± standard error over seeds)"
)

# %% [markdown]
# ## Side by side
# Posterior means (± Monte Carlo standard error) and standard deviations from the three
# samplers, the posteriordb reference (10 chains × 1000 thinned Stan draws) and the exact
# quadrature. For the MCMC columns the MCSE comes from ArviZ's ESS; for tempered SMC it is the
# standard deviation of the posterior mean over the SMC seeds (the error of one run). The last
# line is the largest |mean − exact| / MCSE over the ten parameters.

# %%
reference = load_reference_draws(posterior_db.name)  # Stan names -> [10 chains, 1000 draws]
reference_idata = az.from_dict(
    posterior={
        "mu": reference["mu"],
        "tau": reference["tau"],
        "theta": np.stack([reference[f"theta[{j}]"] for j in range(1, 9)], axis=-1),
    }
)
# The toolkit's draws under Stan's names: the same keys as the reference
ours = stan_names({name: posterior[name].values for name in ["mu", "tau", "theta"]})
assert set(ours) == set(reference), (sorted(ours), sorted(reference))
NAMES = list(exact)


def mcmc_column(inference_data):
    summary = az.summary(
        inference_data, var_names=["mu", "tau", "theta"], kind="all", round_to="none"
    )
    summary.index = [  # ArviZ's 0-based theta[0] -> Stan's theta[1]
        name if "[" not in name else f"theta[{int(name[6:-1]) + 1}]" for name in summary.index
    ]
    return {
        n: (summary.loc[n, "mean"], summary.loc[n, "sd"], summary.loc[n, "mcse_mean"])
        for n in NAMES
    }


def smc_column(fits):
    per_seed = [
        stan_names({k: f.inference_data.posterior[k].values for k in ["mu", "tau", "theta"]})
        for f in fits
    ]
    column = {}
    for n in NAMES:
        means = np.array([d[n].mean() for d in per_seed])
        spread = means.std(ddof=1) if len(fits) > 1 else np.nan
        column[n] = (means[0], per_seed[0][n].std(), spread)
    return column


columns = {
    "ppl-jax NUTS": mcmc_column(idata),
    "NumPyro NUTS": mcmc_column(numpyro_idata),
    "tempered SMC": smc_column(smc_fits),
    "posteriordb": mcmc_column(reference_idata),
}
means = pd.DataFrame(
    {source: [f"{c[n][0]:7.3f} ±{c[n][2]:6.3f}" for n in NAMES] for source, c in columns.items()},
    index=NAMES,
)
means["exact"] = [f"{exact[n][0]:7.3f}" for n in NAMES]
sds = pd.DataFrame({source: [c[n][1] for n in NAMES] for source, c in columns.items()}, index=NAMES)
sds["exact"] = [exact[n][1] for n in NAMES]
worst = {
    source: max(abs(c[n][0] - exact[n][0]) / c[n][2] for n in NAMES)
    for source, c in columns.items()
}
print("posterior mean ± MCSE")
print(means.to_string())
print(
    "max |mean − exact| / MCSE:",
    ", ".join(f"{source} {value:.1f}" for source, value in worst.items()),
)
print("\nposterior sd")
print(sds.to_string(float_format=lambda v: f"{v:7.3f}"))

# %% [markdown]
# The marginal posterior of τ from each source, with the exact density (a kernel density
# estimate smooths the mode at τ = 0 away, so the comparison is on histograms).

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
bins = np.linspace(0, 25, 51)
tau_draws = {
    "ppl-jax NUTS": idata.posterior["tau"].values.ravel(),
    "NumPyro NUTS": numpyro_idata.posterior["tau"].values.ravel(),
    "tempered SMC": smc.inference_data.posterior["tau"].values.ravel(),
    "posteriordb": reference["tau"].ravel(),
}
for source, draws in tau_draws.items():  # normalised over all draws, not just those below 25
    scale = np.full(draws.size, 1.0 / (draws.size * (bins[1] - bins[0])))
    ax.hist(draws, bins=bins, weights=scale, histtype="step", lw=1.3, label=source)
ax.plot(tau_grid, weights / tau_grid, color="k", lw=1, ls="--", label="exact")
ax.set(xlim=(0, 25), xlabel="τ", ylabel="posterior density")
ax.legend(fontsize=8)
fig.tight_layout()
show_figure(fig, "tau_density")

# %% [markdown]
# ## HMC and MALA
# The same runner with `kernel="hmc"` (16 leapfrog steps per draw, same window adaptation)
# and `kernel="mala"` (one gradient step per draw, step size adapted toward acceptance 0.574;
# no mass matrix), both vectorised over chains. The table compares the worst effective sample
# size over the parameters per gradient evaluation in the sampling phase. HMC integrates every
# trajectory for the same 16 steps; NUTS stops each one when it starts to turn back, and on the
# full-size run gets more than twice HMC's bulk ESS per gradient. MALA takes one short,
# diffusive step per draw, without a mass matrix; a thousand draws are far too few for it
# (R-hat above 1.01, bulk ESS in the tens).

# %%
kernel_fits = {"nuts": fit}
for kernel in ["hmc", "mala"]:
    kernel_fits[kernel] = run_mcmc(
        jax.random.key(3),
        model,
        MCMCSettings(kernel=kernel, num_warmup=NUM_WARMUP, num_samples=NUM_SAMPLES),
        num_chains=NUM_CHAINS,
        progress=PROGRESS,
    )
rows = {}
for kernel, f in kernel_fits.items():
    sample_stats = f.inference_data.sample_stats
    num_draws = sample_stats.sizes["chain"] * sample_stats.sizes["draw"]
    # leapfrog steps (one gradient each); MALA takes one gradient step per draw
    gradients = float(sample_stats["n_steps"].sum()) if "n_steps" in sample_stats else num_draws
    rows[kernel] = {
        "max R-hat": f.report.max_rhat,
        "min bulk ESS": f.report.min_ess_bulk,
        "min tail ESS": f.report.min_ess_tail,
        "divergences": f.report.divergences,
        "gradients/draw": gradients / num_draws,
        "bulk ESS per 1000 gradients": 1000 * f.report.min_ess_bulk / gradients,
        "sampling s": f.samples.sampling_seconds,
    }
print(pd.DataFrame(rows).T.to_string(float_format=lambda v: f"{v:9.3f}"))
