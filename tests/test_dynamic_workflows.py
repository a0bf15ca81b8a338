"""``dynamic_workflows``: the library's own tests (docs/semantics.md §8.5), tenant scoping, and one
real engine run.

The first two groups port ``binding.test.ts`` (10 tests) and ``entrypoint.test.ts`` (12 tests) of
``@cloudflare/dynamic-workflows`` against a fake binding. Where our behaviour differs from the
library on purpose, the test says so: ids pass through a tenant namespace (docs/architecture.md §6,
docs/semantics.md §9.21),
so "forwards get() unchanged" becomes "forwards get() to the tenant's namespaced id"; the tenant's
event keeps ``workflowName`` (docs/semantics.md §9.22); a missing ``params`` key unwraps as None
(docs/semantics.md §9.20).
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import importlib
import json
import re
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import emulator.runtime.dynamic_workflows as dw
from emulator.engine import Engine, VirtualClock, WorkflowDefinition
from emulator.errors import (InstanceAlreadyExistsError, InstanceNotFoundError, InvalidIdError,
                             ValidationError)
from emulator.runtime.dynamic_workflows import (
    ENVELOPE_KEY, DispatcherSetupError, DynamicWorkflowBinding, InstanceStub, LoadRunnerContext,
    MissingDispatcherMetadataError, _dispatcher_binding_impl, create_dynamic_workflow_entrypoint,
    dispatch_workflow, dispatcher_scope, scoped_instance_id, tenant_instance_id, tenant_prefix,
    unwrap_params, wrap_params, wrap_workflow_binding)
from emulator.runtime.workers import WorkflowEntrypoint

NOT_EXPORTED = ("dynamic-workflows: `DynamicWorkflowBinding` is not registered on the dispatcher's "
                "exports. Add `from dynamic_workflows import DynamicWorkflowBinding` to your "
                "dispatcher's main module.")
MISSING_METADATA = ("dynamic-workflows: workflow event is missing dispatcher metadata. Did you "
                    "forget to wrap the Workflow binding with wrapWorkflowBinding()?")
META = {"tenantId": "tenant-42"}


def arun(coro: Any) -> Any:
    return asyncio.run(coro)


# ---- a fake Workflow binding ------------------------------------------------------------------

class FakeInstance:
    def __init__(self, binding: "FakeBinding", instance_id: str) -> None:
        self._binding = binding
        self.id = instance_id

    async def _record(self, method: str, *args: Any) -> None:
        self._binding.calls.append((method, self.id, *args))

    async def status(self) -> dict[str, Any]:
        await self._record("status")
        return {"status": "running", "error": None, "output": self._binding.outputs.get(self.id)}

    async def pause(self, *args: Any) -> None:
        await self._record("pause", *args)

    async def resume(self, *args: Any) -> None:
        await self._record("resume", *args)

    async def terminate(self, *args: Any) -> None:
        await self._record("terminate", *args)

    async def restart(self, *args: Any) -> None:
        await self._record("restart", *args)

    async def send_event(self, event: dict[str, Any]) -> None:
        await self._record("send_event", event)


class FakeBinding:
    """Records every call; remembers created ids and fails like the engine on unknown or taken ids
    (its messages name the real, namespaced id, which the wrapped binding must hide)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.params: dict[str, Any] = {}
        self.outputs: dict[str, Any] = {}

    async def create(self, options: dict[str, Any]) -> FakeInstance:
        self.calls.append(("create", options))
        if options["id"] in self.params:
            raise InstanceAlreadyExistsError(f"Instance '{options['id']}' already exists",
                                             instance_id=options["id"])
        self.params[options["id"]] = options["params"]
        return FakeInstance(self, options["id"])

    async def create_batch(self, batch: list[dict[str, Any]]) -> list[FakeInstance]:
        self.calls.append(("create_batch", batch))
        created = []
        for options in batch:
            if options["id"] not in self.params:
                self.params[options["id"]] = options["params"]
                created.append(FakeInstance(self, options["id"]))
        return created

    async def get(self, instance_id: str) -> FakeInstance:
        self.calls.append(("get", instance_id))
        if instance_id not in self.params:
            raise InstanceNotFoundError(f"Instance '{instance_id}' does not exist",
                                        instance_id=instance_id)
        return FakeInstance(self, instance_id)

    def sent(self, method: str) -> list[Any]:
        return [call[1] for call in self.calls if call[0] == method]


def wrapped(binding: FakeBinding, metadata: dict[str, Any] = META):
    return _dispatcher_binding_impl(lambda: binding, metadata)


# ---- binding.test.ts: dispatcherBindingImpl (wrapWorkflowBinding envelope logic) --------------

def test_injects_metadata_into_create_params() -> None:
    fake = FakeBinding()
    instance = arun(wrapped(fake).create({"id": "wf-1", "params": {"input": "hello"}}))
    [sent] = fake.sent("create")
    assert sent["id"] == scoped_instance_id(META, "wf-1")
    assert instance.id == "wf-1"
    assert sent["params"][ENVELOPE_KEY] == {"tenantId": "tenant-42"}
    assert sent["params"]["params"] == {"input": "hello"}


def test_injects_metadata_when_create_is_called_with_no_options() -> None:
    fake = FakeBinding()
    instance = arun(wrapped(fake).create())
    [sent] = fake.sent("create")
    assert sent["params"] == {ENVELOPE_KEY: META, "params": None}
    # No id given: a uuid4 hex in the tenant's namespace, reported without the namespace.
    assert re.fullmatch(r"[0-9a-f]{32}", instance.id)
    assert sent["id"] == scoped_instance_id(META, instance.id)


def test_injects_metadata_when_create_has_no_params() -> None:
    fake = FakeBinding()
    instance = arun(wrapped(fake).create({"id": "wf-2"}))
    [sent] = fake.sent("create")
    assert instance.id == "wf-2"
    assert sent["params"][ENVELOPE_KEY] == META
    assert "params" in sent["params"] and sent["params"]["params"] is None


def test_passes_arbitrary_metadata_shapes() -> None:
    metadata = {"tenant": {"id": "t-1", "tags": ["a", "b"]}, "limits": [1, {"x": None}], "ok": True}
    fake = FakeBinding()
    arun(wrapped(fake, metadata).create({"params": 1}))
    [sent] = fake.sent("create")
    assert sent["params"][ENVELOPE_KEY] == metadata


def test_injects_metadata_into_every_item_of_create_batch() -> None:
    fake = FakeBinding()
    instances = arun(wrapped(fake).create_batch(
        [{"id": "a", "params": {"n": 1}}, {"id": "b", "params": {"n": 2}}, {"id": "c"}]))
    assert [i.id for i in instances] == ["a", "b", "c"]
    [batch] = fake.sent("create_batch")
    assert [item["params"][ENVELOPE_KEY] for item in batch] == [META, META, META]
    assert [item["params"]["params"] for item in batch] == [{"n": 1}, {"n": 2}, None]
    assert [item["id"] for item in batch] == [scoped_instance_id(META, i) for i in "abc"]


def test_forwards_get_to_the_tenants_namespaced_id() -> None:
    """The library forwards get() unchanged; ours resolves the id inside the tenant's namespace."""
    fake = FakeBinding()
    binding = wrapped(fake)
    arun(binding.create({"id": "some-id"}))
    instance = arun(binding.get("some-id"))
    assert fake.sent("get") == [scoped_instance_id(META, "some-id")]
    assert instance.id == "some-id"


def test_returns_instances_from_the_underlying_binding() -> None:
    fake = FakeBinding()
    binding = wrapped(fake)
    created = arun(binding.create({"id": "returned-id"}))
    fake.outputs[scoped_instance_id(META, "returned-id")] = {"done": 1}
    assert isinstance(created, InstanceStub) and created.id == "returned-id"
    # The stub drives the very instance the binding returned.
    assert arun(created.status()) == {"status": "running", "error": None, "output": {"done": 1}}
    assert fake.calls[-1] == ("status", scoped_instance_id(META, "returned-id"))


def test_does_not_mutate_the_caller_provided_options() -> None:
    options = {"id": "keep", "params": {"value": 42}}
    before = copy.deepcopy(options)
    arun(wrapped(FakeBinding()).create(options))
    assert options == before


def test_does_not_double_wrap_if_the_same_wrapped_binding_is_used_twice() -> None:
    fake = FakeBinding()
    binding = wrapped(fake)
    options = {"params": {"a": 1}}
    arun(binding.create(options))
    arun(binding.create(options))
    sent = fake.sent("create")
    assert len(sent) == 2
    for item in sent:
        assert item["params"]["params"] == {"a": 1}
        assert ENVELOPE_KEY not in item["params"]["params"]


def test_resolves_the_underlying_binding_lazily_on_every_call() -> None:
    fake = FakeBinding()
    resolved = []

    def get_binding() -> FakeBinding:
        resolved.append(1)
        return fake

    binding = _dispatcher_binding_impl(get_binding, META)
    assert resolved == []
    arun(binding.create({"id": "one"}))
    arun(binding.create({"id": "two"}))
    arun(binding.get("one"))
    assert len(resolved) == 3


# ---- entrypoint.test.ts: dispatchWorkflow -----------------------------------------------------

class Runner:
    def __init__(self, result: Any = "ok", error: Exception | None = None) -> None:
        self.result, self.error = result, error
        self.calls: list[tuple[dict[str, Any], Any]] = []

    async def run(self, event: dict[str, Any], step: Any) -> Any:
        self.calls.append((event, step))
        if self.error is not None:
            raise self.error
        return self.result


def make_event(params: Any = None, metadata: Any = None, instance_id: str = "instance-1",
               payload: Any = ...) -> dict[str, Any]:
    return {"payload": wrap_params(params, metadata or {"tenantId": "tenant-a"})
            if payload is ... else payload,
            "timestamp": datetime(1970, 1, 1), "instanceId": instance_id, "workflowName": "wf"}


CONTEXT = SimpleNamespace(env={"SOME": "binding"}, ctx=object())
STEP = object()


def test_unwraps_metadata_from_the_event_and_passes_it_to_the_loader() -> None:
    seen = []

    async def load_runner(ctx: LoadRunnerContext) -> Runner:
        seen.append(ctx.metadata)
        return Runner()

    assert arun(dispatch_workflow(CONTEXT, make_event({"x": 1}), STEP, load_runner)) == "ok"
    assert seen == [{"tenantId": "tenant-a"}]


def test_passes_env_and_ctx_through_to_the_loader() -> None:
    seen: list[LoadRunnerContext] = []

    async def load_runner(ctx: LoadRunnerContext) -> Runner:
        seen.append(ctx)
        return Runner()

    arun(dispatch_workflow(CONTEXT, make_event(), STEP, load_runner))
    assert seen[0].env == {"SOME": "binding"}
    assert seen[0].ctx is CONTEXT.ctx


def test_delivers_the_unwrapped_params_to_the_dynamic_worker() -> None:
    runner = Runner()
    arun(dispatch_workflow(CONTEXT, make_event({"hello": "world"}), STEP, lambda ctx: runner))
    assert len(runner.calls) == 1
    event, _ = runner.calls[0]
    assert event == {"payload": {"hello": "world"}, "timestamp": datetime(1970, 1, 1),
                     "instanceId": "instance-1", "workflowName": "wf"}


def test_forwards_the_workflow_step_object_untouched() -> None:
    runner = Runner()
    arun(dispatch_workflow(CONTEXT, make_event(), STEP, lambda ctx: runner))
    assert runner.calls[0][1] is STEP


def test_throws_missing_dispatcher_metadata_error_when_the_payload_is_not_an_envelope() -> None:
    runner = Runner()
    with pytest.raises(MissingDispatcherMetadataError) as caught:
        arun(dispatch_workflow(CONTEXT, make_event(payload={"not": "an envelope"}), STEP,
                               lambda ctx: runner))
    assert str(caught.value) == MISSING_METADATA
    assert caught.value.name == "MissingDispatcherMetadataError"
    assert runner.calls == []


def test_throws_missing_dispatcher_metadata_error_on_null_payload() -> None:
    with pytest.raises(MissingDispatcherMetadataError, match=re.escape(MISSING_METADATA)):
        arun(dispatch_workflow(CONTEXT, make_event(payload=None), STEP, lambda ctx: Runner()))


def test_supports_synchronous_loaders_returning_a_runner_directly() -> None:
    assert arun(dispatch_workflow(CONTEXT, make_event(), STEP, lambda ctx: Runner(42))) == 42


def test_propagates_errors_thrown_by_the_loader() -> None:
    async def load_runner(ctx: LoadRunnerContext) -> Runner:
        raise RuntimeError("loader failed")

    with pytest.raises(RuntimeError, match="loader failed"):
        arun(dispatch_workflow(CONTEXT, make_event(), STEP, load_runner))


def test_propagates_errors_thrown_by_the_dynamic_worker_run() -> None:
    runner = Runner(error=ValueError("worker run failed"))
    with pytest.raises(ValueError, match="worker run failed"):
        arun(dispatch_workflow(CONTEXT, make_event(), STEP, lambda ctx: runner))


def test_invokes_the_loader_fresh_for_every_call() -> None:
    tenants = []

    def load_runner(ctx: LoadRunnerContext) -> Runner:
        tenants.append(ctx.metadata["tenantId"])
        return Runner(ctx.metadata["tenantId"])

    first = arun(dispatch_workflow(CONTEXT, make_event(metadata={"tenantId": "tenant-a"}), STEP,
                                   load_runner))
    second = arun(dispatch_workflow(CONTEXT, make_event(metadata={"tenantId": "tenant-b"}), STEP,
                                    load_runner))
    assert (first, second) == ("tenant-a", "tenant-b")
    assert tenants == ["tenant-a", "tenant-b"]


def test_create_dynamic_workflow_entrypoint_returns_a_workflow_entrypoint_subclass() -> None:
    klass = create_dynamic_workflow_entrypoint(lambda ctx: Runner())
    assert isinstance(klass, type) and issubclass(klass, WorkflowEntrypoint)


def test_create_dynamic_workflow_entrypoint_overrides_run() -> None:
    klass = create_dynamic_workflow_entrypoint(lambda ctx: Runner())
    assert callable(klass.run)
    assert klass.run is not WorkflowEntrypoint.run


# ---- beyond the library: the inbound side -----------------------------------------------------

def test_entrypoint_run_passes_its_env_and_ctx_and_strips_the_namespace() -> None:
    seen: list[LoadRunnerContext] = []
    runner = Runner("done")

    def load_runner(ctx: LoadRunnerContext) -> Runner:
        seen.append(ctx)
        return runner

    env, ctx = {"WORKFLOWS": "raw"}, SimpleNamespace(props={})
    entry = create_dynamic_workflow_entrypoint(load_runner)(ctx, env)
    real_id = scoped_instance_id(META, "order-7")
    assert arun(entry.run(make_event({"n": 1}, META, instance_id=real_id), STEP)) == "done"
    assert (seen[0].env, seen[0].ctx, seen[0].metadata) == (env, ctx, META)
    assert runner.calls[0][0]["instanceId"] == "order-7"


def test_unwrap_tolerates_an_envelope_without_params() -> None:
    """docs/semantics.md §9.20: a store that drops a None-valued key must not turn create() into an error."""
    assert unwrap_params({ENVELOPE_KEY: META}) == (META, None)
    assert unwrap_params({"params": 1}) is None
    assert unwrap_params([ENVELOPE_KEY]) is None
    runner = Runner()
    arun(dispatch_workflow(CONTEXT, make_event(payload={ENVELOPE_KEY: META}), STEP,
                           lambda ctx: runner))
    assert runner.calls[0][0]["payload"] is None


# ---- beyond the library: tenant scoping -------------------------------------------------------

TENANT_A = {"tenantId": "acme"}
TENANT_B = {"tenantId": "globex"}


def test_prefix_is_the_sha256_of_the_canonical_metadata() -> None:
    expected = hashlib.sha256(json.dumps({"a": 1, "b": [2]}, sort_keys=True,
                                         separators=(",", ":")).encode()).hexdigest()[:12]
    assert tenant_prefix({"b": [2], "a": 1}) == tenant_prefix({"a": 1, "b": [2]}) == expected
    assert scoped_instance_id(TENANT_A, "x-1") == f"{tenant_prefix(TENANT_A)}-x-1"
    assert tenant_instance_id(TENANT_A, scoped_instance_id(TENANT_A, "x-1")) == "x-1"
    assert tenant_instance_id(TENANT_B, scoped_instance_id(TENANT_A, "x-1")) is None
    assert tenant_instance_id(TENANT_A, "x-1") is None


def test_tenants_cannot_see_each_others_instances() -> None:
    fake = FakeBinding()
    a, b = wrapped(fake, TENANT_A), wrapped(fake, TENANT_B)
    arun(a.create({"id": "order-1", "params": {"secret": "a"}}))
    with pytest.raises(InstanceNotFoundError) as caught:
        arun(b.get("order-1"))
    assert caught.value.code == "instance.not_found"
    # Not even by guessing the real id: it is taken as B's own id and namespaced again.
    with pytest.raises(InstanceNotFoundError):
        arun(b.get(scoped_instance_id(TENANT_A, "order-1")))
    assert arun(a.get("order-1")).id == "order-1"


def test_tenant_ids_do_not_collide() -> None:
    fake = FakeBinding()
    a, b = wrapped(fake, TENANT_A), wrapped(fake, TENANT_B)
    first = arun(a.create({"id": "same", "params": "from a"}))
    second = arun(b.create({"id": "same", "params": "from b"}))
    assert first.id == second.id == "same"
    assert sorted(fake.params) == sorted([scoped_instance_id(TENANT_A, "same"),
                                          scoped_instance_id(TENANT_B, "same")])
    assert fake.params[scoped_instance_id(TENANT_B, "same")]["params"] == "from b"


def test_get_of_a_missing_id_names_the_tenants_id_and_never_the_prefix() -> None:
    binding = wrapped(FakeBinding(), TENANT_A)
    with pytest.raises(InstanceNotFoundError) as caught:
        arun(binding.get("nope"))
    error = caught.value
    assert error.code == "instance.not_found"
    assert "'nope'" in str(error) and error.instance_id == "nope"
    assert tenant_prefix(TENANT_A) not in str(error)
    assert error.__cause__ is None and error.__suppress_context__


def test_duplicate_create_names_the_tenants_id_and_never_the_prefix() -> None:
    binding = wrapped(FakeBinding(), TENANT_A)
    arun(binding.create({"id": "dup"}))
    with pytest.raises(InstanceAlreadyExistsError) as caught:
        arun(binding.create({"id": "dup"}))
    assert "'dup'" in str(caught.value) and caught.value.instance_id == "dup"
    assert tenant_prefix(TENANT_A) not in str(caught.value)


@pytest.mark.parametrize("bad", ["", "has.dot", "-leading-dash", "x" * 101, 7, "a b"])
def test_invalid_or_too_long_tenant_ids_are_refused_before_anything_is_sent(bad: Any) -> None:
    fake = FakeBinding()
    binding = wrapped(fake, TENANT_A)
    with pytest.raises(InvalidIdError) as caught:
        arun(binding.create({"id": bad}))
    assert caught.value.code == "instance.invalid_id"
    assert "1-100 characters" in str(caught.value)
    with pytest.raises(InvalidIdError):
        arun(binding.create_batch([{"id": "fine"}, {"id": bad}]))
    with pytest.raises(InvalidIdError):
        arun(binding.get(bad))
    assert fake.calls == []


def test_a_tenant_gets_the_platforms_whole_id_length() -> None:
    """docs/semantics.md, "Tenants and the dispatcher": the scope is kept beside the tenant's id,
    never charged against its 100 characters."""
    fake = FakeBinding()
    instance = arun(wrapped(fake, TENANT_A).create({"id": "x" * 100}))
    assert instance.id == "x" * 100
    assert fake.sent("create")[0]["id"] == f"{tenant_prefix(TENANT_A)}-{'x' * 100}"


def test_instance_stub_forwards_every_method_without_options() -> None:
    fake = FakeBinding()
    stub = arun(wrapped(fake, TENANT_A).create({"id": "ctl"}))
    real = scoped_instance_id(TENANT_A, "ctl")
    for method in ("pause", "resume", "terminate", "restart"):
        arun(getattr(stub, method)())
    arun(stub.send_event({"type": "go", "payload": 1}))
    arun(stub.sendEvent({"type": "go", "payload": 2}))
    assert fake.calls[1:] == [("pause", real), ("resume", real), ("terminate", real),
                              ("restart", real), ("send_event", real, {"type": "go", "payload": 1}),
                              ("send_event", real, {"type": "go", "payload": 2})]
    assert InstanceStub.__rpc_props__ == ("id",)


def test_metadata_that_is_not_json_is_refused_when_the_binding_is_made() -> None:
    with pytest.raises(ValidationError, match="JSON-serialisable"):
        _dispatcher_binding_impl(lambda: FakeBinding(), {"when": object()})


# ---- wrap_workflow_binding and DynamicWorkflowBinding -----------------------------------------

def test_wrap_workflow_binding_without_a_dispatcher_raises_the_librarys_text() -> None:
    with pytest.raises(DispatcherSetupError) as caught:
        wrap_workflow_binding(META)
    assert str(caught.value) == NOT_EXPORTED


def test_wrap_workflow_binding_when_the_dispatcher_does_not_export_the_class() -> None:
    dispatcher_module = SimpleNamespace(Default=object)
    with dispatcher_scope(dispatcher_module, {"WORKFLOWS": FakeBinding()}):
        with pytest.raises(DispatcherSetupError) as caught:
            wrap_workflow_binding(META)
    assert str(caught.value) == NOT_EXPORTED


def test_wrap_workflow_binding_uses_the_dispatchers_class_and_env() -> None:
    fake = FakeBinding()
    dispatcher_module = SimpleNamespace(DynamicWorkflowBinding=DynamicWorkflowBinding)
    with dispatcher_scope(dispatcher_module, SimpleNamespace(WORKFLOWS=fake)):
        binding = wrap_workflow_binding(META)
    assert dw.current_dispatcher.get() is None
    assert isinstance(binding, DynamicWorkflowBinding)
    assert binding.ctx.props == {"bindingName": "WORKFLOWS", "metadata": META}
    instance = arun(binding.create({"id": "via-dispatcher", "params": [1]}))
    assert instance.id == "via-dispatcher"
    assert fake.params[scoped_instance_id(META, "via-dispatcher")] == {ENVELOPE_KEY: META,
                                                                       "params": [1]}


def test_a_missing_binding_raises_the_librarys_text() -> None:
    dispatcher_module = SimpleNamespace(DynamicWorkflowBinding=DynamicWorkflowBinding)
    with dispatcher_scope(dispatcher_module, {"WORKFLOWS": FakeBinding()}):
        binding = wrap_workflow_binding(META, binding_name="ORDERS")
    with pytest.raises(DispatcherSetupError) as caught:
        arun(binding.create())
    assert str(caught.value) == ('dynamic-workflows: no Workflow binding named "ORDERS" found on '
                                 "env. Make sure the dispatcher declares it in wrangler.")


def test_dynamic_workflow_binding_takes_props_from_ctx_or_the_constructor() -> None:
    fake = FakeBinding()
    env = {"ORDERS": fake}
    props = {"bindingName": "ORDERS", "metadata": TENANT_B}
    from_ctx = DynamicWorkflowBinding(SimpleNamespace(props=props), env)
    from_arg = DynamicWorkflowBinding(None, env, props=props)
    arun(from_ctx.create({"id": "one"}))
    [batch] = arun(from_arg.create_batch([{"id": "two"}]))
    assert batch.id == "two"
    assert arun(from_arg.get("one")).id == "one"
    assert sorted(fake.params) == sorted(scoped_instance_id(TENANT_B, i) for i in ("one", "two"))
    with pytest.raises(ValidationError, match="props"):
        DynamicWorkflowBinding(SimpleNamespace(props={}), env)


def test_user_code_and_the_emulator_share_one_module() -> None:
    assert importlib.import_module("dynamic_workflows") is dw
    workers = importlib.import_module("workers")
    assert workers.WorkflowEntrypoint is WorkflowEntrypoint
    assert issubclass(DynamicWorkflowBinding, workers.WorkerEntrypoint)


# ---- against the real engine ------------------------------------------------------------------

class TenantWorkflow:
    """A tenant's runner, in process: what ``get_entrypoint("TenantWorkflow")`` would reach."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    async def run(self, event: dict[str, Any], step: Any) -> Any:
        self.events.append(event)

        @step.do("greet")
        async def greet() -> str:
            return f"Hello, {event['payload']['name']}!"

        return {"greeting": await greet(), "instanceId": event["instanceId"],
                "workflowName": event["workflowName"]}


def test_a_tenant_runs_end_to_end_through_the_real_engine(tmp_path: Path) -> None:
    tenants = {"acme": TenantWorkflow()}
    loaded: list[dict[str, Any]] = []

    def load_runner(ctx: LoadRunnerContext) -> TenantWorkflow:
        loaded.append(ctx.metadata)
        return tenants[ctx.metadata["tenantId"]]

    entry = create_dynamic_workflow_entrypoint(load_runner)
    env: dict[str, Any] = {}
    ctx = SimpleNamespace(props={})
    engine = Engine(tmp_path / "db.sqlite", [WorkflowDefinition("wf", lambda row: entry(ctx, env))],
                    clock=VirtualClock(flowing=False))
    env["WORKFLOWS"] = raw = engine.binding("wf")
    dispatcher_module = SimpleNamespace(DynamicWorkflowBinding=DynamicWorkflowBinding)
    with dispatcher_scope(dispatcher_module, env):
        acme = wrap_workflow_binding({"tenantId": "acme"})
        globex = wrap_workflow_binding({"tenantId": "globex"})

    async def scenario() -> None:
        created = await acme.create({"id": "order-1", "params": {"name": "Ada"}})
        assert created.id == "order-1"
        await engine.drain()

        status = await (await acme.get("order-1")).status()
        assert status["status"] == "complete"
        assert status["output"] == {"greeting": "Hello, Ada!", "instanceId": "order-1",
                                    "workflowName": "wf"}
        [event] = tenants["acme"].events
        assert event["payload"] == {"name": "Ada"}
        assert isinstance(event["timestamp"], datetime)
        assert loaded == [{"tenantId": "acme"}]

        # The engine stores the envelope under the namespaced id.
        real = await raw.get(scoped_instance_id({"tenantId": "acme"}, "order-1"))
        assert (await real.status())["output"] == status["output"]

        with pytest.raises(InstanceNotFoundError) as caught:
            await globex.get("order-1")
        assert caught.value.code == "instance.not_found" and "'order-1'" in str(caught.value)

    try:
        arun(scenario())
    finally:
        engine.close()
