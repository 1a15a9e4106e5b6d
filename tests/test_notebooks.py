"""Every notebook runs top to bottom (on the tiny model, so in seconds)."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.py"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, monkeypatch):
    monkeypatch.setenv("PPL_NOTEBOOK_TINY", "1")
    namespace = runpy.run_path(str(path))
    assert namespace  # ran to the end


def test_there_are_notebooks():
    assert NOTEBOOKS
