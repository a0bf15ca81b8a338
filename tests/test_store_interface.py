"""The store interface (emulator/engine/store_interface.py) names every store method the package
calls, and both stores implement it with the same signatures (docs/architecture.md, "the
store")."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from emulator.engine.store import Store
from emulator.engine.store_interface import EngineStore

ROOT = Path(__file__).resolve().parents[1]


def public_methods(cls: type) -> dict[str, object]:
    return {name: value for klass in reversed(cls.__mro__) if klass is not object
            for name, value in vars(klass).items()
            if callable(value) and not name.startswith("_")}


def parameters(fn: object) -> list[tuple[str, object, object]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


def test_the_interface_names_every_public_method_of_the_sqlite_store():
    assert set(public_methods(Store)) == set(public_methods(EngineStore))


@pytest.mark.parametrize("name", sorted(public_methods(EngineStore)))
def test_the_sqlite_store_matches_each_signature(name):
    assert parameters(getattr(Store, name)) == parameters(getattr(EngineStore, name))


def test_the_postgres_store_overrides_keep_the_signatures():
    store_postgres = pytest.importorskip("emulator.engine.store_postgres")
    for name, method in vars(store_postgres.PostgresStore).items():
        if callable(method) and not name.startswith("_"):
            assert parameters(method) == parameters(getattr(EngineStore, name)), name


def test_the_package_calls_only_interface_methods():
    called = set()
    for package in ("emulator", "dynwf_cli", "dynwf_pytest"):
        for path in (ROOT / package).rglob("*.py"):
            called |= set(re.findall(r"\bstore\.([a-z_]+)\(", path.read_text()))
    assert called, "no store call found: the pattern no longer matches the code"
    assert called <= set(public_methods(EngineStore)), called - set(public_methods(EngineStore))
