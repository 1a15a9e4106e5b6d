"""NUTS on the same NumPyro models three ways, ppl-jax, NumPyro and plain BlackJAX, and the log
evidence from tempered SMC against NUTS draws + bridge sampling.

    .venv/bin/python benchmarks/numpyro_nuts.py [--posteriors eight_schools normal_normal]
        [--chains 4] [--warmup 1000] [--samples 1000] [--evidence-repeats 5] [--particles 2000]

Posteriors: the six posteriordb ones (`ppl.models.bayes.posteriordb`) and the three conjugate
problems (`ppl.models.bayes.conjugate`, data from key 0, exact log evidence known). Everything runs
in 64-bit mode (gp_pois_regr needs it), in one process, on the default JAX device. The three
samplers get the same model, data, chains, warm-up and draws, target acceptance 0.8, a diagonal
mass matrix, Stan's windowed adaptation, init_to_uniform starting points, maximum tree depth 10,
and run their chains one after another:

- ppl-jax: `ppl.experiments.bayes.run_mcmc(..., MCMCSettings(chain_method="sequential"))`: the
  whole call, which also builds the `InferenceData` (with pointwise log likelihood) and checks
  convergence;
- NumPyro: `MCMC(NUTS(model, target_accept_prob=0.8), ..., chain_method="sequential")`;
- BlackJAX: `blackjax.window_adaptation(blackjax.nuts, logdensity_fn)` and a `lax.scan` of
  `blackjax.nuts(...).step`, each under one `jax.jit` made once per model and reused for every
  chain and for the second run, in a Python loop over chains; `logdensity_fn` is minus NumPyro's
  `potential_fn` from `initialize_model`.

Each sampler runs twice with different seeds: `first` (compilation included) and `warm` (compiled
functions reused where the library allows: NumPyro's second `.run` on the same `MCMC` object; the
BlackJAX functions above; ppl-jax's `run_mcmc` again on the same `NumPyroModel`, whose compiled
warm-up and sampling programs `ppl.samplers.mcmc` keeps per log density and settings for as
long as the model exists, `ppl.samplers.programs`). The JAX compile time inside each run is
measured too (jax.monitoring), to show what "warm" still compiles: e.g.
NumPyro 0.22 under JAX 0.10 with `progress_bar=False` re-traces and recompiles its sampling loop
(`fori_collect`) for every chain of every `.run` (the freshly wrapped `jit(_body_fn)` it passes
as a static argument never hits the cache), and NumPyro's `initialize_model` over a batch of
chain keys compiles a `lax.map` on every call (ppl-jax's `initial_positions` and the BlackJAX
recipe pay this too).
Efficiency: minimum bulk ESS (ArviZ) over every element of the constrained latent sites, per
second of wall time of each run. Also recorded: divergences, leapfrog steps per draw (= gradient
evaluations), tree depth, and gradient evaluations per second.

Evidence (every posterior; tempered SMC at its default reference, the Laplace approximation,
which also takes improper and factor priors): `run_tempered_smc` repeated with
`--evidence-repeats` seeds, and
`ppl.bridge_sampling.log_evidence` on the draws of each of ppl-jax's two NUTS runs (time: the
NUTS run plus the bridge), against the exact value where known.

Writes `--out` (JSON, rewritten after each posterior; `--resume` skips posteriors already there
with the same settings) and `--figure`, and prints markdown tables.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
import warnings
import zlib
from collections.abc import Callable, Mapping
from importlib.metadata import version
from pathlib import Path
from typing import Any, NamedTuple

import arviz as az
import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer import MCMC, NUTS
from numpyro.infer.util import initialize_model

from ppl.bridge_sampling import log_evidence as bridge_log_evidence
from ppl.experiments.bayes import MCMCSettings, run_mcmc, run_tempered_smc
from ppl.inference_data import constrained_draws
from ppl.models.bayes.conjugate import conjugate_problems
from ppl.models.bayes.posteriordb import POSTERIOR_NAMES, load_posterior
from ppl.numpyro_bridge import NumPyroModel, from_numpyro

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "numpyro_nuts.json"
FIGURE = ROOT / "docs" / "figures" / "numpyro_nuts.png"
CONJUGATE_NAMES = ("normal_normal", "beta_binomial", "linear_regression")
ALL_NAMES = (*POSTERIOR_NAMES, *CONJUGATE_NAMES)
LIBRARIES = ("ppl-jax", "numpyro", "blackjax")
LABELS = {"ppl-jax": "ppl-jax", "numpyro": "NumPyro", "blackjax": "BlackJAX"}
TARGET_ACCEPTANCE = 0.8
NOTES = (
    "64-bit mode (jax_enable_x64) for every posterior, because gp_pois_regr needs it",
    "ESS: minimum ArviZ bulk ESS over every element of the constrained latent sites",
    "ESS/s warm: ESS of the second run / its wall time; ESS/s first: the same for the first run "
    "(compilation included)",
    "ppl-jax times are the whole run_mcmc call (InferenceData with pointwise log likelihood and "
    "the convergence check included); sampler_seconds is warm-up + sampling only (ppl-jax: "
    "mcmc.run's own timers; BlackJAX: the jitted warm-up and sampling calls)",
    "steps: leapfrog steps (gradient evaluations) per draw in the sampling phase; NumPyro's tree "
    "depth is derived as ceil(log2(steps + 1))",
    "compile in warm: JAX tracing + lowering + compilation time inside the second run "
    "(jax.monitoring compile events); 'excl. compile' divides by the run time minus that",
    "grad/s (run): steps per draw x chains x (warm-up + draws) / run time, assuming warm-up "
    "trajectories as long as sampling ones (the same assumption for all three); grad/s "
    "(sampling): sampling-phase steps / sampling-phase time, where a library exposes that time",
)


COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)
_compile_total = [0.0]


def _on_event_duration(event: str, duration: float, **_: Any) -> None:
    if event in COMPILE_EVENTS:
        _compile_total[0] += duration


def compile_clock() -> float:
    """Seconds spent tracing, lowering and compiling with JAX so far (after `main` registers the
    listener): the difference over a run is its compile time."""
    return _compile_total[0]


class Problem(NamedTuple):
    name: str
    model: Callable[..., None]
    data: dict[str, Any]
    exact_log_evidence: float | None


def short_name(name: str) -> str:
    return name if name in CONJUGATE_NAMES else name.split("-")[0]


def resolve_names(requested: list[str]) -> list[str]:
    by_short = {short_name(name): name for name in ALL_NAMES}
    resolved = []
    for name in requested:
        if name in ALL_NAMES:
            resolved.append(name)
        elif name in by_short:
            resolved.append(by_short[name])
        else:
            raise SystemExit(f"unknown posterior {name!r}; choose from {', '.join(ALL_NAMES)}")
    return resolved


def load_problem(name: str) -> Problem:
    if name in CONJUGATE_NAMES:
        problem = {p.name: p for p in conjugate_problems(jax.random.key(0))}[name]
        data = {key: np.asarray(value) for key, value in problem.data.items()}
        return Problem(name, problem.model, data, problem.log_evidence)
    posterior = load_posterior(name)
    return Problem(name, posterior.model, dict(posterior.data), None)


def min_bulk_ess(draws: Mapping[str, Any]) -> float:
    """Minimum ArviZ bulk ESS over every element of draws [chain, draw, ...]."""
    dataset = az.ess({name: np.asarray(value) for name, value in draws.items()}, method="bulk")
    return float(min(np.min(array.values) for array in dataset.data_vars.values()))


def summarise_run(
    seconds: float,
    compile_seconds: float,
    draws: Mapping[str, Any],
    steps: np.ndarray,
    divergent: np.ndarray,
    tree_depth: np.ndarray,
    num_warmup: int,
    sampling_seconds: float | None = None,
    sampler_seconds: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    steps = np.asarray(steps, np.float64)
    ess = min_bulk_ess(draws)
    total_steps = float(steps.sum())
    num_chains, num_samples = steps.shape
    return {
        "seconds": seconds,
        "min_bulk_ess": ess,
        "ess_per_second": ess / seconds,
        "compile_seconds": compile_seconds,
        "ess_per_second_excluding_compile": ess / max(seconds - compile_seconds, 1e-9),
        "divergences": int(np.sum(divergent)),
        "mean_steps": float(steps.mean()),
        "mean_tree_depth": float(np.mean(tree_depth)),
        "grad_per_second_run": float(steps.mean())
        * num_chains
        * (num_warmup + num_samples)
        / seconds,
        "sampling_seconds": sampling_seconds,
        "grad_per_second_sampling": total_steps / sampling_seconds if sampling_seconds else None,
        "sampler_seconds": sampler_seconds,
        "ess_per_sampler_second": ess / sampler_seconds if sampler_seconds else None,
        **extra,
    }


# ---------------------------------------------------------------------------------------------
# The three samplers. Each returns {"first": ..., "warm": ...} and, for ppl-jax, the draws.


def run_ppl_jax(
    keys: tuple[jax.Array, jax.Array], problem: Problem, args: argparse.Namespace
) -> tuple[dict[str, Any], NumPyroModel, list[tuple[np.ndarray, float]]]:
    """Also returns the model and, per run, the flat unconstrained draws [chains, draws, d] with
    the run's wall time (for bridge sampling)."""
    out: dict[str, Any] = {}
    flat_draws = []
    model = None
    for label, key in zip(("first", "warm"), keys, strict=True):
        model_key, run_key = jax.random.split(key)
        compiled = compile_clock()
        start = time.perf_counter()
        if model is None:  # the first run includes binding the model
            model = from_numpyro(problem.model, rng_key=model_key, model_kwargs=problem.data)
        fit = run_mcmc(
            run_key,
            model,
            MCMCSettings(
                kernel="nuts",
                num_warmup=args.warmup,
                num_samples=args.samples,
                chain_method="sequential",
                target_acceptance_rate=TARGET_ACCEPTANCE,
            ),
            num_chains=args.chains,
            progress=False,
            warn=False,
        )
        seconds = time.perf_counter() - start
        compile_seconds = compile_clock() - compiled
        posterior = fit.inference_data.posterior
        stats = {k: np.asarray(v) for k, v in fit.samples.sample_stats.items()}
        sampler_seconds = fit.samples.warmup_seconds + fit.samples.sampling_seconds
        out[label] = summarise_run(
            seconds,
            compile_seconds,
            {name: posterior[name].values for name in model.latent_sites},
            stats["n_steps"],
            stats["diverging"],
            stats["tree_depth"],
            args.warmup,
            sampling_seconds=fit.samples.sampling_seconds,
            sampler_seconds=sampler_seconds,
            warmup_seconds=fit.samples.warmup_seconds,
        )
        ravel = jax.jit(jax.vmap(jax.vmap(model.ravel)))
        flat_draws.append((np.asarray(ravel(fit.samples.positions)), seconds))
    assert model is not None
    return out, model, flat_draws


def run_numpyro(
    keys: tuple[jax.Array, jax.Array],
    problem: Problem,
    model: NumPyroModel,
    args: argparse.Namespace,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    mcmc = None
    for label, key in zip(("first", "warm"), keys, strict=True):
        compiled = compile_clock()
        start = time.perf_counter()
        if mcmc is None:
            mcmc = MCMC(
                NUTS(problem.model, target_accept_prob=TARGET_ACCEPTANCE),
                num_warmup=args.warmup,
                num_samples=args.samples,
                num_chains=args.chains,
                chain_method="sequential",
                progress_bar=False,
            )
        mcmc.run(key, extra_fields=("diverging", "num_steps"), **problem.data)
        samples = jax.block_until_ready(mcmc.get_samples(group_by_chain=True))
        seconds = time.perf_counter() - start
        compile_seconds = compile_clock() - compiled
        extra = mcmc.get_extra_fields(group_by_chain=True)
        steps = np.asarray(extra["num_steps"])
        out[label] = summarise_run(
            seconds,
            compile_seconds,
            {name: samples[name] for name in model.latent_sites},
            steps,
            np.asarray(extra["diverging"]),
            np.ceil(np.log2(steps + 1.0)),
            args.warmup,
        )
    return out


def make_blackjax_functions(
    logdensity_fn: Callable, num_warmup: int, num_samples: int
) -> tuple[Callable, Callable]:
    """The BlackJAX recipe: window adaptation, then a scan of NUTS steps, each jitted once."""
    adaptation = blackjax.window_adaptation(
        blackjax.nuts, logdensity_fn, target_acceptance_rate=TARGET_ACCEPTANCE
    )

    @jax.jit
    def warmup(key: jax.Array, position: Any) -> tuple[Any, dict, jax.Array]:
        (state, parameters), info = adaptation.run(key, position, num_steps=num_warmup)
        return state, parameters, info.info.num_integration_steps

    @jax.jit
    def sample(key: jax.Array, state: Any, parameters: dict) -> tuple[Any, tuple]:
        nuts = blackjax.nuts(logdensity_fn, **parameters)

        def one_step(state: Any, key: jax.Array) -> tuple[Any, tuple]:
            state, info = nuts.step(key, state)
            record = (
                info.num_integration_steps,
                info.is_divergent,
                info.num_trajectory_expansions,
            )
            return state, (state.position, record)

        return jax.lax.scan(one_step, state, jax.random.split(key, num_samples))

    return warmup, sample


def run_blackjax(
    keys: tuple[jax.Array, jax.Array],
    problem: Problem,
    model: NumPyroModel,
    args: argparse.Namespace,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    functions = None
    for label, key in zip(("first", "warm"), keys, strict=True):
        init_key, warmup_key, sample_key = jax.random.split(key, 3)
        compiled = compile_clock()
        start = time.perf_counter()
        info = initialize_model(
            jax.random.split(init_key, args.chains),
            problem.model,
            model_kwargs=problem.data,
            dynamic_args=False,
        )
        if functions is None:  # reused by the second run: its potential_fn is the same function
            potential_fn = info.potential_fn

            def logdensity_fn(position: Any, potential_fn: Callable = potential_fn) -> jax.Array:
                return -potential_fn(position)

            functions = make_blackjax_functions(logdensity_fn, args.warmup, args.samples)
        warmup, sample = functions
        initial = info.param_info.z
        init_seconds = time.perf_counter() - start
        positions, records = [], []
        warmup_seconds = sampling_seconds = 0.0
        for chain, (w_key, s_key) in enumerate(
            zip(
                jax.random.split(warmup_key, args.chains),
                jax.random.split(sample_key, args.chains),
                strict=True,
            )
        ):
            begin = time.perf_counter()
            state, parameters, _ = warmup(w_key, jax.tree.map(lambda x, c=chain: x[c], initial))
            jax.block_until_ready(state)
            warmup_seconds += time.perf_counter() - begin
            begin = time.perf_counter()
            _, (chain_positions, record) = jax.block_until_ready(sample(s_key, state, parameters))
            sampling_seconds += time.perf_counter() - begin
            positions.append(chain_positions)
            records.append(record)
        seconds = time.perf_counter() - start
        compile_seconds = compile_clock() - compiled
        stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *positions)
        steps, divergent, depth = (np.stack(parts) for parts in zip(*records, strict=True))
        draws = constrained_draws(model, stacked)
        out[label] = summarise_run(
            seconds,
            compile_seconds,
            {name: draws[name] for name in model.latent_sites},
            np.asarray(steps),
            np.asarray(divergent),
            np.asarray(depth),
            args.warmup,
            sampling_seconds=sampling_seconds,
            sampler_seconds=warmup_seconds + sampling_seconds,
            warmup_seconds=warmup_seconds,
            init_seconds=init_seconds,
        )
    return out


# ---------------------------------------------------------------------------------------------
# Evidence


def run_evidence(
    key: jax.Array,
    problem: Problem,
    model: NumPyroModel,
    flat_draws: list[tuple[np.ndarray, float]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    smc = []
    for repeat in range(args.evidence_repeats):
        compiled = compile_clock()
        start = time.perf_counter()
        fit = run_tempered_smc(
            jax.random.fold_in(key, repeat),
            model,
            num_particles=args.particles,
            log_likelihood=False,
            progress=False,
        )
        smc.append(
            {
                "log_evidence": fit.log_evidence,
                "seconds": time.perf_counter() - start,
                "compile_seconds": compile_clock() - compiled,
                "sampler_seconds": fit.result.seconds,
                "iterations": len(fit.result.temperatures),
            }
        )

    def log_joint(flat: jax.Array) -> jax.Array:
        return model.logdensity_fn(model.unravel(flat))

    bridge = []
    for index, (draws, nuts_seconds) in enumerate(flat_draws):
        half = draws.shape[1] // 2  # first halves of every chain fit the proposal
        ordered = np.concatenate(
            [
                draws[:, :half].reshape(-1, draws.shape[-1]),
                draws[:, half:].reshape(-1, draws.shape[-1]),
            ]
        )
        compiled = compile_clock()
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = bridge_log_evidence(jax.random.fold_in(key, 1000 + index), log_joint, ordered)
        bridge_seconds = time.perf_counter() - start
        bridge_compile_seconds = compile_clock() - compiled
        bridge.append(
            {
                "run": ("first", "warm")[index],
                "log_evidence": result.log_evidence,
                "standard_error": result.standard_error,
                "iterations": result.iterations,
                "bridge_seconds": bridge_seconds,
                "bridge_compile_seconds": bridge_compile_seconds,
                "nuts_seconds": nuts_seconds,
                "seconds": nuts_seconds + bridge_seconds,
                "warnings": [str(w.message) for w in caught],
            }
        )
    estimates = np.asarray([row["log_evidence"] for row in smc])
    return {
        "exact": problem.exact_log_evidence,
        "smc": smc,
        "smc_mean": float(estimates.mean()),
        "smc_sd": float(estimates.std(ddof=1)) if len(estimates) > 1 else None,
        "smc_first_seconds": smc[0]["seconds"],
        # the repeats after the first reuse its compiled programs
        "smc_warm_seconds": float(np.median([row["seconds"] for row in smc[1:]]))
        if len(smc) > 1
        else None,
        "bridge": bridge,
    }


# ---------------------------------------------------------------------------------------------
# Driver, tables, figure


def machine_info() -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else None,
        "jax": jax.__version__,
        "jaxlib": version("jaxlib"),
        "numpyro": version("numpyro"),
        "blackjax": version("blackjax"),
        "arviz": version("arviz"),
        "device": str(jax.devices()[0]),
        "x64": bool(jax.config.jax_enable_x64),
    }


def run_posterior(name: str, args: argparse.Namespace) -> dict[str, Any]:
    problem = load_problem(name)
    key = jax.random.fold_in(jax.random.key(args.seed), zlib.crc32(name.encode()) % 2**31)
    first_key, warm_key, evidence_key = jax.random.split(key, 3)
    keys = (first_key, warm_key)
    libraries: dict[str, Any] = {}
    libraries["ppl-jax"], model, flat_draws = run_ppl_jax(keys, problem, args)
    libraries["numpyro"] = run_numpyro(keys, problem, model, args)
    libraries["blackjax"] = run_blackjax(keys, problem, model, args)
    ours = libraries["ppl-jax"]
    ratios = {
        f"ppl-jax/{other}": {
            "first": ours["first"]["ess_per_second"] / theirs["first"]["ess_per_second"],
            "warm": ours["warm"]["ess_per_second"] / theirs["warm"]["ess_per_second"],
            "warm_excluding_compile": ours["warm"]["ess_per_second_excluding_compile"]
            / theirs["warm"]["ess_per_second_excluding_compile"],
        }
        for other, theirs in ((name, libraries[name]) for name in ("numpyro", "blackjax"))
    }
    record: dict[str, Any] = {
        "dimension": model.dimension,
        "latent_sites": list(model.latent_sites),
        "libraries": libraries,
        "ratios": ratios,
        "evidence": None,
    }
    if args.evidence:
        if short_name(name) in args.no_evidence_for or name in args.no_evidence_for:
            record["evidence_skipped"] = "left out with --no-evidence-for"
        else:
            record["evidence"] = run_evidence(evidence_key, problem, model, flat_draws, args)
    return record


def format_table(report: dict[str, Any]) -> str:
    lines = [
        "| posterior | d | library | first (s) | warm (s) | compile in warm (s) | min bulk ESS | "
        "ESS/s warm | ESS/s warm excl. compile | ESS/s first | div. | steps/draw | depth | "
        "grad/s (run) |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, record in report["posteriors"].items():
        for library in LIBRARIES:
            first = record["libraries"][library]["first"]
            warm = record["libraries"][library]["warm"]
            lines.append(
                f"| {short_name(name)} | {record['dimension']} | {LABELS[library]} | "
                f"{first['seconds']:.2f} | {warm['seconds']:.2f} | {warm['compile_seconds']:.2f} | "
                f"{warm['min_bulk_ess']:.0f} | {warm['ess_per_second']:.1f} | "
                f"{warm['ess_per_second_excluding_compile']:.1f} | "
                f"{first['ess_per_second']:.1f} | {warm['divergences']} | "
                f"{warm['mean_steps']:.1f} | {warm['mean_tree_depth']:.2f} | "
                f"{warm['grad_per_second_run']:.3g} |"
            )
    lines += [
        "",
        "| posterior | ESS/s ratio ppl-jax / NumPyro: warm | warm excl. compile | first | "
        "ppl-jax / BlackJAX: warm | warm excl. compile | first | "
        "warm-up + sampling (s, warm): ppl-jax | BlackJAX |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, record in report["posteriors"].items():
        cells = [
            f"{record['ratios'][f'ppl-jax/{other}'][run]:.2f}"
            for other in ("numpyro", "blackjax")
            for run in ("warm", "warm_excluding_compile", "first")
        ]
        cells += [
            f"{record['libraries'][library]['warm']['sampler_seconds']:.2f}"
            for library in ("ppl-jax", "blackjax")
        ]
        lines.append(f"| {short_name(name)} | " + " | ".join(cells) + " |")
    evidence = {name: r["evidence"] for name, r in report["posteriors"].items() if r["evidence"]}
    if evidence:
        lines += [
            "",
            "| posterior | exact log Z | SMC log Ẑ (mean ± sd, n) | SMC s (first; median of "
            "the rest) | NUTS + bridge log Ẑ ± SE (first; warm run) | NUTS + bridge s (first; "
            "warm) |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, row in evidence.items():
            exact = f"{row['exact']:.3f}" if row["exact"] is not None else "—"
            sd = f"{row['smc_sd']:.3f}" if row["smc_sd"] is not None else "—"
            smc_seconds = f"{row['smc_first_seconds']:.2f}"
            if row["smc_warm_seconds"] is not None:
                smc_seconds += f"; {row['smc_warm_seconds']:.2f}"
            bridge = "; ".join(
                f"{b['log_evidence']:.3f} ± {b['standard_error']:.3f}" for b in row["bridge"]
            )
            times = "; ".join(
                f"{b['nuts_seconds']:.1f} + {b['bridge_seconds']:.2f}" for b in row["bridge"]
            )
            lines.append(
                f"| {short_name(name)} | {exact} | {row['smc_mean']:.3f} ± {sd} "
                f"({len(row['smc'])}) | {smc_seconds} | {bridge} | {times} |"
            )
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter

    def plain_log_axis(ax: Any) -> None:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(FormatStrFormatter(""))

    names = list(report["posteriors"])
    evidence = [n for n in names if report["posteriors"][n]["evidence"]]
    config = report["config"]
    panels = 3 if evidence else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.5 + 4.5 * (panels - 1), 4.4), squeeze=False)
    axes = axes[0]

    ax = axes[0]
    width = 0.27
    positions = np.arange(len(names))
    for offset, library in zip((-width, 0.0, width), LIBRARIES, strict=True):
        runs = [report["posteriors"][n]["libraries"][library]["warm"] for n in names]
        ax.bar(
            positions + offset, [r["ess_per_second"] for r in runs], width, label=LABELS[library]
        )
        ax.plot(
            positions + offset,
            [r["ess_per_second_excluding_compile"] for r in runs],
            "k_",
            markersize=9,
            label="excl. compile time" if library == LIBRARIES[-1] else None,
        )
    plain_log_axis(ax)
    ax.set_xticks(positions, [short_name(n) for n in names], rotation=35, ha="right")
    ax.set_ylabel("min bulk ESS / s (second run)")
    ax.set_title(f"NUTS, {config['chains']} chains x {config['warmup']}+{config['samples']}")
    ax.legend(fontsize=8)

    if evidence:
        ax = axes[1]
        xs = np.arange(len(evidence))
        labelled: set[str] = set()

        def once(label: str) -> str | None:
            if label in labelled:
                return None
            labelled.add(label)
            return label

        for x, name in zip(xs, evidence, strict=True):
            row = report["posteriors"][name]["evidence"]
            reference = row["exact"] if row["exact"] is not None else row["smc_mean"]
            smc = np.asarray([r["log_evidence"] for r in row["smc"]]) - reference
            ax.plot(np.full(len(smc), x - 0.2), smc, ".", color="C0", alpha=0.5)
            ax.errorbar(
                x - 0.15,
                smc.mean(),
                yerr=smc.std(ddof=1) if len(smc) > 1 else 0,
                fmt="o",
                color="C0",
                capsize=3,
                label=once("tempered SMC (mean ± sd)"),
            )
            for k, b in enumerate(row["bridge"]):
                ax.errorbar(
                    x + 0.1 + 0.1 * k,
                    b["log_evidence"] - reference,
                    yerr=2 * b["standard_error"],
                    fmt="s",
                    color="C1",
                    capsize=3,
                    label=once("NUTS + bridge (± 2 SE)"),
                )
            if row["exact"] is not None:
                ax.plot(x, 0.0, "k*", markersize=9, label=once("exact"))
        ax.axhline(0.0, color="grey", lw=0.6)
        ax.set_xticks(xs, [short_name(n) for n in evidence], rotation=35, ha="right")
        ax.set_ylabel("log Ẑ − exact (or − SMC mean)")
        ax.set_title("log evidence")
        ax.legend(fontsize=8)

        ax = axes[2]
        rows = [report["posteriors"][n]["evidence"] for n in evidence]
        smc_times = [r["smc_warm_seconds"] or r["smc_first_seconds"] for r in rows]
        bridge_times = [r["bridge"][-1]["seconds"] for r in rows]
        ax.bar(xs - 0.2, smc_times, 0.4, label=f"tempered SMC ({config['particles']} particles)")
        ax.bar(xs + 0.2, bridge_times, 0.4, label="NUTS (ppl-jax) + bridge")
        plain_log_axis(ax)
        ax.set_xticks(xs, [short_name(n) for n in evidence], rotation=35, ha="right")
        ax.set_ylabel("s per estimate")
        ax.set_title("evidence cost (SMC: repeats 2+; NUTS: run 2)")
        ax.legend(fontsize=8)

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main() -> None:
    jax.config.update("jax_enable_x64", True)  # first, before any array: gp_pois_regr needs it
    jax.monitoring.register_event_duration_secs_listener(_on_event_duration)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--posteriors",
        nargs="+",
        default=list(ALL_NAMES),
        help="full or short names (eight_schools, normal_normal, ...)",
    )
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-evidence",
        dest="evidence",
        action="store_false",
        help="skip the tempered SMC and bridge sampling comparison",
    )
    parser.add_argument(
        "--no-evidence-for",
        nargs="*",
        default=[],
        help="posteriors to leave out of the evidence comparison (e.g. gp_pois_regr, whose "
        "tempered SMC at 2000 particles takes many minutes on 2 cores)",
    )
    parser.add_argument("--evidence-repeats", type=int, default=5)
    parser.add_argument("--particles", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--figure", type=Path, default=FIGURE)
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep posteriors already in --out when it was run with these settings",
    )
    args = parser.parse_args()
    names = resolve_names(args.posteriors)

    config = {
        "chains": args.chains,
        "warmup": args.warmup,
        "samples": args.samples,
        "seed": args.seed,
        "evidence": args.evidence,
        "no_evidence_for": sorted(args.no_evidence_for),
        "evidence_repeats": args.evidence_repeats,
        "particles": args.particles,
        "target_acceptance": TARGET_ACCEPTANCE,
        "chain_method": "sequential",
    }
    report: dict[str, Any] = {
        "machine": machine_info(),
        "config": config,
        "notes": list(NOTES),
        "posteriors": {},
    }
    if args.resume and args.out.exists():
        previous = json.loads(args.out.read_text())
        if previous.get("config") == config:
            report["posteriors"] = {n: r for n, r in previous["posteriors"].items() if n in names}
            print(f"resuming: {', '.join(map(short_name, report['posteriors'])) or 'nothing'} done")
        else:
            print(f"not resuming: {args.out} was run with other settings")
    print(
        f"jax {jax.__version__} on {report['machine']['device']}, 64-bit mode on for every "
        "posterior (gp_pois_regr needs it)"
    )
    jax.block_until_ready(jnp.ones(3) + 1)  # JAX start-up outside every timing

    args.out.parent.mkdir(parents=True, exist_ok=True)
    for name in names:
        if name in report["posteriors"]:
            continue
        start = time.perf_counter()
        report["posteriors"][name] = run_posterior(name, args)
        report["posteriors"] = {
            n: report["posteriors"][n] for n in names if n in report["posteriors"]
        }
        args.out.write_text(json.dumps(report, indent=2))
        print(f"{short_name(name)}: {time.perf_counter() - start:.1f} s", flush=True)

    plot(report, args.figure)
    print()
    print(format_table(report))
    print()
    for note in NOTES:
        print(f"- {note}")
    print(f"\nwrote {args.out} and {args.figure}")


if __name__ == "__main__":
    main()
