"""The core must work with no Qt at all (napari-style import rule)."""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import importlib, pkgutil, sys

    class BlockQt:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"PySide6", "shiboken6", "PyQt5", "PyQt6"}:
                raise ImportError(f"Qt is blocked in this test: {name}")
            return None

    if BLOCK:
        sys.meta_path.insert(0, BlockQt())

    import histoviewer
    names = [m.name for m in pkgutil.walk_packages(histoviewer.__path__, "histoviewer.")
             if not m.name.startswith("histoviewer.gui")]
    for name in names:
        importlib.import_module(name)
    loaded_qt = sorted(m for m in sys.modules if m.split(".")[0] in {"PySide6", "shiboken6"})
    assert not loaded_qt, f"core modules imported Qt: {loaded_qt}"
    print(len(names))
    """
)


def _import_core(block: bool) -> int:
    result = subprocess.run(
        [sys.executable, "-c", f"BLOCK = {block}\n{SCRIPT}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return int(result.stdout.strip().splitlines()[-1])


def test_core_imports_without_qt_installed():
    # Modules that exist on purpose: if this count drops, walk_packages missed them.
    assert _import_core(block=True) >= 20


def test_core_never_pulls_in_qt():
    _import_core(block=False)


def test_lazy_package_exports_resolve_to_the_documented_objects():
    # A submodule named like one of its package's exports would shadow it once imported.
    import importlib
    import types

    for package in ("histoviewer.model", "histoviewer.mapping", "histoviewer.training"):
        module = importlib.import_module(package)
        for name in module.__all__:
            value = getattr(module, name)
            assert not isinstance(value, types.ModuleType), f"{package}.{name} is a module"
