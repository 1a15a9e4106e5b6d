"""Concrete models: the JAX language-model runtime (`models.lm`), verifiers and state-space
models."""
