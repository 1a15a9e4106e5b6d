"""Errors raised by the language-model runtime, each naming the problem it reports."""


class ModelLoadError(ValueError):
    """A checkpoint is missing, corrupt, or uses a layout or type the runtime does not support."""


class ContextLengthError(ValueError):
    """A prompt plus the tokens to generate does not fit in the model's context."""


class BatchShapeError(ValueError):
    """Arrays of a batch disagree in shape or dtype."""
