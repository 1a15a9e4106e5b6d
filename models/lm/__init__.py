"""The JAX language-model runtime: decoders, architectures, loaders, tokenizers, generation."""

from ppl.models.lm.cache import KVCache, gather_cache, init_cache, share_prefix
from ppl.models.lm.config import DecoderConfig
from ppl.models.lm.decoding import DecodeOutput, decode, extend, prefill
from ppl.models.lm.errors import BatchShapeError, ContextLengthError, ModelLoadError
from ppl.models.lm.language_model import Generation, LanguageModel, Scores
from ppl.models.lm.params import LayerParams, Params, init_random_params
from ppl.models.lm.qmatmul import QuantizedWeight
from ppl.models.lm.sampling import SamplingParams, sample
from ppl.models.lm.tokenizer import Tokenizer

__all__ = [
    "BatchShapeError",
    "ContextLengthError",
    "DecodeOutput",
    "DecoderConfig",
    "Generation",
    "KVCache",
    "LanguageModel",
    "LayerParams",
    "ModelLoadError",
    "Params",
    "QuantizedWeight",
    "SamplingParams",
    "Scores",
    "Tokenizer",
    "decode",
    "extend",
    "gather_cache",
    "init_cache",
    "init_random_params",
    "prefill",
    "sample",
    "share_prefix",
]
