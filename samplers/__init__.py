"""`ppl.samplers`: inference algorithms over the core's protocols (SMC, particle MCMC, MCMC,
search baselines, answer selection). Never imports `ppl.models`: an algorithm knows protocols,
not language models. The folder is `samplers/`; it installs and imports as `ppl.samplers`."""

if __name__ != "ppl.samplers":
    raise ImportError(f"ppl-jax's samplers import as `ppl.samplers`, not `{__name__}`")
