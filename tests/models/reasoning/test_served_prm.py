"""The served PRM against a scripted pooling endpoint (vLLM does not run here): the request it
sends and how it reads vLLM's STEP-pooling answer."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ppl.models.lm.served import MalformedResponseError, ServedModel, load_tokenizer
from ppl.models.reasoning.prm_verifier import PRMVerifier
from ppl.models.reasoning.served_prm import ServedPRM
from ppl.models.reasoning.verifiers import Candidates
from tests.models.lm.test_served_client import scripted


def pooled(*per_candidate):
    data = [{"index": i, "object": "pooling", "data": rows} for i, rows in enumerate(per_candidate)]
    return 200, json.dumps({"data": data})


def candidates(texts):
    rows = np.arange(len(texts))
    return Candidates(["What is 1 + 1?"] * len(texts), texts, texts, rows < 0, rows, rows)


def test_step_rewards_are_read_at_the_separators(default_model_path):
    tokenizer = load_tokenizer(default_model_path)  # any tokenizer with a chat template
    answer = pooled([[0.2, 0.8], [0.9, 0.1]], [[0.3, 0.7]])
    with scripted([answer]) as (url, received):
        prm = ServedPRM(ServedModel(url, "m", tokenizer))
        rewards = PRMVerifier(prm)(candidates(["1 + 1 = 2\n\nSo 3.", "It is 2."]))
        request = received[0]
    assert rewards == pytest.approx([0.1, 0.7])
    assert request["model"] == "m" and len(request["input"]) == 2
    first = request["input"][0]
    assert first.count("<extra_0>") == 2 and "1 + 1 = 2<extra_0>So 3.<extra_0>" in first
    assert "What is 1 + 1?" in first and "step by step" in first  # user and system turns


def test_a_result_with_the_wrong_number_of_steps_is_an_error(default_model_path):
    tokenizer = load_tokenizer(default_model_path)
    with scripted([pooled([[0.2, 0.8]])]) as (url, _):
        prm = ServedPRM(ServedModel(url, "m", tokenizer))
        with pytest.raises(
            MalformedResponseError, match=r"returned \(1, 2\) for candidate 0 with 2"
        ):
            prm.step_rewards(["q"], [["a", "b"]])


def test_the_prm_tokenizer_is_required():
    with scripted([]) as (url, _):
        with pytest.raises(ValueError, match="give the ServedModel the PRM's tokenizer"):
            ServedPRM(ServedModel(url, "m"))
