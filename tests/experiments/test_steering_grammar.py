"""llguidance masks in steering on the embedded SmolLM2: every particle SMC returns with
positive weight satisfies a JSON Schema that the in-repo automata cannot compile ($ref,
anyOf, bounds), over five seeds."""

from __future__ import annotations

import json

import jax
import jsonschema
import numpy as np
import pytest

from ppl.experiments.steering import steer, steering_problem
from ppl.models.constraints.llguidance_mask import GrammarMask

pytestmark = pytest.mark.default_model

SCHEMA = {
    "$defs": {"name": {"type": "string", "pattern": "^[A-Z][a-z]{1,8}$"}},
    "type": "object",
    "properties": {
        "name": {"$ref": "#/$defs/name"},
        "age": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 120}, {"type": "null"}]},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}


def test_smc_particles_satisfy_a_full_json_schema(default_lm) -> None:
    mask = GrammarMask.json_schema(SCHEMA, default_lm.tokenizer)
    problem = steering_problem(
        default_lm,
        ["Describe a person as JSON with a name and an age."],
        max_tokens=32,
        grammar=mask,
    )
    finite = 0
    for seed in range(5):
        result = steer(jax.random.key(seed), default_lm, problem, "smc", 4)
        assert np.all(result.satisfied | np.isneginf(result.log_weights))
        for text, log_weight in zip(result.texts, result.log_weights, strict=True):
            if np.isfinite(log_weight):
                jsonschema.validate(json.loads(text), SCHEMA)
                finite += 1
    assert finite >= 5  # most runs return valid particles, not only weight-0 ones


def test_a_grammar_for_another_tokenizer_is_refused(default_lm) -> None:
    from ppl.models.lm.tiny import byte_tokenizer

    mask = GrammarMask.regex("a+", byte_tokenizer())
    with pytest.raises(ValueError, match="another tokenizer"):
        steering_problem(default_lm, ["x"], max_tokens=4, grammar=mask)
