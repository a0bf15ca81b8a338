"""The engine's vocabularies (instance statuses, step kinds and statuses, timer kinds, stop
reasons) are named once, as enums, and used by name: a bare ``"done"`` compared against or handed
to the engine is a misspelling waiting to happen. The walk reads the package's syntax trees, so
the same words in SQL text, in dictionary keys of the wire, in messages and in the dashboard's
JavaScript are not its concern."""

from __future__ import annotations

import ast
from pathlib import Path

from emulator.engine.lifetime import StopReason
from emulator.rules.states import InstanceStatus
from emulator.rules.steps import StepKind, StepStatus, TimerKind

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("emulator", "dynwf_cli", "dynwf_pytest")

#: The words written to the store: what an instance and its steps and timers are.
STORED = frozenset(str(member) for enum in (InstanceStatus, StepKind, StepStatus, TimerKind)
                   for member in enum)
#: Every word of every vocabulary: the stored ones and why a run stopped.
VOCABULARY = STORED | {str(member) for member in StopReason}

#: Where the engine's words are written: a literal passed to a call there is one of them.
ENGINE_MODULES = ("emulator/engine/", "emulator/sdk/", "emulator/ops.py", "emulator/runner.py",
                  "emulator/replay.py")
#: Where the vocabularies are declared (their members are the only place the words are spelt).
DECLARING = ("emulator/rules/steps.py", "emulator/rules/states.py")

#: The words' other meanings, named by the last name of what they are compared with: the step
#: handle's method names (an analysis of tenant code reads them), the platform's names of step
#: types for ``restart({"from": {"type"}})``, and a rollback phase's outcome, a word of its own.
OTHER_MEANINGS = frozenset({"method", "step_method", "attr", "type", "chosen_type", "outcome"})
#: Calls whose first argument is a dictionary's key, not a value.
KEYED = frozenset({"get", "pop", "setdefault"})


def _words(node: ast.AST, words: frozenset[str] = VOCABULARY) -> list[str]:
    """The vocabulary words ``node`` spells out: a string, or a tuple, list or set of them."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in words:
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [word for element in node.elts for word in _words(element, words)]
    return []


def _last_name(node: ast.AST) -> str | None:
    """``status`` of ``row.status``, ``row["status"]``, ``row.get("status")``, ``status`` and
    ``status_of(row)``."""
    if isinstance(node, ast.Call):
        looked_up = node.args[0] if node.args else None
        if _last_name(node.func) in KEYED and isinstance(looked_up, ast.Constant):
            return str(looked_up.value)
        return _last_name(node.func)
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
        return str(node.slice.value)
    return None


def _compared(node: ast.Compare) -> list[tuple[str, str]]:
    """(word, the expression it is compared with) of each bare word in ``node``."""
    found = []
    operands = [node.left, *node.comparators]
    for op, left, right in zip(node.ops, operands, operands[1:]):
        if isinstance(op, (ast.Eq, ast.NotEq)):
            for word_side, other in ((left, right), (right, left)):
                if isinstance(word_side, ast.Constant):
                    found += [(word, other) for word in _words(word_side)]
        elif isinstance(op, (ast.In, ast.NotIn)) and isinstance(right, (ast.Tuple, ast.List,
                                                                          ast.Set)):
            # ``"rollback" in data`` asks for a key of a dictionary: only a literal collection
            # on the right is a set of values
            found += [(word, left) for word in _words(right)]
    return [(word, ast.unparse(other)) for word, other in found
            if _last_name(other) not in OTHER_MEANINGS]


def _passed(node: ast.Call) -> list[str]:
    """The bare stored words among ``node``'s positional arguments (a step key's tuple included);
    the key ``mapping.get`` looks up is a key. Why a run stopped is never passed bare either,
    but its ``"pause"`` is also a control's action (``Control.on_change``)."""
    arguments = node.args[1:] if _last_name(node.func) in KEYED else node.args
    return [word for argument in arguments for word in _words(argument, STORED)]


def bare_words(source: str, where: str, *, engine: bool) -> list[str]:
    """``where:line: 'word' ...`` of each bare vocabulary word ``source`` compares, or passes
    to a call when it is one of the engine's modules."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            found += [f"{where}:{node.lineno}: {word!r} compared with {other}"
                      for word, other in _compared(node)]
        elif engine and isinstance(node, ast.Call):
            found += [f"{where}:{node.lineno}: {word!r} passed to {ast.unparse(node.func)}"
                      for word in _passed(node)]
    return found


def package_files() -> list[tuple[Path, str]]:
    files = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            where = path.relative_to(ROOT).as_posix()
            if where not in DECLARING:
                files.append((path, where))
    return files


def test_no_bare_vocabulary_word_is_compared_or_passed():
    found = []
    for path, where in package_files():
        found += bare_words(path.read_text(encoding="utf-8"), where,
                            engine=where.startswith(ENGINE_MODULES))
    assert found == [], "use the enum member (emulator.rules.steps / states) instead:\n" + \
        "\n".join(found)


def test_the_walk_reads_the_package():
    """A walk that read nothing would pass: the engine's modules are among the files."""
    walked = {where for _, where in package_files()}
    assert {"emulator/engine/lifetime.py", "emulator/sdk/client.py", "dynwf_cli/checklist.py",
            "dynwf_pytest/introspection.py"} <= walked
    assert {"do", "done", "event_timeout", "waitingForPause", "hibernate"} <= VOCABULARY


def test_a_bare_word_is_caught():
    source = ('if row.status == "done":\n    pass\n'
              'if key[0] not in ("do", "rollback"):\n    pass\n'
              'if "sleeping" != step.status:\n    pass\n')
    assert bare_words(source, "probe.py", engine=False) == [
        "probe.py:1: 'done' compared with row.status",
        "probe.py:3: 'do' compared with key[0]",
        "probe.py:3: 'rollback' compared with key[0]",
        "probe.py:5: 'sleeping' compared with step.status"]


def test_a_bare_word_passed_in_the_engine_is_caught():
    source = ('store.add_timer_txn(instance, "retry", key, due)\n'
              'store.put_step_txn(instance, ("rollback", name, 1), "failed", now)\n')
    assert bare_words(source, "probe.py", engine=True) == [
        "probe.py:1: 'retry' passed to store.add_timer_txn",
        "probe.py:2: 'rollback' passed to store.put_step_txn",
        "probe.py:2: 'failed' passed to store.put_step_txn"]
    assert bare_words(source, "probe.py", engine=False) == []


def test_keys_text_and_members_are_not_words():
    """Dictionary keys of the wire, SQL text, messages and enum members pass."""
    source = ('info = {"status": row.status, "rollback": None}\n'
              'if "rollback" in info:\n    pass\n'
              'store.execute("UPDATE steps SET status = \'done\' WHERE kind = \'do\'")\n'
              'raise ValueError("the step is not done")\n'
              'if row.status == StepStatus.DONE and kind in (StepKind.DO, StepKind.ROLLBACK):\n'
              '    pass\n'
              'if method == "do" or rollback.get("outcome") == "complete":\n    pass\n'
              'if start.get("type", RESTART_DEFAULT_TYPE) == "do":\n    pass\n')
    assert bare_words(source, "probe.py", engine=True) == []
