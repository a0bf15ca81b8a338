"""Isolate faults inside workflow steps, with a neighbour tenant running at the same time: each
fault becomes a coded failed attempt under the step's retry policy, and the neighbour completes
(docs/reliability.md)."""

import asyncio
import json

import pytest
from typer.testing import CliRunner

from dynwf_cli.app import app
from emulator.engine import VirtualClock
from emulator.host import HostOptions, ProjectHost
from emulator.isolates.pool import IsolateLimits
from emulator.project import open_project

FAULTY = '''
from workers import WorkflowEntrypoint

class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        fault = event["payload"]["fault"]
        if fault == "loop_outside":
            while True:
                pass
        if fault == "exit_outside":
            import os
            os._exit(9)

        @step.do("faulty", config={"retries": {"limit": 1, "delay": "1 second"}, "timeout": "2 seconds"})
        async def faulty(ctx):
            if fault == "exit":
                import os
                os._exit(9)
            if fault == "segfault":
                import faulthandler
                faulthandler._sigsegv()
            if fault == "loop":
                while True:
                    pass
            if fault == "memory":
                hog = []
                while True:
                    hog.append(bytearray(32 * 1024 * 1024))
            if fault == "huge":
                return "x" * (2 * 1024 * 1024)
            if fault == "protocol":         # bytes of its own on its RPC socket
                import gc
                transport = next(t for t in gc.get_objects()  # the live one: not a
                                 if type(t).__name__ == "StreamTransport"  # closed warm-up
                                 and not t.writer.is_closing())
                transport.writer.write((5).to_bytes(4, "big") + b"hello")
                import asyncio
                await asyncio.Event().wait()
            if fault == "never":
                import asyncio
                await asyncio.Event().wait()
            if fault == "fork":
                import os
                os.fork()
            if fault == "fork_bomb":      # through subprocess's primitive, which no audit hook sees
                import os, _posixsubprocess
                read, write = os.pipe()
                for _ in range(1000):
                    _posixsubprocess.fork_exec(
                        [b"/bin/true"], [b"/bin/true"], True, (), None, None, -1, -1, -1, -1,
                        -1, -1, read, write, True, False, -1, None, None, None, -1,
                        lambda: os._exit(0), False)
            return "fine"
        return await faulty()
'''

NEIGHBOUR = '''
from workers import WorkflowEntrypoint

class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        total = 0
        for i in range(20):
            @step.do(f"count {i}")
            async def count():
                return i
            total += await count()
        return total
'''


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults") / "p"
    assert CliRunner().invoke(app, ["init", str(root)]).exit_code == 0
    for name, source in (("faulty", FAULTY), ("neighbour", NEIGHBOUR)):
        (root / "tenants" / name).mkdir()
        (root / "tenants" / name / "index.py").write_text(source)
    return root


@pytest.mark.parametrize("fault, code", [
    ("exit", "isolate.crashed"), ("segfault", "isolate.crashed"), ("loop", "isolate.cpu_limit"),
    ("memory", "isolate.memory_limit"), ("huge", "output is too large"),
    ("never", "timed out after 2000ms"), ("fork", "not permitted"),
    ("fork_bomb", "Operation not permitted"), ("protocol", "isolate.protocol"),
])
def test_a_fault_in_a_step_fails_its_attempts_and_the_neighbour_completes(project, tmp_path,
                                                                           fault, code):
    async def scenario():
        host = ProjectHost(open_project(project / "wrangler.jsonc").config,
                           HostOptions(state_dir=tmp_path, clock=VirtualClock(),
                                       limits=IsolateLimits(memory_mb=128, cpu_ms=1000)))
        await host.start()
        try:
            victim = await host.create_as_tenant({"tenantId": "faulty"}, {"params": {"fault": fault}})
            neighbour = await host.create_as_tenant({"tenantId": "neighbour"}, {"params": {}})
            finished = lambda: all(host.engine.control.status(i)["status"] in ("complete", "errored")  # noqa: E731
                                   for i in (victim, neighbour))
            await asyncio.wait_for(host.engine.drain(until=finished), 90)
            step = host.engine.store.get_step(victim, ("do", "faulty", 1))
            return (host.engine.control.status(victim), host.engine.control.status(neighbour),
                    step.attempts, json.loads(step.error))
        finally:
            await host.close()
    victim, neighbour, attempts, error = asyncio.run(scenario())
    assert neighbour == {"status": "complete", "error": None, "output": sum(range(20))}
    assert victim["status"] == "errored"
    assert attempts == 2                      # limit 1: the first try and one retry
    assert code in error["message"], error    # the attempt's error says what happened
    assert code in victim["error"]["message"]


def test_an_infinite_loop_outside_any_step_errors_the_instance(project, tmp_path):
    async def scenario():
        host = ProjectHost(open_project(project / "wrangler.jsonc").config,
                           HostOptions(state_dir=tmp_path, clock=VirtualClock(),
                                       limits=IsolateLimits(cpu_ms=1000)))
        await host.start()
        try:
            victim = await host.create_as_tenant({"tenantId": "faulty"},
                                                 {"params": {"fault": "loop_outside"}})
            await asyncio.wait_for(host.engine.drain(
                until=lambda: host.engine.control.status(victim)["status"] == "errored"), 60)
            return host.engine.control.status(victim)
        finally:
            await host.close()
    status = asyncio.run(scenario())
    assert status["error"]["name"] == "IsolateError"
    assert "isolate.cpu_limit" in status["error"]["message"]


def test_code_that_kills_its_isolate_outside_any_step_errors_after_a_few_replays(project, tmp_path):
    """A crash outside any step replays the instance (a kill from outside is the host's problem,
    see the dev crash test), but code that crashes every replay the same way errors at last."""
    from emulator.engine.engine import CRASH_REPLAYS

    async def scenario():
        host = ProjectHost(open_project(project / "wrangler.jsonc").config,
                           HostOptions(state_dir=tmp_path, clock=VirtualClock()))
        await host.start()
        try:
            victim = await host.create_as_tenant({"tenantId": "faulty"},
                                                 {"params": {"fault": "exit_outside"}})
            await asyncio.wait_for(host.engine.drain(
                until=lambda: host.engine.control.status(victim)["status"] == "errored"), 60)
            return host.engine.control.status(victim), host.pool.loads
        finally:
            await host.close()
    status, loads = asyncio.run(scenario())
    assert status["error"]["name"] == "IsolateError"
    assert "isolate.crashed" in status["error"]["message"]
    assert "exited with status 9" in status["error"]["message"]
    assert loads == CRASH_REPLAYS + 1         # the first run and each replay, in a fresh isolate
