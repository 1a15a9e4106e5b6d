"""Problems from a local JSONL file (GSM8K- and MATH500-style), graded with math-verify.

Each line is a JSON object with the question under `question` (GSM8K) or `problem`
(MATH500) and the reference under `answer`; a GSM8K answer ("... #### 72") contributes the
text after its last "####". Nothing is downloaded: the user gives the path.

Grading treats equal numbers and equivalent expressions as equal through math-verify (which
parses LaTeX with SymPy): "0.5" = "\\frac{1}{2}", "1,234" = "1234", "x^2+1" = "1+x^2". Both
sides are parsed as inline math ("$...$"); an answer math-verify cannot parse matches nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

from ppl.models.lm.language_model import LanguageModel
from ppl.models.lm.sampling import SamplingParams
from ppl.models.reasoning.step_model import StepSettings
from ppl.models.reasoning.tasks import Task, TaskProblem

QUESTION_FIELDS = ("question", "problem")
INSTRUCTION = (
    " Solve it step by step, one step per paragraph, and end with"
    ' "The answer is $\\boxed{...}$." with the final answer in the box.'
)


def _reference(answer: object, where: str) -> str:
    if isinstance(answer, int | float) and not isinstance(answer, bool):
        return str(answer)
    if not isinstance(answer, str) or not answer.strip():
        raise ValueError(f"{where}: 'answer' must be a non-empty string or a number")
    return answer.rsplit("####", 1)[-1].strip()


def read_problems(path: str | Path) -> list[TaskProblem]:
    """The problems of a JSONL file, in file order, each prompt followed by `INSTRUCTION`.

    Raises a ValueError that names the file and line for a line that is not a JSON object,
    lacks a question (`question` or `problem`) or lacks an `answer`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"problems file not found: {path}")
    problems = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{where}: not JSON ({error.msg})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{where}: each line must be a JSON object")
        question = next((row[f] for f in QUESTION_FIELDS if isinstance(row.get(f), str)), None)
        if question is None:
            raise ValueError(f"{where}: no question (a string under 'question' or 'problem')")
        if "answer" not in row:
            raise ValueError(f"{where}: no 'answer'")
        problems.append(
            TaskProblem(question.strip() + INSTRUCTION, _reference(row["answer"], where))
        )
    if not problems:
        raise ValueError(f"{path}: no problems")
    return problems


def _parsed(answer: str) -> list:
    from math_verify import parse

    return parse(f"${answer}$") or parse(answer)


def math_verify_grade(predicted: str | None, reference: str) -> bool:
    """Whether `predicted` (an extracted final answer) equals `reference`, as math-verify
    decides: same number or an equivalent expression."""
    from math_verify import verify

    if predicted is None or not predicted.strip():
        return False
    gold, answer = _parsed(reference), _parsed(predicted)
    return bool(gold) and bool(answer) and bool(verify(gold, answer))


def problems_file_task(path: str | Path) -> Task:
    """A task over the problems of `path`, for the default model in its chat template (or the
    model `ppl scale --model` gives), graded by `math_verify_grade`. `make_problems(seed,
    count)` takes the first `count` problems in file order (the seed does not reorder them)."""
    problems = read_problems(path)

    def make_problems(seed: int, count: int) -> list[TaskProblem]:
        if count > len(problems):
            raise ValueError(f"{path} holds {len(problems)} problems; asked for {count}")
        return problems[:count]

    return Task(
        name=f"file:{Path(path).name}",
        description=f"{len(problems)} problems from {path}, graded with math-verify",
        make_problems=make_problems,
        load_model=LanguageModel.load,
        settings=StepSettings(
            delimiter="\n\n",
            max_step_tokens=128,
            max_steps=8,
            sampling=SamplingParams(temperature=0.7),
            chat=True,
        ),
        grade=math_verify_grade,
    )
