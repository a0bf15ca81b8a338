"""A tenant that calls the methods of its step handle directly, past its own step client, with
arguments the client never sends. Values the platform refuses come back as the platform's coded
errors and store nothing; arguments of the wrong type break the protocol and the isolate is
killed. Either way the shared clock stays where it was and a neighbour's instance completes
(docs/reliability.md, "The host trusts nothing an isolate sends")."""

import asyncio
import sqlite3

import pytest
from typer.testing import CliRunner

from dynwf_cli.app import app
from emulator.engine import VirtualClock
from emulator.rules.limits import MAX_SLEEP_MS
from emulator.host import HostOptions, ProjectHost
from emulator.project import DATABASE_NAME, open_project

DAY = 86_400_000

RAW_CALLS = '''
import json
from workers import WorkflowEntrypoint

CONFIG = json.dumps({"retries": {"limit": 5, "delay": 10000, "backoff": "exponential"},
                     "timeout": 600000})
DYNAMIC = json.dumps({"retries": {"limit": 5, "delay": "function", "backoff": "constant"},
                      "timeout": 600000})
DAY = 86_400_000
FAILED = {"name": "E", "message": "m"}


def value_attacks(stub):
    return {
        "sleep ending past 365 days": lambda: stub.sleep(["sleep", "nap", 1], None, 10**300),
        "sleep longer than 365 days": lambda: stub.sleep(["sleep", "nap", 1], 366 * DAY, None),
        "oversized result": lambda: stub.settle(["do", "big", 1], 1, CONFIG,
                                                json.dumps("x" * (2 * 1024 * 1024)), None, False),
        "result that is not JSON": lambda: stub.settle(["do", "bad", 1], 1, CONFIG, "{", None,
                                                       False),
        "attempt past the retry limit": lambda: stub.begin(["do", "x", 1], 10**6, CONFIG),
        "step name with a control character": lambda: stub.begin(["do", "a\\x00b", 1], 1, CONFIG),
        "count past the step limit": lambda: stub.begin(["do", "x", 10**9], 1, CONFIG),
        "config that is not resolved": lambda: stub.begin(["do", "x", 1], 1,
                                                          '{"retries": {"limit": 99999}}'),
        "event type with a dot": lambda: stub.wait_for_event(["wait", "w", 1], "no.dots", 60_000),
        "event timeout of 10 ms": lambda: stub.wait_for_event(["wait", "w", 1], "go", 10),
        "unknown log level": lambda: stub.log(None, "shout", "x"),
        "error message of 20,000 characters": lambda: stub.settle(
            ["do", "e", 1], 1, CONFIG, None, {"name": "E", "message": "x" * 20_000}, True),
        "a traceback line of -5": lambda: stub.settle(
            ["do", "e", 1], 1, CONFIG, None, {"name": "E", "message": "m", "traceback": [
                {"file": "a.py", "line": -5, "function": "f", "source": ""}]}, True),
        "a traceback of 41 entries": lambda: stub.settle(
            ["do", "e", 1], 1, CONFIG, None,
            {"name": "E", "message": "m", "traceback": [{"elided": 1, "of": "dynwf"}] * 41}, True),
        "a do key for a sleep": lambda: stub.sleep(["do", "nap", 1], 1000, None),
        "retry of a step that is not backing off": lambda: stub.await_retry(["do", "never", 1]),
        "retry delay longer than 365 days": lambda: stub.settle(
            ["do", "d", 1], 1, DYNAMIC, None, FAILED, True, 366 * DAY),
        "retry delay below zero": lambda: stub.settle(["do", "d", 1], 1, DYNAMIC, None, FAILED,
                                                      True, -1),
        "retry delay for a fixed delay": lambda: stub.settle(["do", "d", 1], 1, CONFIG, None,
                                                             FAILED, True, 1000),
        "a rollback attempt outside a rollback phase": lambda: stub.begin(["rollback", "x", 1], 1,
                                                                          CONFIG),
        "a rollback config with sensitive": lambda: stub.begin(
            ["do", "x", 1], 1, CONFIG, json.dumps({**json.loads(CONFIG), "sensitive": "output"})),
        "ending a rollback phase there is not": lambda: stub.end_rollbacks(),
        "a rollback config of 100,000 characters": lambda: stub.begin(
            ["do", "x", 1], 1, CONFIG, "x" * 100_000),
    }


TYPE_ATTACKS = {
    "a float for a sleep's end": lambda stub: stub.sleep(["sleep", "nap", 1], None, 1e300),
    "a key that is not a list": lambda stub: stub.begin("do", 1, CONFIG),
    "an error of the wrong shape": lambda stub: stub.settle(["do", "e", 1], 1, CONFIG, None,
                                                            {"name": 1}, True),
    "a result and an error": lambda stub: stub.settle(["do", "e", 1], 1, CONFIG, "1",
                                                      {"name": "E", "message": "m"}, False),
    "an attempt as text": lambda stub: stub.begin(["do", "x", 1], "1", CONFIG),
    "a traceback entry that is text": lambda stub: stub.settle(
        ["do", "e", 1], 1, CONFIG, None, {"name": "E", "message": "m", "traceback": ["x"]}, True),
    "one argument too many": lambda stub: stub.begin(["do", "x", 1], 1, CONFIG, None, "extra"),
    "a rollback config that is a number": lambda stub: stub.begin(["do", "x", 1], 1, CONFIG, 5),
    "an unknown step kind": lambda stub: stub.begin(["jump", "x", 1], 1, CONFIG),
    "a retry delay as text": lambda stub: stub.settle(["do", "d", 1], 1, DYNAMIC, None,
                                                      FAILED, True, "1000"),
    "a rollback config on a rollback attempt": lambda stub: stub.begin(["rollback", "x", 1], 1,
                                                                       CONFIG, CONFIG),
}


class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        stub = step._client.backend._stub          # past the step client, to the host's handle
        attack = event["payload"]["attack"]
        if attack == "cancel claiming a huge attempt":
            await stub.begin(["do", "c", 1], 1, CONFIG)
            await stub.cancelled(["do", "c", 1], 10**300)
            return "sent"
        if attack in TYPE_ATTACKS:
            await TYPE_ATTACKS[attack](stub)
            return "the host took it"
        outcomes = {}
        for name, make in value_attacks(stub).items():
            try:
                await make()
                outcomes[name] = ["allowed"]
            except Exception as exc:
                outcomes[name] = [type(exc).__name__, getattr(exc, "code", None), str(exc)]

        @step.do("after")
        async def after():
            return "the handle still works"
        outcomes["after"] = await after()
        return outcomes
'''

NEIGHBOUR = '''
from workers import WorkflowEntrypoint

class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        await step.sleep("nap", "1 hour")

        @step.do("count")
        async def count():
            return 42
        return await count()
'''


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("handle") / "p"
    assert CliRunner().invoke(app, ["init", str(root)]).exit_code == 0
    for name, source in (("raw", RAW_CALLS), ("neighbour", NEIGHBOUR)):
        (root / "tenants" / name).mkdir()
        (root / "tenants" / name / "index.py").write_text(source)
    return root


def run_attack(project, state_dir, attack):
    """The attacker's instance and a neighbour's, drained with fast-forward; returns both
    statuses, the attacker's step rows and timers, and how far the shared clock moved."""
    async def scenario():
        clock = VirtualClock()
        host = ProjectHost(open_project(project / "wrangler.jsonc").config,
                           HostOptions(state_dir=state_dir, clock=clock))
        await host.start()
        try:
            started = clock.now_ms()
            attacker = await host.create_as_tenant({"tenantId": "raw"}, {"params": {"attack": attack}})
            neighbour = await host.create_as_tenant({"tenantId": "neighbour"}, {"params": {}})
            finished = lambda: all(host.engine.control.status(i)["status"] in ("complete", "errored")  # noqa: E731
                                   for i in (attacker, neighbour))
            await asyncio.wait_for(host.engine.drain(until=finished), 90)
            store = host.engine.store
            steps = [(r.kind, r.name, r.count) for r in store.load_steps(attacker).values()]
            return (host.engine.control.status(attacker), host.engine.control.status(neighbour),
                    steps, store.timers_of(attacker), clock.now_ms() - started)
        finally:
            await host.close()
    return asyncio.run(scenario())


def test_values_the_platform_refuses_raise_its_errors_and_store_nothing(project, tmp_path):
    attacker, neighbour, steps, timers, moved = run_attack(project, tmp_path, "values")
    assert neighbour["status"] == "complete" and neighbour["output"] == 42
    assert attacker["status"] == "complete", attacker
    outcomes = attacker["output"]
    expected = {
        "sleep ending past 365 days": ("DurationError", "duration.invalid", "more than 365 days"),
        "sleep longer than 365 days": ("DurationError", "duration.invalid",
                                       f"outside the allowed range of 0 to {MAX_SLEEP_MS:,} ms"),
        "oversized result": ("PayloadTooLargeError", "payload.too_large",
                             'Step big-1 output is too large: The output of step "big" is '
                             "2,097,154 bytes, over the limit of 1,048,576 bytes (1 MiB)"),
        "result that is not JSON": ("NotSerialisableError", "payload.not_serialisable",
                                    "is not JSON"),
        "attempt past the retry limit": ("StepCallError", "step.invalid_call",
                                         "attempt 1000000 is outside 1 to 6"),
        "step name with a control character": ("InvalidStepNameError", "step.invalid_name",
                                               "without control characters"),
        "count past the step limit": ("StepCallError", "step.invalid_call",
                                      "step do 'x': occurrence 1000000000 is outside 1 to 10,000"),
        "config that is not resolved": ("StepConfigError", "step.invalid_config",
                                        "must hold resolved 'retries' and 'timeout'"),
        "event type with a dot": ("InvalidEventTypeError", "event.invalid_type", "no dots"),
        "event timeout of 10 ms": ("DurationError", "duration.invalid",
                                   "outside the allowed range of 1 second to 365 days"),
        "unknown log level": ("ValueError", None, "log level 'shout' is not one of"),
        "error message of 20,000 characters": ("StepCallError", "step.invalid_call",
                                               "name or message is over"),
        "a traceback line of -5": ("StepCallError", "step.invalid_call",
                                   "a traceback entry's line -5 is outside 0 to 10,000,000"),
        "a traceback of 41 entries": ("StepCallError", "step.invalid_call",
                                      "a traceback of 41 entries is over the limit of 40"),
        "a do key for a sleep": ("StepCallError", "step.invalid_call", "a 'sleep' step is expected"),
        "retry of a step that is not backing off": ("StepCallError", "step.invalid_call",
                                                    "is not waiting to retry"),
        "retry delay longer than 365 days": ("DurationError", "duration.invalid",
                                             "its delay function's 31622400000 ms is outside"),
        "retry delay below zero": ("DurationError", "duration.invalid", "-1 ms is outside the "
                                   f"allowed range of 0 to {MAX_SLEEP_MS:,} ms (365 days)"),
        "retry delay for a fixed delay": ("StepCallError", "step.invalid_call",
                                          "only a retryable failure of a step whose "
                                          "retries.delay is a function has one"),
        # docs/semantics.md §2.12: a handler runs only in a rollback phase; its config is
        # retries and timeout only
        "a rollback attempt outside a rollback phase": ("StepCallError", "step.invalid_call",
                                                        "the instance is not in a rollback phase"),
        "a rollback config with sensitive": ("StepConfigError", "step.invalid_config",
                                             "takes only 'retries' and 'timeout'"),
        "ending a rollback phase there is not": ("StepCallError", "step.invalid_call",
                                                 "the instance is not in a rollback phase"),
        "a rollback config of 100,000 characters": ("StepConfigError", "step.invalid_config",
                                                    "a rollback config of 100,000 characters "
                                                    "is over the limit"),
    }
    for name, (kind, code, fragment) in expected.items():
        got_kind, got_code, message = outcomes[name]
        assert (got_kind, got_code) == (kind, code), (name, outcomes[name])
        assert fragment in message, (name, message)
    assert outcomes["after"] == "the handle still works"
    assert steps == [("do", "after", 1)]        # nothing refused was written
    assert timers == []
    assert moved < DAY                            # no timer dragged the shared clock along


@pytest.mark.parametrize("attack, fragment", [
    ("a float for a sleep's end", "a sleep's end is a float, not int"),
    ("a key that is not a list", "a step key is a str, not [kind, name, count]"),
    ("an error of the wrong shape",
         'a step error is not {"name": str, "message": str, "traceback"?: list}'),
    ("a result and an error", "settle needs either a result or an error"),
    ("an attempt as text", "an attempt number is a str, not int"),
    ("a traceback entry that is text", "a traceback entry is a str, not an object"),
    ("one argument too many", "a call of StepBackendTarget.begin with 5 arguments (it takes"),
    ("a rollback config that is a number", "a rollback config is a int, not str"),
    ("an unknown step kind", "step kind 'jump' is not one of do, sleep, wait"),
    ("a retry delay as text", "a retry delay is a str, not int"),
    ("a rollback config on a rollback attempt", "a rollback attempt carries no rollback config"),
])
def test_arguments_of_the_wrong_type_kill_the_isolate_and_error_only_its_instance(
        project, tmp_path, attack, fragment):
    attacker, neighbour, steps, timers, moved = run_attack(project, tmp_path, attack)
    assert neighbour["status"] == "complete" and neighbour["output"] == 42
    assert attacker["status"] == "errored", attacker
    assert attacker["error"]["name"] == "IsolateError"
    message = attacker["error"]["message"]
    assert message.startswith("[isolate.protocol] the isolate of 'LOADER:"), message
    assert "broke the RPC protocol" in message and fragment in message, message
    assert steps == [] and timers == []
    assert moved < DAY


def test_a_cancellation_records_the_attempt_the_host_began_not_the_one_claimed(project, tmp_path):
    attacker, neighbour, steps, timers, moved = run_attack(project, tmp_path,
                                                           "cancel claiming a huge attempt")
    assert neighbour["status"] == "complete" and attacker["status"] == "complete", attacker
    with sqlite3.connect(tmp_path / DATABASE_NAME) as conn:
        rows = conn.execute("SELECT name, status, attempts FROM steps WHERE name = 'c'").fetchall()
    assert rows == [("c", "cancelled", 1)]
