"""Inference algorithms over `ppl`'s protocols (SMC, particle MCMC, MCMC). Never imports
`models`: an algorithm knows protocols, not language models."""
