"""`ppl.models`: concrete models (the LM runtime, LLM decoding as a state-space model,
verifiers, constraints, classic state-space and Bayesian models, amortized networks). Imports
the core, never `ppl.samplers`. The folder is `models/`; it installs and imports as
`ppl.models`."""

if __name__ != "ppl.models":
    raise ImportError(f"ppl-jax's models import as `ppl.models`, not `{__name__}`")
