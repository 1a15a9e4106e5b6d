"""The JAX language-model runtime: Llama-family decoders, loaders, tokenizers, generation."""

from models.lm.cache import KVCache, gather_cache, init_cache
from models.lm.config import LlamaConfig
from models.lm.decoding import DecodeOutput, decode, extend, prefill
from models.lm.errors import BatchShapeError, ContextLengthError, ModelLoadError
from models.lm.language_model import Generation, LanguageModel, Scores
from models.lm.params import LayerParams, Params, init_random_params
from models.lm.sampling import SamplingParams, sample
from models.lm.tokenizer import Tokenizer

__all__ = [
    "BatchShapeError",
    "ContextLengthError",
    "DecodeOutput",
    "Generation",
    "KVCache",
    "LanguageModel",
    "LayerParams",
    "LlamaConfig",
    "ModelLoadError",
    "Params",
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
]
