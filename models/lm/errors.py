"""Errors raised by the language-model runtime, each naming the problem it reports.

`ProblemFailure` marks the errors that belong to one input (one prompt, one problem), not to
the configuration: a sweep records such a failure on that problem and goes on
(`ppl.experiments.sweep`), and lets every other exception crash with its traceback.
"""

import numpy as np


class ProblemFailure(Exception):
    """One input could not be done: its prompt is too long, a verifier returned invalid
    rewards for it, or the served model failed on it."""


class ModelLoadError(ValueError):
    """A checkpoint is missing, corrupt, or uses a layout or type the runtime does not support."""


class ContextLengthError(ProblemFailure, ValueError):
    """A prompt plus the tokens to generate does not fit in the model's context."""


class BatchShapeError(ValueError):
    """Arrays of a batch disagree in shape or dtype."""


class InvalidRewardsError(ProblemFailure, ValueError):
    """A verifier returned rewards of the wrong shape or outside [0, 1] (NaN is counted, not
    an error)."""


def require_finite(name: str, value: np.ndarray, where: object) -> np.ndarray:
    """`value`, or a ModelLoadError naming the tensor when it holds NaN or infinity."""
    if not np.isfinite(value).all():
        bad = int(np.size(value) - np.isfinite(value).sum())
        raise ModelLoadError(
            f"{where}: tensor {name} holds {bad} NaN or infinite values (a corrupt checkpoint)"
        )
    return value
