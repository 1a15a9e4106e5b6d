"""Errors raised by the language-model runtime, each naming the problem it reports."""

import numpy as np


class ModelLoadError(ValueError):
    """A checkpoint is missing, corrupt, or uses a layout or type the runtime does not support."""


class ContextLengthError(ValueError):
    """A prompt plus the tokens to generate does not fit in the model's context."""


class BatchShapeError(ValueError):
    """Arrays of a batch disagree in shape or dtype."""


def require_finite(name: str, value: np.ndarray, where: object) -> np.ndarray:
    """`value`, or a ModelLoadError naming the tensor when it holds NaN or infinity."""
    if not np.isfinite(value).all():
        bad = int(np.size(value) - np.isfinite(value).sum())
        raise ModelLoadError(
            f"{where}: tensor {name} holds {bad} NaN or infinite values (a corrupt checkpoint)"
        )
    return value
