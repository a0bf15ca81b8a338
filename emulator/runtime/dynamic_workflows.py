"""``dynamic_workflows``: the port of ``@cloudflare/dynamic-workflows`` (docs/semantics.md §8),
plus tenant scoping.

One Workflow binding of the dispatcher serves every tenant. The outbound side hands each tenant a
wrapped binding whose ``create`` puts the params in an envelope
``{"__dispatcherMetadata": metadata, "params": params}``; the inbound side (the entrypoint made by
:func:`create_dynamic_workflow_entrypoint`) opens the envelope when the engine runs the instance,
asks the dispatcher's ``load_runner`` for that tenant's code and forwards ``run`` to it with the
original params. Names are the library's in snake_case, and so are its error texts.

Where this differs from the library, on purpose (docs/architecture.md §6):

- **Tenant scoping.** The library forwards ``get(id)`` unchanged, so any tenant can reach any
  instance of the shared Workflow, and all tenants share one id namespace. Here each metadata value
  owns a namespace: the real id is ``<prefix>-<tenant id>``, the prefix being the first 12 hex
  digits of the SHA-256 of the metadata's canonical JSON. A tenant only ever sees and names its
  own ids; ``get`` of anything outside its namespace reads as ``instance.not_found``, in the
  tenant's own words. Hashing, rather than storing a tenant column, keeps this a pure function of
  the envelope, so the engine, the CLI and the inbound side all agree without new state.
- **``workflowName``** is kept in the tenant's event (the library drops it).
- **``unwrap_params``** accepts an envelope without a ``params`` key (docs/semantics.md §9.20).

This module is bound under both ``dynamic_workflows`` and ``emulator.runtime.dynamic_workflows``
(see ``workers``), so the host and the dispatcher share one :data:`current_dispatcher`.
"""

from __future__ import annotations

import inspect
import sys
import uuid
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Awaitable, Callable, Iterator, Mapping, NamedTuple, Union

from emulator.rules.limits import MAX_ID_LENGTH, check_instance_id
from emulator.error_codes import Code
from emulator.errors import InstanceNotFoundError, ValidationError
from emulator.rules.tenant_scope import (ENVELOPE_KEY, scoped_instance_id,
                                         tenant_instance_id, tenant_prefix)
from emulator.rpc.target import RpcTarget
from emulator.runtime.workers import WorkerEntrypoint, WorkflowEntrypoint, _alias_module

_alias_module(sys.modules[__name__], "dynamic_workflows", "emulator.runtime.dynamic_workflows")

DispatcherMetadata = dict[str, Any]
DEFAULT_BINDING_NAME = "WORKFLOWS"
#: A tenant's ids have the platform's whole length: the scope is kept beside them.
MAX_TENANT_ID_LENGTH = MAX_ID_LENGTH

_NOT_EXPORTED = ("dynamic-workflows: `DynamicWorkflowBinding` is not registered on the dispatcher's "
                 "exports. Add `from dynamic_workflows import DynamicWorkflowBinding` to your "
                 "dispatcher's main module.")


# ---- errors -----------------------------------------------------------------------------------

class MissingDispatcherMetadataError(Exception):
    """The workflow's event payload is not a dispatcher envelope: it was created through the raw
    binding, not one made by :func:`wrap_workflow_binding`."""

    name = "MissingDispatcherMetadataError"
    code = Code.DISPATCHER_MISSING_METADATA

    def __init__(self) -> None:
        self.message = ("dynamic-workflows: workflow event is missing dispatcher metadata. Did you "
                        "forget to wrap the Workflow binding with wrapWorkflowBinding()?")
        super().__init__(self.message)


class DispatcherSetupError(RuntimeError):
    """The dispatcher is not wired the way the library needs: ``DynamicWorkflowBinding`` is not
    exported, or the named Workflow binding is not on its env."""

    code = Code.DISPATCHER_MISCONFIGURED

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


# ---- the envelope -----------------------------------------------------------------------------

class UnwrappedParams(NamedTuple):
    metadata: DispatcherMetadata
    params: Any


def wrap_params(params: Any, metadata: DispatcherMetadata) -> dict[str, Any]:
    """The envelope the wrapped binding persists as the instance's params."""
    return {ENVELOPE_KEY: metadata, "params": params}


def unwrap_params(payload: Any) -> UnwrappedParams | None:
    """``(metadata, params)`` of an envelope, or None when ``payload`` is not one.

    A missing ``params`` key reads as None: a JSON store may drop it, and ``create()`` without
    params must not turn into a missing-metadata error (docs/semantics.md §9.20).
    """
    if not isinstance(payload, Mapping) or ENVELOPE_KEY not in payload:
        return None
    return UnwrappedParams(payload[ENVELOPE_KEY], payload.get("params"))


# ---- tenant id namespaces ---------------------------------------------------------------------

def _check_tenant_id(tenant_id: Any) -> str:
    return check_instance_id(tenant_id)


def _hide_real_ids(exc: BaseException, ids: Mapping[str, str]) -> BaseException:
    """Rewrite ``exc`` so its text names tenant ids, never the namespaced ones behind them."""
    def clean(value: Any) -> Any:
        if isinstance(value, str):
            for real, tenant in ids.items():
                value = value.replace(real, tenant)
        return value

    exc.args = tuple(clean(a) for a in exc.args)
    for attr in ("message", "instance_id"):
        if isinstance(getattr(exc, attr, None), str):
            try:
                setattr(exc, attr, clean(getattr(exc, attr)))
            except AttributeError:
                pass
    return exc


async def _settle(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def _forward(call: Callable[[], Any], ids: Mapping[str, str]) -> Any:
    try:
        return await _settle(call())
    except Exception as exc:
        raise _hide_real_ids(exc, ids) from None


# ---- the wrapped binding (outbound side) ------------------------------------------------------

class InstanceStub(RpcTarget):
    """A tenant's handle on one of its instances: the library's ``InstanceStub``.

    ``id`` is the id the tenant knows. Methods forward to the real instance. Beyond the library,
    which forwards ``restart`` without options, drops ``terminate``'s and offers no ``delete``:
    ``restart`` takes ``{"from": ...}``, ``terminate`` forwards ``rollback`` (docs/semantics.md,
    "Rollbacks") and ``delete`` is here, each acting on the tenant's own instance only.
    """

    __rpc_props__ = ("id",)

    def __init__(self, instance: Any, tenant_id: str, real_id: str) -> None:
        self._instance = instance
        self._ids = {real_id: tenant_id}
        self.id = tenant_id

    def __repr__(self) -> str:
        return f"<InstanceStub {self.id}>"

    async def status(self) -> dict[str, Any]:
        status = await _forward(lambda: self._instance.status(), self._ids)
        error = status.get("error") if isinstance(status, dict) else None
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            message = error["message"]
            for real, tenant in self._ids.items():
                message = message.replace(real, tenant)
            status = {**status, "error": {**error, "message": message}}
        return status

    async def pause(self) -> None:
        await _forward(lambda: self._instance.pause(), self._ids)

    async def resume(self) -> None:
        await _forward(lambda: self._instance.resume(), self._ids)

    async def terminate(self, options: Any = None, *, rollback: Any = None) -> None:
        """``terminate()``, ``terminate(rollback=True)`` or ``terminate({"rollback": True})``;
        the engine's binding checks the options."""
        if options is None and rollback is None:
            await _forward(lambda: self._instance.terminate(), self._ids)
            return
        await _forward(lambda: self._instance.terminate(options, rollback=rollback), self._ids)

    async def restart(self, options: dict[str, Any] | None = None) -> None:
        if options is None:
            await _forward(lambda: self._instance.restart(), self._ids)
        else:
            await _forward(lambda: self._instance.restart(options), self._ids)

    async def delete(self) -> None:
        """Delete the instance; one deleting itself stops inside this call (it never returns)."""
        await _forward(lambda: self._instance.delete(), self._ids)

    async def send_event(self, event: dict[str, Any]) -> None:
        send = getattr(self._instance, "send_event", None) or self._instance.sendEvent
        await _forward(lambda: send(event), self._ids)

    sendEvent = send_event


def _create_options(options: Any, what: str) -> dict[str, Any]:
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise ValidationError(f"{what} must be a dict like {{'id': ..., 'params': ...}}, "
                              f"not {type(options).__name__}")
    return dict(options)


class WrappedWorkflowBinding(RpcTarget):
    """``create``/``create_batch``/``get`` of a Workflow binding, enveloped and scoped to one
    metadata value. Built by :func:`_dispatcher_binding_impl`."""

    def __init__(self, get_binding: Callable[[], Any], metadata: DispatcherMetadata) -> None:
        self._get_binding = get_binding
        self._metadata = metadata
        self._prefix = tenant_prefix(metadata)

    def _scoped(self, options: Any, what: str) -> tuple[dict[str, Any], str]:
        """The options to send (namespaced id, enveloped params) and the tenant's id."""
        item = _create_options(options, what)
        tenant_id = item.get("id")
        tenant_id = uuid.uuid4().hex if tenant_id is None else _check_tenant_id(tenant_id)
        item["id"] = f"{self._prefix}-{tenant_id}"
        item["params"] = wrap_params(item.get("params"), self._metadata)
        return item, tenant_id

    async def create(self, options: dict[str, Any] | None = None) -> InstanceStub:
        item, tenant_id = self._scoped(options, "create options")
        instance = await _forward(lambda: self._get_binding().create(item), {item["id"]: tenant_id})
        return InstanceStub(instance, tenant_id, item["id"])

    async def create_batch(self, batch: list[dict[str, Any]]) -> list[InstanceStub]:
        if not isinstance(batch, (list, tuple)):
            raise ValidationError("create_batch takes a list of create options")
        scoped = [self._scoped(o, f"batch[{i}]") for i, o in enumerate(batch)]
        ids = {item["id"]: tenant_id for item, tenant_id in scoped}
        binding = self._get_binding()
        create_batch = getattr(binding, "create_batch", None) or binding.createBatch
        instances = await _forward(lambda: create_batch([item for item, _ in scoped]), ids)
        stubs = []
        for instance in instances:
            tenant_id = ids.get(instance.id)
            if tenant_id is None:
                raise RuntimeError(f"the Workflow binding returned instance {instance.id!r}, "
                                   "which was not in the batch")
            stubs.append(InstanceStub(instance, tenant_id, instance.id))
        return stubs

    createBatch = create_batch

    async def delete_batch(self, ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        """Delete 1 to 100 of this tenant's instances, by the ids the tenant knows; the result
        names them by those ids. An id of no instance of this tenant is reported not found."""
        if isinstance(ids, Mapping) and set(ids) == {"instances"}:
            ids = ids["instances"]
        if not isinstance(ids, (list, tuple)):
            raise ValidationError(f"delete_batch takes a list of instance ids, not "
                                  f"{type(ids).__name__}")
        real = [f"{self._prefix}-{_check_tenant_id(i)}" for i in ids]
        tenant_of = dict(zip(real, ids))
        binding = self._get_binding()
        delete_batch = getattr(binding, "delete_batch", None) or binding.deleteBatch
        result = await _forward(lambda: delete_batch(real), tenant_of)
        return {"deleted": [{**d, "id": tenant_of.get(d["id"], d["id"])} for d in result["deleted"]],
                "errors": [{**e, "id": tenant_of.get(e["id"], e["id"])} for e in result["errors"]]}

    deleteBatch = delete_batch

    async def get(self, instance_id: str) -> InstanceStub:
        real_id = f"{self._prefix}-{_check_tenant_id(instance_id)}"
        try:
            instance = await _settle(self._get_binding().get(real_id))
        except Exception as exc:
            if getattr(exc, "code", None) == InstanceNotFoundError.code:
                # A fresh error: the engine's names the namespaced id, and its context would too.
                raise InstanceNotFoundError(f"Instance '{instance_id}' does not exist",
                                            instance_id=instance_id) from None
            raise _hide_real_ids(exc, {real_id: instance_id}) from None
        return InstanceStub(instance, instance_id, real_id)


def _dispatcher_binding_impl(get_binding: Callable[[], Any],
                             metadata: DispatcherMetadata) -> WrappedWorkflowBinding:
    """The wrapped binding over ``get_binding()`` (called afresh on every call, as the library
    does). Exported for tests, under the library's name."""
    return WrappedWorkflowBinding(get_binding, metadata)


def resolve_binding(env: Any, binding_name: str) -> Any:
    """``env[binding_name]`` (a dict env) or ``env.<binding_name>``, with the library's error."""
    if isinstance(env, Mapping):
        binding = env.get(binding_name)
    else:
        binding = getattr(env, binding_name, None)
    if binding is None:
        raise DispatcherSetupError(
            f'dynamic-workflows: no Workflow binding named "{binding_name}" found on env. Make sure '
            "the dispatcher declares it in wrangler.")
    return binding


def _props_of(ctx: Any) -> Any:
    if isinstance(ctx, Mapping):
        return ctx.get("props")
    return getattr(ctx, "props", None)


class DynamicWorkflowBinding(WorkerEntrypoint):
    """The dispatcher-side entrypoint behind every wrapped binding; tenants hold RPC stubs of it.

    Props: ``{"bindingName": ..., "metadata": ...}`` from ``ctx.props`` or the ``props`` argument.
    The dispatcher's main module must export it, so calls from tenants have somewhere to land.
    """

    def __init__(self, ctx: Any = None, env: Any = None, *,
                 props: Mapping[str, Any] | None = None) -> None:
        super().__init__(ctx, env)
        props = props if props is not None else _props_of(ctx)
        if not isinstance(props, Mapping) or "metadata" not in props:
            raise ValidationError("DynamicWorkflowBinding needs props {'bindingName': ..., "
                                  "'metadata': ...}; get one from wrap_workflow_binding(metadata)")
        binding_name = props.get("bindingName") or DEFAULT_BINDING_NAME
        self._impl = _dispatcher_binding_impl(lambda: resolve_binding(self.env, binding_name),
                                              props["metadata"])

    async def create(self, options: dict[str, Any] | None = None) -> InstanceStub:
        return await self._impl.create(options)

    async def create_batch(self, batch: list[dict[str, Any]]) -> list[InstanceStub]:
        return await self._impl.create_batch(batch)

    createBatch = create_batch

    async def delete_batch(self, ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        return await self._impl.delete_batch(ids)

    deleteBatch = delete_batch

    async def get(self, instance_id: str) -> InstanceStub:
        return await self._impl.get(instance_id)


# ---- finding the dispatcher -------------------------------------------------------------------

@dataclass(frozen=True)
class Dispatcher:
    """The dispatcher whose code is running: its main module and its env."""

    module: Any
    env: Any


#: Set by the host while dispatcher code runs; :func:`wrap_workflow_binding` reads it.
current_dispatcher: ContextVar[Dispatcher | None] = ContextVar("current_dispatcher", default=None)


@contextmanager
def dispatcher_scope(module: Any, env: Any) -> Iterator[Dispatcher]:
    """Run a block as dispatcher code of ``module`` with ``env`` (tasks started inside inherit it)."""
    dispatcher = Dispatcher(module, env)
    token = current_dispatcher.set(dispatcher)
    try:
        yield dispatcher
    finally:
        current_dispatcher.reset(token)


def wrap_workflow_binding(metadata: DispatcherMetadata, *,
                          binding_name: str = DEFAULT_BINDING_NAME) -> DynamicWorkflowBinding:
    """A Workflow binding for a tenant's env: ``create`` stamps ``metadata`` on every instance, and
    the tenant reaches only instances created with the same metadata.

    Call it from dispatcher code (the loader's code callback); the binding is the dispatcher's own
    exported ``DynamicWorkflowBinding``, bound to the dispatcher's env.
    """
    dispatcher = current_dispatcher.get()
    module = dispatcher.module if dispatcher is not None else None
    if isinstance(module, Mapping):
        cls = module.get("DynamicWorkflowBinding")
    else:
        cls = getattr(module, "DynamicWorkflowBinding", None)
    if not isinstance(cls, type):
        raise DispatcherSetupError(_NOT_EXPORTED)
    tenant_prefix(metadata)  # refuse metadata that cannot be enveloped now, not at create()
    props = {"bindingName": binding_name, "metadata": metadata}
    return cls(SimpleNamespace(props=props), dispatcher.env)  # type: ignore[union-attr]


# ---- the inbound side -------------------------------------------------------------------------

@dataclass(frozen=True)
class LoadRunnerContext:
    """What ``load_runner`` receives: the instance's metadata and the dispatcher's env and ctx."""

    metadata: DispatcherMetadata
    env: Any
    ctx: Any


LoadRunner = Callable[[LoadRunnerContext], Union[Any, Awaitable[Any]]]


def _field(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


async def dispatch_workflow(context: Any, event: Mapping[str, Any], step: Any,
                            load_runner: LoadRunner) -> Any:
    """Open the envelope, load the tenant's runner and run it with the tenant's event.

    ``context`` has ``env`` and ``ctx`` (attributes or keys). The step object is passed on
    untouched; errors from the loader or the runner propagate.
    """
    unwrapped = unwrap_params(event.get("payload"))
    if unwrapped is None:
        raise MissingDispatcherMetadataError()
    real_id = event.get("instanceId")
    inner_event = {
        "payload": unwrapped.params,
        "timestamp": event.get("timestamp"),
        # Instances made through the raw binding with a hand-built envelope have no namespace.
        "instanceId": tenant_instance_id(unwrapped.metadata, real_id) or real_id,
        "workflowName": event.get("workflowName"),
    }
    runner = await _settle(load_runner(LoadRunnerContext(
        unwrapped.metadata, _field(context, "env"), _field(context, "ctx"))))
    return await _settle(runner.run(inner_event, step))


def create_dynamic_workflow_entrypoint(load_runner: LoadRunner) -> type[WorkflowEntrypoint]:
    """A ``WorkflowEntrypoint`` class to name as the Workflow's ``class_name``: its ``run`` hands
    each instance to the runner ``load_runner`` returns (called on every run)."""

    class DynamicWorkflowEntrypoint(WorkflowEntrypoint):
        async def run(self, event: dict[str, Any], step: Any) -> Any:
            return await dispatch_workflow(SimpleNamespace(env=self.env, ctx=self.ctx), event, step,
                                           load_runner)

    DynamicWorkflowEntrypoint.__qualname__ = DynamicWorkflowEntrypoint.__name__
    return DynamicWorkflowEntrypoint


__all__ = [
    "Dispatcher", "DispatcherMetadata", "DispatcherSetupError", "DynamicWorkflowBinding",
    "InstanceStub", "LoadRunnerContext", "MAX_TENANT_ID_LENGTH", "MissingDispatcherMetadataError",
    "UnwrappedParams", "WrappedWorkflowBinding", "_dispatcher_binding_impl",
    "create_dynamic_workflow_entrypoint",
    "current_dispatcher", "dispatch_workflow", "dispatcher_scope", "resolve_binding",
    "scoped_instance_id", "tenant_instance_id", "tenant_prefix", "unwrap_params",
    "wrap_params", "wrap_workflow_binding",
]
