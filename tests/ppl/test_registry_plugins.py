"""`import_modules`: every module of a plugin folder registers itself, the named ones first."""

from __future__ import annotations

import sys

from ppl.registry import Registry, import_modules

ENTRY = """
from plugins_registry import THINGS
THINGS.register("{name}", "the {name} entry")("{name}")
"""


def test_every_module_of_a_folder_registers_itself(tmp_path, monkeypatch):
    (tmp_path / "plugins_registry.py").write_text(
        "from ppl.registry import Registry\nTHINGS = Registry('thing')\n"
    )
    folder = tmp_path / "plugin_folder"
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    for name in ("zeta", "alpha", "mid"):
        (folder / f"{name}.py").write_text(ENTRY.format(name=name))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        import_modules("plugin_folder", first=("mid",))
        things: Registry[str] = sys.modules["plugins_registry"].THINGS
        assert things.names() == ("mid", "alpha", "zeta")
        assert things.help("alpha") == "the alpha entry"
    finally:
        for name in [m for m in sys.modules if m.startswith(("plugin_folder", "plugins_registry"))]:
            del sys.modules[name]
