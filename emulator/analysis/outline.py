"""The steps of a tenant's ``run()``, read from its syntax tree before anything runs.

``dynwf run`` and ``dynwf dev`` show a checklist of an instance's steps from the moment it is
created, so the steps have to be known before the code has run once. They are read from the
source with ``ast`` alone, like ``dynwf check`` reads it: tenant code is untrusted and may not
even import, and nothing here executes it.

What the source can say is an outline, not a promise: a step inside ``if``/``try``/``match`` may
not run (``conditional``), one inside a loop may run many times (``in_loop``), a step whose name
is an f-string or a variable has no name until it runs (``name`` is None; ``label`` shows the
expression's shape, ``charge-{item}``). The checklist matches the outline to what actually runs
and inserts what the outline could not know.

Steps are listed once each, in source order. ``@step.do`` steps are listed where they are
declared, which is where the SDK's dependency injection also reads them; steps inside helper
functions defined in ``run()`` are listed where the helper is defined, flagged ``conditional``
because the source alone cannot say whether (or how often) the helper is called. Steps in other
methods or module-level helpers are not followed: the checklist picks them up as they run.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Any

from emulator.analysis.check import DEFAULT_ENTRY_CLASS
# read arguments and literals exactly as `dynwf check` does, so the two never disagree
from emulator.analysis.ast_tools import (NOT_LITERAL, call_argument, literal_value, syntax_error,
                                         top_level_classes)
from emulator.analysis.lint import step_method
from emulator.error_codes import Code
from emulator.errors import DynwfError
from emulator.rules.steps import StepKind
from emulator.rules.limits import DEFAULT_EVENT_TIMEOUT

__all__ = ["DEFAULT_ENTRY_CLASS", "OutlineStep", "TenantSourceError", "outline_steps"]

#: Step-handle method -> the kind in the engine's step key (``StepKey[0]``).
KIND_OF_METHOD = {"do": StepKind.DO, "sleep": StepKind.SLEEP, "sleep_until": StepKind.SLEEP,
                  "wait_for_event": StepKind.WAIT}


class TenantSourceError(DynwfError):
    """A tenant module that is not valid Python; ``line``/``column`` (1-based) locate it."""

    code = Code.TENANT_INVALID_PYTHON

    def __init__(self, message: str, *, file: str, line: int, column: int) -> None:
        self.file, self.line, self.column = file, line, column
        super().__init__(f"{file}:{line}:{column}: {message}",
                         hint="dynwf check lists every problem in the tenant's code")


@dataclass(frozen=True, slots=True)
class OutlineStep:
    """One step call or declaration found in ``run()``.

    ``kind`` is the engine's key kind (``do``/``sleep``/``wait``); ``method`` the SDK method
    (``sleep_until`` is a ``sleep``). ``name`` is None when the name is not a literal; ``label``
    is always printable, and ``name_pattern`` is then a regular expression matching every name
    the expression can produce (``^charge\\-.*$`` for ``f"charge-{item}"``). ``duration``
    (sleeps) and ``timeout`` (waits) are the literal text as written, a bare number shown as
    ``"<n> ms"`` since the runtime reads numbers as milliseconds.
    """

    kind: str
    method: str
    name: str | None
    label: str
    line: int
    column: int
    event_type: str | None = None
    duration: str | None = None
    timeout: str | None = None
    conditional: bool = False
    in_loop: bool = False
    name_pattern: str | None = None

    def could_be(self, name: str) -> bool:
        """Whether a step that ran as ``name`` may be this one."""
        if self.name is not None:
            return name == self.name
        return re.fullmatch(self.name_pattern or ".*", name, flags=re.DOTALL) is not None


def outline_steps(source: str, *, entry_class: str = DEFAULT_ENTRY_CLASS,
                  file: str = "index.py") -> list[OutlineStep]:
    """The steps of ``entry_class.run()`` in ``source``, in source order.

    Raises :class:`TenantSourceError` (with the line) when ``source`` is not valid Python.
    A module without the class, or a class without ``run``, has no outline: ``[]`` (running it
    reports that precisely; ``dynwf check`` does before).
    """
    try:
        tree = ast.parse(source, filename=file)
    except SyntaxError as exc:
        found = syntax_error(exc, file, code="DW200")
        raise TenantSourceError(found.message, file=file, line=found.line,
                                column=found.column) from None
    run = _entry_run(tree, entry_class)
    if run is None:
        return []
    params = run.args.posonlyargs + run.args.args
    handle = params[2].arg if len(params) >= 3 else "step"
    collector = _Collector({handle})
    for stmt in run.body:
        collector.visit(stmt, conditional=False, in_loop=False)
    return sorted(collector.steps, key=lambda s: (s.line, s.column))


# --- finding run() ---------------------------------------------------------------------------

def _entry_run(tree: ast.Module, entry_class: str) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    """``run`` of the module-level class ``entry_class``, or of a base class defined beside it."""
    classes = top_level_classes(tree)
    pending, seen = [entry_class], set()
    while pending:
        name = pending.pop(0)
        cls = classes.get(name)
        if cls is None or name in seen:
            continue
        seen.add(name)
        for item in cls.body:
            if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name == "run":
                return item
        pending += [base.id for base in cls.bases if isinstance(base, ast.Name)]
    return None


# --- walking run() ---------------------------------------------------------------------------

_LOOPS = (ast.For, ast.AsyncFor, ast.While)
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)


class _Collector:
    """Walks statements carrying whether the current point may be skipped or repeated."""

    def __init__(self, handles: set[str]) -> None:
        self.handles = handles
        self.steps: list[OutlineStep] = []

    def visit(self, node: ast.AST, *, conditional: bool, in_loop: bool) -> None:
        flags = {"conditional": conditional, "in_loop": in_loop}
        maybe = {"conditional": True, "in_loop": in_loop}
        looped = {"conditional": conditional, "in_loop": True}
        if isinstance(node, _FUNCTIONS):
            self._function(node, conditional=conditional, in_loop=in_loop)
        elif isinstance(node, ast.Lambda):
            self.visit(node.body, **maybe)
        elif isinstance(node, ast.Call):
            self._call(node, conditional=conditional, in_loop=in_loop)
        elif isinstance(node, _LOOPS):
            head = [node.test] if isinstance(node, ast.While) else [node.target, node.iter]
            self._all(head, **(looped if isinstance(node, ast.While) else flags))
            self._all(node.body, **looped)
            self._all(node.orelse, **maybe)  # runs once, and only when the loop did not break
        elif isinstance(node, (ast.If, ast.IfExp)):
            self.visit(node.test, **flags)
            self._all(node.body if isinstance(node.body, list) else [node.body], **maybe)
            self._all(node.orelse if isinstance(node.orelse, list) else [node.orelse], **maybe)
        elif isinstance(node, ast.BoolOp):
            self.visit(node.values[0], **flags)
            self._all(node.values[1:], **maybe)  # short-circuit: may never be evaluated
        elif isinstance(node, (ast.Try, getattr(ast, "TryStar", ast.Try))):
            self._all(node.body, **flags)
            self._all(node.handlers, **maybe)
            self._all(node.orelse, **maybe)
            self._all(node.finalbody, **flags)
        elif isinstance(node, ast.Match):
            self.visit(node.subject, **flags)
            self._all(node.cases, **maybe)
        elif isinstance(node, _COMPREHENSIONS):
            first, *rest = node.generators
            self.visit(first.iter, **flags)
            inner = [first.target, *first.ifs, *rest]
            inner += [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
            self._all(inner, **looped)
        else:
            self._all(ast.iter_child_nodes(node), **flags)

    def _all(self, nodes: Any, **flags: bool) -> None:
        for child in nodes:
            self.visit(child, **flags)

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef, **flags: bool) -> None:
        """A function defined in ``run()``: a step body when decorated with ``step.do``."""
        is_step = False
        for decorator in node.decorator_list:
            call = decorator if isinstance(decorator, ast.Call) else None
            target = call.func if call is not None else decorator
            if isinstance(target, ast.Attribute) and target.attr == "do" \
                    and isinstance(target.value, ast.Name) and target.value.id in self.handles:
                is_step = True
                self._add("do", call if call is not None else decorator, default_name=node.name,
                          **flags)
            else:
                self.visit(decorator, **flags)
        if not is_step:
            # A helper: whether and how often it runs depends on its callers.
            self._all(node.body, conditional=True, in_loop=flags["in_loop"])
        # A step body holds no steps of its own: the platform does not nest steps.

    def _call(self, node: ast.Call, **flags: bool) -> None:
        method = step_method(node, self.handles)
        if method is not None:
            self._add(method, node, **flags)
        elif isinstance(node.func, ast.Call) and step_method(node.func, self.handles) == "do":
            # step.do("name")(function): the decorator applied by hand
            target = node.args[0] if node.args else None
            default = target.id if isinstance(target, ast.Name) else \
                target.attr if isinstance(target, ast.Attribute) else None
            self._add("do", node.func, default_name=default, **flags)
            self._all([*node.args, *node.keywords], **flags)
            return
        self._all(ast.iter_child_nodes(node), **flags)

    def _add(self, method: str, node: ast.AST, *, default_name: str | None = None,
             conditional: bool, in_loop: bool) -> None:
        call = node if isinstance(node, ast.Call) else None
        name_node = call_argument(call, 0, "name") if call is not None else None
        pattern = None
        if name_node is None or (isinstance(name_node, ast.Constant) and name_node.value is None
                                 and method == "do"):
            name, label = default_name, default_name or "?"
        else:
            value = literal_value(name_node)
            name = value if isinstance(value, str) else None
            if name is None:
                label, pattern = _shape(name_node), _pattern(name_node)
            else:
                label = name
        event_type = duration = timeout = None
        if call is not None and method == "wait_for_event":
            value = literal_value(call_argument(call, 1, ("event_type", "type")))
            event_type = value if isinstance(value, str) else None
            timeout_node = call_argument(call, 2, "timeout")
            timeout = _duration_text(timeout_node) if timeout_node is not None \
                else DEFAULT_EVENT_TIMEOUT
        elif call is not None and method == "sleep":
            duration = _duration_text(call_argument(call, 1, "duration"))
        self.steps.append(OutlineStep(
            KIND_OF_METHOD[method], method, name, label, node.lineno, node.col_offset + 1,
            event_type=event_type, duration=duration, timeout=timeout,
            conditional=conditional, in_loop=in_loop, name_pattern=pattern))


def _shape(node: ast.expr) -> str:
    """How a non-literal name reads: ``f"charge-{item}"`` -> ``charge-{item}``, ``n`` -> ``{n}``."""
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            if isinstance(value, ast.Constant):
                parts.append(str(value.value))
            elif isinstance(value, ast.FormattedValue):
                parts.append("{" + ast.unparse(value.value) + "}")
        return "".join(parts)
    return "{" + ast.unparse(node) + "}"


def _pattern(node: ast.expr) -> str:
    """A regular expression for the names an f-string can produce; ``.*`` for any other form."""
    if not isinstance(node, ast.JoinedStr):
        return "^.*$"
    return "^" + "".join(re.escape(str(v.value)) if isinstance(v, ast.Constant) else ".*"
                         for v in node.values) + "$"


def _duration_text(node: ast.expr | None) -> str | None:
    value = literal_value(node)
    if value is NOT_LITERAL or value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value} ms"
    return None
