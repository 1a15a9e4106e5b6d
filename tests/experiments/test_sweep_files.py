"""Hostile sweep files: `ppl plot` never writes over its input, and a results file that is a
directory, empty, not UTF-8 or holds lines that are not results gives a clear error (or a
warning naming the lines skipped)."""

from __future__ import annotations

import contextlib
import shutil

import pytest

from ppl.experiments import cli
from ppl.experiments.sweep import read_results
from tests.experiments.test_cli import tiny_gguf  # noqa: F401  (the tiny GGUF fixture)
from tests.experiments.test_sweep import letters_task, sweep


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return sweep(tmp_path_factory.mktemp("sweep"), letters_task(), methods=["pf"], budgets=[1])


def test_plot_of_a_png_named_results_file_keeps_it(results, tmp_path, capsys):
    named = shutil.copy(results, tmp_path / "results.png")
    before = named.read_bytes()
    assert cli.main(["plot", str(named)]) == 0
    assert named.read_bytes() == before
    assert (tmp_path / "results.plot.png").stat().st_size > 0
    assert f"figure: {tmp_path / 'results.plot.png'}" in capsys.readouterr().out


def test_plot_out_equal_to_the_input_is_an_error(results, tmp_path, capsys, monkeypatch):
    before = results.read_bytes()
    monkeypatch.chdir(results.parent)
    assert cli.main(["plot", str(results), "--out", f"./{results.name}"]) == 2
    assert "is the results file" in capsys.readouterr().err
    assert results.read_bytes() == before


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "no results in"),
        (b"42\n", "no results in"),
        (b'{"foo": 1}\n[1, 2]\n', "no results in"),
        (b'\xff\xfe{"method": "pf"}\n', "not UTF-8 text"),
    ],
)
def test_plot_of_a_file_without_results_is_a_clear_error(tmp_path, capsys, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with (
        pytest.warns(UserWarning)
        if content.strip() and b"\xff" not in content
        else contextlib.nullcontext()
    ):
        assert cli.main(["plot", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.startswith("ppl plot: error:")
    assert not (tmp_path / "bad.plot.png").exists()


def test_plot_of_a_directory_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["plot", str(tmp_path)]) == 2
    assert "is a directory, not a results file" in capsys.readouterr().err


def test_foreign_lines_are_skipped_with_a_warning_naming_them(results, tmp_path, capsys):
    path = tmp_path / "mixed.jsonl"
    lines = results.read_text().splitlines()
    path.write_text("\n".join([lines[0], "42", '{"foo": 1}', "not json", *lines[1:]]) + "\n")
    with pytest.warns(UserWarning, match=r"skipped 3 line\(s\).*line 2, 3, 4"):
        assert len(read_results(path, ("method", "budget"))) == len(lines)
    with pytest.warns(UserWarning, match="line 2, 3, 4"):
        assert cli.main(["plot", str(path)]) == 0
    assert "pf" in capsys.readouterr().out


def test_resume_reruns_foreign_lines_and_keeps_results(tmp_path):
    out = sweep(tmp_path, letters_task(), methods=["pf"], budgets=[1])
    lines = out.read_text().splitlines()
    out.write_text("\n".join(["42", '{"foo": 1}', *lines[1:]]) + "\n")  # problem 0 lost
    with pytest.warns(UserWarning, match="line 1, 2"):
        sweep(tmp_path, letters_task(), methods=["pf"], budgets=[1])
    with pytest.warns(UserWarning):
        records = read_results(out)
    assert sorted(r["problem"] for r in records) == [0, 1, 2]


def test_sweep_out_directory_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="is a directory; give a file path"):
        sweep(tmp_path, letters_task(), out=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_steer_sweep_out_directory_is_a_clear_error(tiny_gguf, tmp_path, capsys):  # noqa: F811
    argv = ["steer", "--model", str(tiny_gguf), "--task", "short-words", "--sweep", "--quiet"]
    assert cli.main([*argv, "--particles", "2", "--seeds", "1", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ppl steer: error: --out") and "is a directory" in err
    assert list(tmp_path.iterdir()) == []
