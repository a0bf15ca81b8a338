"""Conformance items that need a real process or a foreign row: the engine killed in the middle
of a step, and the `unknown` status (docs/semantics.md, "Steps" and "Instances and statuses").
Changing the tenant's code in the middle of an instance is covered by test_code_versions.py."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from contextlib import closing
from pathlib import Path

from emulator.engine import Control, Store, SystemClock
from tests.engine_harness import Harness, arun

BLOCKING = textwrap.dedent('''
    import asyncio, os
    from pathlib import Path
    from emulator.engine import WorkflowDefinition

    FOLDER = Path(os.environ["DYNWF_TEST_FOLDER"])

    class Blocking:
        async def run(self, event, step):
            @step.do("slow", config={"retries": {"limit": 3, "delay": "10 ms",
                                                 "backoff": "constant"}})
            async def slow(ctx):
                (FOLDER / f"attempt-{ctx['attempt']}").write_text("started")
                if ctx["attempt"] == 1:
                    await asyncio.sleep(3600)          # the engine is killed meanwhile
                return ctx["attempt"]
            return await slow()

    WORKFLOWS = [WorkflowDefinition("blocking", lambda row: Blocking())]
''')


def _worker(tmp_path: Path, db: Path, owner: str) -> subprocess.Popen:
    env = dict(os.environ, DYNWF_TEST_FOLDER=str(tmp_path),
               PYTHONPATH=os.pathsep.join([str(tmp_path), str(Path(__file__).resolve().parents[1])]))
    return subprocess.Popen([sys.executable, "-m", "emulator.engine.worker", "--db", str(db),
                             "--workflows", "blocking_workflows:WORKFLOWS", "--owner", owner,
                             "--lease-ms", "500", "--poll-ms", "50"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _poll(predicate, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _attempts_recorded(store: Store, instance: str, key) -> int:
    row = store.get_step(instance, key)
    return row.attempts if row is not None else 0


def test_an_engine_killed_in_the_middle_of_a_step_counts_the_attempt_and_retries_it(tmp_path):
    (tmp_path / "blocking_workflows.py").write_text(BLOCKING)
    db = tmp_path / "state.sqlite"
    store = Store(db)
    Control(store, SystemClock()).create("blocking", {"id": "k1"})
    first = _worker(tmp_path, db, "first")
    try:
        _poll(lambda: (tmp_path / "attempt-1").exists())
        # The attempt's start is committed up to 2 ms after the body starts (docs/semantics.md
        # §4.4); the kill comes once it is, which is the case this test is about.
        _poll(lambda: _attempts_recorded(store, "k1", ("do", "slow", 1)) == 1)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    second = _worker(tmp_path, db, "second")
    try:
        _poll(lambda: Control(store, SystemClock()).status("k1")["status"] == "complete")
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
    status = Control(store, SystemClock()).status("k1")
    step = store.get_step("k1", ("do", "slow", 1))
    store.close()
    assert status == {"status": "complete", "error": None, "output": 2}
    assert (step.status, step.attempts) == ("done", 2)
    assert not (tmp_path / "attempt-3").exists()


def test_a_status_this_version_does_not_know_reads_unknown_and_can_be_terminated(tmp_path):
    async def wf(event, step):
        return "never"

    async def main():
        h = Harness(tmp_path / "db.sqlite", wf)
        await h.create()
        with closing(sqlite3.connect(tmp_path / "db.sqlite")) as conn:   # a newer writer's row
            conn.execute("UPDATE instances SET status = 'hibernatingOnMars' WHERE id = 'i1'")
            conn.commit()
        seen = await h.status()
        await h.engine.drain()                      # the engine leaves it alone
        still = await h.status()
        await (await h.binding.get("i1")).terminate()
        return seen, still, await h.status()
    seen, still, terminated = arun(main())
    assert seen == {"status": "unknown", "error": None, "output": None}
    assert still["status"] == "unknown"
    assert terminated["status"] == "terminated"
