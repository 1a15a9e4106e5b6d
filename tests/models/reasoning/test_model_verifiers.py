"""Model-based verifiers on the tiny model: the LM judge against its probabilities computed
independently with `lm.logits`, self-certainty against re-scoring with `lm.score_tokens`, and
the learned reward head (learning a separable labelling, exact save/load)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from ppl.models.lm.errors import ModelLoadError
from ppl.models.lm.sampling import SamplingParams
from ppl.models.lm.tiny import tiny_config, tiny_language_model
from ppl.models.lm.transformer import output_logits
from ppl.models.reasoning.judge import DEFAULT_TEMPLATE, RAW_ANSWER_CUE, LMJudge, row_buckets
from ppl.models.reasoning.reward_head import RewardHead, hidden_features, train_reward_head
from ppl.models.reasoning.self_certainty import SelfCertainty
from ppl.models.reasoning.ssm import ReasoningSSM, StepSettings
from ppl.models.reasoning.verifiers import Candidates, call_verifier

PROBLEMS = ["Start with 3. Add 4.", "Start with 9. Multiply by 2.", "Start with 5."]
STEPS = ["3 + 4 = 7", "9 * 2 = 18\n\n", "5 - 1 = 4\n\n4 * 3 = 12", "3 + 4 = 8", "x", "9 * 2 = 1"]


def candidates(prompts, texts, generations=None, rows=None):
    count = len(texts)
    return Candidates(
        prompts=list(prompts),
        texts=list(texts),
        last_steps=list(texts),
        finished=np.zeros(count, bool),
        groups=np.zeros(count, int),
        rows=np.arange(count) if rows is None else np.asarray(rows),
        generations=generations,
    )


def judge_batch():
    prompts = [PROBLEMS[k % len(PROBLEMS)] for k in range(len(STEPS))]
    return candidates(prompts, STEPS)


def exact_judge_rewards(lm, texts: list[str], yes: str, no: str, chat: bool) -> np.ndarray:
    """P(yes) / (P(yes) + P(no)) with P(answer) = exp(sum of log p(answer tokens | prompt))
    from `lm.score_tokens` (a full pass over prompt + answer, no cache reuse)."""
    prompts = lm.encode_prompts(texts, chat=chat)
    answers = [lm.tokenizer.encode(a, add_special_tokens=False) for a in (yes, no)]
    scores = lm.score_tokens(prompts * 2, [answers[0]] * len(texts) + [answers[1]] * len(texts))
    log_yes, log_no = np.split(scores.total.astype(np.float64), 2)
    return np.exp(log_yes) / (np.exp(log_yes) + np.exp(log_no))


def test_judge_one_token_reward_is_the_normalised_next_token_probability(tiny_lm):
    batch = judge_batch()
    judge = LMJudge(tiny_lm, yes="Y", no="N")
    for k in (0, 3):
        prompt = DEFAULT_TEMPLATE.format(problem=batch.prompts[k], steps=batch.texts[k].strip())
        ids = tiny_lm.encode_prompts([prompt], chat=True)[0]
        probs = np.asarray(jax.nn.softmax(tiny_lm.logits(ids)[-1]), np.float64)
        yes, no = probs[tiny_lm.tokenizer.encode("Y")[0]], probs[tiny_lm.tokenizer.encode("N")[0]]
        single = candidates([batch.prompts[k]], [batch.texts[k]])
        np.testing.assert_allclose(judge(single), [yes / (yes + no)], rtol=2e-5)


@pytest.mark.parametrize(
    ("chat", "yes", "no"),
    [(True, "Yes", "No"), (False, " Yes", " No"), (True, "Y", "N")],
    ids=["chat-multi-token", "raw-multi-token", "one-token"],
)
def test_judge_reward_is_the_normalised_answer_probability(tiny_lm, chat, yes, no):
    batch = judge_batch()
    judge = LMJudge(tiny_lm, yes=yes, no=no, chat=chat)
    template = DEFAULT_TEMPLATE if chat else DEFAULT_TEMPLATE + RAW_ANSWER_CUE
    pairs = zip(batch.prompts, batch.texts, strict=True)
    texts = [template.format(problem=p, steps=t.strip()) for p, t in pairs]
    expected = exact_judge_rewards(tiny_lm, texts, yes, no, chat)
    rewards = call_verifier(judge, batch)
    assert np.ptp(expected) > 1e-4  # the candidates are distinguishable, so row mix-ups show
    np.testing.assert_allclose(rewards, expected, rtol=2e-5)


def test_judge_chunks_give_the_rewards_of_one_batch(tiny_lm):
    batch = judge_batch()
    whole = LMJudge(tiny_lm, yes="Y", no="N", batch_size=16)(batch)
    for batch_size in (2, 5):  # chunks of 2, 2, 2 rows; of 5 and 1 rows
        chunked = LMJudge(tiny_lm, yes="Y", no="N", batch_size=batch_size)(batch)
        np.testing.assert_allclose(chunked, whole, rtol=1e-5)


def test_row_buckets_cover_the_rows_in_power_of_two_batches():
    assert row_buckets(11, 4) == [(0, 4, 4), (4, 8, 4), (8, 11, 4)]
    assert row_buckets(5, 16) == [(0, 5, 8)]
    assert row_buckets(1, 16) == [(0, 1, 1)]
    assert row_buckets(0, 16) == []


def test_judge_gives_nan_for_a_prompt_longer_than_the_context(tiny_lm):
    batch = judge_batch()
    long = candidates(
        [*batch.prompts[:2], "a" * tiny_lm.config.context_length],
        [*batch.texts[:2], "b"],
    )
    rewards = LMJudge(tiny_lm)(long)
    assert np.isnan(rewards[2])
    np.testing.assert_allclose(rewards[:2], LMJudge(tiny_lm)(judge_batch())[:2], rtol=1e-5)
    assert np.isnan(LMJudge(tiny_lm)(candidates(["a" * 300], ["b"]))).all()


def test_judge_rejects_unusable_settings(tiny_lm):
    with pytest.raises(ValueError, match="same tokens"):
        LMJudge(tiny_lm, yes="Yes", no="Yes")
    with pytest.raises(ValueError, match="placeholders"):
        LMJudge(tiny_lm, template="{problem} {answer}")
    with pytest.raises(ValueError, match="batch_size"):
        LMJudge(tiny_lm, batch_size=0)


def test_self_certainty_is_the_geometric_mean_token_probability(tiny_lm):
    settings = StepSettings(
        delimiter=" ", max_step_tokens=6, max_steps=3, sampling=SamplingParams(temperature=1.3)
    )
    ssm = ReasoningSSM(tiny_lm, ["Start with 2.", "Add"], SelfCertainty(), settings=settings)
    particles = ssm.initial_sample(jax.random.key(0), 3)
    for step in range(2):
        previous = particles
        particles = ssm.transition_sample(jax.random.key(step), step + 1, particles)
    generations = particles.generations
    rows = np.flatnonzero(~np.asarray(previous.generations.finished))
    assert rows.size >= 4
    tokens = ssm.token_ids(generations)
    groups = ssm.groups(particles)
    scores = tiny_lm.score_tokens([ssm.prompt_ids[g] for g in groups], tokens)
    starts = np.asarray(generations.step_start)
    step_expected = [np.exp(scores.token_logprobs[b][starts[b] :].mean()) for b in rows]
    whole_expected = [np.exp(scores.token_logprobs[b].mean()) for b in rows]
    assert all(len(tokens[b]) - starts[b] > 1 for b in rows)  # a sum for a mean would show

    batch = ssm.candidates(generations, rows)
    np.testing.assert_allclose(SelfCertainty("step")(batch), step_expected, rtol=2e-4)
    np.testing.assert_allclose(SelfCertainty("generation")(batch), whole_expected, rtol=2e-4)
    np.testing.assert_allclose(np.asarray(particles.reward)[rows], step_expected, rtol=2e-4)
    with pytest.raises(ValueError, match="generations"):
        SelfCertainty()(candidates(["p"], ["t"]))


def toy_rollouts(count: int, seed: int) -> tuple[list[str], list[str], np.ndarray]:
    """Texts with "good" (label 1) or "bad" (label 0) among random letters."""
    rng = np.random.default_rng(seed)
    letters = np.asarray(list("acfhijklmnpqrstuvwxyz"))
    prompts, texts, labels = [], [], []
    for i in range(count):
        word = "good" if i % 2 == 0 else "bad"
        before = "".join(rng.choice(letters, rng.integers(0, 8)))
        after = "".join(rng.choice(letters, rng.integers(0, 8)))
        prompts.append(PROBLEMS[i % len(PROBLEMS)])
        texts.append(f"{before} {word} {after}".strip())
        labels.append(float(word == "good"))
    return prompts, texts, np.asarray(labels)


@pytest.fixture(scope="module")
def trained_head(tiny_lm):
    prompts, texts, labels = toy_rollouts(96, seed=0)
    return train_reward_head(jax.random.key(1), tiny_lm, prompts, texts, labels, num_steps=200)


def test_reward_head_learns_a_separable_labelling(trained_head):
    prompts, texts, labels = toy_rollouts(96, seed=0)
    rewards = trained_head(candidates(prompts, texts))
    assert np.mean((rewards > 0.5) == (labels == 1)) > 0.9
    assert ((rewards > 0) & (rewards < 1)).all()


def test_reward_head_save_and_load_round_trip_exactly(trained_head, tiny_lm, tmp_path):
    path = tmp_path / "head.rh"
    trained_head.save(path)
    loaded = RewardHead.load(path, tiny_lm)
    for saved, restored in zip(
        jax.tree.leaves(trained_head.network), jax.tree.leaves(loaded.network), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(saved), np.asarray(restored))
    prompts, texts, _ = toy_rollouts(16, seed=1)
    np.testing.assert_array_equal(loaded.score(prompts, texts), trained_head.score(prompts, texts))
    assert (loaded.pooling, loaded.chat) == (trained_head.pooling, trained_head.chat)

    wider = tiny_language_model(jax.random.key(2), tiny_config(hidden_size=64, head_dim=16))
    with pytest.raises(ModelLoadError, match="hidden size"):
        RewardHead.load(path, wider)
    (tmp_path / "other.bin").write_bytes(b"not a head")
    with pytest.raises(ModelLoadError, match="not a reward head"):
        RewardHead.load(tmp_path / "other.bin", tiny_lm)


def test_reward_head_features_are_the_final_hidden_states(tiny_lm):
    prompts, texts = ["Start with 2."], ["2 + 2 = 4"]
    features, fits = hidden_features(tiny_lm, prompts, texts, pooling="last")
    ids = tiny_lm.encode_prompts(prompts)[0] + tiny_lm.tokenizer.encode(
        texts[0], add_special_tokens=False
    )
    np.testing.assert_allclose(
        np.asarray(output_logits(tiny_lm.params, features[0])),
        np.asarray(tiny_lm.logits(ids)[-1]),
        rtol=1e-4,
        atol=1e-4,
    )
    assert fits.all()


def test_reward_head_gives_nan_for_a_text_longer_than_the_context(trained_head, tiny_lm):
    rewards = trained_head(candidates(["q", "q"], ["good", "a" * tiny_lm.config.context_length]))
    assert np.isfinite(rewards[0]) and np.isnan(rewards[1])


def test_train_reward_head_rejects_bad_labels(tiny_lm):
    with pytest.raises(ValueError, match="one label per text"):
        train_reward_head(jax.random.key(0), tiny_lm, ["q"], ["t"], [1.0, 0.0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        train_reward_head(jax.random.key(0), tiny_lm, ["q"], ["t"], [2.0])
