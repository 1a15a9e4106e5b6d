"""LLM decoding as a state-space model: reasoning steps as states, the language model as the
transition, verifiers as the observation likelihood; tasks, answers and the model organism."""
