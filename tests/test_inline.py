"""``--isolation inline``: the same RPC and semantics in one process (for pdb), with each tenant's
modules kept apart (docs/architecture.md §7)."""

import asyncio
import os
import sys


from emulator.isolates.pool import IsolatePool
from emulator.loader import WorkerLoader

INDEX = '''
import helper
from workers import WorkerEntrypoint

class Default(WorkerEntrypoint):
    async def who(self):
        import os
        return {"text": helper.TEXT, "pid": os.getpid()}

    async def echo(self, value):
        value["seen"] = True
        return value
'''


def code(text):
    return lambda: {"main_module": "index.py", "compatibility_date": "2026-04-01",
                    "modules": {"index.py": INDEX, "helper.py": f"TEXT = {text!r}\n"}}


def test_inline_tenants_run_in_this_process_with_their_own_modules():
    async def body():
        pool = IsolatePool(isolation="inline")
        await pool.start()
        loader = WorkerLoader(pool)
        try:
            a = await loader.get("a", code("alpha")).get_entrypoint().who()
            b = await loader.get("b", code("beta")).get_entrypoint().who()
            original = {"n": 1}
            echoed = await loader.get("a", code("alpha")).get_entrypoint().echo(original)
            prefixes = [n for n in sys.modules if n.startswith("_dynwf_inline_")]
            loader.evict("a")
            left = [n for n in sys.modules if n.startswith("_dynwf_inline_")]
            return a, b, original, echoed, prefixes, left
        finally:
            await pool.close()
    a, b, original, echoed, prefixes, left = asyncio.run(body())
    assert (a["text"], b["text"]) == ("alpha", "beta")       # two "helper" modules, no clash
    assert a["pid"] == b["pid"] == os.getpid()
    assert original == {"n": 1} and echoed == {"n": 1, "seen": True}  # values copied, not shared
    assert "helper" not in sys.modules and "index" not in sys.modules
    assert len(left) < len(prefixes)                          # eviction unloads its modules


def test_dynwf_run_inline_gives_the_same_result_as_process(tmp_path):
    from typer.testing import CliRunner
    from dynwf_cli.app import app
    runner = CliRunner()
    assert runner.invoke(app, ["init", str(tmp_path / "demo")]).exit_code == 0
    results = {}
    for isolation in ("process", "inline"):
        result = runner.invoke(app, ["run", "--config", str(tmp_path / "demo" / "wrangler.jsonc"),
                                     "--tenant", "acme", "--params", '{"name": "Ann"}',
                                     "--isolation", isolation, "--json"])
        assert result.exit_code == 0, result.output
        results[isolation] = [line for line in result.stdout.splitlines() if '"kind":"result"' in line]
    import json
    outputs = {k: json.loads(v[-1])["output"] for k, v in results.items()}
    assert outputs["process"] == outputs["inline"] == {
        "greeting": "Hello, Ann!", "follow_up": "Hello, Ann! How was your first day?"}
