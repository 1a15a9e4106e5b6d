"""Bridge-sampling log evidence of the posteriordb posteriors from their reference draws.

    PYTHONPATH=. python benchmarks/posteriordb_bridge_reference.py \
        > tests/experiments/posteriordb_bridge_evidence.json

posteriordb's reference draws (10 chains x 1,000 from long Stan runs, ../shared/posteriordb)
are mapped to the model's unconstrained space (eight schools' theta_trans = (theta − mu)/tau,
gp_pois_regr's f_tilde = chol(K)⁻¹ f) and fed to `ppl.bridge_sampling.log_evidence` with 8
proposal keys; the first halves of the chains fit the proposal. The value is ∫ p(y, u) du with
the model's densities as written: where a prior is improper (kidscore_momiq's and garch11's
flat priors, low_dim_gauss_mix's mu, whose prior is a factor) its density is taken as 1, which
is what tempered SMC from a Laplace reference estimates too. The value is
independent of tempered SMC, which `tests/experiments/test_posteriordb_validation.py` checks
against it.
"""

from __future__ import annotations

import contextlib
import json

import jax
import jax.numpy as jnp
import numpy as np

from ppl.bridge_sampling import log_evidence
from ppl.models.bayes.posteriordb import load_posterior, load_reference_draws
from ppl.numpyro_bridge import from_numpyro

NAMES = (
    "arK-arK",
    "eight_schools-eight_schools_noncentered",
    "garch-garch11",
    "gp_pois_regr-gp_pois_regr",
    "kidiq-kidscore_momiq",
    "low_dim_gauss_mix-low_dim_gauss_mix",
)


def site_draws(name: str, latent: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Latent site -> reference draws [chains, draws, *shape] (constrained)."""
    posterior = load_posterior(name)
    reference = load_reference_draws(name)
    batch = next(iter(reference.values())).shape

    def site(name: str, shape: tuple[int, ...]) -> np.ndarray:
        if not shape:
            return reference[name]
        columns = [
            reference[f"{name}[{','.join(str(i + 1) for i in j)}]"] for j in np.ndindex(*shape)
        ]
        return np.stack(columns, -1).reshape(batch + shape)

    values = {
        s: site(s, tuple(posterior.parameter_shapes[s]))
        for s in latent
        if s in reference or f"{s}[1]" in reference
    }
    if "theta_trans" in latent:
        theta = site("theta", (8,))
        values["theta_trans"] = (theta - values["mu"][..., None]) / values["tau"][..., None]
    if "f_tilde" in latent:
        x = np.asarray(posterior.data["x"])
        f = site("f", (x.shape[0],))
        rho, alpha = values["rho"][..., None, None], values["alpha"][..., None, None]
        cov = alpha**2 * np.exp(-np.square(x[:, None] - x[None, :]) / (2 * rho**2))
        cholesky = np.linalg.cholesky(cov + 1e-10 * np.eye(x.shape[0]))
        values["f_tilde"] = np.linalg.solve(cholesky, f[..., None])[..., 0]
    return values


def bridge(name: str) -> dict[str, float]:
    context = jax.enable_x64(True) if name.startswith("gp_pois") else contextlib.nullcontext()
    with context:
        posterior = load_posterior(name)
        model = from_numpyro(
            posterior.model, rng_key=jax.random.key(0), model_kwargs=posterior.data
        )
        values = site_draws(name, tuple(model.latent_sites))
        flat_values = {k: jnp.asarray(v.reshape((-1, *v.shape[2:]))) for k, v in values.items()}
        flat = np.asarray(jax.vmap(lambda v: model.ravel(model.unconstrain(v)))(flat_values))
        chains = flat.reshape(10, -1, flat.shape[-1])
        half = chains.shape[1] // 2
        ordered = np.concatenate(
            [
                chains[:, :half].reshape(-1, flat.shape[-1]),
                chains[:, half:].reshape(-1, flat.shape[-1]),
            ]
        )

        def log_joint(u: jax.Array) -> jax.Array:
            return model.logdensity_fn(model.unravel(u))

        estimates = [log_evidence(jax.random.key(k), log_joint, ordered) for k in range(8)]
    values_ = np.asarray([e.log_evidence for e in estimates])
    return {
        "log_evidence": float(values_.mean()),
        "standard_error": float(max(e.standard_error for e in estimates)),
        "sd_over_proposal_keys": float(values_.std(ddof=1)),
    }


if __name__ == "__main__":
    print(
        json.dumps(
            {
                "command": "PYTHONPATH=. python benchmarks/posteriordb_bridge_reference.py",
                "posteriors": {name: bridge(name) for name in NAMES},
            },
            indent=1,
        )
    )
