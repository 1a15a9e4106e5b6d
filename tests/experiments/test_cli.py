"""The `ppl` command line on a tiny GGUF model (fast), and its error messages."""

from __future__ import annotations

import json

import pytest

from ppl.experiments.cli import main
from tests.models.lm.gguf_fixtures import write_tiny_gguf


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory, tiny_lm):
    return write_tiny_gguf(tmp_path_factory.mktemp("cli") / "tiny.gguf", tiny_lm)


def test_generate_json(tiny_gguf, capsys, tiny_lm):
    argv = ["generate", "hello", "--model", str(tiny_gguf), "--max-new-tokens", "5"]
    assert main([*argv, "--num-samples", "2", "--seed", "3", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 2
    assert all(len(r["token_ids"]) <= 5 and r["model_logprob"] <= 0 for r in rows)
    assert rows[0]["text"] == tiny_lm.tokenizer.decode(rows[0]["token_ids"], True)


def test_greedy_generate_is_deterministic(tiny_gguf, capsys):
    argv = ["generate", "hi", "--model", str(tiny_gguf), "--chat", "--temperature", "0"]
    main([*argv, "--seed", "1"])
    first = capsys.readouterr().out
    main([*argv, "--seed", "2"])
    assert capsys.readouterr().out == first


def test_bench_lm_json(tiny_gguf, capsys):
    argv = ["bench-lm", "--model", str(tiny_gguf), "--batch", "1,4", "--json"]
    assert main([*argv, "--prompt-tokens", "8", "--new-tokens", "4", "--repeats", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["batch"] for r in report["results"]] == [1, 4]
    assert all(r["decode_tokens_per_s"] > 0 for r in report["results"])


def test_missing_model_is_a_clear_error(tmp_path, capsys):
    assert main(["generate", "x", "--model", str(tmp_path / "missing.gguf")]) == 2
    err = capsys.readouterr().err
    assert "not found" in err and "missing.gguf" in err and "Traceback" not in err


def test_prompt_longer_than_context_is_a_clear_error(tiny_gguf, capsys):
    assert main(["generate", "a" * 300, "--model", str(tiny_gguf)]) == 2
    assert "context length 256" in capsys.readouterr().err


def test_steer_prints_weighted_samples_and_log_z(tiny_gguf, capsys):
    argv = ["steer", "--model", str(tiny_gguf), "--task", "lipogram", "--particles", "4"]
    assert main([*argv, "--show", "3"]) == 0
    out = capsys.readouterr().out
    samples = [line for line in out.splitlines() if " ok " in line or " NO " in line]
    assert len(samples) == 3 and all(" ok " in line for line in samples)  # the mask holds
    assert "log Z estimate:" in out and "tokens/s" in out


def test_steer_sweep_writes_jsonl(tiny_gguf, tmp_path, capsys):
    out = tmp_path / "steer.jsonl"
    argv = ["steer", "--model", str(tiny_gguf), "--task", "short-words", "--sweep"]
    argv += ["--methods", "masked,smc", "--particles", "2", "--seeds", "1", "--quiet"]
    assert main([*argv, "--out", str(out)]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["method"] for r in lines) == ["masked", "smc"]
    assert "short-words" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("task", "constraint"), [("lipogram", "forbidden:aeiouAEIOU"), ("intersection", "grammar:json")]
)
def test_steer_under_a_registered_constraint(tiny_gguf, capsys, task, constraint):
    argv = ["steer", "--model", str(tiny_gguf), "--task", task, "--constraint", constraint]
    assert main([*argv, "--particles", "4", "--show", "4"]) == 0
    out = capsys.readouterr().out
    assert f"task {task}[{constraint}]" in out
    samples = [line for line in out.splitlines() if " ok " in line or " NO " in line]
    assert len(samples) == 4
    if task == "lipogram":  # an automaton is a mask: every sample satisfies it
        assert all(" ok " in line for line in samples)


@pytest.mark.parametrize(
    ("particles", "message"),
    [
        ("0", "--particles must be >= 1, got 0"),
        ("-2", "--particles must be >= 1, got -2"),
        ("abc", "--particles must be an integer, got 'abc'"),
    ],
)
def test_steer_bad_particle_counts_are_clear_errors(tiny_gguf, capsys, particles, message):
    argv = ["steer", "--model", str(tiny_gguf), "--task", "lipogram", "--particles", particles]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"ppl steer: error: {message}" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--particles", "0"], "--particles must be >= 1, got 0"),
        (["--particles", "4,8"], "--particles takes one count without --sweep, got '4,8'"),
        (["--sweep", "--particles", "2,x"], "--particles must be an integer, got 'x'"),
        (["--sweep", "--particles", "2,0"], "--particles must be >= 1, got 0"),
    ],
)
def test_steer_particle_counts_are_checked_before_the_model_loads(
    tmp_path, capsys, arguments, message
):
    """The model path does not exist: the count's error comes first, and nothing is written
    (a sweep with a 0 in its list used to write the cells before it, then fail)."""
    out = tmp_path / "steer.jsonl"
    argv = ["steer", "--model", str(tmp_path / "missing.gguf"), "--out", str(out), *arguments]
    assert main(argv) == 2
    assert f"ppl steer: error: {message}" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--task", "nope"], "argument --task: invalid choice: 'nope'"),
        (["--dtype", "float16"], "argument --dtype: invalid choice: 'float16'"),
        (["--task", "json", "--dtype", "int8"], "argument --dtype: invalid choice: 'int8'"),
    ],
)
def test_steer_unknown_tasks_and_dtypes_exit_2(capsys, arguments, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["steer", *arguments])
    assert exit_info.value.code == 2
    assert f"ppl steer: error: {message}" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["steer", "scale"])
@pytest.mark.parametrize("seed", ["1e23", "-1", str(2**64)])
def test_bad_seeds_exit_2_with_a_message(command, seed, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--seed", seed])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"ppl {command}: error: argument --seed: a seed must be" in err


def test_non_utf8_constraint_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["steer", "--constraint", "forbidden:\udcff"])  # how Python passes a bad byte
    assert exit_info.value.code == 2
    assert "is not valid UTF-8" in capsys.readouterr().err


def test_ctrl_c_prints_one_line_and_exits_130(tiny_gguf, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    out = tmp_path / "sweep.jsonl"
    argv = ["steer", "--model", str(tiny_gguf), "--task", "lipogram", "--sweep", "--quiet"]
    argv += ["--methods", "smc", "--particles", "2", "--seeds", "100000", "--out", str(out)]
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "JAX_PLATFORMS": "cpu"}
    env["PPL_JAX_CACHE"] = str(tmp_path / "cache")  # its converted GGUF, not in the user's cache
    process = subprocess.Popen(
        [sys.executable, "-m", "ppl.experiments.cli", *argv],
        cwd=root,
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not (out.exists() and out.stat().st_size > 0) and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130
    assert err.strip() == f"ppl steer: interrupted; results so far are in {out}"


def test_json_output_never_holds_bare_nan():
    import json

    from ppl.experiments.cli import _json

    text = _json({"rate": float("nan"), "rows": [1.0, float("-inf")], "ok": 2})
    assert json.loads(text) == {"rate": "nan", "rows": [1.0, "-inf"], "ok": 2}
    assert "NaN" not in text and "Infinity" not in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["scale", "--problems", "0"], "argument --problems: need an integer >= 1, got 0"),
        (["scale", "--timeout", "nan"], "argument --timeout: need a finite number > 0, got nan"),
        (["scale", "--softmax-temperature", "-1"], "need a finite number > 0, got -1"),
        (["scale", "--max-rows", "x"], "argument --max-rows: need an integer, got 'x'"),
        (["scale", "--concurrency", "0"], "argument --concurrency: need an integer >= 1"),
        (["steer", "--show", "-1"], "argument --show: need an integer >= 0, got -1"),
        (["steer", "--sweep", "--seeds", "0"], "argument --seeds: need an integer >= 1, got 0"),
        (["bench-lm", "--repeats", "0"], "argument --repeats: need an integer >= 1, got 0"),
    ],
)
def test_counts_and_positive_numbers_are_checked_when_parsed(argv, message, capsys):
    from ppl.experiments.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
