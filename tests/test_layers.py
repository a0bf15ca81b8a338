"""The layering of docs/architecture.md, kept true: every import in the package points down (or
sideways, within one layer), never up. A new arrow against it fails here with the two modules."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("emulator", "dynwf_cli", "dynwf_pytest")

#: Bottom to top; a module may import its own layer and those below it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("emulator.error_codes", "emulator.errors", "emulator.interpreter", "emulator.code_version",
     "emulator.defaults", "emulator.lazy"),
    ("emulator.rules", "emulator.clock", "emulator.error_wire", "emulator.tracebacks"),
    ("emulator.config",),
    ("emulator.rpc",),
    ("emulator.runtime",),
    ("emulator.sdk",),
    ("emulator.engine",),
    ("emulator.isolates", "emulator.loader"),
    ("emulator.project", "emulator.templates", "emulator.host"),
    ("emulator.ops", "emulator.runner", "emulator.replay", "emulator.analysis"),
    ("emulator.server",),
    ("dynwf_cli", "dynwf_pytest", "emulator"),
)


#: Prefixes that name one module only, not the modules under it: the package's face is on top,
#: but a new module of the package must still be placed in a layer of its own.
EXACT = frozenset({"emulator"})


def layer_of(module: str) -> int | None:
    best: tuple[int, int] | None = None          # (length of the matching prefix, layer)
    for rank, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or (prefix not in EXACT and module.startswith(prefix + ".")):
                if best is None or len(prefix) > best[0]:
                    best = (len(prefix), rank)
    return None if best is None else best[1]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in the file, including those inside functions; imports
    only for type checkers (``if TYPE_CHECKING:``) are left out: nothing runs them."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for child in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names
                      if layer_of(f"{base}.{alias.name}") != layer_of(base)]
    return found


def arrows_against_the_layers() -> list[str]:
    wrong = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "static" in path.parts or "__pycache__" in path.parts:
                continue
            importer = module_name(path)
            own = layer_of(importer)
            assert own is not None, f"{importer} belongs to no layer: add it to LAYERS"
            for line, imported in imports_of(path):
                theirs = layer_of(imported)
                if theirs is not None and theirs > own:
                    wrong.append(f"{path.relative_to(ROOT)}:{line}: {importer} (layer {own}) "
                                 f"imports {imported} (layer {theirs})")
    return wrong


def test_every_import_points_down_the_layers():
    assert arrows_against_the_layers() == []


def test_the_check_catches_an_arrow_that_points_up(tmp_path, monkeypatch):
    """The walk really reads imports: a rule importing the engine is caught."""
    bad = ROOT / "emulator" / "rules" / "_layer_probe.py"
    bad.write_text("from emulator.engine.store import Store\n")
    try:
        found = arrows_against_the_layers()
    finally:
        bad.unlink()
    assert any("emulator.rules._layer_probe" in line and "emulator.engine.store" in line
               for line in found), found


def test_a_module_in_no_layer_is_caught():
    """A new module of the package is not put on top unnoticed: the walk asks for its layer."""
    bad = ROOT / "emulator" / "_layer_probe.py"
    bad.write_text("import json\n")
    try:
        arrows_against_the_layers()
    except AssertionError as exc:
        assert "emulator._layer_probe belongs to no layer" in str(exc)
    else:
        raise AssertionError("a module outside every layer went unnoticed")
    finally:
        bad.unlink()
