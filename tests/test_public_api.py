"""The package's face (``emulator/__init__.py``): every name it lists resolves, importing it loads
nothing else, and the command line and the pytest plugin import from ``emulator.*`` only names
some ``__all__`` lists (the CLI from the face itself, the dev server's face, or the runtime)."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import emulator

ROOT = Path(__file__).resolve().parents[1]
#: Where the command line may take names from: the package's face, the dev server's face, and
#: the runtime that dispatcher code imports too.
CLI_SOURCES = ("emulator", "emulator.server", "emulator.runtime.dynamic_workflows")


def imported_names(folder: Path) -> list[tuple[str, str, str]]:
    """(file:line, module, name) of every ``from emulator... import name`` under ``folder``,
    including imports inside functions."""
    found = []
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and \
                    (node.module == "emulator" or node.module.startswith("emulator.")):
                where = f"{path.relative_to(folder.parent)}:{node.lineno}"
                found += [(where, node.module, alias.name) for alias in node.names]
            elif isinstance(node, ast.Import):
                found += [(f"{path.relative_to(folder.parent)}:{node.lineno}", alias.name, "*")
                          for alias in node.names if alias.name.startswith("emulator")]
    return found


def unlisted(folder: Path) -> list[str]:
    wrong = []
    for where, module, name in imported_names(folder):
        listed = getattr(importlib.import_module(module), "__all__", None)
        if name == "*" or listed is None or name not in listed:
            wrong.append(f"{where}: {name} from {module} (not in its __all__)")
    return wrong


def test_every_name_of_the_face_resolves_to_its_home():
    assert len(emulator.__all__) == len(set(emulator.__all__))
    for name in emulator.__all__:
        assert getattr(emulator, name) is not None, name
    assert emulator.DynwfError is importlib.import_module("emulator.errors").DynwfError
    assert emulator.states is importlib.import_module("emulator.rules.states")
    assert "DynwfError" in dir(emulator)


def test_importing_the_face_loads_no_other_module_of_the_package():
    """An isolate's zygote imports emulator.rpc and emulator.sdk, which import the package
    first; it must not bring the host, the store or ctypes with it."""
    script = ("import sys, emulator; print(sorted(m for m in sys.modules "
              "if m.startswith('emulator') or 'ctypes' in m))")
    loaded = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.strip()
    assert loaded == "['emulator', 'emulator.lazy']"   # the face and its lazy loader, nothing else


def test_the_command_line_imports_only_listed_names_from_the_faces():
    assert unlisted(ROOT / "dynwf_cli") == []
    outside = sorted({f"{where}: {module}" for where, module, _ in imported_names(ROOT / "dynwf_cli")
                      if module not in CLI_SOURCES})
    assert outside == [], "export the name from emulator (or emulator.server) instead"


def test_the_pytest_plugin_imports_only_listed_names():
    assert unlisted(ROOT / "dynwf_pytest") == []


def test_an_unlisted_name_is_caught(tmp_path):
    """The walk really reads imports: a name the store does not list is reported."""
    (tmp_path / "cli").mkdir()
    (tmp_path / "cli" / "probe.py").write_text(
        "def later():\n    from emulator.engine.store import Store\n")
    assert unlisted(tmp_path / "cli") == ["cli/probe.py:2: Store from emulator.engine.store "
                                          "(not in its __all__)"]
