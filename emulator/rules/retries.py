"""Step configuration: validation against the platform's rules, defaults, and back-off.

Rules follow the platform's validator (docs/semantics.md §2.3): unknown keys are rejected; ``retries`` needs
both ``limit`` and ``delay``; ``backoff`` is constant, linear or exponential; ``timeout`` must parse
and must not be zero; ``retries.delay`` may also be a function (a dynamic delay, §2.4), called
with parameters named ``ctx`` and ``error`` after each failed attempt. Defaults are the
documented production ones (limit 5, 10 s, exponential, 10 minutes per attempt), not the local
emulator's 1 s delay (docs/semantics.md §9). ``limit`` counts retries, so a step runs at most
``limit + 1`` times.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from emulator.rules.durations import parse_duration
from emulator.rules.limits import MAX_SLEEP_MS
from emulator.errors import DurationError, StepConfigError

BACKOFFS = ("constant", "linear", "exponential")
MAX_RETRIES = 10_000
DEFAULT_LIMIT = 5
DEFAULT_DELAY_MS = 10_000
DEFAULT_BACKOFF = "exponential"
DEFAULT_TIMEOUT_MS = 10 * 60_000
#: how a resolved config records a dynamic delay (a function is not JSON); never a valid duration
DYNAMIC_DELAY = "function"
#: the parameters a delay function may take, filled by name
DELAY_FUNCTION_PARAMETERS = ("ctx", "error")
_TOP_KEYS = ("retries", "timeout", "sensitive")
_RETRY_KEYS = ("limit", "delay", "backoff")


@dataclass(frozen=True, slots=True)
class StepConfig:
    """A validated step config with defaults applied; what the engine persists and obeys."""

    limit: int = DEFAULT_LIMIT
    delay_ms: int = DEFAULT_DELAY_MS
    backoff: str = DEFAULT_BACKOFF
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    sensitive: str | None = None
    #: the delay is a function's, resolved after each failed attempt (``delay_ms`` is then the
    #: fallback for an attempt lost with its engine or isolate, before the function could run)
    dynamic_delay: bool = False

    def delay_before_retry(self, failed_attempt: int, base_ms: int | None = None) -> int:
        """Milliseconds to wait after attempt ``failed_attempt`` (1-indexed) failed (docs/semantics.md §2.4),
        at most the longest wait the platform permits (365 days): an exponential back-off passes
        that by its 40th retry at a 10-second delay, and its timer must stay within reach.
        ``base_ms`` is what a delay function returned for this attempt; the back-off applies to
        it as to a fixed delay."""
        base = self.delay_ms if base_ms is None else base_ms
        if self.backoff == "constant":
            delay = base
        elif self.backoff == "linear":
            delay = base * failed_attempt
        else:
            delay = base * 2 ** min(failed_attempt - 1, 64)
        return min(delay, MAX_SLEEP_MS)

    def will_retry(self, failed_attempt: int) -> bool:
        return failed_attempt <= self.limit

    def retry_delay(self, failed_attempt: int, *, retryable: bool = True,
                    base_ms: int | None = None) -> int | None:
        """What follows the failure of attempt ``failed_attempt`` (1-indexed): the milliseconds
        before the next attempt, or None when the step has failed for good, because the error is
        not retryable (``NonRetryableError``) or the config allows no more retries."""
        if not retryable or not self.will_retry(failed_attempt):
            return None
        return self.delay_before_retry(failed_attempt, base_ms)

    @property
    def json(self) -> str:
        return _config_json(self)

    def to_dict(self) -> dict[str, Any]:
        """The resolved config in the platform's shape, as a step's ``ctx["config"]`` shows it."""
        delay = DYNAMIC_DELAY if self.dynamic_delay else self.delay_ms
        data: dict[str, Any] = {
            "retries": {"limit": self.limit, "delay": delay, "backoff": self.backoff},
            "timeout": self.timeout_ms,
        }
        if self.sensitive:
            data["sensitive"] = self.sensitive
        return data

    def ctx_dict(self) -> dict[str, Any]:
        """The config as a step body's ``ctx["config"]`` shows it: a dynamic delay is left out
        (the platform omits it; a function has no value to show)."""
        data = self.to_dict()
        if self.dynamic_delay:
            del data["retries"]["delay"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "StepConfig":
        """Inverse of :meth:`to_dict` for configs that were validated before they were stored."""
        retries = data["retries"]
        dynamic = retries["delay"] == DYNAMIC_DELAY
        return cls(retries["limit"], DEFAULT_DELAY_MS if dynamic else retries["delay"],
                   retries["backoff"], data["timeout"], data.get("sensitive"), dynamic)


@lru_cache(maxsize=256)
def _config_json(config: StepConfig) -> str:
    return json.dumps(config.to_dict())


@lru_cache(maxsize=256)
def config_from_json(text: str) -> StepConfig:
    """A stored (already validated) config; cached because every attempt of a step carries it."""
    return StepConfig.from_dict(json.loads(text))


DEFAULT_STEP_CONFIG = StepConfig()


@lru_cache(maxsize=256)
def config_from_wire(text: str) -> StepConfig:
    """A config as a step client sends it (the JSON of :attr:`StepConfig.json`), checked: valid by
    the platform's rules and in exactly that form. Raises StepConfigError."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise StepConfigError("a step config is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("retries"), dict) \
            or "timeout" not in data:
        raise StepConfigError("a step config must hold resolved 'retries' and 'timeout'")
    dynamic = data["retries"].get("delay") == DYNAMIC_DELAY
    if dynamic:   # checked as the function it stands for: the rest must hold all the same
        data = {**data, "retries": {**data["retries"], "delay": _delay_function}}
    problems = step_config_problems(data)
    if problems:
        raise StepConfigError("a step config is invalid: " + "; ".join(problems))
    config = resolve_step_config(data, "")
    if dynamic:
        data = {**data, "retries": {**data["retries"], "delay": DYNAMIC_DELAY}}
    if config.to_dict() != data:
        raise StepConfigError("a step config is not in its resolved form (whole milliseconds, "
                              "every retry field given)")
    return config


def step_config_problems(config: object) -> list[str]:
    """Every reason ``config`` is not a valid step config (empty when it is). Pure, for ``check``."""
    if config is None:
        return []
    if not isinstance(config, dict):
        return [f"config must be a dict, not {type(config).__name__}"]
    problems = [f"unknown key '{key}' (allowed: {', '.join(_TOP_KEYS)})"
                for key in config if key not in _TOP_KEYS]
    if "retries" in config:
        problems += _retries_problems(config["retries"])
    if "timeout" in config:
        timeout = config["timeout"]
        try:
            if parse_duration(timeout, what="timeout") == 0:
                problems.append("timeout must not be 0")
        except DurationError as exc:
            problems.append(exc.message + (f" ({exc.hint})" if exc.hint else ""))
    if "sensitive" in config and config["sensitive"] != "output":
        problems.append("sensitive may only be 'output'")
    return problems


def _retries_problems(retries: object) -> list[str]:
    if not isinstance(retries, dict):
        return [f"retries must be a dict, not {type(retries).__name__}"]
    problems = [f"unknown key 'retries.{key}' (allowed: {', '.join(_RETRY_KEYS)})"
                for key in retries if key not in _RETRY_KEYS]
    missing = [key for key in ("limit", "delay") if key not in retries]
    if missing:
        problems.append("retries needs both 'limit' and 'delay' (missing: " + ", ".join(missing) + ")")
    if "limit" in retries:
        limit = retries["limit"]
        if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= MAX_RETRIES:
            problems.append(f"retries.limit must be a whole number from 0 to {MAX_RETRIES}, not {limit!r}")
    if "delay" in retries and callable(retries["delay"]):
        problems += delay_function_problems(retries["delay"])
    elif "delay" in retries:
        try:
            parse_duration(retries["delay"], what="retries.delay")
        except DurationError as exc:
            problems.append(exc.message + (f" ({exc.hint})" if exc.hint else ""))
    if "backoff" in retries and retries["backoff"] not in BACKOFFS:
        problems.append(f"retries.backoff must be one of {', '.join(BACKOFFS)}, not {retries['backoff']!r}")
    return problems


_ROLLBACK_KEYS = ("retries", "timeout")


def resolve_rollback_config(config: object, step_name: str) -> StepConfig:
    """A rollback handler's config: only ``retries`` and ``timeout`` (the platform's
    ``Pick<WorkflowStepConfig, 'retries' | 'timeout'>``), merged over the step defaults."""
    if isinstance(config, dict):
        unknown = [key for key in config if key not in _ROLLBACK_KEYS]
        if unknown:
            raise StepConfigError(
                f"Rollback config for \"{step_name}\" is invalid: "
                + "; ".join(f"unknown key '{key}' (allowed: {', '.join(_ROLLBACK_KEYS)})"
                            for key in unknown),
                hint="see https://developers.cloudflare.com/workflows/build/sleeping-and-retrying/")
    try:
        return resolve_step_config(config, step_name)
    except StepConfigError as exc:
        raise StepConfigError(exc.message.replace("Step config", "Rollback config", 1),
                              hint=exc.hint) from None


def resolve_step_config(config: object, step_name: str) -> StepConfig:
    """Validate ``config`` and merge it over the defaults; StepConfigError names the step."""
    problems = step_config_problems(config)
    if problems:
        raise StepConfigError(f"Step config for \"{step_name}\" is invalid: " + "; ".join(problems),
                              hint="see https://developers.cloudflare.com/workflows/build/sleeping-and-retrying/")
    if not config:
        return DEFAULT_STEP_CONFIG
    assert isinstance(config, dict)
    retries = config.get("retries") or {}
    dynamic = callable(retries.get("delay"))
    return StepConfig(
        limit=retries.get("limit", DEFAULT_LIMIT),
        delay_ms=parse_duration(retries["delay"]) if "delay" in retries and not dynamic
        else DEFAULT_DELAY_MS,
        backoff=retries.get("backoff", DEFAULT_BACKOFF),
        timeout_ms=parse_duration(config["timeout"]) if "timeout" in config else DEFAULT_TIMEOUT_MS,
        sensitive=config.get("sensitive"),
        dynamic_delay=dynamic,
    )


def delay_function_problems(function: Any) -> list[str]:
    """Why ``function`` cannot be a delay function: it is called with keyword arguments ``ctx``
    and ``error``, taking those it names (or ``**kwargs``); any other parameter must have a default."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return []   # a builtin without a readable signature: judged when it is called
    wrong = [p.name for p in parameters
             if p.kind in (p.POSITIONAL_ONLY, p.VAR_POSITIONAL)
             or (p.kind is not p.VAR_KEYWORD and p.name not in DELAY_FUNCTION_PARAMETERS
                 and p.default is p.empty)]
    if wrong:
        return [f"retries.delay function has parameter(s) {', '.join(wrong)}: a delay function "
                "takes keyword parameters named ctx and error (either or both), e.g. "
                "def delay(ctx, error): return \"10 seconds\""]
    return []


def delay_function_arguments(function: Any, ctx: dict[str, Any], error: BaseException) -> dict[str, Any]:
    """The keyword arguments to call ``function`` with: ``ctx`` and ``error``, those it takes."""
    given = {"ctx": ctx, "error": error}
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return given
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return given
    return {name: value for name, value in given.items() if name in parameters}


def _delay_function(ctx: Any = None, error: Any = None) -> None:
    """Stands in for a delay function when a resolved config is checked."""
