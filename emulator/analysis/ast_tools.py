"""Reading Python source as a syntax tree, shared by ``dynwf check``, the lint and the outline,
so that they never disagree about what a call's argument is, what counts as a literal, or which
names a module binds. Tenant code is untrusted and may not even import: nothing here runs it.
"""

from __future__ import annotations

import ast
from typing import Any

from emulator.config.model import Diagnostic, Severity

__all__ = ["NOT_LITERAL", "at", "call_argument", "dotted_name", "literal_value", "module_bindings",
           "syntax_error", "top_level_classes"]


# ---- diagnostics located in the source ----------------------------------------------------------

def syntax_error(exc: SyntaxError, file: str, *, code: str) -> Diagnostic:
    """A SyntaxError as a located diagnostic (``offset`` is already 1-based)."""
    return Diagnostic(code, "error", f"invalid Python: {exc.msg}", file,
                      exc.lineno or 1, exc.offset or 1,
                      hint="fix the syntax at this line and column (nothing in the module runs "
                           "until it parses)")


def at(node: ast.AST, code: str, severity: Severity, message: str, file: str,
       hint: str | None = None) -> Diagnostic:
    """A diagnostic located at ``node`` (ast columns are 0-based, ours 1-based)."""
    return Diagnostic(code, severity, message, file,
                      getattr(node, "lineno", 1), getattr(node, "col_offset", 0) + 1, hint)


# ---- expressions --------------------------------------------------------------------------------

def dotted_name(node: ast.AST) -> str | None:
    """``a.b.c`` for a chain of attribute reads on a name; None for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = dotted_name(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


def call_argument(call: ast.Call, index: int, keyword: str | tuple[str, ...]) -> ast.expr | None:
    """The argument ``call`` passes as parameter ``keyword`` (or one of its names), by keyword
    or at position ``index``; None when it is not passed, or hidden behind a ``*args``."""
    names = (keyword,) if isinstance(keyword, str) else keyword
    for kw in call.keywords:
        if kw.arg in names:
            return kw.value
    if len(call.args) > index and not any(isinstance(a, ast.Starred) for a in call.args[:index + 1]):
        return call.args[index]
    return None


#: What :func:`literal_value` returns for an expression that is not a literal (None is one).
NOT_LITERAL: Any = object()


def literal_value(node: ast.expr | None) -> Any:
    """The value of a literal expression, or :data:`NOT_LITERAL`."""
    if node is None:
        return NOT_LITERAL
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return NOT_LITERAL


# ---- module-level names -------------------------------------------------------------------------

def module_bindings(tree: ast.Module) -> tuple[dict[str, ast.AST], bool]:
    """Names a module binds at its top level (each with the statement that binds it), and
    whether it has a ``from m import *`` (then any name may be bound). Names bound inside
    top-level ``if``/``try``/``with`` blocks count, since they run at import."""
    bindings: dict[str, ast.AST] = {}
    star = False
    pending = list(tree.body)
    while pending:
        stmt = pending.pop(0)
        if isinstance(stmt, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            bindings[stmt.name] = stmt
        elif isinstance(stmt, ast.Assign):
            for target in stmt.targets:
                for name in _target_names(target):
                    bindings[name] = stmt
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            for name in _target_names(stmt.target):
                bindings[name] = stmt
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
            for alias in stmt.names:
                if alias.name == "*":
                    star = True
                else:
                    bindings[alias.asname or alias.name.split(".")[0]] = stmt
        elif isinstance(stmt, (ast.If, ast.Try, ast.With, ast.AsyncWith)) or \
                type(stmt).__name__ == "TryStar":
            for field in ("body", "orelse", "finalbody"):
                pending.extend(getattr(stmt, field, []))
            for handler in getattr(stmt, "handlers", []):
                pending.extend(handler.body)
    return bindings, star


def _target_names(target: ast.expr) -> list[str]:
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [name for element in target.elts for name in _target_names(element)]
    if isinstance(target, ast.Starred):
        return _target_names(target.value)
    return []


def top_level_classes(tree: ast.Module) -> dict[str, ast.ClassDef]:
    """The classes a module defines directly in its body, by name."""
    return {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
