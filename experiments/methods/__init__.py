"""The methods of `ppl scale`: one module each (or per family that shares a body), each
registering itself in `METHODS` with one line.

    pf    particle filtering (Puri et al.): N particles over reasoning steps, reweighted by
          the verifier and resampled (`ppl.samplers.host_smc`), final answer by `selection`
    pg    particle Gibbs (Puri et al.): sweeps of conditional SMC around a kept reference
    pgpt  particle Gibbs with parallel tempering: tempered chains with reference swaps
    bon   best-of-N: N independent generations, the answer of the highest aggregated reward
    wbon  weighted best-of-N: N independent generations, votes weighted by reward
    sc    self-consistency: N independent generations, majority vote
    bom   Best-of-Majority: N independent generations, the best reward among frequent answers
    beam  beam search on the cumulative log potential: keep N / M beams, expand each M times
    dvts  diverse verifier tree search: N / M subtrees of width M, each keeps its best beam

A method is `method(rng_key, inputs: MethodInputs) -> list[ProblemOutcome]`
(`ppl.experiments.reasoning`). Every module of this folder is imported with the package, so a
new method is one new file here with its registration line, `@METHODS.register(name, help)`.
"""

from __future__ import annotations

from ppl.experiments.reasoning import Method, MethodInputs, ProblemOutcome
from ppl.registry import Registry, import_modules

METHODS: Registry[Method] = Registry("method")

# The built-in modules first, in the order `ppl scale` has always listed its methods, then any
# other module of this folder.
_BUILT_IN = (
    "particle_filtering",
    "particle_gibbs",
    "particle_gibbs_tempering",
    "independent_samples",
    "tree_search",
)
import_modules(__name__, first=_BUILT_IN)

__all__ = ["METHODS", "Method", "MethodInputs", "ProblemOutcome"]
