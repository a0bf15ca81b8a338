"""What ``dynwf`` loads to start (docs/architecture.md §9): the root help imports no command's
module, a command imports its own and not the others', and ``run`` and ``dev`` start the
isolates' zygote before their modules load, which their pool adopts, or which is stopped when the
command ends without a host (docs/architecture.md §7). Behaviour, not time: the timings are
``python -m benchmarks --only devloop`` (docs/benchmarks.md, "The dev loop")."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dynwf_cli.app import app
from dynwf_cli.commands import COMMANDS
from dynwf_cli.lazy import load_command, starts_isolates
from emulator.isolates import zygote
from emulator.isolates.early import start_isolates_early, stop_unadopted
from emulator.isolates.pool import IsolateLimits, IsolatePool
from emulator.loader import WorkerLoader
from emulator.templates import write_template

ROOT = Path(__file__).resolve().parents[1]
#: Loaded by no command that neither runs nor serves a project.
HOST_MODULES = ("emulator.engine.engine", "emulator.host", "emulator.server", "emulator.runner",
                "emulator.isolates.zygote", "sqlite_utils", "uvicorn", "starlette")


def loaded_by(*args: str, cwd: Path = ROOT) -> tuple[int, str, set[str]]:
    """(exit status, stdout, modules loaded) of ``dynwf ARGS`` in a fresh interpreter."""
    script = ("import json, sys\nfrom dynwf_cli.app import main\nsys.argv = ['dynwf', *sys.argv[1:]]\n"
              "try:\n    main()\nexcept SystemExit as exc:\n    code = exc.code\n"
              "sys.stderr.write(json.dumps([code, sorted(sys.modules)]))\n")
    done = subprocess.run([sys.executable, "-c", script, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin",
                                                       "NO_COLOR": "1"})
    code, modules = json.loads(done.stderr.strip().splitlines()[-1])
    return code, done.stdout, set(modules)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("startup") / "demo"
    write_template("basic", folder, force=False)
    return folder / "wrangler.jsonc"


def test_the_root_help_lists_every_command_and_imports_none():
    code, out, modules = loaded_by("--help")
    assert code == 0
    for name, summary in COMMANDS.items():
        assert f"  {name}" in out and summary in out, name
    assert sorted(m for m in modules if m.startswith("dynwf_cli.commands.")) == []
    assert [m for m in HOST_MODULES if m in modules] == []
    assert "rich" not in modules and "pydantic" not in modules


def test_check_loads_its_own_module_and_no_host(project):
    code, out, modules = loaded_by("check", "--config", str(project))
    assert code == 0 and "no problems" in out
    assert sorted(m for m in modules if m.startswith("dynwf_cli.commands.")) == \
        ["dynwf_cli.commands.check"]
    assert [m for m in HOST_MODULES if m in modules] == []


def test_each_command_registers_with_the_summary_the_root_help_shows():
    for name, summary in COMMANDS.items():
        assert load_command(name).get_short_help_str(10_000) == summary, name


def test_every_command_module_is_listed():
    """A module under dynwf_cli/commands/ that COMMANDS does not name would be unreachable."""
    modules = {p.stem for p in (ROOT / "dynwf_cli" / "commands").glob("*.py") if p.stem != "__init__"}
    assert modules == set(COMMANDS)


def test_a_command_mistyped_is_suggested_from_the_list():
    result = CliRunner().invoke(app, ["chek"])
    assert result.exit_code == 2
    assert "Did you mean 'check'?" in result.output


@pytest.mark.parametrize("name, args, expected", [
    ("run", ["--tenant", "acme"], True),
    ("dev", [], True),
    ("run", ["--isolation", "process"], True),
    ("run", ["--isolation", "inline"], False),
    ("dev", ["--isolation=INLINE"], False),
    ("run", ["--tenant", "acme", "--help"], False),
    ("dev", ["-h"], False),
    ("run", [], False),            # run's help
    ("dev", ["--json"], True),
    ("check", [], False),
    ("instances", ["list"], False),
    ("replay", [], True),
    ("replay", ["--isolation", "inline"], False),
])
def test_which_invocations_start_the_zygote_early(name, args, expected):
    assert starts_isolates(name, args) is expected


def test_a_pool_adopts_the_zygote_started_early_and_its_isolates_work():
    async def body():
        start_isolates_early(memory_mb=128)
        (early, _), = zygote._early.values()
        pool = IsolatePool(limits=IsolateLimits(memory_mb=128, cpu_ms=500))
        await pool.start()
        try:
            adopted = pool.zygote.process is early
            modules = {"index.py": "from workers import WorkerEntrypoint\n\n"
                                   "class Default(WorkerEntrypoint):\n"
                                   "    async def ping(self, n):\n        return n + 1\n"}
            stub = WorkerLoader(pool).get("t", lambda: {
                "compatibility_date": "2026-04-01", "main_module": "index.py",
                "modules": modules, "global_outbound": None}).get_entrypoint()
            return adopted, await stub.ping(41), dict(zygote._early)
        finally:
            await pool.close()
    adopted, answer, left = asyncio.run(asyncio.wait_for(body(), 120))
    assert adopted and answer == 42 and left == {}


def test_a_pool_with_another_profile_starts_its_own_and_the_early_one_is_stopped():
    async def body():
        start_isolates_early(memory_mb=96)
        (early, _), = zygote._early.values()
        pool = IsolatePool(limits=IsolateLimits(memory_mb=128, cpu_ms=500))
        await pool.start()
        try:
            return early, pool.zygote.process is not early
        finally:
            await pool.close()
    early, own = asyncio.run(asyncio.wait_for(body(), 120))
    assert own
    stop_unadopted()
    assert zygote._early == {}
    deadline = time.monotonic() + 30
    while early.poll() is None:
        assert time.monotonic() < deadline, "the unadopted zygote was not stopped"
        time.sleep(0.01)


#: After ``dynwf ARGS`` in this interpreter: the states of its child processes, by pid, as
#: (state letter, whether it is a zygote), until none is a live zygote or 30 s have passed.
CHILDREN_AFTER = """
import json, os, sys, time
from dynwf_cli.app import main
sys.argv = ['dynwf', *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    code = exc.code

def children():
    found = {}
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            with open(f'/proc/{pid}/stat') as stat, open(f'/proc/{pid}/cmdline', 'rb') as cmd:
                fields, command = stat.read().rsplit(')', 1)[1].split(), cmd.read()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():
            found[pid] = (fields[0], b'emulator.isolates.zygote' in command)
    return found

deadline = time.monotonic() + 30
seen = children()
while any(state != 'Z' and zygote for state, zygote in children().values()):
    if time.monotonic() > deadline:
        break
    time.sleep(0.01)
print(json.dumps({'code': code, 'seen': seen, 'after': children()}))
"""


def test_a_run_refused_before_its_host_starts_stops_its_zygote(project):
    """A usage error after the zygote started: the command's end stops it (it was started: a
    child process was there; it is stopped: no zygote is left running)."""
    done = subprocess.run([sys.executable, "-c", CHILDREN_AFTER, "run", "--config", str(project),
                           "--tenant", "acme", "--params", "{not json"], cwd=project.parent,
                          capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"] == 2 and "--params is not valid JSON" in done.stderr
    assert len(result["seen"]) == 1
    assert [pid for pid, (state, zygote) in result["after"].items() if zygote and state != "Z"] == []


def test_check_and_help_start_no_zygote(project):
    for args in (["check", "--config", str(project)], ["run", "--help"], ["run"]):
        done = subprocess.run([sys.executable, "-c", CHILDREN_AFTER, *args], cwd=project.parent,
                              capture_output=True, text=True, timeout=120,
                              env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert result["seen"] == {}, args
        assert result["code"] == (2 if args == ["run"] else 0), args   # no arguments: run's help


def test_completing_a_run_command_line_starts_no_zygote(project):
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "_DYNWF_COMPLETE": "complete_bash",
           "COMP_WORDS": "dynwf run --tenant acme --isol", "COMP_CWORD": "4"}
    done = subprocess.run([sys.executable, "-c", CHILDREN_AFTER], cwd=project.parent,
                          capture_output=True, text=True, timeout=120, env={**env})
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert "--isolation" in done.stdout.split()
    assert result["seen"] == {}


def test_the_check_before_a_run_reads_the_run_tenants_folder_only(tmp_path):
    """run and dev refuse the errors of the wrangler file, the dispatcher and the tenant they
    run (dev: none); the other tenants' folders are not read for that, nor the config twice."""
    from emulator import open_project, run_check
    write_template("basic", tmp_path, force=False)
    (tmp_path / "tenants" / "globex" / "index.py").write_text("def broken(:\n")
    project = open_project(tmp_path / "wrangler.jsonc")
    everything = run_check(project.config.path)
    for_acme = run_check(project.config.path, config=project.config, tenants=("acme",))
    for_none = run_check(project.config.path, config=project.config, tenants=())
    assert any(d.file.startswith("tenants/globex") and d.severity == "error"
               for d in everything.diagnostics)
    assert [d for d in for_acme.diagnostics if d.file.startswith("tenants/globex")] == []
    assert "tenants/acme/index.py" in for_acme.files
    assert not any(f.startswith("tenants/globex") for f in for_acme.files)
    assert not any(f.startswith("tenants/") for f in for_none.files)
    refused = CliRunner().invoke(app, ["run", "--config", str(project.config.path), "--tenant",
                                       "globex", "--isolation", "inline"])
    assert refused.exit_code == 1 and "tenants/globex/index.py" in refused.output


def test_dev_loads_neither_the_production_server_nor_a_database_driver():
    code, out, modules = loaded_by("dev", "--help")
    assert code == 0 and "dynwf dev" in out
    assert "emulator.server.app" in modules
    assert [m for m in ("emulator.server.production", "emulator.server.metrics",
                        "prometheus_client", "psycopg", "sqlite_utils",
                        "dynwf_cli.commands.serve") if m in modules] == []
