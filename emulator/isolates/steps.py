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

from typing import Any

from emulator.engine.client import CachedStep, StepClient, StepKey
from emulator.engine.failures import WorkflowFatalError, WorkflowTimeoutError, non_retryable_class
from emulator.engine.modifiers import StepMocks
from emulator.engine.step import WorkflowStep
from emulator.rpc.peer import register_error
from emulator.rpc.target import RpcTarget

STEP_KIND = "step"

# Errors that must come back as themselves, not as RemoteError: a fatal error still ends the
# instance, a NonRetryableError still stops retries, a timeout is still a WorkflowTimeoutError.
register_error("WorkflowFatalError",
               lambda message, code: WorkflowFatalError(message, code=code or "workflow.fatal"))
register_error("NonRetryableError", lambda message, code: non_retryable_class()(message))
register_error("WorkflowTimeoutError", lambda message, code: WorkflowTimeoutError(message))


def _key(data: Any) -> StepKey:
    kind, name, count = data
    if kind not in ("do", "sleep", "wait") or not isinstance(name, str) or not isinstance(count, int):
        raise ValueError(f"invalid step key {data!r}")
    return (kind, name, count)


class StepBackendTarget(RpcTarget):
    """What an isolate may ask of the engine about the one instance it is running."""

    def __init__(self, client: StepClient) -> None:
        self._client = client
        self._backend = client.backend

    def __rpc_describe__(self) -> tuple[str, dict[str, Any]]:
        cache = [[list(key), step.to_wire()] for key, step in self._client.cache.items()]
        init = {"instance": self._client.instance_id, "cache": cache,
                "limit": self._client.step_limit, "code_version": self._client.code_version}
        if self._client.mocks:  # test modifiers: decided here, so a mocked body never runs there
            init["mocks"] = self._client.mocks.to_wire()
        return STEP_KIND, init

    def record_code_version(self, version: str) -> None:
        """The isolate names the code it runs; kept for the instance if it is its first run."""
        self._backend.record_code_version(str(version)[:64])

    def begin(self, key: Any, attempt: int, config_json: str) -> None:
        self._backend.begin(_key(key), int(attempt), str(config_json))

    async def settle(self, key: Any, attempt: int, config_json: str, result: str | None,
                     error: dict[str, str] | None, retryable: bool) -> dict[str, Any]:
        return await self._backend.settle(_key(key), int(attempt), str(config_json), result, error,
                                          bool(retryable))

    async def await_retry(self, key: Any) -> None:
        await self._backend.await_retry(_key(key))

    def cancelled(self, key: Any, attempt: int) -> None:
        self._backend.cancelled(_key(key), int(attempt))

    async def sleep(self, key: Any, duration_ms: int | None, due: int | None) -> None:
        await self._backend.sleep(_key(key), duration_ms, due)

    async def wait_for_event(self, key: Any, event_type: str, timeout_ms: int) -> dict[str, Any]:
        return await self._backend.wait_for_event(_key(key), event_type, int(timeout_ms))

    def log(self, key: Any, level: str, message: str) -> None:
        self._backend.log(_key(key) if key else None, str(level)[:16], str(message)[:16_384])

    def replayed(self, key: Any) -> None:
        on_replay = self._client.on_replay
        if on_replay is not None:
            on_replay(_key(key))

    async def fetch(self, key: Any, request: Any) -> Any:
        """An outbound request from inside step ``key``'s body."""
        from emulator.isolates.outbound import outbound_of_caller  # host side only: urllib, ssl
        step = _key(key)
        outbound = outbound_of_caller()
        return await outbound.fetch(
            request, lambda level, message: self._backend.log(step, level, message))


class RemoteStepBackend:
    """The isolate's side: the engine's step primitives, one RPC each."""

    def __init__(self, stub: Any) -> None:
        self._stub = stub

    def begin(self, key: StepKey, attempt: int, config_json: str) -> None:
        # out before the body runs: a body that kills the isolate still counts as an attempt
        self._stub.begin.send_now(list(key), attempt, config_json)

    async def settle(self, key: StepKey, attempt: int, config_json: str, result: str | None,
                     error: dict[str, str] | None, retryable: bool) -> dict[str, Any]:
        return await self._stub.settle(list(key), attempt, config_json, result, error, retryable)

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
        self._stub.log.send(list(key) if key else None, level, message)

    async def fetch(self, key: StepKey, request: Any) -> Any:
        return await self._stub.fetch(list(key), request)


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
                            mocks=StepMocks.from_wire(init.get("mocks")))
        return WorkflowStep(client, implicit_dependencies=implicit_dependencies)
    return build
