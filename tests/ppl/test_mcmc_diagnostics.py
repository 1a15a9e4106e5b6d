"""Convergence checks on synthetic draws whose defects are known."""

from __future__ import annotations

import arviz as az
import numpy as np
import pytest

from ppl.mcmc_diagnostics import ConvergenceWarning, check_convergence


def data(posterior, **stats):
    return az.from_dict(posterior=posterior, sample_stats=stats or None)


def healthy(rng, chains=4, draws=1000):
    energy = rng.normal(size=(chains, draws))
    return {
        "posterior": {
            "x": rng.normal(size=(chains, draws)),
            "v": rng.normal(size=(chains, draws, 2)),
        },
        "stats": {"diverging": np.zeros((chains, draws), bool), "energy": energy},
    }


def test_independent_draws_pass_every_check():
    rng = np.random.default_rng(0)
    draws = healthy(rng)
    report = check_convergence(data(draws["posterior"], **draws["stats"]))
    assert report.ok and report.messages == ()
    assert report.max_rhat < 1.01 and report.min_ess_bulk > 3000
    assert report.divergences == 0 and np.all(report.bfmi > 1)


def test_chains_stuck_in_different_places_fail_rhat_and_name_the_parameter():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 500)) + np.array([0.0, 0.0, 0.0, 2.0])[:, None]
    with pytest.warns(ConvergenceWarning) as caught:
        report = check_convergence(data({"x": x, "y": rng.normal(size=(4, 500))}))
    assert report.max_rhat > 1.1
    assert any(str(w.message).startswith("R-hat") and "for x" in str(w.message) for w in caught)


def test_sticky_chains_fail_ess_and_divergences_are_counted():
    rng = np.random.default_rng(2)
    sticky = np.repeat(rng.normal(size=(4, 20)), 50, axis=1)  # 20 distinct values per chain
    diverging = np.zeros((4, 1000), bool)
    diverging[0, :7] = True
    report = check_convergence(
        data({"x": sticky}, diverging=diverging, energy=rng.normal(size=(4, 1000))), warn=False
    )
    assert report.min_ess_bulk < 400
    assert report.divergences == 7
    assert any("bulk ESS" in m for m in report.messages)
    assert any("7 of 4000 transitions diverged" in m for m in report.messages)


def test_a_random_walk_energy_fails_bfmi():
    rng = np.random.default_rng(3)
    energy = rng.normal(size=(2, 1000)).cumsum(axis=1)  # E[ΔE²] ≪ Var(E): BFMI ≈ 0
    energy[1] = rng.normal(size=1000)
    report = check_convergence(data({"x": rng.normal(size=(2, 1000))}, energy=energy), warn=False)
    assert report.bfmi[0] < 0.3 < report.bfmi[1]
    assert report.messages == ("energy BFMI < 0.3 in chains [0]",)
