"""A sweep over a served model whose server dies mid-sweep: the cells it could not answer are
recorded as failed (not as wrong answers), and the same call resumes them on a new server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ppl.experiments.plots import accuracy_table
from ppl.experiments.sweep import VerifierSpec, read_results, run_sweep
from ppl.models.lm.sampling import SamplingParams
from ppl.models.lm.served import ClientSettings, ServedModel, ServerUnreachableError, load_tokenizer
from ppl.models.reasoning.answers import answers_match
from ppl.models.reasoning.step_model import StepSettings
from ppl.models.reasoning.tasks import Task, TaskProblem
from tests.llamacpp_server import llamacpp_server

pytestmark = pytest.mark.xdist_group("llamacpp")


def make_task(on_grade) -> Task:
    def problems(seed: int, count: int) -> list[TaskProblem]:
        return [
            TaskProblem(f"What is {a} + 1? Reply with the number.", str(a + 1))
            for a in range(count)
        ]

    def grade(answer: str | None, reference: str) -> bool:
        on_grade()
        return answers_match(answer, reference)

    settings = StepSettings(
        max_step_tokens=6, max_steps=2, sampling=SamplingParams(temperature=1.0), chat=True
    )
    return Task("plus-one", "a + 1", problems, lambda: None, settings, grade)  # type: ignore[arg-type,return-value]


def test_killing_the_server_leaves_a_resumable_file(default_model_path, tmp_path):
    model = Path(default_model_path)
    out = tmp_path / "sweep.jsonl"
    settings = ClientSettings(max_retries=1, backoff_s=0.05)
    arguments = dict(
        methods=["bon"],
        budgets=[1, 2],
        num_problems=2,
        seed=0,
        out=out,
        verifier=VerifierSpec("outcome"),
        max_rows=1,  # one problem per batch
        progress=False,
    )
    with llamacpp_server(model, tmp_path / "first.log") as server:
        served = ServedModel(server.base_url, str(model), load_tokenizer(model), settings=settings)
        task = make_task(on_grade=server.stop)  # the server dies once the first cell is graded
        with pytest.raises(ServerUnreachableError, match="run the same command again to resume"):
            run_sweep(task, lm=served, **arguments)
    first, second = (json.loads(line) for line in out.read_text().splitlines())
    assert isinstance(first["correct"], bool) and "failed" not in first
    assert second["failed"] is True and second["correct"] is None
    assert "ServerUnreachableError" in second["error"]
    assert accuracy_table(read_results(out))["bon"][1]["failed"] == 1

    logged: list[str] = []
    with llamacpp_server(model, tmp_path / "second.log") as server:
        served = ServedModel(server.base_url, str(model), load_tokenizer(model), settings=settings)
        run_sweep(make_task(on_grade=lambda: None), lm=served, log=logged.append, **arguments)
    assert logged == [f"resuming: 1 results in {out}"]
    table = accuracy_table(read_results(out))
    assert {budget: cell["problems"] for budget, cell in table["bon"].items()} == {1: 2, 2: 2}
    assert all(cell["failed"] == 0 for cell in table["bon"].values())
