"""The `prm` verifier: steps split from the candidates' texts, the latest step's reward (or the
weakest, or the product), one load shared by a sweep's batches, and the errors for a missing
or bad checkpoint, through the real CLI and `run_sweep`."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest

from ppl.experiments.cli import main
from ppl.experiments.sweep import read_results
from ppl.models.lm import ModelLoadError
from ppl.models.lm.tiny import tiny_language_model
from ppl.models.reasoning.prm_verifier import PRMVerifier, split_steps
from ppl.models.reasoning.verifiers import VERIFIERS, Candidates, VerifierSpec
from tests.experiments.test_sweep import letters_task, sweep
from tests.models.lm.test_safetensors_loader import write_hf_directory
from tests.models.reasoning.test_prm import PROMPTS, STEPS, write_shepherd_checkpoint


@pytest.fixture(scope="module")
def shepherd_dir(tmp_path_factory):
    return write_shepherd_checkpoint(tmp_path_factory.mktemp("shepherd"))


def test_the_prm_verifier_scores_the_steps_of_each_candidate(shepherd_dir, tiny_lm):
    texts = ["\n\n".join(steps) + "\n\n" for steps in STEPS]
    candidates = Candidates(
        prompts=PROMPTS,
        texts=texts,
        last_steps=[steps[-1] for steps in STEPS],
        finished=np.zeros(2, bool),
        groups=np.arange(2),
        rows=np.arange(2),
    )
    assert split_steps(texts[0]) == STEPS[0] and split_steps(" \n\n ") == [""]
    spec = VerifierSpec("prm", checkpoint=str(shepherd_dir))
    verifier = spec.build([], tiny_lm)
    assert isinstance(verifier, PRMVerifier) and verifier.prm.layout == "math_shepherd"
    assert spec.build([], tiny_lm).prm is verifier.prm  # loaded once, shared by every batch
    assert spec.label() == f"prm[{shepherd_dir.name}]"
    per_step = verifier.prm.step_rewards(PROMPTS, STEPS)
    np.testing.assert_allclose(verifier(candidates), [r[-1] for r in per_step])
    minimum = PRMVerifier(verifier.prm, aggregation="min")(candidates)
    np.testing.assert_allclose(minimum, [r.min() for r in per_step])
    product = PRMVerifier(verifier.prm, aggregation="product")(candidates)
    np.testing.assert_allclose(product, [r.prod() for r in per_step])
    assert len({tuple(r) for r in per_step}) == 2 and (np.diff(per_step[0]) != 0).any()


def test_the_prm_verifier_without_a_checkpoint_is_a_clear_error(capsys, tmp_path):
    assert "prm" in VERIFIERS
    with pytest.raises(ValueError, match="the prm verifier needs a process reward model"):
        VerifierSpec("prm")
    out = str(tmp_path / "results.jsonl")
    assert main(["scale", "--verifier", "prm", "--problems", "1", "--out", out]) == 2
    err = capsys.readouterr().err
    assert "ppl scale: error: the prm verifier needs" in err and "--prm-checkpoint PATH" in err
    assert "Traceback" not in err and not Path(out).exists()
    missing = str(tmp_path / "nowhere")
    argv = ["scale", "--verifier", "prm", "--prm-checkpoint", missing, "--problems", "1"]
    assert main([*argv, "--methods", "bon", "--budgets", "1", "--out", out, "--quiet"]) == 2
    assert f"verifier checkpoint directory not found: {missing}" in capsys.readouterr().err


def test_a_sweep_scores_with_the_prm_and_fails_early_on_a_bad_checkpoint(shepherd_dir, tmp_path):
    spec = VerifierSpec("prm", checkpoint=str(shepherd_dir))
    out = sweep(
        tmp_path, letters_task(), methods=["bon"], budgets=[2], num_problems=1, verifier=spec
    )
    records = read_results(out)
    assert len(records) == 1 and all("error" not in r and r["num_nan"] == 0 for r in records)
    scores = np.asarray([r["scores"] for r in records])  # sum of log PRM rewards per candidate
    assert np.isfinite(scores).all() and (scores < 0).all() and len(np.unique(scores)) > 1
    assert {r["verifier"] for r in records} == {f"prm[{shepherd_dir.name}]"}
    bare = tmp_path / "backbone"  # the tiny LM without a head: no known layout
    write_hf_directory(bare, tiny_language_model(jax.random.key(4)))
    bad = VerifierSpec("prm", checkpoint=str(bare))
    with pytest.raises(ModelLoadError, match="no known process reward head"):
        sweep(tmp_path / "bad", letters_task(), verifier=bad)
    assert not (tmp_path / "bad" / "results.jsonl").exists()
