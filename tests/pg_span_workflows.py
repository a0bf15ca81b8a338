"""Workflows for the PostgreSQL worker processes (tests/test_store_postgres_processes.py): each
step body appends ``owner instance step start end`` (wall clock, seconds) to the file
``DYNWF_SPAN_LOG`` names, so the test can tell which engine ran what, when."""

from __future__ import annotations

import asyncio
import os
import time

from emulator.engine import WorkflowDefinition

LOG_ENV, OWNER_ENV = "DYNWF_SPAN_LOG", "DYNWF_SPAN_OWNER"
STEPS = 4
STEP_S = 0.3


class Spans:
    def __init__(self, row) -> None:
        self.row = row

    async def run(self, event, step):
        return [await step.do(f"s{n}")(_body(event["instanceId"], n))() for n in range(STEPS)]


def _body(instance_id: str, n: int):
    async def body():
        started = time.time()
        await asyncio.sleep(STEP_S)
        line = f"{os.environ[OWNER_ENV]} {instance_id} {n} {started:.6f} {time.time():.6f}\n"
        fd = os.open(os.environ[LOG_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
        return n
    return body

WORKFLOWS = [WorkflowDefinition("spans", lambda row: Spans(row))]
