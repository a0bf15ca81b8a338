"""The workflow of the rollback crash test (``tests/test_rollbacks.py``), for an engine worker
process: ``python -m emulator.engine.worker --workflows rollback_workflows:WORKFLOWS``.

Three steps with handlers, then ``run()`` raises. Every handler execution appends a line to the
file named by ``DYNWF_TEST_LOG`` (one ``write`` on an ``O_APPEND`` descriptor, then ``fsync``, so
a SIGKILL loses none): ``START name`` when it begins, ``DONE name`` when it ends. The handler of
``reserve`` (the last to run) hangs on its first execution, so the test can kill the engine in
the middle of the rollback phase, after two handlers have committed.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from emulator.engine import WorkflowDefinition

LOG_ENV = "DYNWF_TEST_LOG"
STEPS = ("reserve", "charge", "ship")
RETRY = {"retries": {"limit": 3, "delay": "50 ms", "backoff": "constant"}}


def append(line: str) -> None:
    fd = os.open(os.environ[LOG_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def lines() -> list[str]:
    try:
        with open(os.environ[LOG_ENV], encoding="utf-8") as log:
            return log.read().splitlines()
    except FileNotFoundError:
        return []


def _handler(name: str):
    async def undo(output: Any) -> None:
        first = f"START {name}" not in lines()
        append(f"START {name}")
        if name == "reserve" and first:
            await asyncio.sleep(3600)        # the test kills the engine here
        append(f"DONE {name} {output}")
    return undo


def _body(name: str):
    async def body() -> str:
        return f"{name}-out"
    return body


class SagaWorkflow:
    def __init__(self, row: Any) -> None:
        pass

    async def run(self, event: dict[str, Any], step: Any) -> None:
        for name in STEPS:
            do = step.do(name, rollback=_handler(name), rollback_config=RETRY)(_body(name))
            await do()
        raise ValueError("card declined")


WORKFLOWS = [WorkflowDefinition("saga", SagaWorkflow)]
