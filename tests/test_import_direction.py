"""The import direction of DESIGN.md: samplers and models import ppl; ppl's core imports
neither (only the CLI and the experiment runners, the top of the stack, wire models in);
samplers never import models."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"ppl": {"samplers", "models"}, "samplers": {"models"}, "models": {"samplers"}}
TOP_OF_STACK = {ROOT / "ppl" / "cli.py", *(ROOT / "ppl" / "experiments").rglob("*.py")}


def imported_packages(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_flow_one_way(package):
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        if path in TOP_OF_STACK:
            continue
        bad = imported_packages(path) & FORBIDDEN[package]
        if bad:
            offenders.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert not offenders, offenders


def test_the_checker_sees_imports(tmp_path):
    sample = tmp_path / "x.py"
    sample.write_text("import models.lm\nfrom samplers import smc\n")
    assert imported_packages(sample) == {"models", "samplers"}
