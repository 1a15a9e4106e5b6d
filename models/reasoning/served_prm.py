"""A process reward model behind vLLM's pooling endpoint, as a `PRMVerifier` step scorer.

Serve a Qwen2.5-Math-PRM checkpoint with vLLM (`vllm serve Qwen/Qwen2.5-Math-PRM-7B --runner
pooling`; its pooler is STEP pooling at the `<extra_0>` separator, with softmax), then

    prm = ServedPRM(ServedModel(url, "Qwen/Qwen2.5-Math-PRM-7B", load_tokenizer(local_copy)))
    verifier = PRMVerifier(prm)

Each candidate is written as the in-process `qwen2_math_prm` layout writes it
(`QwenMathFormat.text`: system, user and assistant turns in the PRM's chat template, a
separator after every step, so the local tokenizer supplies the template), all candidates go in
one `POST /pooling`, and the reward of step i is the probability of the "correct" class at the
i-th separator, `r_i = data[i][1]`. A result with the wrong number of steps is an error, not a
guess. Not tested against a running vLLM here (vLLM needs a GPU build this machine lacks); the
request and response shapes follow vLLM's pooling API and are tested against a scripted server.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from ppl.models.lm.served import MalformedResponseError, ServedModel
from ppl.models.reasoning.prm import QwenMathFormat


@dataclasses.dataclass(frozen=True, eq=False)
class ServedPRM:
    """Per-step rewards from a served Qwen2.5-Math-PRM-style model (module doc); `positive` is
    the class whose probability is the reward."""

    server: ServedModel
    step_format: QwenMathFormat = dataclasses.field(default_factory=QwenMathFormat)
    positive: int = 1

    def __post_init__(self) -> None:
        if self.server.tokenizer is None or self.server.tokenizer.chat_template is None:
            raise ValueError(
                "ServedPRM writes the PRM's chat turns on the client: give the ServedModel "
                "the PRM's tokenizer (load_tokenizer(a local copy of its tokenizer files))"
            )

    def step_rewards(
        self, prompts: Sequence[str], steps: Sequence[Sequence[str]]
    ) -> list[np.ndarray]:
        """[n_k] rewards of the steps of every candidate k."""
        tokenizer = self.server.tokenizer
        assert tokenizer is not None  # checked in __post_init__
        texts = [
            self.step_format.text(tokenizer, p, s) for p, s in zip(prompts, steps, strict=True)
        ]
        pooled = self.server.pool(texts) if texts else []
        rewards = []
        for k, (values, expected) in enumerate(zip(pooled, steps, strict=True)):
            values = np.atleast_2d(values)
            if values.shape[0] != len(expected) or values.shape[1] <= self.positive:
                raise MalformedResponseError(
                    f"the served PRM returned {values.shape} for candidate {k} with "
                    f"{len(expected)} steps; expected one row of class probabilities per "
                    "step (is the model served with STEP pooling at its separator?)"
                )
            rewards.append(values[:, self.positive])
        return rewards
