"""The layers of docs/design.md, stated whole: which folder may import which.

    ppl/*.py (core)   the core: protocols, pytrees, diagnostics; imports no other layer
    samplers/         ppl.samplers: algorithms over the core's protocols; imports the core
    models/           ppl.models: concrete models; imports the core
    experiments/      ppl.experiments: the CLI and the runners; imports everything
    ppl/__init__.py   the flat public API (`import ppl`); re-exports from every layer

`ppl/samplers`, `ppl/models` and `ppl/experiments` are links to the top-level folders, so one
installed namespace, `ppl`, holds them all; nothing imports the folders by their bare names.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"core", "samplers", "models", "experiments", "api"}
MAY_IMPORT = {
    "core": {"core"},
    "samplers": {"core", "samplers"},
    "models": {"core", "models"},
    "experiments": LAYERS - {"api"},
    "api": LAYERS - {"api"},
}
SUBPACKAGES = ("samplers", "models", "experiments")


def layer_of_module(name: str) -> str | None:
    """The layer of an imported module name, or None for third-party code."""
    parts = name.split(".")
    if parts[0] != "ppl":
        return None
    if len(parts) == 1:
        return "api"
    return parts[1] if parts[1] in SUBPACKAGES else "core"


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: use absolute imports"
            assert node.module is not None
            if node.module == "ppl":  # `from ppl import smc` names submodules
                names |= {f"ppl.{alias.name}" for alias in node.names}
            else:
                names.add(node.module)
    return names


def source_files(layer: str) -> list[Path]:
    if layer == "api":
        return [ROOT / "ppl" / "__init__.py"]
    if layer == "core":
        return [p for p in sorted((ROOT / "ppl").glob("*.py")) if p.name != "__init__.py"]
    return sorted((ROOT / layer).rglob("*.py"))


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_imports_flow_one_way(layer):
    files = source_files(layer)
    assert files, layer
    offenders = []
    for path in files:
        for module in sorted(imported_modules(path)):
            if module.split(".")[0] in SUBPACKAGES:
                offenders.append(f"{path.relative_to(ROOT)} imports bare `{module}`")
            target = layer_of_module(module)
            if target is not None and target not in MAY_IMPORT[layer]:
                offenders.append(f"{path.relative_to(ROOT)} ({layer}) imports {module} ({target})")
    assert not offenders, offenders


def test_subpackages_are_links_into_one_namespace():
    for name in SUBPACKAGES:
        link = ROOT / "ppl" / name
        assert link.is_symlink() and link.resolve() == (ROOT / name).resolve(), name


def test_the_checker_sees_imports(tmp_path):
    sample = tmp_path / "x.py"
    sample.write_text(
        "import ppl.models.lm\nfrom ppl.samplers import smc\nfrom ppl import random\n"
    )
    assert imported_modules(sample) == {"ppl.models.lm", "ppl.samplers", "ppl.random"}
    assert [layer_of_module(m) for m in sorted(imported_modules(sample))] == [
        "models",
        "core",
        "samplers",
    ]
