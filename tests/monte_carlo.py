"""Monte Carlo z-statistics shared by the statistical tests (fixed seeds, exact oracles)."""

from __future__ import annotations

import numpy as np


def evidence_ratio_z(log_estimates: np.ndarray, exact_log_evidence: float) -> float:
    """z of the mean of Z_hat / Z against 1 (unbiasedness on the natural scale), with the
    standard error of that mean across the independent runs."""
    ratio = np.exp(np.asarray(log_estimates, np.float64) - exact_log_evidence)
    return float((ratio.mean() - 1) / (ratio.std(ddof=1) / np.sqrt(ratio.size)))


def mean_z(samples: np.ndarray, target: np.ndarray | float) -> np.ndarray:
    """z of the mean over independent runs (axis 0) against `target`."""
    samples = np.asarray(samples, np.float64)
    error = samples.std(axis=0, ddof=1) / np.sqrt(samples.shape[0])
    return (samples.mean(axis=0) - target) / error


def batch_means_z(
    draws: np.ndarray, target: np.ndarray | float, num_batches: int = 40
) -> np.ndarray:
    """z of a Markov chain's mean (axis 0) against `target`, with a batch-means standard
    error: the chain is cut into `num_batches` consecutive batches, long against its
    autocorrelation time, whose means are nearly independent."""
    draws = np.asarray(draws, np.float64)
    usable = draws.shape[0] // num_batches * num_batches
    batches = draws[:usable].reshape(num_batches, -1, *draws.shape[1:]).mean(axis=1)
    error = batches.std(axis=0, ddof=1) / np.sqrt(num_batches)
    return (draws[:usable].mean(axis=0) - target) / error
