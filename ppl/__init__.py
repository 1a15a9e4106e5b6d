"""ppl-jax core: protocols, pytrees, diagnostics and the public API. Imports neither `samplers`
nor `models` (the `ppl` CLI in `ppl.experiments.cli` is the top of the stack and the one
exception)."""

__version__ = "0.1.0"
