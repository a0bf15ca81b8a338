"""Each tenant's log is bounded: 64 KiB per step and 1 MiB per instance, and lines printed outside
any step 1 MiB a minute per isolate. Past a quota lines are dropped behind one marker line that
names the quota, and says how much was dropped once the run stops (docs/reliability.md)."""

import asyncio
import re

from typer.testing import CliRunner

from dynwf_cli.app import app
from emulator.engine import VirtualClock
from emulator.rules.limits import (LOG_BYTES_OUTSIDE_STEPS_PER_MINUTE, LOG_BYTES_PER_INSTANCE,
                                    LOG_BYTES_PER_STEP)
from emulator.host import HostOptions, ProjectHost
from emulator.project import open_project
from emulator.runtime.workers import Request

LINE = 1023                 # characters a line, 1 KiB with its newline

CHATTY = f'''
from workers import Response, WorkerEntrypoint, WorkflowEntrypoint

LINE = "x" * {LINE}


class TenantWorkflow(WorkflowEntrypoint):
    async def run(self, event, step):
        @step.do("loud")
        async def loud():
            for _ in range(200):            # 200 KiB in one step
                print(LINE)
            return 1
        await loud()
        for n in range(30):                 # 60 KiB a step, 1.8 MiB in all
            @step.do(f"steady {{n}}")
            async def steady():
                for _ in range(60):
                    print(LINE)
                return n
            await steady()
        return "done"


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        for _ in range(2048):               # 2 MiB outside any step
            print(LINE)
        return Response("printed")
'''

MARKER = re.compile(r"log truncated: lines past the quota of ([\d,]+) bytes per (step|instance) are "
                    r"dropped(?: \(([\d,]+) bytes in ([\d,]+) lines dropped\))?")


def _number(text: str) -> int:
    return int(text.replace(",", ""))


def test_lines_past_a_quota_are_dropped_behind_one_marker(tmp_path):
    root = tmp_path / "p"
    assert CliRunner().invoke(app, ["init", str(root)]).exit_code == 0
    (root / "tenants" / "chatty").mkdir()
    (root / "tenants" / "chatty" / "index.py").write_text(CHATTY)

    async def scenario():
        host = ProjectHost(open_project(root / "wrangler.jsonc").config,
                           HostOptions(state_dir=root / ".dynwf", clock=VirtualClock()))
        await host.start()
        outside: list[tuple[str, str]] = []
        host.tenant_log_listeners.append(lambda label, level, message: outside.append((level, message)))
        try:
            instance = await host.create_as_tenant({"tenantId": "chatty"}, {"params": {}})
            await asyncio.wait_for(host.engine.drain(
                until=lambda: host.engine.control.status(instance)["status"] == "complete"), 120)
            response = await host.fetch(Request("http://localhost/", headers={"x-tenant-id": "chatty"}))
            await host.engine.drain(jump=False)
            return (host.engine.store.list_logs(instance), await response.text(), outside)
        finally:
            await host.close()

    logs, answer, outside = asyncio.run(scenario())
    assert answer == "printed"
    markers = [(line, MARKER.fullmatch(line["message"])) for line in logs
               if line["message"].startswith("log truncated")]
    assert [(m[2], line["step"][1]) for line, m in markers] == [("step", "loud"),
                                                                ("instance", "steady 16")]
    for line, match in markers:
        assert line["level"] == "warning"
        assert match[3] is not None, "the marker was not rewritten with what it dropped"
    kept = [line for line in logs if not line["message"].startswith("log truncated")]
    assert all(line["message"] == "x" * LINE for line in kept)

    loud = [line for line in kept if line["step"][1] == "loud"]
    step_marker = markers[0][1]
    assert _number(step_marker[1]) == LOG_BYTES_PER_STEP
    assert len(loud) == LOG_BYTES_PER_STEP // LINE                       # 64 lines
    assert _number(step_marker[4]) == 200 - len(loud)                    # 136, the marker's too
    assert _number(step_marker[3]) == (200 - len(loud)) * LINE

    instance_marker = markers[1][1]
    assert _number(instance_marker[1]) == LOG_BYTES_PER_INSTANCE
    assert len(kept) * LINE <= LOG_BYTES_PER_INSTANCE < (len(kept) + 1) * LINE
    printed = 200 + 30 * 60
    dropped = _number(step_marker[4]) + _number(instance_marker[4])
    assert len(kept) + dropped == printed                                # every line accounted for

    lines_outside = [message for level, message in outside if message == "x" * LINE]
    notes = [message for level, message in outside if message.startswith("log truncated")]
    assert len(lines_outside) == LOG_BYTES_OUTSIDE_STEPS_PER_MINUTE // LINE
    assert notes == [f"log truncated: lines outside any step past the quota of "
                     f"{LOG_BYTES_OUTSIDE_STEPS_PER_MINUTE:,} bytes per 60 seconds are dropped "
                     "until the next window"]
