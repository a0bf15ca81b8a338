"""Step-level lint of workflow code, read from its syntax tree and never run.

``dynwf check`` runs in CI on code that is untrusted and may not even import, so every rule here
works on ``ast`` alone. The rules catch what the platform would only reject at run time, or
what silently breaks replay: ``run()`` replays from the top after every sleep, wait and crash,
and completed steps are found again by name, so names must be stable and anything outside a
step must compute the same values on every replay.

The step handle is recognised by name: ``step`` or the third parameter of any ``run`` method.
Values are judged only when they are literals; an expression is never guessed at.

====== ======== =============================================================================
code   severity what
====== ======== =============================================================================
DW200  error    a tenant module is not valid Python (line and column of the syntax error)
DW301  warning  a step name is not a literal string (``step.do(name)``, ``step.sleep(f"...")``)
DW302  warning  two steps of one kind with the same literal name in one statement list
DW303  error    a duration that does not parse: ``step.sleep`` duration, ``wait_for_event``
                ``timeout``, step config ``timeout`` and ``retries.delay``
DW304  warning  a bare number as one of those durations: the runtime reads milliseconds,
                Cloudflare's Python docs say seconds
DW305  error    a literal step ``config`` the platform rejects (unknown keys, ``retries``
                without ``limit`` and ``delay``, ``timeout`` of 0, bad ``backoff``)
DW306  error    a literal event type that is not 1-100 characters of ``[a-zA-Z0-9-_]``
DW307  error    a literal instance id in ``create``/``create_batch`` that is not a valid id
DW308  warning  a non-deterministic call (``random.*``, ``time.time``, ``datetime.now``,
                ``uuid.uuid4``, ``fetch`` ...) in ``run()`` outside a step body
DW309  error    a literal step name that is empty, over 256 characters or has control characters
====== ======== =============================================================================
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from typing import Any

from emulator.analysis.ast_tools import (NOT_LITERAL, at, call_argument, dotted_name, literal_value,
                                         syntax_error)
from emulator.config.model import Diagnostic
from emulator.rules.durations import parse_duration
from emulator.rules.limits import MAX_ID_LENGTH, check_event_type, check_step_name, is_valid_id
from emulator.rules.retries import step_config_problems
from emulator.errors import DurationError, ValidationError

__all__ = ["STEP_METHODS", "import_aliases", "is_step_body", "lint_module", "lint_tenant_source",
           "step_handle_names", "step_method"]

STEP_METHODS = ("do", "sleep", "sleep_until", "wait_for_event")
# Steps of different kinds never share a cache key, so only same-kind names can collide.
_KIND = {"do": "step.do", "sleep": "step.sleep", "sleep_until": "step.sleep",
         "wait_for_event": "step.wait_for_event"}
_DOCS_RETRIES = "see https://developers.cloudflare.com/workflows/build/sleeping-and-retrying/"

_NONDETERMINISTIC = frozenset({
    "time.time", "time.time_ns", "datetime.now", "datetime.utcnow", "datetime.datetime.now",
    "datetime.datetime.utcnow", "datetime.date.today", "uuid.uuid1", "uuid.uuid4", "uuid4",
    "os.urandom",
    "workers.fetch",    # the network: sent again on every replay, and its answer may change
})
_NONDETERMINISTIC_MODULES = ("random.", "secrets.")
_SEEDABLE = frozenset({"random.Random", "random.seed"})   # deterministic when given a seed


def lint_tenant_source(source: str, file: str) -> list[Diagnostic]:
    """Every step-level finding in one module's ``source``; ``file`` is how it is shown."""
    try:
        tree = ast.parse(source, filename=file)
    except SyntaxError as exc:
        return [syntax_error(exc, file, code="DW200")]
    return lint_module(tree, file)


def lint_module(tree: ast.Module, file: str) -> list[Diagnostic]:
    """The DW3xx rules over an already parsed module (the dispatcher is linted this way too)."""
    handles = step_handle_names(tree)
    findings: list[Diagnostic] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            method = step_method(node, handles)
            if method is not None:
                findings += _check_step_call(node, method, file)
            findings += _check_instance_ids(node, file)
        for block in _statement_lists(node):
            findings += _check_duplicate_names(block, handles, file)
    aliases = import_aliases(tree)
    for run in _run_methods(tree):
        findings += _check_replay_safety(run, handles, aliases, file)
    return findings


def import_aliases(tree: ast.Module) -> dict[str, str]:
    """Local name -> what it was imported as: ``import datetime as dt`` gives ``dt -> datetime``."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    aliases[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    aliases[top] = top
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                if alias.name != "*":
                    aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return aliases


def step_handle_names(tree: ast.Module) -> set[str]:
    """``step`` plus the third parameter name of every ``run`` method in the module."""
    names = {"step"}
    for run in _run_methods(tree):
        names.add((run.args.posonlyargs + run.args.args)[2].arg)
    return names


def step_method(call: ast.Call, handles: set[str]) -> str | None:
    """``"do"``, ``"sleep"``... when ``call`` is ``<handle>.<method>(...)``, else None."""
    func = call.func
    if isinstance(func, ast.Attribute) and func.attr in STEP_METHODS \
            and isinstance(func.value, ast.Name) and func.value.id in handles:
        return func.attr
    return None


# --- one step call -------------------------------------------------------------------------

def _check_step_call(call: ast.Call, method: str, file: str) -> list[Diagnostic]:
    findings = _check_step_name(call, method, file)
    if method == "sleep":
        findings += _check_duration(call_argument(call, 1, "duration"), "step.sleep() duration", file)
    elif method == "wait_for_event":
        findings += _check_event_type(call_argument(call, 1, ("event_type", "type")), file)
        findings += _check_duration(call_argument(call, 2, "timeout"), "wait_for_event() timeout", file)
    elif method == "do":
        config = next((kw.value for kw in call.keywords if kw.arg == "config"), None)
        if config is not None:
            findings += _check_step_config(config, _literal_name(call), file)
        rollback = next((kw.value for kw in call.keywords if kw.arg == "rollback_config"), None)
        if rollback is not None:
            findings += _check_step_config(rollback, _literal_name(call), file, rollback=True)
    return findings


def _literal_name(call: ast.Call) -> str | None:
    name = literal_value(call_argument(call, 0, "name"))
    return name if isinstance(name, str) else None


def _check_step_name(call: ast.Call, method: str, file: str) -> list[Diagnostic]:
    node = call_argument(call, 0, "name")
    if node is None:
        return []  # step.do() takes the function's name, which is literal
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        try:
            check_step_name(node.value)
        except ValidationError as exc:
            return [at(node, "DW309", "error", exc.message, file,
                       hint=exc.hint or "name steps with 1-256 printable characters")]
        return []
    if isinstance(node, ast.Constant) and node.value is None and method == "do":
        return []
    return [at(node, "DW301", "warning",
               f"the name passed to step.{method}() is not a literal string; step names are the "
               "cache keys that replay finds completed steps by", file,
               hint="use a literal name, or be sure the expression is the same on every replay")]


def _check_duration(node: ast.expr | None, what: str, file: str) -> list[Diagnostic]:
    value = literal_value(node)
    if value is NOT_LITERAL or node is None:
        return []
    try:
        parse_duration(value, what=what)
    except DurationError as exc:
        return [at(node, "DW303", "error", exc.message, file, exc.hint)]
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value != 0:
        return [at(node, "DW304", "warning",
                   f"{what} is the bare number {value!r}: the runtime reads it as {value!r} "
                   "milliseconds, while Cloudflare's Python docs say seconds", file,
                   hint=f"write the unit: '{value} seconds' or '{value} ms'")]
    return []


def _check_event_type(node: ast.expr | None, file: str) -> list[Diagnostic]:
    value = literal_value(node)
    if node is None or not isinstance(value, str):
        return []
    try:
        check_event_type(value)
    except ValidationError as exc:
        return [at(node, "DW306", "error", exc.message, file,
                   hint=exc.hint or "event types are 1-100 characters of [a-zA-Z0-9-_], "
                                    "e.g. 'deploy-approval'")]
    return []


def _check_step_config(node: ast.expr, step_name: str | None, file: str, *,
                       rollback: bool = False) -> list[Diagnostic]:
    """Durations inside the dict are judged one by one (DW303/DW304, at their own line); the
    rest of the config only when all of it is literal (DW305), with bad durations set aside so
    that one mistake is reported once. A ``rollback_config`` takes only retries and timeout
    (docs/semantics.md §2.12)."""
    findings: list[Diagnostic] = []
    timeout, retries = _dict_item(node, "timeout"), _dict_item(node, "retries")
    delay = _dict_item(retries, "delay") if retries is not None else None
    findings += _check_duration(timeout, "step config timeout", file)
    findings += _check_duration(delay, "step config retries.delay", file)
    config = literal_value(_with_delay_function_set_aside(node, retries, delay))
    if config is NOT_LITERAL:
        return findings
    what = "rollback config" if rollback else "step config"
    label = f'{what} for "{step_name}"' if step_name else what
    problems = step_config_problems(_without_bad_durations(config))
    if rollback and isinstance(config, dict):
        problems = [f"unknown key '{key}' (allowed: retries, timeout)"
                    for key in config if key not in ("retries", "timeout")] + \
            [p for p in problems if not p.startswith("unknown key 'sensitive'")
             and "sensitive may only" not in p]
    for problem in problems:
        findings.append(at(node, "DW305", "error", f"{label} is invalid: {problem}", file,
                           hint=_DOCS_RETRIES))
    return findings


def _with_delay_function_set_aside(node: ast.expr, retries: ast.expr | None,
                                   delay: ast.expr | None) -> ast.expr:
    """``node`` with a delay given as a function (a lambda or a name, §2.4) replaced by a valid
    duration, so that the rest of a config holding one is still judged."""
    if not isinstance(delay, (ast.Lambda, ast.Name, ast.Attribute)) \
            or not isinstance(node, ast.Dict) or not isinstance(retries, ast.Dict):
        return node
    inner = ast.Dict(keys=list(retries.keys),
                     values=[ast.Constant(0) if v is delay else v for v in retries.values])
    return ast.Dict(keys=list(node.keys),
                    values=[inner if v is retries else v for v in node.values])


def _dict_item(node: ast.expr | None, key: str) -> ast.expr | None:
    if isinstance(node, ast.Dict):
        for k, v in zip(node.keys, node.values):
            if isinstance(k, ast.Constant) and k.value == key:
                return v
    return None


def _without_bad_durations(config: Any) -> Any:
    if not isinstance(config, dict):
        return config
    config = dict(config)
    if "timeout" in config and not _parses(config["timeout"]):
        config["timeout"] = "1 second"
    retries = config.get("retries")
    if isinstance(retries, dict) and "delay" in retries and not _parses(retries["delay"]):
        config["retries"] = {**retries, "delay": 0}
    return config


def _parses(value: object) -> bool:
    try:
        parse_duration(value)
    except DurationError:
        return False
    return True


def _check_instance_ids(call: ast.Call, file: str) -> list[Diagnostic]:
    """Literal ids in ``<BINDING>.create({"id": ...})`` and ``create_batch([{...}, ...])``."""
    func = call.func
    if not (isinstance(func, ast.Attribute) and func.attr in ("create", "create_batch")):
        return []
    receiver = dotted_name(func.value)
    binding = receiver.rsplit(".", 1)[-1] if receiver else ""
    if not (binding[:1].isalpha() and binding.isupper()):
        return []  # only workflow bindings, which are named in capitals (env.WORKFLOWS)
    options = call_argument(call, 0, "options" if func.attr == "create" else "batch")
    items = [options] if func.attr == "create" else \
        list(options.elts) if isinstance(options, (ast.List, ast.Tuple)) else []
    findings = []
    for item in items:
        id_node = _dict_item(item, "id")
        value = literal_value(id_node)
        if id_node is None or not isinstance(value, str) or is_valid_id(value):
            continue
        shown = value if len(value) <= 40 else f"{value[:37]}... ({len(value)} characters)"
        findings.append(at(id_node, "DW307", "error",
                           f"instance id {shown!r} is invalid: ids are 1-{MAX_ID_LENGTH} characters "
                           "matching ^[a-zA-Z0-9_][a-zA-Z0-9-_]*$", file,
                           hint="leave the id out to get a generated one, or build it from "
                                "letters, digits, - and _"))
    return findings


# --- duplicate names -------------------------------------------------------------------------

def _statement_lists(node: ast.AST) -> Iterator[list[ast.stmt]]:
    for field in ("body", "orelse", "finalbody"):
        block = getattr(node, field, None)
        if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
            yield block


def _check_duplicate_names(block: list[ast.stmt], handles: set[str], file: str) -> list[Diagnostic]:
    """Same-kind steps with one literal name in one statement list: the second declaration
    replaces the first for dependency injection, and the two are told apart only by call order.
    Different branches of an ``if`` are different lists, so they never collide here."""
    seen: dict[tuple[str, str], ast.AST] = {}
    findings = []
    for stmt in block:
        step = _direct_step(stmt, handles)
        if step is None:
            continue
        kind, name, node = step
        first = seen.setdefault((kind, name), node)
        if first is not node:
            findings.append(at(node, "DW302", "warning",
                               f'step name "{name}" is used by another {kind} in the same block '
                               f"(line {first.lineno})", file,
                               hint="give each step its own name"))
    return findings


def _direct_step(stmt: ast.stmt, handles: set[str]) -> tuple[str, str, ast.AST] | None:
    """(kind, literal name, node) of the step a statement declares or awaits directly."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
        for decorator in stmt.decorator_list:
            if isinstance(decorator, ast.Call) and step_method(decorator, handles) == "do":
                node = call_argument(decorator, 0, "name")
                if node is None or (isinstance(node, ast.Constant) and node.value is None):
                    return "step.do", stmt.name, decorator
                name = literal_value(node)
                return ("step.do", name, decorator) if isinstance(name, str) else None
        return None
    value = getattr(stmt, "value", None)
    if isinstance(value, ast.Await):
        value = value.value
    if isinstance(value, ast.Call):
        method = step_method(value, handles)
        name = _literal_name(value) if method else None
        if method and name is not None:
            return _KIND[method], name, value
    return None


# --- replay safety -------------------------------------------------------------------------

def _run_methods(tree: ast.Module) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    """Methods shaped like a workflow's ``run(self, event, step)`` (not, say, ``Thread.run``)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) \
                        and item.name == "run" and len(item.args.posonlyargs + item.args.args) >= 3:
                    yield item


def is_step_body(func: ast.AST, handles: set[str]) -> bool:
    """Whether ``func`` is decorated with ``@step.do(...)``: its result is persisted."""
    if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return False
    for decorator in func.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if isinstance(target, ast.Attribute) and target.attr == "do" \
                and isinstance(target.value, ast.Name) and target.value.id in handles:
            return True
    return False


def _check_replay_safety(run: ast.FunctionDef | ast.AsyncFunctionDef, handles: set[str],
                         aliases: dict[str, str], file: str) -> list[Diagnostic]:
    findings = []
    pending: list[ast.AST] = list(run.body)
    while pending:
        node = pending.pop()
        if is_step_body(node, handles):
            # The decorator's arguments are evaluated in run() itself; the body is not.
            pending.extend(node.decorator_list)  # type: ignore[attr-defined]
            continue
        pending.extend(ast.iter_child_nodes(node))
        if isinstance(node, ast.Call):
            name = _nondeterministic(node, aliases)
            if name:
                findings.append(at(node, "DW308", "warning",
                                   f"{name}() is called in run() outside a step: run() replays from "
                                   "the top after every sleep, wait and restart, so it gives a "
                                   "different value each time", file,
                                   hint="call it inside a @step.do function, whose result "
                                        "is persisted"))
    return findings


def _nondeterministic(call: ast.Call, aliases: dict[str, str]) -> str | None:
    written = dotted_name(call.func)
    if written is None:
        return None
    head, _, rest = written.partition(".")
    resolved = aliases.get(head, head) + (f".{rest}" if rest else "")
    if resolved in _SEEDABLE and (call.args or call.keywords):
        return None
    if resolved in _NONDETERMINISTIC or resolved.startswith(_NONDETERMINISTIC_MODULES):
        return written
    return None
