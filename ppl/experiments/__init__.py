"""Experiment runners: the top of the stack, where models meet samplers (like `ppl.cli`)."""
