"""Distribution Transformers on the CPU, against exact posteriors, NUTS, NumPyro SVI and particle
filters, next to the numbers of Whittle et al. 2025.

    .venv/bin/python benchmarks/distribution_transformer.py [--sections conjugate versus ...]
        [--problems 1000] [--steps-scale 1.0] [--seed 0]

Sections (each trains its own networks on fresh simulations, then evaluates on unseen problems):

- ``inverse_gamma``: the unknown-variance task (`ppl.models.amortized.inverse_gamma`), narrow and
  wide meta-priors, 2 and 5 components; expected KL(exact ‖ network) over `--problems` unseen
  problems, against NumPyro SVI with a normal guide on log σ² and against the K-component fit of
  the prior itself (the floor a K-component answer cannot beat).
- ``conjugate``: a Gaussian-mixture prior and y_n = x + N(0, R), latent dimension D and
  K components for (D, K) in (1, 2), (2, 5), (4, 10), (8, 20); KL to the exact mixture of Kalman
  updates, against NumPyro SVI (full-covariance guide) both at the network's wall time and with
  a converged budget.
- ``versus``: 1000 posteriors of the (2, 5) task, side by side: the network, the network as an
  importance-sampling proposal (corrected by the exact likelihood), NUTS (BlackJAX window
  adaptation + NUTS through `ppl.samplers.mcmc.warmup`, every problem one at a time, and a batch of
  `--nuts-vmapped` problems vmapped), SVI, and importance sampling from the prior; time per
  posterior and accuracy.
- ``sizes``: the versus problems with networks of four sizes (width × depth); time per
  posterior against KL, for trading accuracy against the speed-up over NUTS.
- ``filtering``: a 2-D rotating linear-Gaussian model with a 5-component initial mixture, 100
  steps: the network as the update of a recursive filter, against the exact bank of Kalman
  filters and a bootstrap particle filter; KL per step and time per step.
- ``sbc``: simulation-based calibration of the (2, 5) network over `--problems` problems.

Accuracy of methods that return draws (NUTS, importance sampling) is the Gaussian KL between the
moment matches of the exact and the estimated posterior, KL(N(m, S) ‖ N(m̂, Ŝ)); methods that
return a mixture also get the mixture KL(exact ‖ q) by Monte Carlo. Writes `--out` (JSON,
rewritten after each section) and `--figure`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from ppl import state_space
from ppl.calibration import simulation_based_calibration
from ppl.gaussian_mixture import GaussianMixture, kl_divergence, mixture
from ppl.models.amortized import filtering
from ppl.models.amortized.baselines import svi_posterior
from ppl.models.amortized.distribution_transformer import DistributionTransformer
from ppl.models.amortized.inverse_gamma import InverseGammaTask
from ppl.models.amortized.inverse_gamma import svi_posterior as inverse_gamma_svi
from ppl.models.amortized.tasks import LinearGaussianTask, Problem
from ppl.models.amortized.training import fit
from ppl.samplers import importance, mcmc, smc
from ppl.small_linalg import cholesky, cholesky_solve

ROOT = Path(__file__).resolve().parents[1]
KL_SAMPLES = 2000

# The paper's Table (Whittle et al. 2025), inverse-gamma task: expected KL over unseen problems.
PAPER_INVERSE_GAMMA = {
    ("narrow", 5): 0.0004,
    ("wide", 5): 0.0003,
    ("narrow", 2): 0.0043,
    ("wide", 2): 0.0058,
    ("narrow", "vi"): 0.0425,
    ("wide", "vi"): 0.0558,
}


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """Run `fn`, block on its result, return (result, seconds)."""
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - start


def train(
    key: jax.Array, network: Any, sample: Callable, num_steps: int, batch_size: int = 64
) -> tuple[Any, float, np.ndarray]:
    schedule = optax.cosine_decay_schedule(1e-3, num_steps, alpha=0.05)
    start = time.perf_counter()
    result = fit(
        key,
        network,
        sample,
        num_steps=num_steps,
        batch_size=batch_size,
        optimizer=optax.adamw(schedule),
        chunk_size=250,
    )
    jax.block_until_ready(result.losses)
    return result.network, time.perf_counter() - start, np.asarray(result.losses)


def gaussian_kl(mean_p, cov_p, mean_q, cov_q) -> jax.Array:
    """KL(N(mean_p, cov_p) ‖ N(mean_q, cov_q)), with `ppl.small_linalg` (no batched LAPACK)."""
    d = mean_p.shape[-1]
    factor_p, factor_q = cholesky(cov_p), cholesky(cov_q)
    diff = mean_q - mean_p
    log_det = lambda factor: 2 * jnp.sum(jnp.log(jnp.diag(factor)))  # noqa: E731
    return 0.5 * (
        jnp.trace(cholesky_solve(factor_q, cov_p))
        + diff @ cholesky_solve(factor_q, diff)
        - d
        + log_det(factor_q)
        - log_det(factor_p)
    )


def weighted_moments(samples: jax.Array, log_weights: jax.Array) -> tuple[jax.Array, jax.Array]:
    w = jax.nn.softmax(log_weights)
    mean = w @ samples
    centred = samples - mean
    return mean, jnp.einsum("n,ni,nj->ij", w, centred, centred)


def summary(values: np.ndarray) -> dict[str, float]:
    values = np.asarray(values, dtype=float)
    return {
        "mean": float(values.mean()),
        "se": float(values.std() / np.sqrt(values.size)),
        "median": float(np.median(values)),
        "p90": float(np.quantile(values, 0.9)),
    }


def mixture_kls(
    key: jax.Array, exact: GaussianMixture, approx: GaussianMixture, chunk: int = 250
) -> np.ndarray:
    """Monte Carlo KL(exact_i ‖ approx_i) per problem (`kl_divergence`, KL_SAMPLES draws)."""
    count = exact.means.shape[0]
    keys = jax.random.split(key, count)
    out = []
    for start in range(0, count, chunk):
        part = lambda tree, s=start: jax.tree.map(lambda x: x[s : s + chunk], tree)  # noqa: E731
        out.append(np.asarray(_batched_kl(part(keys), part(exact), part(approx))))
    return np.concatenate(out)


_batched_kl = jax.jit(jax.vmap(lambda k, p, q: kl_divergence(k, p, q, KL_SAMPLES)[0]))


def problems_of(task: LinearGaussianTask, key: jax.Array, count: int) -> Problem:
    return jax.jit(jax.vmap(task.sample))(jax.random.split(key, count))


def conjugate_task(dimension: int, components: int) -> LinearGaussianTask:
    return LinearGaussianTask(
        jnp.eye(dimension),
        0.5**2 * jnp.eye(dimension),
        num_components=components,
        num_data=5,
        min_data=1,
        correlated=True,
        scale_low=0.15,
    )


def new_network(dimension: int, data_size: int, width: int, key: jax.Array, depth: int = 2) -> Any:
    return DistributionTransformer(dimension, data_size, width=width, depth=depth, key=key)


_NETWORKS: dict[tuple, tuple[Any, float, np.ndarray]] = {}


def trained_network(
    args: argparse.Namespace,
    dimension: int,
    components: int,
    width: int | None = None,
    depth: int = 2,
) -> tuple[LinearGaussianTask, Any, float, np.ndarray]:
    """The (D, K) conjugate task and its network (the grid's width unless given), trained for
    the grid's budget once per process: sections that share a network share its training."""
    grid_width, steps = next(
        (w, n) for d, k, w, n in CONJUGATE_GRID if (d, k) == (dimension, components)
    )
    width = width or grid_width
    task = conjugate_task(dimension, components)
    cache_key = (dimension, components, width, depth, args.seed, args.steps_scale)
    if cache_key not in _NETWORKS:
        key = jax.random.fold_in(jax.random.key(args.seed), 100 * dimension + components)
        _NETWORKS[cache_key] = train(
            key,
            new_network(dimension, dimension, width, jax.random.fold_in(key, 1), depth),
            task.sample,
            int(steps * args.steps_scale),
        )
    return (task, *_NETWORKS[cache_key])


def mixture_moments(mixtures: GaussianMixture) -> tuple[jax.Array, jax.Array]:
    """Means [P, D] and covariances [P, D, D] of a batch of mixtures."""
    return jax.vmap(GaussianMixture.mean)(mixtures), jax.vmap(GaussianMixture.covariance)(mixtures)


def network_posteriors(network: Any, problems: Problem) -> Callable[[], GaussianMixture]:
    call = jax.jit(jax.vmap(network))
    jax.block_until_ready(call(problems.prior, problems.data, problems.mask))  # compile
    return lambda: call(problems.prior, problems.data, problems.mask)


# ---------------------------------------------------------------- inverse-gamma variance task


def run_inverse_gamma(args: argparse.Namespace, store: dict) -> None:
    rows = store.setdefault("inverse_gamma", {})
    for preset in ("narrow", "wide"):
        for components in args.inverse_gamma_components:
            name = f"{preset}_K{components}"
            if name in rows:
                continue
            key = jax.random.fold_in(
                jax.random.key(args.seed), 1000 + 10 * components + len(preset)
            )
            task = getattr(InverseGammaTask, preset)(components)._replace(em_steps=args.em_steps)
            steps = int(args.inverse_gamma_steps * args.steps_scale)
            network, train_seconds, losses = train(
                key, new_network(1, 1, 64, jax.random.fold_in(key, 1)), task.sample, steps
            )
            eval_key = jax.random.fold_in(key, 2)  # the same problems for every method

            def by_network(k, alpha, beta, problem, network=network):
                return network(problem.prior, problem.data, problem.mask)

            def by_svi(k, alpha, beta, problem):
                return inverse_gamma_svi(
                    k,
                    alpha,
                    beta,
                    problem.data,
                    problem.mask,
                    num_steps=args.inverse_gamma_svi_steps,
                    learning_rate=0.02,
                )

            def floor(k, alpha, beta, problem, task=task):
                return task.posterior_mixture(alpha, beta, problem.data, problem.mask)

            results = {}
            for label, predict in (("network", by_network), ("svi", by_svi), ("floor", floor)):
                estimate = jax.jit(
                    lambda k, predict=predict, task=task: task.expected_kl(
                        k, predict, args.problems
                    )
                )
                jax.block_until_ready(estimate(eval_key))  # compile
                value, seconds = timed(lambda estimate=estimate, k=eval_key: estimate(k))
                results[label] = {
                    "kl": float(value.mean),
                    "se": float(value.standard_error),
                    "median": float(jnp.median(value.per_problem)),
                    "seconds_incl_kl": seconds,
                }
            problems = jax.jit(jax.vmap(task.sample))(
                jax.random.split(jax.random.fold_in(key, 3), args.problems)
            )
            _, network_seconds = timed(network_posteriors(network, problems))
            rows[name] = {
                "preset": preset,
                "components": components,
                "train_steps": steps,
                "train_seconds": train_seconds,
                "final_loss": float(losses[-250:].mean()),
                "em_steps": args.em_steps,
                "network_seconds_per_posterior": network_seconds / args.problems,
                "paper_network": PAPER_INVERSE_GAMMA.get((preset, components)),
                "paper_vi": PAPER_INVERSE_GAMMA[(preset, "vi")],
                **results,
            }
            print(name, json.dumps(rows[name]))
            save(args, store)


# ---------------------------------------------------------------- conjugate (D, K) grid


CONJUGATE_GRID = ((1, 2, 64, 3000), (2, 5, 64, 6000), (4, 10, 64, 6000), (8, 20, 96, 10000))


def svi_batch(
    key: jax.Array, task: LinearGaussianTask, problems: Problem, num_steps: int
) -> Callable[[], GaussianMixture]:
    def one(k: jax.Array, problem: Problem) -> GaussianMixture:
        return svi_posterior(
            k, task, problem, num_steps=num_steps, learning_rate=0.05, guide="multivariate_normal"
        )

    call = jax.jit(jax.vmap(one))
    keys = jax.random.split(key, problems.latent.shape[0])
    jax.block_until_ready(call(keys, problems))
    return lambda: call(keys, problems)


def run_conjugate(args: argparse.Namespace, store: dict) -> None:
    rows = store.setdefault("conjugate", {})
    for dimension, components, width, steps in CONJUGATE_GRID:
        name = f"D{dimension}_K{components}"
        if name in rows or dimension not in args.conjugate_dimensions:
            continue
        key = jax.random.fold_in(jax.random.key(args.seed), 100 * dimension + components)
        task, network, train_seconds, losses = trained_network(args, dimension, components)
        problems = problems_of(task, jax.random.fold_in(key, 2), args.problems)
        exact = jax.jit(jax.vmap(task.exact_posterior))(
            problems.prior, problems.data, problems.mask
        )
        run = network_posteriors(network, problems)
        posteriors, dt_seconds = timed(run)
        dt_kl = mixture_kls(jax.random.fold_in(key, 3), exact, posteriors)
        untrained = jax.jit(jax.vmap(new_network(dimension, dimension, width, key)))
        prior_kl = mixture_kls(
            jax.random.fold_in(key, 3),
            exact,
            untrained(problems.prior, problems.data, problems.mask),
        )
        # SVI at the network's wall time: as many steps as fit in it (at least one).
        one_step = svi_batch(jax.random.fold_in(key, 4), task, problems, 1)
        _, step_seconds = timed(one_step)
        equal_steps = max(1, int(dt_seconds / step_seconds))
        svi_equal_run = svi_batch(jax.random.fold_in(key, 4), task, problems, equal_steps)
        svi_equal, svi_equal_seconds = timed(svi_equal_run)
        svi_full_run = svi_batch(jax.random.fold_in(key, 4), task, problems, args.svi_steps)
        svi_full, svi_full_seconds = timed(svi_full_run)
        rows[name] = {
            "dimension": dimension,
            "components": components,
            "width": width,
            "train_steps": int(steps * args.steps_scale),
            "train_seconds": train_seconds,
            "final_loss": float(losses[-250:].mean()),
            "kl_network": summary(dt_kl),
            "kl_prior_unchanged": summary(prior_kl),
            "network_seconds": dt_seconds,
            "svi_equal_time": {
                "steps": equal_steps,
                "seconds": svi_equal_seconds,
                "kl": summary(mixture_kls(jax.random.fold_in(key, 3), exact, svi_equal)),
            },
            "svi_converged": {
                "steps": args.svi_steps,
                "seconds": svi_full_seconds,
                "kl": summary(mixture_kls(jax.random.fold_in(key, 3), exact, svi_full)),
            },
        }
        print(name, json.dumps(rows[name], indent=None))
        save(args, store)


# ---------------------------------------------------------------- versus: 1000 posteriors


def nuts_one(
    task: LinearGaussianTask, num_warmup: int, num_samples: int
) -> Callable[[jax.Array, Problem], jax.Array]:
    import blackjax

    def one(key: jax.Array, problem: Problem) -> jax.Array:
        logdensity = task.logdensity_fn(problem)
        init_key, warm_key, sample_key = jax.random.split(key, 3)
        start = problem.prior.sample(init_key, 1)[0]
        settings = mcmc.MCMCSettings(num_warmup=num_warmup)
        state, parameters = mcmc.warmup(warm_key, logdensity, start, settings)
        kernel = blackjax.nuts(
            logdensity, parameters["step_size"], parameters["inverse_mass_matrix"]
        )

        def step(state: Any, k: jax.Array) -> tuple[Any, jax.Array]:
            state, _ = kernel.step(k, state)
            return state, state.position

        _, draws = jax.lax.scan(step, state, jax.random.split(sample_key, num_samples))
        return draws

    return one


moment_kl = jax.jit(jax.vmap(gaussian_kl))


def versus_problems(
    args: argparse.Namespace, task: LinearGaussianTask
) -> tuple[jax.Array, Problem, GaussianMixture]:
    """The versus key, its `--problems` problems and their exact posteriors (also `sizes`)."""
    key = jax.random.fold_in(jax.random.key(args.seed), 7)
    problems = problems_of(task, jax.random.fold_in(key, 2), args.problems)
    exact = jax.jit(jax.vmap(task.exact_posterior))(problems.prior, problems.data, problems.mask)
    return key, problems, exact


def run_versus(args: argparse.Namespace, store: dict) -> None:
    if "versus" in store:
        return
    task, network, train_seconds, _ = trained_network(args, 2, 5)
    key, problems, exact = versus_problems(args, task)
    count = args.problems
    exact_mean, exact_cov = mixture_moments(exact)
    out: dict[str, Any] = {"problems": count, "train_seconds": train_seconds}

    posteriors, seconds = timed(network_posteriors(network, problems))
    out["network"] = {
        "seconds_per_posterior": seconds / count,
        "kl": summary(mixture_kls(jax.random.fold_in(key, 3), exact, posteriors)),
        "moment_kl": summary(moment_kl(exact_mean, exact_cov, *mixture_moments(posteriors))),
    }

    def importance_moments(proposals: GaussianMixture, num: int) -> Callable:
        def one(k: jax.Array, problem: Problem, proposal: GaussianMixture) -> tuple:
            result = importance.run(k, task.logdensity_fn(problem), proposal, num)
            mean, cov = weighted_moments(result.samples, result.log_weights)
            return mean, cov, result.ess / num

        call = jax.jit(jax.vmap(one))
        keys = jax.random.split(jax.random.fold_in(key, 5), count)
        jax.block_until_ready(call(keys, problems, proposals))
        return lambda: call(keys, problems, proposals)

    for label, proposals in (("network_importance", posteriors), ("prior_importance", None)):
        proposals = problems.prior if proposals is None else proposals
        run = importance_moments(proposals, args.importance_samples)
        (mean, cov, ess), seconds = timed(run)
        if label == "network_importance":
            seconds += out["network"]["seconds_per_posterior"] * count
        out[label] = {
            "samples": args.importance_samples,
            "seconds_per_posterior": seconds / count,
            "ess_fraction": summary(ess),
            "moment_kl": summary(moment_kl(exact_mean, exact_cov, mean, cov)),
        }

    # One posterior per call is NUTS's fast path on CPU (a vmapped NUTS waits at every tree
    # doubling for its slowest chain): all problems run that way, and a vmapped batch of
    # `--nuts-vmapped` problems is timed beside it.
    nuts = nuts_one(task, args.nuts_warmup, args.nuts_samples)
    keys = jax.random.split(jax.random.fold_in(key, 6), count)
    single = jax.jit(nuts)
    jax.block_until_ready(single(keys[0], jax.tree.map(lambda x: x[0], problems)))
    draws, single_seconds = timed(
        lambda: jnp.stack(
            [single(keys[i], jax.tree.map(lambda x, i=i: x[i], problems)) for i in range(count)]
        )
    )
    num_batched = min(count, args.nuts_vmapped)
    batched = jax.jit(jax.vmap(nuts))
    some = lambda tree: jax.tree.map(lambda x: x[:num_batched], tree)  # noqa: E731
    jax.block_until_ready(batched(some(keys), some(problems)))
    _, batched_seconds = timed(lambda: batched(some(keys), some(problems)))
    nuts_mean = draws.mean(1)
    nuts_cov = jax.vmap(lambda d: jnp.cov(d.T))(draws)
    out["nuts"] = {
        "warmup": args.nuts_warmup,
        "samples": args.nuts_samples,
        "seconds_per_posterior_vmapped": batched_seconds / num_batched,
        "vmapped_batch": num_batched,
        "seconds_per_posterior_one_at_a_time": single_seconds / count,
        "moment_kl": summary(moment_kl(exact_mean, exact_cov, nuts_mean, nuts_cov)),
    }

    svi_run = svi_batch(jax.random.fold_in(key, 4), task, problems, args.svi_steps)
    svi, svi_seconds = timed(svi_run)
    out["svi"] = {
        "steps": args.svi_steps,
        "seconds_per_posterior": svi_seconds / count,
        "kl": summary(mixture_kls(jax.random.fold_in(key, 3), exact, svi)),
        "moment_kl": summary(
            moment_kl(exact_mean, exact_cov, svi.means[:, 0], svi.covariances[:, 0])
        ),
    }
    nuts_time = min(
        out["nuts"]["seconds_per_posterior_vmapped"],
        out["nuts"]["seconds_per_posterior_one_at_a_time"],
    )
    out["speedup_over_nuts"] = nuts_time / out["network"]["seconds_per_posterior"]
    store["versus"] = out
    print("versus", json.dumps(out, indent=None))
    save(args, store)


# ---------------------------------------------------------------- sizes: speed against accuracy

NETWORK_SIZES = ((64, 2), (64, 1), (32, 2), (32, 1))  # (width, depth), 4 heads each


def run_sizes(args: argparse.Namespace, store: dict) -> None:
    """The versus task (D = 2, K = 5) with smaller networks: time per posterior against KL."""
    if "sizes" in store:
        return
    task = conjugate_task(2, 5)
    _, problems, exact = versus_problems(args, task)
    key = jax.random.fold_in(jax.random.key(args.seed), 205)  # trained_network's for (2, 5)
    rows = {}
    for width, depth in NETWORK_SIZES:
        _, network, train_seconds, losses = trained_network(args, 2, 5, width, depth)
        parameters = sum(x.size for x in jax.tree.leaves(eqx.filter(network, eqx.is_array)))
        call = network_posteriors(network, problems)
        seconds = min(timed(call)[1] for _ in range(5)) / args.problems
        posteriors = call()
        rows[f"w{width}_d{depth}"] = {
            "width": width,
            "depth": depth,
            "parameters": int(parameters),
            "train_steps": len(losses),
            "train_seconds": train_seconds,
            "seconds_per_posterior": seconds,
            "kl": summary(mixture_kls(jax.random.fold_in(key, 3), exact, posteriors)),
            "moment_kl": summary(moment_kl(*mixture_moments(exact), *mixture_moments(posteriors))),
        }
        print("sizes", rows[f"w{width}_d{depth}"], flush=True)
    store["sizes"] = rows
    save(args, store)


# ---------------------------------------------------------------- filtering


def filtering_model() -> filtering.MixtureLinearGaussian:
    angle = 0.2
    rotation = jnp.array([[jnp.cos(angle), -jnp.sin(angle)], [jnp.sin(angle), jnp.cos(angle)]])
    means = 1.5 * jnp.stack(
        [jnp.cos(jnp.arange(5) * 2 * jnp.pi / 5), jnp.sin(jnp.arange(5) * 2 * jnp.pi / 5)], -1
    )
    initial = mixture(jnp.ones(5), means, jnp.tile(0.3**2 * jnp.eye(2), (5, 1, 1)))
    return filtering.MixtureLinearGaussian(
        initial, 0.95 * rotation, 0.3**2 * jnp.eye(2), jnp.eye(2), 0.5**2 * jnp.eye(2)
    )


def run_filtering(args: argparse.Namespace, store: dict) -> None:
    if "filtering" in store:
        return
    key = jax.random.fold_in(jax.random.key(args.seed), 11)
    _, network, train_seconds, _ = trained_network(args, 2, 5)
    model = filtering_model()
    num_sequences, steps = args.sequences, args.filter_steps
    sequence_keys = jax.random.split(jax.random.fold_in(key, 2), num_sequences)
    _, observations = jax.vmap(lambda k: filtering.simulate(k, model, steps))(sequence_keys)
    exact = jax.jit(jax.vmap(lambda y: filtering.exact_filter(model, y)))(observations)
    amortized_call = jax.jit(jax.vmap(lambda y: filtering.amortized_filter(network, model, y)))
    amortized = amortized_call(observations)
    kl_keys = jax.random.split(jax.random.fold_in(key, 3), num_sequences)
    flat = lambda tree: jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), tree)  # noqa: E731
    kl = mixture_kls(
        jax.random.fold_in(key, 3), flat(exact.filtered), flat(amortized.filtered)
    ).reshape(num_sequences, steps)
    filtered_moments = jax.vmap(mixture_moments)  # [sequences, steps, ...]
    exact_mean, exact_cov = filtered_moments(exact.filtered)
    step_moment_kl = jax.jit(jax.vmap(moment_kl))
    network_moment_kl = step_moment_kl(exact_mean, exact_cov, *filtered_moments(amortized.filtered))

    def particle_filter(k: jax.Array, y: jax.Array, guided: bool) -> tuple[jax.Array, ...]:
        ssm = filtering.state_space_model(model, y)
        if guided:
            proposal = filtering.amortized_proposal(network, model, y, num_components=5)
            fk = state_space.guided(ssm, proposal)
        else:
            fk = state_space.bootstrap(ssm)
        result = smc.run(k, fk, args.particles, steps)
        moments = jax.vmap(weighted_moments)(result.particles, result.log_weights)
        return result.log_evidence, *moments

    pf_rows: dict[str, Any] = {}
    num_pf = min(num_sequences, args.pf_sequences)
    for label, guided in (("bootstrap", False), ("guided_by_network", True)):
        call = jax.jit(jax.vmap(lambda k, y, g=guided: particle_filter(k, y, g)))
        (log_z, pf_mean, pf_cov), seconds = timed(
            lambda call=call: call(kl_keys[:num_pf], observations[:num_pf])
        )
        pf_kl = step_moment_kl(exact_mean[:num_pf], exact_cov[:num_pf], pf_mean, pf_cov)
        pf_rows[label] = {
            "sequences": num_pf,
            "seconds_per_sequence_incl_compile": seconds / num_pf,
            "log_likelihood_error": summary(np.asarray(log_z - exact.log_likelihood[:num_pf])),
            "moment_kl_per_step_mean": np.asarray(pf_kl.mean(0)).tolist(),
        }
    # Time per step of each filter on one sequence: slope over horizons.
    horizons = tuple(int(steps * f) for f in (0.25, 0.5, 1, 2))
    long_key = jax.random.fold_in(key, 4)
    _, long_observations = filtering.simulate(long_key, model, max(horizons))
    times: dict[str, list[float]] = {"network": [], "exact": [], "particle": []}
    for horizon in horizons:
        y = long_observations[:horizon]
        calls = {
            "network": jax.jit(lambda y: filtering.amortized_filter(network, model, y)),
            "exact": jax.jit(lambda y: filtering.exact_filter(model, y)),
            "particle": jax.jit(
                lambda y, h=horizon: smc.run(
                    long_key,
                    state_space.bootstrap(filtering.state_space_model(model, y)),
                    args.particles,
                    h,
                )
            ),
        }
        for name, call in calls.items():
            jax.block_until_ready(call(y))
            best = min(timed(lambda call=call, y=y: call(y))[1] for _ in range(3))
            times[name].append(best)
    slopes = {name: float(np.polyfit(horizons, t, 1)[0]) for name, t in times.items()}
    log_lik_error = np.asarray(amortized.log_likelihood - exact.log_likelihood)
    store["filtering"] = {
        "train_seconds": train_seconds,
        "sequences": num_sequences,
        "steps": steps,
        "particles": args.particles,
        "kl_per_step_mean": np.asarray(kl.mean(0)).tolist(),
        "kl_per_step_se": np.asarray(kl.std(0) / np.sqrt(num_sequences)).tolist(),
        "log_likelihood_error": summary(log_lik_error),
        "network_moment_kl_per_step_mean": np.asarray(network_moment_kl.mean(0)).tolist(),
        "particle_filters": pf_rows,
        "horizons": list(horizons),
        "seconds": times,
        "seconds_per_step": slopes,
    }
    print("filtering", {k: v for k, v in store["filtering"].items() if "per_step" not in k})
    save(args, store)


# ---------------------------------------------------------------- SBC


def run_sbc(args: argparse.Namespace, store: dict) -> None:
    if "sbc" in store:
        return
    key = jax.random.fold_in(jax.random.key(args.seed), 13)
    task, network, _, _ = trained_network(args, 2, 5)

    def sample_problem(k: jax.Array) -> tuple[jax.Array, Problem]:
        problem = task.sample(k)
        return problem.latent, problem

    def posterior_sampler(k: jax.Array, problem: Problem, num: int) -> jax.Array:
        return network(problem.prior, problem.data, problem.mask).sample(k, num)

    result = simulation_based_calibration(
        jax.random.fold_in(key, 9), sample_problem, posterior_sampler, args.problems, 99
    )
    store["sbc"] = {
        "problems": args.problems,
        "draws": 99,
        "p_values": np.asarray(result.p_values).tolist(),
        "counts": np.asarray(result.counts).tolist(),
    }
    print("sbc", store["sbc"]["p_values"])
    save(args, store)


# ---------------------------------------------------------------- output


def save(args: argparse.Namespace, store: dict) -> None:
    store["meta"] = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": platform.platform(),
        "device": str(jax.devices()[0]),
        "jax": jax.__version__,
        "steps_scale": args.steps_scale,
        "seed": args.seed,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(store, indent=1))


def figure(store: dict, path: str) -> None:
    panels = [name for name in ("conjugate", "versus", "filtering", "sbc") if name in store]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False)
    for ax, name in zip(axes[0], panels, strict=True):
        if name == "conjugate":
            rows = store["conjugate"]
            labels = list(rows)
            x = np.arange(len(labels))
            for offset, (label, get) in enumerate(
                (
                    ("network", lambda r: r["kl_network"]["mean"]),
                    ("SVI, equal time", lambda r: r["svi_equal_time"]["kl"]["mean"]),
                    ("SVI, converged", lambda r: r["svi_converged"]["kl"]["mean"]),
                )
            ):
                ax.bar(x + 0.27 * (offset - 1), [get(rows[k]) for k in labels], 0.27, label=label)
            ax.set(xticks=x, xticklabels=labels, yscale="log", ylabel="KL(exact ‖ q)")
            ax.set_title("conjugate mixtures")
            ax.legend(fontsize="small")
        elif name == "versus":
            versus_panel(ax, store)
        elif name == "filtering":
            kl = np.asarray(store["filtering"]["kl_per_step_mean"])
            se = np.asarray(store["filtering"]["kl_per_step_se"])
            t = np.arange(kl.size)
            ax.plot(t, kl, label="network filter")
            ax.fill_between(t, kl - 2 * se, kl + 2 * se, alpha=0.3)
            ax.set(xlabel="step t", ylabel="KL(exact_t ‖ network_t)", yscale="log")
            ax.set_title("recursive filtering")
        else:
            counts = np.asarray(store["sbc"]["counts"])
            if counts.shape[0] % 5 == 0 and counts.shape[0] > 20:  # 100 ranks: 20 bins of 5
                counts = counts.reshape(-1, 5, counts.shape[1]).sum(1)
            for d in range(counts.shape[1]):
                ax.step(np.arange(counts.shape[0]), counts[:, d], where="mid", label=f"dim {d}")
            ax.axhline(counts[:, 0].sum() / counts.shape[0], color="0.5", lw=1)
            ax.set(xlabel="rank bin", ylabel="problems", title="SBC ranks")
            ax.legend(fontsize="small")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def versus_panel(ax: Any, store: dict) -> None:
    """Seconds per posterior against the median moment KL (every method has one)."""
    versus = store["versus"]
    nuts = versus["nuts"]
    points = {
        "NUTS (vmapped)": (nuts["seconds_per_posterior_vmapped"], nuts["moment_kl"]),
        "NUTS (one at a time)": (nuts["seconds_per_posterior_one_at_a_time"], nuts["moment_kl"]),
        "SVI": (versus["svi"]["seconds_per_posterior"], versus["svi"]["moment_kl"]),
        "network + IS": (
            versus["network_importance"]["seconds_per_posterior"],
            versus["network_importance"]["moment_kl"],
        ),
        "prior IS": (
            versus["prior_importance"]["seconds_per_posterior"],
            versus["prior_importance"]["moment_kl"],
        ),
    }
    for row in store.get("sizes", {}).values():
        label = f"network {row['width']}×{row['depth']}"
        points[label] = (row["seconds_per_posterior"], row["moment_kl"])
    if "sizes" not in store:
        points["network"] = (
            versus["network"]["seconds_per_posterior"],
            versus["network"]["moment_kl"],
        )
    for index_, (label, (seconds, kl)) in enumerate(points.items()):
        marker = "o" if label.startswith("network") else "s"
        ax.scatter(seconds, kl["median"], marker=marker, color=f"C{index_ % 10}", label=label)
    ax.set(xscale="log", yscale="log", xlabel="seconds per posterior", ylabel="median moment KL")
    ax.set_title(f"{versus['problems']} posteriors, D = 2, K = 5")
    ax.legend(fontsize="x-small")


SECTIONS: dict[str, Callable[[argparse.Namespace, dict], None]] = {
    "inverse_gamma": run_inverse_gamma,
    "conjugate": run_conjugate,
    "versus": run_versus,
    "sizes": run_sizes,
    "filtering": run_filtering,
    "sbc": run_sbc,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    parser.add_argument("--problems", type=int, default=1000)
    parser.add_argument("--steps-scale", type=float, default=1.0)
    parser.add_argument("--svi-steps", type=int, default=1000)
    parser.add_argument("--inverse-gamma-steps", type=int, default=4000)
    parser.add_argument("--conjugate-dimensions", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--inverse-gamma-components", type=int, nargs="+", default=[2, 5])
    parser.add_argument("--inverse-gamma-svi-steps", type=int, default=2000)
    parser.add_argument("--em-steps", type=int, default=60, help="EM steps of the prior fit")
    parser.add_argument("--nuts-warmup", type=int, default=500)
    parser.add_argument("--nuts-samples", type=int, default=1000)
    parser.add_argument("--nuts-vmapped", type=int, default=50)
    parser.add_argument("--importance-samples", type=int, default=1000)
    parser.add_argument("--sequences", type=int, default=50)
    parser.add_argument("--filter-steps", type=int, default=100)
    parser.add_argument("--particles", type=int, default=1000)
    parser.add_argument("--pf-sequences", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="keep sections already in --out")
    parser.add_argument(
        "--out", default=str(ROOT / "benchmarks/results/distribution_transformer.json")
    )
    parser.add_argument("--figure", default=str(ROOT / "docs/figures/distribution_transformer.png"))
    args = parser.parse_args()
    store: dict = {}
    if args.resume and Path(args.out).exists():
        store = json.loads(Path(args.out).read_text())
    for name in args.sections:
        SECTIONS[name](args, store)
    figure(store, args.figure)


if __name__ == "__main__":
    main()
