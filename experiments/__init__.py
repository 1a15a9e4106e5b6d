"""`ppl.experiments`: the top of the stack, the CLI and the experiment runners (sweeps, tasks,
plots), the only place that wires `ppl.models` to `ppl.samplers`. The folder is
`experiments/`; it installs and imports as `ppl.experiments`."""

if __name__ != "ppl.experiments":
    raise ImportError(f"ppl-jax's experiment runners import as `ppl.experiments`, not `{__name__}`")
