# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Amortized posteriors with a Distribution Transformer
#
# A Distribution Transformer (Whittle et al. 2025) is a network that takes a *prior*, given as
# a Gaussian mixture, and a data set, and returns the *posterior* as a Gaussian mixture:
#
#     q_θ(x | prior, y_{1:N}) = Σ_k w'_k N(x; m'_k, Σ'_k) = DT_θ(prior, y_{1:N}).
#
# Because the prior is an input, one trained network serves every prior the training
# distribution covers: a changed prior needs no retraining, and a posterior can be fed back in
# as the next prior, which makes it a recursive filter. This notebook trains one on the
# conjugate linear-Gaussian task of the paper, where the exact posterior is known (section 1),
# and then
#
# 2. compares it with the exact posterior and with per-problem NumPyro SVI (accuracy and time),
# 3. swaps in a hand-written prior it never saw,
# 4. makes it exact with importance sampling (and uses it to start MCMC),
# 5. checks its calibration with simulation-based calibration,
# 6. runs it as a recursive filter and as a particle-filter proposal,
# 7. saves and reloads it.
#
# The full notebook takes about two minutes on a 2-core CPU, training included. Set
# `PPL_NOTEBOOK_TINY=1` to run everything at tiny sizes (the tests do): the network then trains
# for only 150 steps, so its numbers are poor, and most of the time goes to compilation.

# %%
import os
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

if "ipykernel" not in sys.modules and not os.environ.get("DISPLAY"):
    matplotlib.use("Agg")  # no display and no notebook front end: render off screen
import equinox as eqx
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

from ppl import state_space
from ppl.calibration import simulation_based_calibration
from ppl.experiments.plots import plot_sbc_ranks, show_figure
from ppl.gaussian_mixture import (
    GaussianMixture,
    kl_divergence,
    mixture,
)
from ppl.models.amortized import checkpoint
from ppl.models.amortized.baselines import svi_posterior
from ppl.models.amortized.distribution_transformer import DistributionTransformer
from ppl.models.amortized.filtering import (
    MixtureLinearGaussian,
    amortized_filter,
    amortized_proposal,
    exact_filter,
    filter_kl,
    simulate,
    state_space_model,
)
from ppl.models.amortized.tasks import LinearGaussianTask, Problem
from ppl.models.amortized.training import fit
from ppl.samplers import importance, mcmc, smc

TINY = os.environ.get("PPL_NOTEBOOK_TINY") == "1"
NUM_TRAIN_STEPS = 150 if TINY else 4000
CHUNK_SIZE = 150 if TINY else 200  # divides NUM_TRAIN_STEPS: one compiled chunk shape
NUM_HELD_OUT = 50 if TINY else 200  # held-out problems for KL, SVI and importance sampling
KL_SAMPLES = 1000 if TINY else 4000  # Monte Carlo draws per KL estimate
SVI_STEPS = 200 if TINY else 1000
NUM_IS_SAMPLES = 1000 if TINY else 10_000
NUM_WARMUP, NUM_MCMC_SAMPLES = (100, 100) if TINY else (500, 1000)
SBC_PROBLEMS, SBC_DRAWS, SBC_BINS = (50, 99, 10) if TINY else (500, 99, 20)
FILTER_STEPS = 20 if TINY else 100
NUM_PARTICLES = 64 if TINY else 256
NUM_PF_RUNS = 3 if TINY else 8
print(
    f"{NUM_TRAIN_STEPS} training steps, {NUM_HELD_OUT} held-out problems, "
    f"{SVI_STEPS} SVI steps, {SBC_PROBLEMS} SBC problems, {FILTER_STEPS} filter steps, "
    f"{NUM_PARTICLES} particles x {NUM_PF_RUNS} runs"
)
notebook_start = time.perf_counter()

# %% [markdown]
# ## 1. The task and the network
# The training distribution is a *meta-prior* over priors. Each problem draws
#
#     prior:   K = 3 components, weights ~ Dirichlet(1), means m_k ~ N(0, 2² I),
#              standard deviations log-uniform on [0.15, 2], LKJ(2)-correlated,
#     latent:  x ~ prior,
#     data:    y_n = H x + v_n,  v_n ~ N(0, R),  n = 1..N,  N uniform on {1, ..., 8},
#
# with a 2-D latent, H = I₂ and R = 0.5² I₂ (the rest of the 8 slots are masked). The model is
# conjugate: each component goes through a Kalman update and is re-weighted by its own
# evidence, so `task.exact_posterior` is the exact posterior mixture.
#
# The network turns each prior component into a token [log w_k, m_k, vech(L̃_k)] (L̃ is the
# Cholesky factor with a log diagonal, so every entry is unconstrained), and each data point
# into a token through a small MLP. Two blocks of self-attention among components,
# cross-attention from components to data and an MLP update the component tokens, and the
# output is added to the input token. The output projection starts at zero, so an *untrained*
# network returns its prior unchanged.

# %%
H = jnp.eye(2)
R = 0.5**2 * jnp.eye(2)
task = LinearGaussianTask(
    observation_matrix=H,
    noise_covariance=R,
    num_components=3,
    num_data=8,
    min_data=1,
    correlated=True,
    scale_low=0.15,
)
untrained = DistributionTransformer(2, 2, width=64, depth=2, num_heads=4, key=jax.random.key(0))
num_parameters = sum(leaf.size for leaf in jax.tree.leaves(eqx.filter(untrained, eqx.is_array)))
print(f"network parameters: {num_parameters}")

# Problems for evaluation, from keys the training never uses. Everything below runs compiled
# (eager op-by-op execution of the network is slow); a compiled function is reused wherever
# the shapes allow, since on this CPU compiling costs more than running (`task.sample`, with
# its LKJ draws, alone takes seconds to compile).
sample_batch = jax.jit(jax.vmap(task.sample))
held_out = sample_batch(jax.random.split(jax.random.key(4), NUM_HELD_OUT))


@eqx.filter_jit
def dt_batch(network: DistributionTransformer, problems: Problem) -> GaussianMixture:
    return jax.vmap(network)(problems.prior, problems.data, problems.mask)


def index(tree, i):
    return jax.tree.map(lambda leaf: leaf[i], tree)


example = index(held_out, 0)
print(f"example problem: {int(example.mask.sum())} of {task.num_data} points observed")
print("prior weights:", np.round(np.exp(np.asarray(example.prior.log_weights)), 3))
print("prior means:\n", np.round(np.asarray(example.prior.means), 3))
untrained_posteriors = dt_batch(untrained, held_out)
difference = max(
    float(jnp.max(jnp.abs(a - b)))
    for a, b in zip(
        jax.tree.leaves(untrained_posteriors), jax.tree.leaves(held_out.prior), strict=True
    )
)
print(
    f"untrained network on {NUM_HELD_OUT} problems: max |output − prior| over weights, means "
    f"and Cholesky factors = {difference:.2e}"
)

# %% [markdown]
# ### Training
# Every step draws a fresh batch of 64 problems and minimises
#
#     L(θ) = E[ −log q_θ(x_true | prior, y) ] + λ E[ −log q_θ(x_true | prior, ∅) ],   λ = 1.
#
# The first term is E[KL(p(x | prior, y) ‖ q_θ)] plus the entropy of the exact posterior, a
# constant, so it is minimised by the exact posterior map; the network never needs to see an
# exact posterior, only simulated (prior, latent, data) triples. The second term hands it the
# same problem with every point masked, whose exact answer is the prior itself (prior
# reconstruction); it has the same minimiser, so it changes what the network practises, not
# what it should converge to. The optimiser is AdamW with a cosine-decayed learning rate from
# 10⁻³.
#
# The dashed line is the loss of the exact posterior map on 16000 fresh problems,
# E[−log p(x | prior, y)] + E[−log p(x | prior)]: the floor of L. The gap between the curve and
# the floor is the network's expected KL from the exact posterior (both terms together).

# %%
optimizer = optax.adamw(optax.cosine_decay_schedule(1e-3, NUM_TRAIN_STEPS))
start = time.perf_counter()
trained = fit(
    jax.random.key(2),
    untrained,
    task.sample,
    num_steps=NUM_TRAIN_STEPS,
    batch_size=64,
    optimizer=optimizer,
    prior_weight=1.0,
    progress=not TINY,
    chunk_size=CHUNK_SIZE,
)
losses = np.asarray(jax.block_until_ready(trained.losses))
training_seconds = time.perf_counter() - start
network = trained.network
print(f"trained {NUM_TRAIN_STEPS} steps in {training_seconds:.1f} s (compilation included)")


# Batched helpers, each compiled once and reused wherever the shapes allow.
exact_batch = jax.jit(jax.vmap(task.exact_posterior))
log_prob_at = jax.jit(jax.vmap(GaussianMixture.log_prob))  # one point per mixture


def exact_loss(key: jax.Array, num_problems: int, chunk: int = NUM_HELD_OUT) -> tuple[float, float]:
    """E[−log p(x | prior, y)] and E[−log p(x | prior)] over fresh problems."""
    with_data, without = [], []
    for chunk_key in jax.random.split(key, num_problems // chunk):
        problems = sample_batch(jax.random.split(chunk_key, chunk))
        posteriors = exact_batch(problems.prior, problems.data, problems.mask)
        with_data.append(-np.asarray(log_prob_at(posteriors, problems.latent)))
        without.append(-np.asarray(log_prob_at(problems.prior, problems.latent)))
    return float(np.mean(with_data)), float(np.mean(without))


floor_data, floor_prior = exact_loss(jax.random.key(3), 1000 if TINY else 16000)
floor = floor_data + floor_prior
window = max(1, NUM_TRAIN_STEPS // 40)
smoothed = np.convolve(losses, np.ones(window) / window, mode="valid")
smoothed_steps = np.arange(window - 1, NUM_TRAIN_STEPS)
print(f"exact-map floor: {floor:.3f} = {floor_data:.3f} (with data) + {floor_prior:.3f} (no data)")
print(f"smoothed loss (window {window}):")
for fraction in (0.0, 0.1, 0.25, 0.5, 0.75, 1.0):
    at = min(int(fraction * (smoothed.size - 1)), smoothed.size - 1)
    print(f"  step {smoothed_steps[at]:5d}: {smoothed[at]:.3f}")

fig, ax = plt.subplots(figsize=(7, 3.5))
ax.plot(losses, color="C0", alpha=0.25, lw=0.5, label="loss per batch")
ax.plot(smoothed_steps, smoothed, color="C0", lw=1.5, label=f"moving average ({window} steps)")
ax.axhline(floor, color="k", ls="--", lw=1, label="exact posterior map")
ax.set(xlabel="step", ylabel="loss (nats)", title="Distribution Transformer training")
ax.set_ylim(floor - 0.5, np.percentile(losses, 99) + 0.5)
ax.legend(fontsize=8)
fig.tight_layout()
show_figure(fig, "dt_loss")

# %% [markdown]
# In the full run (all seeds fixed) the smoothed loss falls from about 4.2 to 1.96 nats in
# 4000 steps (about 75 s on a 2-core CPU, compilation included), within a few hundredths of a
# nat of the floor of 1.93; what is left is the network's average KL over both terms, blurred
# by the noise of 64-problem batches.

# %% [markdown]
# ## 2. Held-out problems
# Problems the network was not trained on (fresh keys), one jitted, vmapped call for all of
# them. Each panel shows the prior (grey), the exact posterior (black) and the network's
# posterior (red) as the regions holding 50% and 90% of their mass, with the observed points
# (dots) and the true latent (star). Two problems with one or two points (where the posterior
# can still be multimodal) and two with many.


# %%
kl_vmapped = jax.jit(jax.vmap(lambda key, p, q: kl_divergence(key, p, q, KL_SAMPLES)))


def kl_batch(keys: jax.Array, p: GaussianMixture, q: GaussianMixture):
    """Per problem, `kl_divergence(key, p, q, KL_SAMPLES)` and its standard error, as numpy."""
    kl, se = kl_vmapped(keys, p, q)
    return np.asarray(kl), np.asarray(se)


exact = exact_batch(held_out.prior, held_out.data, held_out.mask)
dt_posteriors = dt_batch(network, held_out)
kl_keys = jax.random.split(jax.random.key(5), NUM_HELD_OUT)
kl_dt, kl_dt_se = kl_batch(kl_keys, exact, dt_posteriors)
kl_prior, _ = kl_batch(kl_keys, exact, untrained_posteriors)
kl_one = jax.jit(lambda key, p, q: kl_divergence(key, p, q, KL_SAMPLES))
check, _ = kl_one(kl_keys[0], index(exact, 0), index(dt_posteriors, 0))
print(f"problem 0: kl_divergence {float(check):.5f}, batched helper {kl_dt[0]:.5f}")
counts = np.asarray(held_out.mask.sum(-1))

few = np.flatnonzero(counts <= 2)[:2]
many = np.flatnonzero(counts >= 6)[:2]
shown = np.concatenate([few, many])


def hpd_levels(density: np.ndarray, masses=(0.9, 0.5)) -> list[float]:
    """Density levels whose super-level sets hold `masses` of the grid's mass (increasing)."""
    flat = np.sort(density.ravel())[::-1]
    cumulative = np.cumsum(flat) / flat.sum()
    return sorted(float(flat[min(np.searchsorted(cumulative, m), flat.size - 1)]) for m in masses)


grid_log_prob = jax.jit(lambda mix, points: jax.vmap(mix.log_prob)(points))


def draw_mixture(ax, mix: GaussianMixture, box, color, **kwargs) -> None:
    xs = np.linspace(box[0], box[1], 250)
    ys = np.linspace(box[2], box[3], 250)
    grid = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)
    density = np.exp(np.asarray(grid_log_prob(mix, jnp.asarray(grid)))).reshape(250, 250)
    ax.contour(xs, ys, density, levels=hpd_levels(density), colors=color, **kwargs)


def plot_box(mixtures, extra=()) -> tuple[float, float, float, float]:
    """A box holding every component's mean ± 2.5 sd and the `extra` points."""
    points = list(extra)
    for mix in mixtures:
        scales = np.sqrt(np.diagonal(np.asarray(mix.covariances), axis1=-2, axis2=-1))
        means = np.asarray(mix.means)[np.exp(np.asarray(mix.log_weights)) > 1e-3]
        scales = scales[np.exp(np.asarray(mix.log_weights)) > 1e-3]
        points += [means - 2.5 * scales, means + 2.5 * scales]
    points = np.concatenate(points)
    low, high = points.min(0) - 0.3, points.max(0) + 0.3
    return low[0], high[0], low[1], high[1]


def draw_problem(ax, prior, posterior, approximate, latent, data, title) -> None:
    data = np.asarray(data)
    box = plot_box([prior, posterior], [data, np.asarray(latent)[None]])
    draw_mixture(ax, prior, box, "0.6", linestyles="dotted")
    draw_mixture(ax, posterior, box, "k")
    draw_mixture(ax, approximate, box, "C3", linestyles="dashed")
    ax.plot(data[:, 0], data[:, 1], ".", color="C0", ms=4)
    ax.plot(*np.asarray(latent), "*", color="C2", ms=11, mec="k")
    ax.set(title=title, xlim=box[:2], ylim=box[2:], aspect="equal")


fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 3.6), layout="constrained")
for ax, i in zip(np.atleast_1d(axes), shown, strict=True):
    observed = np.asarray(held_out.data[i])[np.asarray(held_out.mask[i])]
    draw_problem(
        ax,
        index(held_out.prior, i),
        index(exact, i),
        index(dt_posteriors, i),
        held_out.latent[i],
        observed,
        f"N = {counts[i]}, KL = {kl_dt[i]:.3f}",
    )
    print(
        f"problem {i}: N = {counts[i]}, latent {np.round(np.asarray(held_out.latent[i]), 3)}, "
        f"exact mean {np.round(np.asarray(index(exact, i).mean()), 3)}, "
        f"DT mean {np.round(np.asarray(index(dt_posteriors, i).mean()), 3)}, "
        f"KL(exact ‖ DT) = {kl_dt[i]:.4f} ± {kl_dt_se[i]:.4f}"
    )
handles = [
    plt.Line2D([], [], color="0.6", ls="dotted", label="prior"),
    plt.Line2D([], [], color="k", label="exact posterior"),
    plt.Line2D([], [], color="C3", ls="dashed", label="Distribution Transformer"),
]
fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=8)
show_figure(fig, "dt_held_out")

# %% [markdown]
# ### Accuracy and cost against per-problem SVI
# KL(exact ‖ q) = E_exact[log p(x | y) − log q(x)] has no closed form for mixtures, so it is
# estimated from draws of the exact posterior (the estimator of
# `ppl.gaussian_mixture.kl_divergence`, batched over problems as `kl_batch` above, with its
# Monte Carlo standard error). It is the expected extra code length of q and punishes a q that
# misses posterior mass. Three posteriors per problem:
#
# - the untrained network, i.e. the prior itself (what the data are worth),
# - NumPyro SVI with a full-covariance Gaussian guide (`AutoMultivariateNormal`), one Adam
#   optimisation of the ELBO per problem, all problems vmapped in one compiled call; a single
#   Gaussian cannot represent a multimodal posterior,
# - the trained Distribution Transformer, one forward pass per problem.
#
# Times are wall-clock for all problems at once, after compilation.

# %%
start = time.perf_counter()
jax.block_until_ready(dt_batch(network, held_out))
dt_seconds = time.perf_counter() - start

start = time.perf_counter()
jax.block_until_ready(exact_batch(held_out.prior, held_out.data, held_out.mask))
exact_seconds = time.perf_counter() - start

svi_batch = jax.jit(
    jax.vmap(
        lambda key, problem: svi_posterior(
            key,
            task,
            problem,
            num_steps=SVI_STEPS,
            learning_rate=0.02,
            num_particles=2,
            guide="multivariate_normal",
        )
    )
)
svi_keys = jax.random.split(jax.random.key(6), NUM_HELD_OUT)
start = time.perf_counter()
svi_compiled = svi_batch.lower(svi_keys, held_out).compile()
svi_compile_seconds = time.perf_counter() - start
start = time.perf_counter()
svi_posteriors = jax.block_until_ready(svi_compiled(svi_keys, held_out))
svi_seconds = time.perf_counter() - start
kl_svi, _ = kl_batch(kl_keys, exact, svi_posteriors)


def summary(values: np.ndarray) -> str:
    se = values.std(ddof=1) / np.sqrt(values.size)
    return f"mean {values.mean():7.4f} ± {se:.4f}, median {np.median(values):7.4f}"


print(f"KL(exact ‖ q) over {NUM_HELD_OUT} held-out problems, and time for all of them:")
print(f"  untrained (= prior): {summary(kl_prior)}")
print(
    f"  NumPyro SVI:         {summary(kl_svi)}   {svi_seconds:8.3f} s "
    f"({SVI_STEPS} steps; compiling took {svi_compile_seconds:.1f} s)"
)
print(f"  Distribution Transf: {summary(kl_dt)}   {dt_seconds:8.4f} s (one call)")
print(f"  exact (Kalman bank):                                         {exact_seconds:8.4f} s")
print(f"  DT better than SVI on {np.mean(kl_dt < kl_svi):.0%} of the problems")
for label, group in (("N <= 2", counts <= 2), ("N >= 6", counts >= 6)):
    print(
        f"  {label}: mean KL  DT {kl_dt[group].mean():.4f}, SVI {kl_svi[group].mean():.4f}, "
        f"prior {kl_prior[group].mean():.4f}  ({group.sum()} problems)"
    )

fig, ax = plt.subplots(figsize=(7, 3.5))
bins = np.logspace(-3, np.log10(max(kl_prior.max(), kl_svi.max(), kl_dt.max(), 1e-2) + 1), 40)
for values, label, color in (
    (np.maximum(kl_prior, 1e-3), "untrained (prior)", "0.6"),
    (np.maximum(kl_svi, 1e-3), "SVI (Gaussian)", "C0"),
    (np.maximum(kl_dt, 1e-3), "Distribution Transformer", "C3"),
):
    ax.hist(values, bins=bins, histtype="step", lw=1.5, color=color, label=label)
ax.set(xscale="log", xlabel="KL(exact ‖ q) (nats, floored at 10⁻³)", ylabel="problems")
ax.legend(fontsize=8)
fig.tight_layout()
show_figure(fig, "dt_kl_histogram")

# %% [markdown]
# In the full run the prior is 2.6 nats from the posterior on average and the network 0.053
# (median 0.019), about fifty times closer. SVI's median, 0.03, is as good: where the posterior
# is nearly Gaussian (many points) a full-covariance Gaussian is almost exact, and SVI beats the
# network there (0.033 against 0.060 with six or more points). Its mean, 1.8, is ruined by the
# few problems whose posterior keeps two modes: SVI settles on one, and KL(exact ‖ q), which
# charges heavily for missing mass, runs into the hundreds of nats on one of them. The network's
# mixture has no such failure. It answers all 200 problems in about 6 ms, against 0.5 s for the
# 200 SVI optimisations (after 4 s of compilation; both vary with the load on this shared CPU):
# about eighty times faster, and SVI's time grows with its number of steps.

# %% [markdown]
# ## 3. A new prior, no retraining
# A prior written by hand: three elongated components on a ring of radius 1.6, each stretched
# along the ring (standard deviation 0.9 along it, 0.25 across), so that the tips of
# neighbouring components overlap. The network has never seen it; it only ever saw priors from
# the meta-prior. Data come from a latent drawn from this prior, near the tips of the lower
# two components; the left panel conditions on the first point, the right on the first four
# (the same data set with a mask, so the same compiled call). One point cannot tell the two
# components apart, so the exact posterior is bimodal; four points mostly can.
#
# The posterior can be the next prior: conditioning on the four points one at a time,
# q_n = DT(q_{n−1}, y_n), must give the same answer as all at once for an exact map; for the
# network the two differ, and the gap is one measure of how its errors compound.

# %%
angles = jnp.deg2rad(jnp.array([90.0, 210.0, 330.0]))
ring_means = 1.6 * jnp.stack([jnp.cos(angles), jnp.sin(angles)], -1)
tangents = jnp.stack([-jnp.sin(angles), jnp.cos(angles)], -1)
radials = jnp.stack([jnp.cos(angles), jnp.sin(angles)], -1)
ring_covariances = 0.9**2 * jnp.einsum("ki,kj->kij", tangents, tangents) + 0.25**2 * jnp.einsum(
    "ki,kj->kij", radials, radials
)
ring_prior = mixture(jnp.array([0.5, 0.3, 0.2]), ring_means, ring_covariances)
latent_key, noise_key = jax.random.split(jax.random.key(45))
ring_latent = ring_prior.sample(latent_key, 1)[0]
ring_data = (
    ring_latent @ H.T + jax.random.normal(noise_key, (task.num_data, 2)) @ jnp.linalg.cholesky(R).T
)
ring_masks = [jnp.arange(task.num_data) < n for n in (1, 4)]
print("ring latent:", np.round(np.asarray(ring_latent), 3))
print("ring data (first 4):\n", np.round(np.asarray(ring_data[:4]), 3))

ring_problems = [Problem(ring_prior, ring_latent, ring_data, mask) for mask in ring_masks]
exact_one = jax.jit(task.exact_posterior)
ring_exact = [exact_one(ring_prior, ring_data, mask) for mask in ring_masks]
ring_dt = [network(ring_prior, ring_data, mask) for mask in ring_masks]  # compiled on first call
fig, axes = plt.subplots(1, 2, figsize=(8, 5), layout="constrained")
for ax, problem, posterior, approximate in zip(
    axes, ring_problems, ring_exact, ring_dt, strict=True
):
    n = int(problem.mask.sum())
    kl, se = kl_one(jax.random.key(8), posterior, approximate)
    draw_problem(
        ax,
        ring_prior,
        posterior,
        approximate,
        ring_latent,
        ring_data[:n],
        f"ring prior, N = {n}, KL = {float(kl):.3f}",
    )
    print(
        f"N = {n}: exact weights {np.round(np.exp(np.asarray(posterior.log_weights)), 3)}, "
        f"DT weights {np.round(np.exp(np.asarray(approximate.log_weights)), 3)}; "
        f"exact mean {np.round(np.asarray(posterior.mean()), 3)}, "
        f"DT mean {np.round(np.asarray(approximate.mean()), 3)}; "
        f"KL(exact ‖ DT) = {float(kl):.4f} ± {float(se):.4f}"
    )
fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=8)
show_figure(fig, "dt_ring_prior")

sequential = ring_prior
for n in range(4):  # point n alone, through the mask (the same compiled call)
    sequential = network(sequential, ring_data, jnp.arange(task.num_data) == n)
kl_sequential, se_sequential = kl_one(jax.random.key(8), ring_exact[1], sequential)
print(
    f"four points one at a time: KL(exact ‖ DT∘DT∘DT∘DT) = {float(kl_sequential):.4f} "
    f"± {float(se_sequential):.4f}; mean {np.round(np.asarray(sequential.mean()), 3)}"
)

# %% [markdown]
# In the full run the network reproduces the two-mode shape from one point but puts 0.79
# rather than 0.53 of the mass on the right-hand mode (KL 0.20); with four points it is close
# (KL 0.04), and conditioning on them one at a time costs little more (KL 0.05): over four
# recursive steps the errors hardly compound.

# %% [markdown]
# ## 4. Making it exact: importance sampling and MCMC
# The network's mixture is a proposal that can be sampled and evaluated, so importance sampling
# with the exact unnormalised posterior
#
#     log p̃(x) = log prior(x) + Σ_{n observed} log N(y_n; H x, R)
#
# corrects it: draw x_i ~ q, weight w_i = p̃(x_i) / q(x_i); then Ẑ = mean(w_i) is an unbiased
# estimate of the evidence p(y) and Σ W_i f(x_i) a consistent estimate of E[f(x) | y]. The
# network's errors cost effective samples, ESS = (Σ w)² / Σ w², not bias. The exact evidence
# comes from the Kalman bank with the observations stacked into one (H stacked, R
# block-diagonal): `task.exact_log_evidence`; the unnormalised posterior is
# `task.logdensity_fn(problem)`.


# %%
def importance_run(key: jax.Array, problem: Problem, proposal: GaussianMixture, num: int):
    return importance.run(key, task.logdensity_fn(problem), proposal, num)


def log_evidence_se(log_weights: jax.Array) -> jax.Array:
    """Delta-method standard error of log Ẑ: sd(w) / (√N mean(w))."""
    weights = jnp.exp(log_weights - jnp.max(log_weights))
    return jnp.std(weights) / (jnp.sqrt(weights.size) * jnp.mean(weights))


@jax.jit
def ring_importance(key: jax.Array, problem: Problem, proposal: GaussianMixture):
    result = importance_run(key, problem, proposal, NUM_IS_SAMPLES)
    return result, log_evidence_se(result.log_weights), importance.posterior_mean(result)


print(f"importance sampling on the ring problems, {NUM_IS_SAMPLES} draws:")
ring_results = {}
for problem, posterior, approximate in zip(ring_problems, ring_exact, ring_dt, strict=True):
    n = int(problem.mask.sum())
    log_z = float(task.exact_log_evidence(problem.prior, problem.data, problem.mask))
    print(f"  N = {n}: exact log Z = {log_z:.4f}, exact mean {np.asarray(posterior.mean())}")
    for label, proposal in (("prior (untrained)", ring_prior), ("DT posterior", approximate)):
        result, se, weighted = ring_importance(jax.random.key(9), problem, proposal)
        ring_results[(n, label)] = result
        print(
            f"    {label:18s} ESS/N = {float(result.ess) / NUM_IS_SAMPLES:.3f}, "
            f"log Ẑ = {float(result.log_evidence):.4f} ± {float(se):.4f}, "
            f"mean {np.round(np.asarray(weighted.mean), 3)} "
            f"± {np.round(np.asarray(weighted.standard_error), 3)}"
        )

# %% [markdown]
# Over all held-out problems (1000 draws each, all problems in one vmapped call): the ESS
# fraction, and the ratio Ẑ / Z, whose mean must be 1 (unbiasedness on the natural scale)
# whichever proposal is used. The prior is always a valid proposal, but with many points the
# posterior is a small part of it and almost every prior draw is wasted.


# %%
@jax.jit
@jax.vmap
def held_out_importance(key: jax.Array, problem: Problem, proposal: GaussianMixture):
    result = importance_run(key, problem, proposal, 1000)
    return result.ess / 1000, result.log_evidence - task.exact_log_evidence(
        problem.prior, problem.data, problem.mask
    )


is_keys = jax.random.split(jax.random.key(10), NUM_HELD_OUT)
ess_fractions = {}
for label, proposals in (
    ("prior (untrained)", held_out.prior),
    ("DT posterior", dt_posteriors),
):
    ess, log_ratio = held_out_importance(is_keys, held_out, proposals)
    ess_fractions[label] = np.asarray(ess)
    ratio = np.exp(np.asarray(log_ratio, dtype=np.float64))
    print(
        f"  {label:18s} mean ESS/N {ess_fractions[label].mean():.3f} "
        f"(N <= 2: {ess_fractions[label][counts <= 2].mean():.3f}, "
        f"N >= 6: {ess_fractions[label][counts >= 6].mean():.3f}); "
        f"mean Ẑ/Z = {ratio.mean():.3f} ± {ratio.std(ddof=1) / np.sqrt(ratio.size):.3f}"
    )

fig, ax = plt.subplots(figsize=(6, 3.5))
for label, color in (("prior (untrained)", "0.5"), ("DT posterior", "C3")):
    ax.scatter(counts + (0.1 if color == "C3" else -0.1), ess_fractions[label], s=8, color=color)
    present = np.unique(counts)
    per_count = [ess_fractions[label][counts == c].mean() for c in present]
    ax.plot(present, per_count, "-o", color=color, label=label)
ax.set(
    xlabel="observed points N",
    ylabel="ESS / draws",
    yscale="log",
    title="importance sampling efficiency",
)
ax.legend(fontsize=8)
fig.tight_layout()
show_figure(fig, "dt_importance_ess")

# %% [markdown]
# In the full run the network's posterior keeps 70% (one point) and 94% (four points) of the
# draws effective on the ring problems, against 3% and 0.5% for the prior, and its log Ẑ
# agrees with the exact evidence to within its standard error of a few thousandths. Over the
# held-out problems the mean ESS/N is 0.92 whatever the number of points, against 0.12 for the
# prior, falling as points are added; the mean of Ẑ/Z is 1.000 ± 0.001 with the network and
# 1.01 ± 0.02 with the prior. Both are unbiased; the network makes the estimate cheap.

# %% [markdown]
# ### The network's draws as MCMC initial positions
# NUTS (BlackJAX, with window adaptation) on the same exact log density, four chains started
# at four draws from the network's posterior for the ring problem with four points. Started
# where the posterior mass is, the chains need no long burn-in; the chain mean is compared with
# the exact posterior mean.

# %%
ring_problem, ring_posterior = ring_problems[1], ring_exact[1]
ring_logdensity = task.logdensity_fn(ring_problem)
initial_positions = ring_dt[1].sample(jax.random.key(11), 4)
print("initial positions:\n", np.round(np.asarray(initial_positions), 3))
chains = mcmc.run(
    jax.random.key(12),
    ring_logdensity,
    initial_positions,
    mcmc.MCMCSettings(num_warmup=NUM_WARMUP, num_samples=NUM_MCMC_SAMPLES),
    progress=False,
)
draws = np.asarray(chains.positions).reshape(-1, 2)
print(
    f"NUTS, 4 chains x {NUM_MCMC_SAMPLES} draws after {NUM_WARMUP} warm-up: "
    f"mean {np.round(draws.mean(0), 3)} (exact {np.round(np.asarray(ring_posterior.mean()), 3)}, "
    f"DT {np.round(np.asarray(ring_dt[1].mean()), 3)}); "
    f"mean acceptance {float(jnp.mean(chains.sample_stats['acceptance_rate'])):.2f}, "
    f"divergences {int(jnp.sum(chains.sample_stats['diverging']))}"
)
print(
    f"posterior sd: NUTS {np.round(draws.std(0), 3)}, "
    f"exact {np.round(np.sqrt(np.diag(np.asarray(ring_posterior.covariance()))), 3)}"
)

# %% [markdown]
# The four chains start inside the posterior, and in the full run their mean and standard
# deviations match the exact ones to about 0.002 and 0.002.

# %% [markdown]
# ## 5. Calibration
# Simulation-based calibration (Talts et al. 2018): draw a problem from the training
# distribution (prior from the meta-prior, latent from the prior, data from the likelihood),
# take L = 99 draws from the network's posterior, and record the rank of the true latent among
# them in each coordinate. For an exact posterior the latent and the draws are exchangeable, so
# the rank is uniform on {0, ..., 99}; a ∪-shaped histogram means overconfident, ∩-shaped
# underconfident, a slope biased. The grey band holds 99% of each bin's count under
# uniformity, and the p-value is a chi-square test of uniformity.
#
# SBC checks calibration on average, not accuracy: the untrained network (which returns the
# prior) passes it too, because the latent *is* a draw from the prior. To show that the test
# has power, the last line shrinks the trained network's Cholesky factors to half (covariances
# to a quarter). These two comparisons run in the full notebook only (each sampler is its own
# compiled function).


# %%
def sbc_problem(key: jax.Array) -> tuple[jax.Array, Problem]:
    problem = task.sample(key)
    return problem.latent, problem


def posterior_sampler_for(net: DistributionTransformer, shrink: float = 1.0):
    def posterior_sampler(key: jax.Array, problem: Problem, num_draws: int) -> jax.Array:
        posterior = net(problem.prior, problem.data, problem.mask)
        return posterior._replace(cholesky=shrink * posterior.cholesky).sample(key, num_draws)

    return posterior_sampler


sbc_samplers = {"trained": posterior_sampler_for(network)}
if not TINY:
    sbc_samplers["untrained (prior)"] = posterior_sampler_for(untrained)
    sbc_samplers["trained, covariance / 4"] = posterior_sampler_for(network, 0.5)
sbc_results = {}
for label, sampler in sbc_samplers.items():
    sbc_results[label] = simulation_based_calibration(
        jax.random.key(13), sbc_problem, sampler, SBC_PROBLEMS, SBC_DRAWS, SBC_BINS
    )
    print(
        f"SBC {label:24s} p-values per dimension {np.round(sbc_results[label].p_values, 4)}; "
        f"counts per bin (dim 0) {sbc_results[label].counts[:, 0].tolist()}"
    )
print("counts per bin (trained, dim 1):", sbc_results["trained"].counts[:, 1].tolist())
show_figure(plot_sbc_ranks(sbc_results["trained"]), "dt_sbc")

# %% [markdown]
# In the full run the trained network's ranks are uniform (p = 0.30 and 0.39); so are the
# prior's (0.30 and 0.23), as they must be; the overconfident version fails with p < 10⁻¹⁰ and
# the ∪-shaped histogram that says so (108 and 80 of 500 ranks in the two outer bins, 25
# expected).

# %% [markdown]
# ## 6. Recursive filtering with the same network
# A state-space model whose initial state is a mixture:
#
#     x_0 ~ Σ_k w_k N(m_k, Σ_k),   x_t = A x_{t−1} + N(0, Q),   y_t = x_t + N(0, R),
#
# with A = 0.95 × rotation by 0.2 rad, Q = 0.2² I and R = 0.5² I. Mixtures are closed under
# both filter steps, so the exact filter is a bank of Kalman filters. The amortized filter
# keeps the exact predict step (a linear map of the mixture) and replaces the update by the
# network,
#
#     predicted_t = A filtered_{t−1} + N(0, Q),   filtered_t = DT(predicted_t, y_t),
#
# the posterior of one step being the prior of the next. The network was trained with 1 to 8
# points, so one observation per step is in range. What must also stay in range is the prior it
# is handed: the predicted mixtures' means, standard deviations and weights should look like
# draws from the meta-prior (means ~ N(0, 2²), standard deviations in [0.15, 2], Dirichlet
# weights). The steady-state Kalman predictive standard deviation here is about 0.34, and the
# particle-filter proposal below hands the network N(A x_{t−1}, 0.2² I), which is why the
# task's lower scale bound was lowered to 0.15 from its default 0.3.

# %%
rotation = jnp.array([[jnp.cos(0.2), -jnp.sin(0.2)], [jnp.sin(0.2), jnp.cos(0.2)]])
filter_model = MixtureLinearGaussian(
    initial=mixture(
        jnp.array([0.5, 0.3, 0.2]),
        jnp.array([[-2.0, 1.0], [2.0, 1.0], [0.0, -2.0]]),
        jnp.array([[[0.5, 0.2], [0.2, 0.4]], [[0.3, -0.1], [-0.1, 0.6]], [[0.8, 0.0], [0.0, 0.2]]]),
    ),
    transition=0.95 * rotation,
    transition_cov=0.2**2 * jnp.eye(2),
    observation=jnp.eye(2),
    observation_cov=0.5**2 * jnp.eye(2),
)
states, observations = jax.jit(simulate, static_argnums=2)(
    jax.random.key(14), filter_model, FILTER_STEPS
)
exact_filtered = jax.jit(exact_filter)(filter_model, observations)
run_amortized = eqx.filter_jit(amortized_filter)
amortized = run_amortized(network, filter_model, observations)
untrained_filtered = run_amortized(untrained, filter_model, observations)
filter_kl_jit = jax.jit(filter_kl, static_argnums=3)


def per_step_kl(key: jax.Array, approximate) -> tuple[np.ndarray, np.ndarray]:
    """KL(exact_t ‖ approximate_t) and its standard error at every step, 2000 draws each."""
    kl, se = filter_kl_jit(key, exact_filtered, approximate, 2000)
    return np.asarray(kl), np.asarray(se)


step_kl, step_se = per_step_kl(jax.random.key(15), amortized)
untrained_kl, _ = per_step_kl(jax.random.key(15), untrained_filtered)

predicted = amortized.predicted
predicted_sds = np.sqrt(np.diagonal(np.asarray(predicted.covariances), axis1=-2, axis2=-1))
print(
    f"states: |x| up to {np.abs(np.asarray(states)).max():.2f}; "
    f"observations: |y| up to {np.abs(np.asarray(observations)).max():.2f}"
)
print(
    f"network's priors over {FILTER_STEPS} steps: |means| up to "
    f"{np.abs(np.asarray(predicted.means)).max():.2f}, standard deviations in "
    f"[{predicted_sds.min():.3f}, {predicted_sds.max():.3f}], smallest weight "
    f"{np.exp(np.asarray(predicted.log_weights)).min():.2e} "
    f"(the exact filter's: {np.exp(np.asarray(exact_filtered.predicted.log_weights)).min():.2e})"
)
print("KL(exact filtered ‖ amortized filtered) per step:")
for t in sorted({0, FILTER_STEPS // 2, FILTER_STEPS - 1}):
    print(f"  t = {t:3d}: {step_kl[t]:.4f} ± {step_se[t]:.4f} (untrained {untrained_kl[t]:.3f})")
print(f"  mean over steps: {step_kl.mean():.4f}")
print(
    f"log p(y_0:T-1): exact {float(exact_filtered.log_likelihood):.3f}, "
    f"amortized filter (exact evidence of its own predictions) "
    f"{float(amortized.log_likelihood):.3f}, "
    f"untrained {float(untrained_filtered.log_likelihood):.3f}"
)

exact_means = np.asarray(jax.vmap(GaussianMixture.mean)(exact_filtered.filtered))
amortized_means = np.asarray(jax.vmap(GaussianMixture.mean)(amortized.filtered))
exact_sds = np.sqrt(
    np.diagonal(
        np.asarray(jax.vmap(GaussianMixture.covariance)(exact_filtered.filtered)),
        axis1=-2,
        axis2=-1,
    )
)
steps = np.arange(FILTER_STEPS)
print(
    f"RMSE of the filtered mean against the true state: exact "
    f"{np.sqrt(np.mean((exact_means - np.asarray(states)) ** 2)):.3f}, amortized "
    f"{np.sqrt(np.mean((amortized_means - np.asarray(states)) ** 2)):.3f}; "
    f"largest |exact − amortized| mean {np.abs(exact_means - amortized_means).max():.3f}"
)

fig = plt.figure(figsize=(10, 6))
grid_spec = fig.add_gridspec(2, 2)
ax_kl = fig.add_subplot(grid_spec[0, :])
ax_kl.errorbar(steps, step_kl, yerr=2 * step_se, fmt="o-", ms=3, color="C3", label="trained")
ax_kl.plot(steps, untrained_kl, color="0.6", lw=1, label="untrained (never conditions)")
ax_kl.set(
    xlabel="t", ylabel="KL(exact ‖ amortized)", yscale="log", title="error of the filtered mixture"
)
ax_kl.legend(fontsize=8)
for d, name in enumerate(("x[0]", "x[1]")):
    ax = fig.add_subplot(grid_spec[1, d])
    ax.plot(steps, np.asarray(observations)[:, d], ".", color="0.7", ms=3, label="y_t")
    ax.plot(steps, np.asarray(states)[:, d], color="k", lw=1, label="true state")
    ax.fill_between(
        steps,
        exact_means[:, d] - 2 * exact_sds[:, d],
        exact_means[:, d] + 2 * exact_sds[:, d],
        color="C0",
        alpha=0.2,
        label="exact ± 2 sd",
    )
    ax.plot(steps, exact_means[:, d], color="C0", lw=1.2, label="exact mean")
    ax.plot(steps, amortized_means[:, d], color="C3", lw=1.2, ls="--", label="amortized mean")
    ax.set(xlabel="t", ylabel=name)
ax.legend(fontsize=7, ncol=2)
fig.tight_layout()
show_figure(fig, "dt_filter")

# %% [markdown]
# In the full run the per-step KL shows no upward trend over the 100 steps (0.027 at t = 0,
# 0.15 at t = 50, 0.063 at t = 99, 0.098 on average):
# errors do not accumulate here, because the contraction A and each new observation make the
# filter forget its past, errors included. The filtered means follow the exact ones (both are
# 0.26 from the true state, root mean square). The untrained network, which never conditions,
# is 1 to 7 nats off throughout.
#
# The range check: the network's priors stayed where the meta-prior puts its mass (means up
# to 2.2 in size, standard deviations between 0.28 and 0.89), so A, Q and the task's scale
# range (with the lowered bound 0.15) needed no further change. The weights are the exception
# worth knowing about: the exact filter drives the components that lost to 4 × 10⁻¹¹
# (log weight −24, which Dirichlet(1) weights essentially never produce), whereas the
# network keeps them at no less than 2.6 × 10⁻⁴. That is harmless here, because by then the
# components sit on top of each other. The amortized filter's own log-likelihood, −175.6
# against the exact −176.6, shows that the evidence of approximate predictions is no bound.

# %% [markdown]
# ### The network as a particle-filter proposal
# The guided particle filter proposes each particle from the network's posterior for a
# one-component-repeated prior, q_t(x_t | x_{t−1}) = DT(N(A x_{t−1}, Q) × 3, y_t), and
# weights it by p(x_t | x_{t−1}) N(y_t; x_t, R) / q_t(x_t | x_{t−1}). However imperfect the
# network, the estimate Ẑ of p(y_{0:T−1}) stays unbiased; the better the network, the lower
# its variance. The bootstrap filter proposes from the dynamics N(A x_{t−1}, Q) and weights by
# the likelihood alone. Several independent runs of each, with N particles, and (full notebook
# only) the bootstrap filter also with 8N, since each of its steps is much cheaper than a
# network call per particle; times are after compilation, for all runs together. The plot
# shows log Ẑ − log Z with the exact log Z from the Kalman bank. Ẑ is unbiased, so log Ẑ is
# biased low by about half its variance: a smaller spread also means a smaller bias. The
# dotted line is the amortized filter's own log-likelihood, the exact evidence of its
# approximate predicted mixtures: no Monte Carlo noise, but no guarantee either.

# %%
pf_model = state_space_model(filter_model, observations)
proposal = amortized_proposal(network, filter_model, observations, num_components=3)
filters = {  # label: (Feynman-Kac model, particles)
    "bootstrap, N": (state_space.bootstrap(pf_model), NUM_PARTICLES),
    "guided (DT), N": (state_space.guided(pf_model, proposal), NUM_PARTICLES),
}
if not TINY:
    filters["bootstrap, 8N"] = (state_space.bootstrap(pf_model), 8 * NUM_PARTICLES)
exact_log_z = float(exact_filtered.log_likelihood)
pf_keys = jax.random.split(jax.random.key(16), NUM_PF_RUNS)
log_z_estimates, pf_seconds = {}, {}
for label, (feynman_kac, particles) in filters.items():
    run_all = jax.jit(  # all runs in one call, vmapped over keys
        jax.vmap(
            lambda key, fk=feynman_kac, n=particles: (
                smc.run(key, fk, n, FILTER_STEPS, keep_history=False).log_evidence
            )
        )
    )
    compiled = run_all.lower(pf_keys).compile()
    start = time.perf_counter()
    log_z_estimates[label] = np.asarray(jax.block_until_ready(compiled(pf_keys)))
    pf_seconds[label] = time.perf_counter() - start
    differences = log_z_estimates[label] - exact_log_z
    ratio = np.exp(differences.astype(np.float64))
    print(
        f"{label:15s} ({particles:4d} particles) log Ẑ − log Z: mean {differences.mean():+.3f}, "
        f"sd {differences.std(ddof=1):.3f}; mean Ẑ/Z {ratio.mean():.3f}; "
        f"{pf_seconds[label]:.2f} s for {NUM_PF_RUNS} runs"
    )
    print("    runs:", np.round(differences, 3).tolist())
print(f"exact log Z = {exact_log_z:.3f}")

fig, ax = plt.subplots(figsize=(6.5, 3.2))
for row, values in enumerate(log_z_estimates.values()):
    ax.plot(values - exact_log_z, np.full(values.size, row), "o", alpha=0.6)
ax.axvline(0.0, color="k", lw=1)
ax.axvline(
    float(amortized.log_likelihood) - exact_log_z,
    color="C3",
    ls=":",
    label="amortized filter",
)
ax.set(
    yticks=range(len(log_z_estimates)),
    yticklabels=list(log_z_estimates),
    xlabel="log Ẑ − log p(y_{0:T−1})",
    title=f"{NUM_PARTICLES} particles, T = {FILTER_STEPS}",
)
ax.margins(x=0.08, y=0.15)
ax.legend(fontsize=7, loc="center left")
fig.tight_layout()
show_figure(fig, "dt_particle_filter")

# %% [markdown]
# In the full run the network's proposal does not pay here: the spread of log Ẑ is 1.47 against
# the bootstrap filter's 1.50 at 256 particles, and calling the network once per particle and
# step costs 8 s against 0.03 s for the eight runs; the bootstrap filter with eight times the
# particles reaches a spread of 0.36 in 0.1 s. How much the proposal helps depends on the
# trained network: the proposal's priors N(A x_{t−1}, 0.2² I) sit near the lower end of the
# scale range it was trained on, and an earlier run whose network differed only through
# floating-point rounding in the training simulations gave a spread of 0.56. With a perfect
# network the gain is large (43x less variance of log Ẑ in
# `tests/models/amortized/test_filtering.py`, which also checks unbiasedness on the natural
# scale, something eight runs are too few for).

# %% [markdown]
# ## 7. Save and reload
# `ppl.models.amortized.checkpoint` writes the network's and the optimiser's arrays to a
# safetensors file (no pickle, so loading never runs code), keyed by their path in the pytree,
# with the training step in the metadata. Loading needs templates of the same structure: a
# freshly built network (any key) and `optimizer.init` of its parameters.

# %%
with tempfile.TemporaryDirectory() as directory:
    path = Path(directory) / "distribution_transformer.safetensors"
    checkpoint.save(path, network, trained.optimizer_state, NUM_TRAIN_STEPS)
    size = path.stat().st_size
    template = DistributionTransformer(2, 2, width=64, depth=2, num_heads=4, key=jax.random.key(99))
    optimizer_template = optimizer.init(eqx.filter(template, eqx.is_inexact_array))
    reloaded, reloaded_state, reloaded_step = checkpoint.load(path, template, optimizer_template)

reloaded_posterior = dt_batch(reloaded, held_out)
reload_difference = max(
    float(jnp.max(jnp.abs(a - b)))
    for a, b in zip(
        jax.tree.leaves(reloaded_posterior), jax.tree.leaves(dt_posteriors), strict=True
    )
)
print(
    f"checkpoint: {size / 1024:.0f} KiB, step {reloaded_step}; reloaded network's posteriors "
    f"differ by at most {reload_difference:.1e} over {NUM_HELD_OUT} problems"
)
print(f"notebook ran in {time.perf_counter() - notebook_start:.0f} s")

# %% [markdown]
# ## Checks

# %%
assert difference < 1e-5  # the untrained network returns its prior
assert np.all(np.isfinite(losses))
assert smoothed[-1] < smoothed[0]
assert np.all(np.isfinite(kl_dt)) and np.all(np.isfinite(kl_svi))
assert abs(float(check) - kl_dt[0]) < 1e-4  # the batched KL is kl_divergence's estimate
if not TINY:  # 150 steps are too few to beat the prior
    assert kl_dt.mean() < kl_prior.mean() / 5, (kl_dt.mean(), kl_prior.mean())
    assert kl_dt.mean() < kl_svi.mean(), (kl_dt.mean(), kl_svi.mean())
    assert ess_fractions["DT posterior"].mean() > ess_fractions["prior (untrained)"].mean()
    assert step_kl.mean() < untrained_kl.mean()
assert np.all(np.isfinite(step_kl))
assert all(np.all(np.isfinite(v)) for v in log_z_estimates.values())
if not TINY:
    assert sbc_results["trained, covariance / 4"].p_values.min() < 0.01
assert reloaded_step == NUM_TRAIN_STEPS and reload_difference == 0.0
