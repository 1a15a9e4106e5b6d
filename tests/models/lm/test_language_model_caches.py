"""What `LanguageModel` builds once (token bytes, stop automata) lives on the model, not in a
module-level cache: reused while the model lives, released with it."""

from __future__ import annotations

import gc
import weakref

import jax
import numpy as np

from ppl.models.lm.stopping import build_stop_automata
from ppl.models.lm.tiny import tiny_language_model


def test_stop_automata_are_built_once_per_model_and_go_with_it():
    lm = tiny_language_model(jax.random.key(3))
    automata = lm.stop_automata(["\n\n", "the"])
    assert lm.stop_automata(("\n\n", "the")) is automata  # a sequence or a tuple: one key
    expected = build_stop_automata(("\n\n", "the"), lm.tokenizer.token_bytes())
    for ours, theirs in zip(automata, expected, strict=True):
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
    other = tiny_language_model(jax.random.key(3))
    assert other.stop_automata(["\n\n", "the"]) is not automata  # per model
    lm_ref = weakref.ref(lm)
    del lm, automata
    gc.collect()
    assert lm_ref() is None, "something kept the language model alive"


def test_the_kept_stop_automata_are_bounded():
    lm = tiny_language_model(jax.random.key(4))
    first = lm.stop_automata(["a"])
    for i in range(40):
        lm.stop_automata([f"x{i}"])
    assert len(lm._stop_automata) <= 32
    assert lm.stop_automata(["a"]) is not first  # the oldest was dropped and is rebuilt
