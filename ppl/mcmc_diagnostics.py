"""Convergence diagnostics for MCMC draws, with warnings at the usual thresholds.

Computed by ArviZ on an `InferenceData`:
- rank-normalised split R-hat (Vehtari et al. 2021); warn above 1.01;
- bulk and tail effective sample size; warn below 100 per chain;
- divergent transitions (NUTS/HMC); warn on any;
- energy Bayesian fraction of missing information, per chain; warn below 0.3.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import arviz as az
import numpy as np

RHAT_THRESHOLD = 1.01
ESS_PER_CHAIN = 100
BFMI_THRESHOLD = 0.3


class ConvergenceWarning(UserWarning):
    """MCMC draws failed one of the usual convergence checks."""


class ConvergenceReport(NamedTuple):
    """Worst values over parameters, and the warnings they raised (empty if all passed)."""

    max_rhat: float
    min_ess_bulk: float
    min_ess_tail: float
    divergences: int
    bfmi: np.ndarray
    messages: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.messages


def _worst(dataset, reduce) -> tuple[float, str]:
    values = {
        f"{name}{list(index) if index else ''}": float(value)
        for name, array in dataset.data_vars.items()
        for index, value in np.ndenumerate(np.asarray(array))
    }
    finite = {k: v for k, v in values.items() if np.isfinite(v)}
    if not finite:
        return float("nan"), ""
    name = reduce(finite, key=finite.get)
    return finite[name], name


def check_convergence(
    inference_data: az.InferenceData,
    *,
    var_names: list[str] | None = None,
    rhat_threshold: float = RHAT_THRESHOLD,
    ess_per_chain: float = ESS_PER_CHAIN,
    bfmi_threshold: float = BFMI_THRESHOLD,
    warn: bool = True,
    stacklevel: int = 2,
) -> ConvergenceReport:
    """Check R-hat, bulk/tail ESS, divergences and energy BFMI; warn when one fails.

    `stacklevel` is passed to `warnings.warn` (raise it when calling through a wrapper).
    """
    posterior = inference_data["posterior"]
    num_chains = posterior.sizes["chain"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rhat, rhat_name = _worst(az.rhat(inference_data, var_names=var_names), max)
        bulk, bulk_name = _worst(az.ess(inference_data, var_names=var_names, method="bulk"), min)
        tail, tail_name = _worst(az.ess(inference_data, var_names=var_names, method="tail"), min)
    stats = getattr(inference_data, "sample_stats", None)
    divergences = 0
    bfmi = np.full(num_chains, np.nan)
    if stats is not None and "diverging" in stats:
        divergences = int(np.asarray(stats["diverging"]).sum())
    if stats is not None and "energy" in stats:
        bfmi = np.asarray(az.bfmi(inference_data))
    messages = []
    if num_chains > 1 and rhat > rhat_threshold:
        messages.append(f"R-hat {rhat:.3f} > {rhat_threshold} for {rhat_name}")
    minimum_ess = ess_per_chain * num_chains
    if bulk < minimum_ess:
        messages.append(f"bulk ESS {bulk:.0f} < {minimum_ess:.0f} for {bulk_name}")
    if tail < minimum_ess:
        messages.append(f"tail ESS {tail:.0f} < {minimum_ess:.0f} for {tail_name}")
    if divergences:
        total = posterior.sizes["chain"] * posterior.sizes["draw"]
        messages.append(f"{divergences} of {total} transitions diverged")
    low = np.flatnonzero(bfmi < bfmi_threshold)
    if low.size:
        messages.append(f"energy BFMI < {bfmi_threshold} in chains {low.tolist()}")
    if warn:
        for message in messages:
            warnings.warn(message, ConvergenceWarning, stacklevel=stacklevel)
    return ConvergenceReport(rhat, bulk, tail, divergences, bfmi, tuple(messages))
