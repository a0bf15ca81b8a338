"""The ``step`` object across the isolate boundary.

When the dispatcher forwards ``step`` to a tenant's ``run(event, step)``, the engine's side is sent
by reference as a :class:`StepBackendTarget` (the only engine methods an isolate may call, all
scoped to that one instance) together with the step cache; the isolate builds its own
``WorkflowStep`` over a :class:`RemoteStepBackend`, so replays are answered without a round trip
and each new step costs one. A ``fetch`` inside a step body goes through the same handle, so the
host logs the request under this instance and step; the policy it is sent under is that of the
isolate making the call, never anything the call carries.
"""

from __future__ import annotations

import json
import re
from typing import Any, Awaitable, Callable

from emulator.sdk.client import CachedStep, StepClient, StepKey, show_step
from emulator.rules.limits import (MAX_CODE_VERSION_CHARS, MAX_CONFIG_JSON_BYTES,
                                    MAX_ERROR_MESSAGE_CHARS, MAX_ERROR_NAME_CHARS,
                                    MAX_LOG_LINE_CHARS, MAX_PAYLOAD_BYTES, MAX_SLEEP_MS,
                                    MAX_WAIT_OCCURRENCES, MIN_EVENT_TIMEOUT_MS, check_event_type,
                                    check_step_name, step_output_too_large, utf8_size)
from emulator.rules.logs import LogLevel
from emulator.rules.steps import StepKind, StepStatus
from emulator.sdk.mocks import StepMocks
from emulator.rules.retries import DEFAULT_STEP_CONFIG, StepConfig, config_from_wire
from emulator.sdk.step import WorkflowStep
from emulator.errors import DurationError, NotSerialisableError, StepCallError, StepConfigError
from emulator.rpc.errors import ProtocolViolation
from emulator.rpc.target import RpcTarget
from emulator.tracebacks import traceback_fault

STEP_KIND = "step"


KINDS = tuple(StepKind)
#: The kinds whose attempts an isolate begins and settles: a do step's body, a rollback handler.
ATTEMPTED = (StepKind.DO, StepKind.ROLLBACK)
_CODE_VERSION = re.compile(r"[0-9A-Za-z._:-]{1,%d}" % MAX_CODE_VERSION_CHARS)


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


_RESULT_JSON = json.JSONDecoder(parse_constant=_not_json)


def _key(data: Any) -> StepKey:
    """A step key as the isolate's own step client reads it from the host (trusted)."""
    kind, name, count = data
    if kind not in KINDS or not isinstance(name, str) or not isinstance(count, int):
        raise ValueError(f"invalid step key {data!r}")
    return (kind, name, count)


class StepBackendTarget(RpcTarget):
    """What an isolate may ask of the engine about the one instance it is running.

    Every argument is checked here, in the host, before the engine sees it: the engine's
    :class:`~emulator.engine.lifetime.Lifetime` trusts its arguments, and the isolate's step
    client, which checks the same rules first, may have been switched off. The step client sends
    each argument with one type, so a wrong type (or count of arguments) is a
    :class:`~emulator.rpc.errors.ProtocolViolation` and the isolate is killed. A value of the
    right type that the platform refuses raises the platform's coded error back to the caller and
    nothing is stored: a step name or event type that is not valid, a count past the step limit,
    an attempt number the step's retry config does not allow, a config that is not one, a result
    over 1 MiB or not JSON, an error whose name, message or traceback is too long, a sleep or
    timeout outside 0-365 days (a sleep's end, on the engine's clock), a log level outside :class:`LogLevel`.
    """

    __rpc_strict__ = True   # only the runtime calls it: a call that does not bind is a violation

    def __init__(self, client: StepClient) -> None:
        self._client = client
        self._backend = client.backend
        self._keys: set[StepKey] = set()             # step keys already checked
        self._config_text: str | None = None         # the last config checked, and its value
        self._config_checked = DEFAULT_STEP_CONFIG

    def __rpc_describe__(self) -> tuple[str, dict[str, Any]]:
        cache = [[list(key), step.to_wire()] for key, step in self._client.cache.items()]
        init = {"instance": self._client.instance_id, "cache": cache,
                "limit": self._client.step_limit, "code_version": self._client.code_version}
        if self._client.mocks:  # test modifiers: decided here, so a mocked body never runs there
            init["mocks"] = self._client.mocks.to_wire()
        phase = getattr(self._backend, "rollback_phase", None)
        if phase is not None:   # a replay in rollback mode (sdk/rollbacks.py)
            init["rollback"] = {"trigger": phase.get("trigger")}
        if self._client.replay_only:  # a replay check: the isolate's client runs no body
            init["replay"] = True
        return STEP_KIND, init

    # ---- what an isolate may call ------------------------------------------------------------

    def record_code_version(self, version: str) -> None:
        """The isolate names the code it runs; kept for the instance if it is its first run."""
        _typed(version, str, "a code version")
        if not _CODE_VERSION.fullmatch(version):
            raise StepCallError(f"code version {_shown(version)} is not 1-{MAX_CODE_VERSION_CHARS} "
                                "letters, digits and ._:-")
        self._backend.record_code_version(version)

    def begin(self, key: Any, attempt: int, config_json: str,
              rollback_json: str | None = None) -> None:
        key = self._step_key(key, ATTEMPTED)
        config = self._config(config_json)
        self._check_attempt(attempt, config)
        self._check_rollback(key, config, rollback_json)
        if rollback_json is None:
            self._backend.begin(key, attempt, config.json)
        else:
            self._backend.begin(key, attempt, config.json, rollback_json)

    def settle(self, key: Any, attempt: int, config_json: str, result: str | None,
               error: dict[str, str] | None, retryable: bool,
               delay_ms: int | None = None) -> Awaitable[dict[str, Any]]:
        key = self._step_key(key, ATTEMPTED)
        config = self._config(config_json)
        self._check_attempt(attempt, config)
        self._check_rollback(key, config, None)
        if type(retryable) is not bool:
            _typed(retryable, bool, "retryable")
        if delay_ms is not None:
            self._check_delay(key, delay_ms, config, error, retryable)
        if result is not None and error is None:
            self._check_result(key, result)
        elif error is not None and result is None:
            self._check_error(error)
        else:
            raise ProtocolViolation("settle needs either a result or an error")
        return self._backend.settle(key, attempt, config.json, result, error, retryable, delay_ms)

    def end_rollbacks(self) -> Awaitable[None]:
        """The isolate ran the rollback phase; the engine judges its outcome from its own rows."""
        if getattr(self._backend, "rollback_phase", None) is None:
            raise StepCallError("the instance is not in a rollback phase")
        return self._backend.end_rollbacks()

    def await_retry(self, key: Any) -> Awaitable[None]:
        key = self._step_key(key, ATTEMPTED)
        row = self._backend.steps.get(key)
        if row is None or row.status not in (StepStatus.BACKOFF, StepStatus.READY):
            raise StepCallError(f"{show_step(key)} is not waiting to retry")
        return self._backend.await_retry(key)

    def cancelled(self, key: Any, attempt: int) -> None:
        key = self._step_key(key, ATTEMPTED)
        _typed(attempt, int, "an attempt number")
        self._backend.cancelled(key, attempt)

    def sleep(self, key: Any, duration_ms: int | None, due: int | None) -> Awaitable[None]:
        key = self._step_key(key, StepKind.SLEEP)
        if duration_ms is not None:
            _typed(duration_ms, int, "a sleep's duration")
        if due is not None:
            _typed(due, int, "a sleep's end")
        if (duration_ms is None) == (due is None):
            raise ProtocolViolation("sleep needs either a duration or an end time")
        if duration_ms is not None and not 0 <= duration_ms <= MAX_SLEEP_MS:
            raise DurationError(f"{show_step(key)} of {_shown_int(duration_ms)} ms is outside the "
                                f"allowed range of 0 to {MAX_SLEEP_MS:,} ms (365 days)")
        if due is not None:
            now = self._backend.now_ms()
            if due - now > MAX_SLEEP_MS:
                raise DurationError(f"{show_step(key)} until {_shown_int(due)} (epoch ms) ends more "
                                    f"than 365 days after now ({now} on the engine's clock)")
        return self._backend.sleep(key, duration_ms, due)

    def wait_for_event(self, key: Any, event_type: str, timeout_ms: int) -> Awaitable[dict[str, Any]]:
        key = self._step_key(key, StepKind.WAIT)
        _typed(event_type, str, "an event type")
        _typed(timeout_ms, int, "an event wait's timeout")
        check_event_type(event_type)
        if not MIN_EVENT_TIMEOUT_MS <= timeout_ms <= MAX_SLEEP_MS:
            raise DurationError(f"{show_step(key)} timeout of {_shown_int(timeout_ms)} ms is outside "
                                "the allowed range of 1 second to 365 days")
        return self._backend.wait_for_event(key, event_type, timeout_ms)

    def log(self, key: Any, level: str, message: str) -> None:
        step = self._step_key(key, None) if key is not None else None
        _typed(level, str, "a log level")
        _typed(message, str, "a log line")
        self._backend.log(step, LogLevel.parse(level).value, message[:MAX_LOG_LINE_CHARS])

    def history_end(self, key: Any) -> Awaitable[None]:
        """A replay check's client reached a step past the history (only in a replay check:
        a normal run has no such point, and asking is refused)."""
        key = self._step_key(key, None)
        if not self._client.replay_only:
            raise StepCallError("history_end is only part of a replay check")
        return self._backend.history_end(key)

    def replayed(self, key: Any) -> None:
        key = self._step_key(key, None)
        on_replay = self._client.on_replay
        if on_replay is not None:
            on_replay(key)

    # ---- checks ------------------------------------------------------------------------------

    def _check_rollback(self, key: StepKey, config: StepConfig, rollback_json: Any) -> None:
        """A do step's rollback config is a resolved config of retries and timeout only; a
        rollback attempt runs only in a rollback phase, for a do step that registered a handler,
        under the config recorded for that handler."""
        phase = getattr(self._backend, "rollback_phase", None)
        if key[0] == StepKind.DO:
            if phase is not None:
                raise StepCallError(f"{show_step(key)} cannot start during a rollback phase")
            if rollback_json is None:
                return
            _typed(rollback_json, str, "a rollback config")
            if len(rollback_json) > MAX_CONFIG_JSON_BYTES:
                raise StepConfigError(f"a rollback config of {len(rollback_json):,} characters is "
                                      f"over the limit of {MAX_CONFIG_JSON_BYTES:,}")
            if config_from_wire(rollback_json).sensitive is not None:
                raise StepConfigError("a rollback config takes only 'retries' and 'timeout'")
            return
        if rollback_json is not None:
            raise ProtocolViolation("a rollback attempt carries no rollback config")
        if phase is None:
            raise StepCallError(f"{show_step(key)}: the instance is not in a rollback phase")
        undone = self._backend.steps.get((StepKind.DO, key[1], key[2]))
        if undone is None or undone.rollback is None:
            raise StepCallError(f"{show_step(key)}: step.do {_shown(key[1])} (occurrence "
                                f"{key[2]}) registered no rollback handler")
        if config.json != undone.rollback:
            raise StepCallError(f"{show_step(key)}: its config is not the one recorded for the "
                                "handler")

    def _step_key(self, data: Any, kind: str | tuple[str, ...] | None) -> StepKey:
        if type(data) is not list or len(data) != 3:
            raise ProtocolViolation(f"a step key is {_type_name(data)}, not [kind, name, count]")
        key = (data[0], data[1], data[2])
        try:
            known = key in self._keys      # a step's key comes back with each of its calls
        except TypeError:                  # a list or an object inside: not a key
            known = False
        if not known:
            self._check_key(key)
            if len(self._keys) >= 10_000:
                self._keys.clear()
            self._keys.add(key)
        kinds = (kind,) if isinstance(kind, str) else kind
        if kinds is not None and key[0] not in kinds:
            raise StepCallError(f"{show_step(key)} cannot be used here: a "
                                f"{' or '.join(repr(str(k)) for k in kinds)} step is expected")
        return key

    def _check_key(self, key: tuple[Any, Any, Any]) -> None:
        step_kind, name, count = key
        if type(step_kind) is not str or type(name) is not str or type(count) is not int:
            raise ProtocolViolation("a step key is not [str, str, int]")
        if step_kind not in KINDS:
            raise ProtocolViolation(f"step kind {_shown(step_kind)} is not one of {', '.join(KINDS)}")
        check_step_name(name)
        limit = self._client.step_limit if step_kind in ATTEMPTED else MAX_WAIT_OCCURRENCES
        if not 1 <= count <= limit:
            raise StepCallError(f"step {step_kind} {_shown(name)}: occurrence {_shown_int(count)} is "
                                f"outside 1 to {limit:,}")

    def _config(self, config_json: Any) -> StepConfig:
        if config_json is self._config_text or config_json == self._config_text:
            return self._config_checked           # a step's config comes back with each call
        _typed(config_json, str, "a step config")
        if len(config_json) > MAX_CONFIG_JSON_BYTES:
            raise StepConfigError(f"a step config of {len(config_json):,} characters is over the "
                                  f"limit of {MAX_CONFIG_JSON_BYTES:,}")
        config = config_from_wire(config_json)
        self._config_text, self._config_checked = config_json, config
        return config

    @staticmethod
    def _check_attempt(attempt: Any, config: StepConfig) -> None:
        if type(attempt) is not int:
            _typed(attempt, int, "an attempt number")
        if not 1 <= attempt <= config.limit + 1:
            raise StepCallError(f"attempt {_shown_int(attempt)} is outside 1 to {config.limit + 1} "
                                f"(the step's retry limit is {config.limit})")
        return attempt

    @staticmethod
    def _check_delay(key: StepKey, delay_ms: Any, config: StepConfig, error: Any,
                     retryable: bool) -> None:
        """What a step's delay function returned, as the isolate resolved it: whole milliseconds
        within 0-365 days, for a retryable failure of a step whose delay is a function."""
        _typed(delay_ms, int, "a retry delay")
        if not config.dynamic_delay or error is None or not retryable:
            raise StepCallError(f"{show_step(key)} sent a retry delay, but only a retryable "
                                "failure of a step whose retries.delay is a function has one")
        if not 0 <= delay_ms <= MAX_SLEEP_MS:
            raise DurationError(f"{show_step(key)}: its delay function's {_shown_int(delay_ms)} ms "
                                f"is outside the allowed range of 0 to {MAX_SLEEP_MS:,} ms (365 days)")

    @staticmethod
    def _check_result(key: StepKey, result: Any) -> None:
        _typed(result, str, "a step result")
        size = utf8_size(result)
        if size > MAX_PAYLOAD_BYTES:
            raise step_output_too_large(key[1], key[2], size)
        try:
            _RESULT_JSON.decode(result)
        except RecursionError:
            raise NotSerialisableError(f"the output of {show_step(key)} nests too deeply to be read "
                                       "back") from None
        except ValueError as exc:
            raise NotSerialisableError(f"the output of {show_step(key)} is not JSON: {exc}") from None

    @staticmethod
    def _check_error(error: Any) -> None:
        if type(error) is not dict or not {"name", "message"} <= error.keys() \
                or not error.keys() <= {"name", "message", "traceback"} \
                or type(error.get("name")) is not str or type(error.get("message")) is not str:
            raise ProtocolViolation('a step error is not {"name": str, "message": str, '
                                    '"traceback"?: list}')
        if len(error["name"]) > MAX_ERROR_NAME_CHARS or len(error["message"]) > MAX_ERROR_MESSAGE_CHARS:
            raise StepCallError(f"a step error's name or message is over {MAX_ERROR_NAME_CHARS} or "
                                f"{MAX_ERROR_MESSAGE_CHARS:,} characters")
        if "traceback" in error:
            _check_traceback(error["traceback"])

    async def fetch(self, key: Any, request: Any) -> Any:
        """An outbound request from inside step ``key``'s body, sent by the calling isolate's
        outbound policy (installed by ``isolates/outbound.py``: the host's, never the isolate's)."""
        step = self._step_key(key, StepKind.DO)
        if self._client.replay_only:    # no step body runs in a replay check: nothing to send
            raise StepCallError("a replay check runs no step body, so sends no request")
        if _outbound_of_caller is None:
            raise RuntimeError("this host has no outbound policy installed")
        outbound = _outbound_of_caller()
        return await outbound.fetch(
            request, lambda level, message: self._backend.log(step, level, message))


_outbound_of_caller: Callable[[], Any] | None = None


def serve_outbound(provider: Callable[[], Any]) -> None:
    """Install how the host finds the outbound policy of the isolate calling ``fetch``."""
    global _outbound_of_caller
    _outbound_of_caller = provider


def _check_traceback(frames: Any) -> None:
    """A traceback's shape is a protocol matter (the isolate is killed); its size a refusal."""
    fault = traceback_fault(frames)
    if fault is not None:
        kind, why = fault
        refusal = ProtocolViolation if kind == "shape" else StepCallError
        raise refusal(f"a step error's traceback is refused: {why}")


def _typed(value: Any, kind: type, what: str) -> None:
    if type(value) is not kind:
        raise ProtocolViolation(f"{what} is {_type_name(value)}, not {kind.__name__}")


def _type_name(value: Any) -> str:
    return "null" if value is None else f"a {type(value).__name__}"


def _shown_int(value: int) -> str:
    text = str(value)
    return text if len(text) <= 24 else f"{text[:12]}...({len(text)} digits)"


def _shown(value: str) -> str:
    return repr(value if len(value) <= 60 else value[:57] + "...")


class RemoteStepBackend:
    """The isolate's side: the engine's step primitives, one RPC each."""

    def __init__(self, stub: Any) -> None:
        self._stub = stub

    def release(self) -> None:
        """The run is over: the host may let go of its side of it now."""
        self._stub._peer.release(self._stub)

    def begin(self, key: StepKey, attempt: int, config_json: str,
              rollback_json: str | None = None) -> None:
        # out before the body runs: a body that kills the isolate still counts as an attempt
        if rollback_json is None:
            self._stub.begin.send_now(list(key), attempt, config_json)
        else:
            self._stub.begin.send_now(list(key), attempt, config_json, rollback_json)

    async def end_rollbacks(self) -> None:
        await self._stub.end_rollbacks()

    async def settle(self, key: StepKey, attempt: int, config_json: str, result: str | None,
                     error: dict[str, str] | None, retryable: bool,
                     delay_ms: int | None = None) -> dict[str, Any]:
        return await self._stub.settle(list(key), attempt, config_json, result, error, retryable,
                                       delay_ms)

    async def await_retry(self, key: StepKey) -> None:
        await self._stub.await_retry(list(key))

    async def sleep(self, key: StepKey, duration_ms: int | None, due: int | None) -> None:
        await self._stub.sleep(list(key), duration_ms, due)

    async def wait_for_event(self, key: StepKey, event_type: str, timeout_ms: int) -> dict[str, Any]:
        return await self._stub.wait_for_event(list(key), event_type, timeout_ms)

    async def boundary(self) -> None:
        """A pause is enforced by the engine, which holds back the step's answers."""

    def cancelled(self, key: StepKey, attempt: int) -> None:
        self._stub.cancelled.send_now(list(key), attempt)

    def log(self, key: StepKey | None, level: str, message: str) -> None:
        self._stub.log.send(list(key) if key else None, level, message[:MAX_LOG_LINE_CHARS])

    async def fetch(self, key: StepKey, request: Any) -> Any:
        return await self._stub.fetch(list(key), request)

    async def history_end(self, key: StepKey) -> None:
        await self._stub.history_end(list(key))


def step_proxy(implicit_dependencies: bool, fingerprint: str | None = None):
    """The factory the isolate registers for incoming ``step`` references."""
    def build(stub: Any, init: dict[str, Any]) -> WorkflowStep:
        cache = {_key(key): CachedStep.from_wire(row) for key, row in init["cache"]}
        recorded = init.get("code_version")
        if recorded is None and fingerprint is not None:
            stub.record_code_version.send(fingerprint)
        client = StepClient(RemoteStepBackend(stub), init["instance"], cache,
                            step_limit=init["limit"],
                            on_replay=lambda key: stub.replayed.send(list(key)),
                            code_version=recorded, running_version=fingerprint,
                            mocks=StepMocks.from_wire(init.get("mocks")),
                            rollback_phase=init.get("rollback"),
                            replay_only=init.get("replay") is True)
        return WorkflowStep(client, implicit_dependencies=implicit_dependencies)
    return build
