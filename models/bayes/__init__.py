"""Classic Bayesian models: posteriordb posteriors written in NumPyro, conjugate models with exact
answers."""

from ppl.models.bayes.posteriordb import (
    POSTERIOR_NAMES,
    Posterior,
    arK,
    eight_schools_noncentered,
    garch11,
    gp_pois_regr,
    kidscore_momiq,
    load_posterior,
    load_reference_draws,
    low_dim_gauss_mix,
    stan_names,
)

__all__ = [
    "POSTERIOR_NAMES",
    "Posterior",
    "arK",
    "eight_schools_noncentered",
    "garch11",
    "gp_pois_regr",
    "kidscore_momiq",
    "load_posterior",
    "load_reference_draws",
    "low_dim_gauss_mix",
    "stan_names",
]
