"""Step mocks: attempt outcomes a test decides in advance, consulted by the step client.

The half of the test modifiers (``emulator/engine/modifiers.py``) that runs where step bodies
run: for a dynamic workflow that is the tenant's isolate, so the mocks travel there inside the
step handle's init dict, and a mocked step's body never runs in the isolate. Semantics are the
platform's local engine's: a selector ``{"name", "index"}`` picks the ``index``-th occurrence of a
name (1-based); an error or timeout without ``times`` applies to every attempt, with ``times`` to
that many consecutive attempts; per attempt an error wins over a timeout, a timeout over a result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable, Mapping

from emulator.error_codes import Code
from emulator.errors import DynwfError
from emulator.sdk.failures import rebuild
from emulator.rules.steps import StepKey
from emulator.rules.values import decode_json

Selector = tuple[str, int]            # (name, index)
PREFIX = "[WorkflowIntrospector]"


class ModifierError(DynwfError):
    """The test API used in a way the platform refuses (or, raised by the test helpers, a wait
    that cannot succeed). ``str()`` is the platform's exact text, so a test written against the
    JS API matches the same words."""

    code = Code.MODIFIER_MISUSE

    def __str__(self) -> str:
        return self.message


def selector(step: Any, *, what: str = "step") -> Selector:
    """``(name, index)`` of a step selector: ``{"name": ..., "index": 1}`` or a bare name."""
    if isinstance(step, str):
        name, index = step, 1
    elif isinstance(step, Mapping) and set(step) <= {"name", "index"} and "name" in step:
        name, index = step["name"], step.get("index", 1)
        index = 1 if index is None else index
    else:
        raise ModifierError(f"{PREFIX} A {what} selector is {{'name': <step name>, 'index': 1}} "
                            f"(or the name alone), not {step!r}")
    if not isinstance(name, str) or not name:
        raise ModifierError(f"{PREFIX} A {what} selector needs a non-empty 'name', got {name!r}")
    if not isinstance(index, int) or isinstance(index, bool) or index < 1:
        raise ModifierError(f"{PREFIX} The 'index' of {what} '{name}' counts occurrences from 1, "
                            f"got {index!r}")
    return name, index


def check_times(times: Any, name: str) -> int | None:
    """A mock's ``times``: a positive number of attempts, or None for every attempt."""
    if times is None:
        return None
    if not isinstance(times, int) or isinstance(times, bool) or times < 1:
        raise ModifierError(f"{PREFIX} 'times' for step '{name}' must be a positive number of "
                            f"attempts, or None for every attempt; got {times!r}")
    return times


@dataclass
class _StepMock:
    result: str | None = None                   # JSON of the mocked result
    has_result: bool = False
    error: dict[str, str] | None = None         # every attempt
    errors: dict[int, dict[str, str]] = field(default_factory=dict)   # attempt -> error
    timeout: bool = False                       # every attempt
    timeouts: set[int] = field(default_factory=set)
    next_attempt: int = 1                       # first attempt no ``times`` call has claimed

    def to_wire(self) -> dict[str, Any]:
        return {"result": self.result, "has_result": self.has_result, "error": self.error,
                "errors": [[a, e] for a, e in sorted(self.errors.items())],
                "timeout": self.timeout, "timeouts": sorted(self.timeouts),
                "next_attempt": self.next_attempt}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> "_StepMock":
        return cls(data.get("result"), bool(data.get("has_result")), data.get("error"),
                   {int(a): dict(e) for a, e in data.get("errors", [])}, bool(data.get("timeout")),
                   {int(a) for a in data.get("timeouts", [])}, int(data.get("next_attempt", 1)))

    def copy(self) -> "_StepMock":
        return _StepMock.from_wire(self.to_wire())


class StepMocks:
    """Attempt outcomes decided in advance for ``step.do`` steps of one instance."""

    def __init__(self) -> None:
        self._steps: dict[Selector, _StepMock] = {}

    def __bool__(self) -> bool:
        return bool(self._steps)

    def get(self, step: Selector) -> _StepMock:
        return self._steps.setdefault(step, _StepMock())

    def outcome(self, name: str, index: int, attempt: int) -> tuple[str, Any] | None:
        """``("error", {"name", "message"})``, ``("timeout", None)``, ``("result", value)``, or
        None when the attempt runs the step's body."""
        mock = self._steps.get((name, index))
        if mock is None:
            return None
        error = mock.error or mock.errors.get(attempt)
        if error is not None:
            return "error", error
        if mock.timeout or attempt in mock.timeouts:
            return "timeout", None
        if mock.has_result:
            return "result", decode_json(mock.result) if mock.result is not None else None
        return None

    async def run(self, key: StepKey, attempt: int, body: Callable[[Any], Awaitable[Any]],
                  ctx: Any) -> Any:
        """The value of one attempt: its mocked outcome, or what the body returns."""
        outcome = self.outcome(key[1], key[2], attempt)
        if outcome is None:
            return await body(ctx)
        kind, value = outcome
        if kind == "error":
            raise rebuild(value)
        if kind == "timeout":
            raise TimeoutError()  # the client reports it as the attempt's own timeout would be
        return value

    def to_wire(self) -> list[Any]:
        return [[name, index, mock.to_wire()] for (name, index), mock in self._steps.items()]

    @classmethod
    def from_wire(cls, data: Iterable[Any] | None) -> "StepMocks | None":
        mocks = cls()
        for name, index, mock in data or []:
            mocks._steps[(str(name), int(index))] = _StepMock.from_wire(mock)
        return mocks or None

    def copy(self) -> "StepMocks":
        mocks = StepMocks()
        mocks._steps = {k: m.copy() for k, m in self._steps.items()}
        return mocks
