"""The catalogue of error codes (emulator/error_codes.py) is the only place a code is spelled:
every code the package raises or answers with is in it, every entry is used, each code is
declared by one class, and the admin API's statuses and the command line's exit statuses are
read from it. Also the one converter between exceptions and their JSON form, which the step
failure path and the RPC share."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

from dynwf_cli.app import exit_code_for
from emulator.error_codes import EXIT_USAGE, ISOLATE_FAULTS, Code, exit_code, http_status
from emulator.errors import DynwfError, UsageError, ValidationError

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("emulator", "dynwf_cli", "dynwf_pytest")
CATALOGUE = ROOT / "emulator" / "error_codes.py"
#: How an error code is spelled; diagnostics of ``dynwf check`` (``DW100``) are another vocabulary.
DOTTED = re.compile(r"[a-z_]+\.[a-z_]+")
#: How the package names its exception classes (``code`` elsewhere may be anything: a source
#: file's text, the set of files a reload batch holds).
ERROR_NAMES = ("Error", "Exception", "ConnectionLost")


def sources() -> list[Path]:
    return [path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))
            if "static" not in path.parts and "__pycache__" not in path.parts]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_catalogued(node: ast.expr) -> bool:
    """``Code.NAME`` for a member NAME of the catalogue."""
    return isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
        and node.value.id == "Code" and node.attr in Code.__members__


def typed_codes() -> list[str]:
    """Every place outside the catalogue that spells a code instead of naming its member."""
    found = []
    codes = {code.value for code in Code}
    for path in sources():
        if path == CATALOGUE:
            continue
        where = path.relative_to(ROOT)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                for statement in node.body:
                    target = statement.target if isinstance(statement, ast.AnnAssign) else \
                        statement.targets[0] if isinstance(statement, ast.Assign) else None
                    value = getattr(statement, "value", None)
                    if isinstance(target, ast.Name) and target.id == "code" and value is not None \
                            and not is_catalogued(value) and (isinstance(value, ast.Constant)
                                                              or node.name.endswith(ERROR_NAMES)):
                        found.append(f"{where}:{statement.lineno}: class {node.name} has code = "
                                     f"{ast.unparse(value)}, not a member of Code")
            elif isinstance(node, ast.Call):
                callee = ast.unparse(node.func)
                for keyword in node.keywords:
                    value = keyword.value
                    if keyword.arg == "code" and (callee.endswith(ERROR_NAMES) or (
                            isinstance(value, ast.Constant) and isinstance(value.value, str)
                            and DOTTED.fullmatch(value.value))):
                        found.append(f"{where}:{node.lineno}: {callee}(code={ast.unparse(value)}): "
                                     "raise a class that declares its code")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and node.value in codes:
                found.append(f"{where}:{node.lineno}: {node.value!r} spelled out: use Code")
            elif isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values):
                    if isinstance(key, ast.Constant) and key.value == "code" \
                            and isinstance(value, ast.Constant) and isinstance(value.value, str) \
                            and DOTTED.fullmatch(value.value):
                        found.append(f"{where}:{node.lineno}: {value.value!r} is not catalogued")
    return found


def coded_classes() -> list[type[BaseException]]:
    """Every exception class of the package that declares a ``code`` of its own."""
    classes = []
    for path in sources():
        module = importlib.import_module(module_name(path))
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, BaseException) \
                    and value.__module__ == module.__name__ and "code" in value.__dict__:
                classes.append(value)
    return classes


def all_subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *all_subclasses(sub)]
    return found


# ---- every code is catalogued, and only there ---------------------------------------------------

def test_no_code_is_typed_outside_the_catalogue():
    """Raise sites name a class; classes name a member of Code; JSON answers use Code too."""
    assert typed_codes() == []


def test_the_check_catches_a_typed_code():
    """The walk really reads the source: an override at a raise site, a class spelling its
    code, a JSON answer with an uncatalogued one are each caught."""
    probe = ROOT / "emulator" / "rules" / "_code_probe.py"
    probe.write_text(
        "from emulator.errors import InstanceFinishedError\n"
        "class LateError(Exception):\n"
        "    code = 'instance.late'\n"
        "def refuse():\n"
        "    raise InstanceFinishedError('no', code='instance.not_running')\n"
        "ANSWER = {'code': 'dev.gone'}\n")
    try:
        found = typed_codes()
    finally:
        probe.unlink()
    assert sorted(line.split(": ", 1)[0] for line in found) == [
        "emulator/rules/_code_probe.py:3", "emulator/rules/_code_probe.py:5",
        "emulator/rules/_code_probe.py:5", "emulator/rules/_code_probe.py:6"], found


def test_every_coded_class_declares_a_catalogued_code():
    classes = coded_classes()
    names = {cls.__name__ for cls in classes}
    # the two families the catalogue joined: dynwf's errors and the platform-named ones
    assert {"DynwfError", "ConnectionLost", "ProtocolError", "RpcTypeError", "WorkflowFatalError",
            "MissingDispatcherMetadataError", "DispatcherSetupError"} <= names
    assert [cls for cls in classes if not isinstance(cls.__dict__["code"], Code)] == []
    coded_errors = [cls for cls in all_subclasses(DynwfError)
                    if cls.__module__.startswith(PACKAGES)]
    assert [cls for cls in coded_errors if not isinstance(cls.code, Code)] == []


def test_each_code_is_declared_by_one_class():
    owners: dict[Code, list[str]] = {}
    for cls in coded_classes():
        owners.setdefault(cls.__dict__["code"], []).append(f"{cls.__module__}.{cls.__name__}")
    assert {code: found for code, found in owners.items() if len(found) > 1} == {}


def test_every_catalogued_code_is_used():
    """An entry no code names is a code nothing gives: drop it, or it documents a lie."""
    used = set()
    for path in sources():
        if path == CATALOGUE:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if is_catalogued(node):
                used.add(node.attr)
    assert sorted(set(Code.__members__) - used) == []


def test_the_catalogue_is_well_formed():
    for code in Code:
        assert DOTTED.fullmatch(code.value), code
        assert 400 <= code.http_status <= 599 and code.exit_code in (1, 2), code
        assert isinstance(code.retryable, bool) and code.meaning, code
    assert all(code.value.startswith("isolate.") for code in ISOLATE_FAULTS)


def test_families_agree_with_their_entries():
    """The usage family, and only it, exits 2; bad input is a 400 and never retryable."""
    coded_errors = [DynwfError, *all_subclasses(DynwfError)]
    for cls in coded_errors:
        assert (cls.code.exit_code == EXIT_USAGE) == issubclass(cls, UsageError), cls
        if issubclass(cls, ValidationError):
            assert cls.code.http_status == 400 and not cls.code.retryable, cls


# ---- the two mappings read the catalogue ------------------------------------------------------

def error_with(code: Code) -> DynwfError:
    return type("CodedForTest", (DynwfError,), {"code": code})("a message")


@pytest.mark.parametrize("code", list(Code))
def test_the_admin_api_and_the_command_line_map_every_code_by_its_entry(code):
    from emulator.server.admin import error_response
    error = error_with(code)
    assert error_response(error).status_code == code.http_status == http_status(code.value)
    assert exit_code_for(error) == code.exit_code == exit_code(code.value)
    assert error.retryable is code.retryable


def test_the_mappings_follow_a_changed_entry(monkeypatch):
    """Not a second table that happens to agree: change the entry, the answers change."""
    from emulator.server.admin import error_response
    monkeypatch.setattr(Code.INSTANCE_NOT_FOUND, "http_status", 418)
    monkeypatch.setattr(Code.INSTANCE_NOT_FOUND, "exit_code", 2)
    from emulator.errors import InstanceNotFoundError
    error = InstanceNotFoundError("Instance 'a1' does not exist")
    assert error_response(error).status_code == 418
    assert exit_code_for(error) == 2


def test_an_unknown_code_is_an_unexpected_error():
    assert http_status("no.such_code") == 500 and exit_code("no.such_code") == 1


# ---- one converter for step failures and RPC answers ------------------------------------------

def test_a_step_failure_and_an_rpc_answer_describe_an_error_alike():
    from emulator.errors import InstanceNotFoundError
    from emulator.rpc.peer import error_to_wire
    from emulator.sdk.failures import error_dict
    from emulator.runtime.workers.workflows import NonRetryableError

    class Declined(NonRetryableError):
        pass

    for exc, name, message in [
        (InstanceNotFoundError("Instance 'a1' does not exist", hint="x"), "InstanceNotFoundError",
         "Instance 'a1' does not exist"),
        (KeyError("sku"), "KeyError", "sku"),
        (Declined("card declined"), "NonRetryableError", "card declined"),
        (ValueError("bad"), "ValueError", "bad"),
    ]:
        wire = error_to_wire(exc)
        assert error_dict(exc) == {"name": name, "message": message}
        assert (wire["name"], wire["message"]) == (name, message)
        assert wire["code"] == (str(exc.code) if isinstance(exc, DynwfError) else None)


def test_a_fatal_error_crosses_under_its_one_name_with_its_own_code():
    from emulator.rpc.peer import error_from_wire, error_to_wire
    from emulator.sdk.failures import (ReplayMismatchError, StepError, WorkflowFatalError,
                                       error_dict, rebuild)
    fatal = ReplayMismatchError(expected='step.do "a"', reached='step.do "b"', why="it changed")
    wire = error_to_wire(fatal)
    assert (wire["name"], wire["code"]) == ("WorkflowFatalError", "replay.mismatch")
    back = error_from_wire(wire)
    assert isinstance(back, WorkflowFatalError) and back.code is Code.REPLAY_MISMATCH
    assert back.message == fatal.message
    # persisted, it has no code: it comes back as a step error, never as a fatal one
    assert isinstance(rebuild(error_dict(fatal)), StepError)


def test_codes_decide_the_class_an_rpc_error_comes_back_as():
    from emulator.errors import CannotTerminateError, InstanceNotFoundError, InstanceNotRunningError
    from emulator.rpc.peer import RemoteError, error_from_wire, error_to_wire
    back = error_from_wire(error_to_wire(InstanceNotRunningError("it is complete")))
    assert isinstance(back, InstanceNotRunningError) and back.message == "it is complete"
    assert isinstance(error_from_wire(error_to_wire(InstanceNotFoundError("gone"))),
                      InstanceNotFoundError)
    # a class built from fields the wire does not carry comes back as a RemoteError, coded
    back = error_from_wire(error_to_wire(CannotTerminateError(instance_id="a1", status="complete")))
    assert isinstance(back, RemoteError) and back.code == "instance.cannot_terminate"
    assert back.name == "CannotTerminateError"
    # an isolate fault is the host's to report: a code claimed by the other side is dropped
    claimed = error_from_wire({"name": "Boom", "message": "no", "code": "isolate.crashed"})
    assert isinstance(claimed, RemoteError) and not hasattr(claimed, "code")
