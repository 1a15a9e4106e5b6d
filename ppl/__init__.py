"""ppl-jax: probabilistic-programming inference in JAX.

The flat public API, where users look first (like `blackjax.nuts` or `numpyro.infer`)::

    import jax
    import ppl

    model = ppl.bootstrap(state_space_model)  # a FeynmanKac model
    result = ppl.smc.run(jax.random.key(0), model, num_particles=1000, num_steps=100)
    lm = ppl.LanguageModel.load()  # the embedded SmolLM2-135M-Instruct

Algorithms are modules with `init` / `step` / `run` (`ppl.smc`, `ppl.host_smc`,
`ppl.particle_gibbs`, `ppl.mcmc`, ...); models, protocols and diagnostics are names
(`ppl.FeynmanKac`, `ppl.LanguageModel`, `ppl.effective_sample_size`, ...). Everything loads on
first use, so `import ppl` costs no more than the pieces a program touches. The layers behind
these names (`ppl` core, `ppl.samplers`, `ppl.models`, `ppl.experiments`) are described in
docs/design.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Algorithm modules: `ppl.<name>` is the module `ppl.samplers.<name>`.
SAMPLERS = (
    "backward_smoothing",
    "beam_search",
    "conditional_smc",
    "genealogy",
    "host_parallel_tempering",
    "host_particle_gibbs",
    "host_smc",
    "importance",
    "mcmc",
    "parallel_tempering",
    "particle_gibbs",
    "pinned_conditional_smc",
    "pmmh",
    "resampling",
    "selection",
    "smc",
    "smc_steer",
    "tempered_smc",
)

# Names: `ppl.<name>` is `<module>.<name>`.
NAMES = {
    # the core
    "FeynmanKac": "ppl.feynman_kac",
    "HostFeynmanKac": "ppl.feynman_kac",
    "StateSpaceModel": "ppl.state_space",
    "Proposal": "ppl.state_space",
    "bootstrap": "ppl.state_space",
    "guided": "ppl.state_space",
    "auxiliary": "ppl.state_space",
    "product": "ppl.potentials",
    "temper": "ppl.potentials",
    "effective_sample_size": "ppl.diagnostics",
    "normalize_log_weights": "ppl.diagnostics",
    "weighted_mean": "ppl.diagnostics",
    "check_convergence": "ppl.mcmc_diagnostics",
    "NumPyroModel": "ppl.numpyro_bridge",
    "from_numpyro": "ppl.numpyro_bridge",
    "to_inference_data": "ppl.inference_data",
    "GaussianMixture": "ppl.gaussian_mixture",
    "kl_divergence": "ppl.gaussian_mixture",
    "simulation_based_calibration": "ppl.calibration",
    "pass_at_k": "ppl.scaling",
    "coverage_curve": "ppl.scaling",
    "fit_power_law_coverage": "ppl.scaling",
    "Registry": "ppl.registry",
    # models
    "LanguageModel": "ppl.models.lm",
    "SamplingParams": "ppl.models.lm",
    "DecoderConfig": "ppl.models.lm",
    "ReasoningSSM": "ppl.models.reasoning.ssm",
    "StepSettings": "ppl.models.reasoning.ssm",
    "RewardWeighting": "ppl.models.reasoning.reward_weighting",
    "DistributionTransformer": "ppl.models.amortized.distribution_transformer",
    "MCMCSettings": "ppl.samplers.mcmc",
    "TemperedSMCSettings": "ppl.samplers.tempered_smc",
    # experiments
    "run_mcmc": "ppl.experiments.bayes",
    "run_tempered_smc": "ppl.experiments.bayes",
    "MethodInputs": "ppl.experiments.reasoning",
    "METHODS": "ppl.experiments.methods",
}

__all__ = sorted([*SAMPLERS, *NAMES])


def __getattr__(name: str) -> Any:
    if name in SAMPLERS:
        value = importlib.import_module(f"ppl.samplers.{name}")
    elif name in NAMES:
        value = getattr(importlib.import_module(NAMES[name]), name)
    else:
        raise AttributeError(f"module 'ppl' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # the same names, for type checkers and the import-direction test
    from ppl.calibration import simulation_based_calibration
    from ppl.diagnostics import effective_sample_size, normalize_log_weights, weighted_mean
    from ppl.experiments.bayes import run_mcmc, run_tempered_smc
    from ppl.experiments.methods import METHODS
    from ppl.experiments.reasoning import MethodInputs
    from ppl.feynman_kac import FeynmanKac, HostFeynmanKac
    from ppl.gaussian_mixture import GaussianMixture, kl_divergence
    from ppl.inference_data import to_inference_data
    from ppl.mcmc_diagnostics import check_convergence
    from ppl.models.amortized.distribution_transformer import DistributionTransformer
    from ppl.models.lm import DecoderConfig, LanguageModel, SamplingParams
    from ppl.models.reasoning.reward_weighting import RewardWeighting
    from ppl.models.reasoning.ssm import ReasoningSSM, StepSettings
    from ppl.numpyro_bridge import NumPyroModel, from_numpyro
    from ppl.potentials import product, temper
    from ppl.registry import Registry
    from ppl.samplers import (
        backward_smoothing,
        beam_search,
        conditional_smc,
        genealogy,
        host_parallel_tempering,
        host_particle_gibbs,
        host_smc,
        importance,
        mcmc,
        parallel_tempering,
        particle_gibbs,
        pinned_conditional_smc,
        pmmh,
        resampling,
        selection,
        smc,
        smc_steer,
        tempered_smc,
    )
    from ppl.samplers.mcmc import MCMCSettings
    from ppl.samplers.tempered_smc import TemperedSMCSettings
    from ppl.scaling import coverage_curve, fit_power_law_coverage, pass_at_k
    from ppl.state_space import Proposal, StateSpaceModel, auxiliary, bootstrap, guided
