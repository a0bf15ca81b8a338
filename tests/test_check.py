"""``dynwf check``: every rule on a failing and a passing fixture project, then the command line.

Fixture projects live in ``tests/fixtures/check/``: ``base/`` is a valid project, and each other
folder holds only the files its case changes, laid over a copy of ``base/`` in ``tmp_path``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dynwf_cli.app import app
from emulator.analysis import check as check_module
from emulator.analysis import lint as lint_module
from emulator.analysis.check import check_project, run_check
from emulator.analysis.lint import lint_tenant_source
from emulator.errors import ConfigError, UsageError

FIXTURES = Path(__file__).parent / "fixtures" / "check"
REPO = Path(__file__).resolve().parent.parent
HELLO = REPO / "examples" / "hello"
DYNWF = Path(sys.executable).with_name("dynwf")
runner = CliRunner()

# case -> every diagnostic it must produce: (code, severity, file, line), in report order.
FAILING: dict[str, list[tuple[str, str, str, int]]] = {
    "dw001_bad": [("DW001", "warning", "wrangler.jsonc", 5)],
    "dw002_bad": [("DW002", "error", "wrangler.jsonc", 6)],
    "dw003_bad": [("DW003", "error", "wrangler.jsonc", 4)],
    "dw004_bad": [("DW004", "error", "wrangler.jsonc", 3)],
    "dw005_bad": [("DW005", "warning", "wrangler.jsonc", 5)],
    "dw100_bad": [("DW100", "error", "src/entry.py", 5)],
    "dw101_bad": [("DW101", "error", "wrangler.jsonc", 6)],
    "dw102_bad": [("DW102", "error", "src/entry.py", 8)],
    "dw103_bad": [("DW103", "error", "src/entry.py", 10)],
    "dw104_bad": [("DW104", "error", "wrangler.jsonc", 9)],
    "dw105_bad": [("DW105", "warning", "wrangler.jsonc", 8)],
    "dw200_bad": [("DW200", "error", "tenants/alpha/helpers.py", 2)],
    "dw201_bad": [("DW201", "error", "tenants/alpha.beta", 1)],
    "dw202_bad": [("DW202", "error", "tenants/beta", 1)],
    "dw203_bad": [("DW203", "error", "tenants/alpha/index.py", 1)],
    "dw204_bad": [("DW204", "error", "tenants/alpha/index.py", 4)],
    "dw205_bad": [("DW205", "error", "tenants/alpha/index.py", 4)],
    "dw206_bad": [("DW206", "error", "tenants/alpha/index.py", 5)],
    "dw207_bad": [("DW207", "warning", "tenants/alpha/index.py", 5)],
    "dw208_bad": [("DW208", "error", "tenants/alpha/net.py", 3),
                  ("DW208", "error", "tenants/alpha/net.py", 4)],
    "dw301_bad": [("DW301", "warning", "tenants/alpha/index.py", 7),
                  ("DW301", "warning", "tenants/alpha/index.py", 9)],
    "dw302_bad": [("DW302", "warning", "tenants/alpha/index.py", 10),
                  ("DW302", "warning", "tenants/alpha/index.py", 15)],
    "dw303_bad": [("DW303", "error", "tenants/alpha/index.py", 6),
                  ("DW303", "error", "tenants/alpha/index.py", 8),
                  ("DW303", "error", "tenants/alpha/index.py", 8),
                  ("DW303", "error", "tenants/alpha/index.py", 12)],
    "dw304_bad": [("DW304", "warning", "tenants/alpha/index.py", 6),
                  ("DW304", "warning", "tenants/alpha/index.py", 8),
                  ("DW304", "warning", "tenants/alpha/index.py", 8),
                  ("DW304", "warning", "tenants/alpha/index.py", 12)],
    "dw305_bad": [("DW305", "error", "tenants/alpha/index.py", 6),
                  ("DW305", "error", "tenants/alpha/index.py", 10),
                  ("DW305", "error", "tenants/alpha/index.py", 10)],
    "dw306_bad": [("DW306", "error", "tenants/alpha/index.py", 6),
                  ("DW306", "error", "tenants/alpha/index.py", 7)],
    "dw307_bad": [("DW307", "error", "tenants/alpha/index.py", 11),
                  ("DW307", "error", "tenants/alpha/index.py", 12),
                  ("DW307", "error", "tenants/alpha/index.py", 12)],
    "dw308_bad": [("DW308", "warning", "tenants/alpha/index.py", 10),
                  ("DW308", "warning", "tenants/alpha/index.py", 11),
                  ("DW301", "warning", "tenants/alpha/index.py", 13),
                  ("DW308", "warning", "tenants/alpha/index.py", 13)],
    "dw309_bad": [("DW309", "error", "tenants/alpha/index.py", 6),
                  ("DW309", "error", "tenants/alpha/index.py", 8)],
}

# Each is the valid form its rule must not flag (dw101_ok binds class names five different
# ways, dw302_ok repeats a name in two branches...); base/ is the passing case for the rest.
PASSING = ["base", "dw001_ok", "dw002_ok", "dw003_ok", "dw101_ok", "dw102_ok", "dw103_ok",
           "dw104_ok",
           "dw201_ok", "dw203_ok", "dw204_ok", "dw205_ok", "dw206_ok", "dw208_ok", "dw301_ok", "dw302_ok",
           "dw303_ok", "dw304_ok", "dw305_ok", "dw306_ok", "dw307_ok", "dw308_ok"]


def project(case: str, tmp_path: Path) -> Path:
    """A copy of the case's fixture project in ``tmp_path``; returns its config file."""
    root = tmp_path / case
    shutil.copytree(FIXTURES / "base", root)
    if case != "base":
        shutil.copytree(FIXTURES / case, root, dirs_exist_ok=True)
    toml = root / "wrangler.toml"
    return toml if toml.exists() else root / "wrangler.jsonc"


def findings(config: Path, **options) -> list[tuple[str, str, str, int]]:
    return [(d.code, d.severity, d.file, d.line) for d in check_project(config, **options)]


def only(config: Path, code: str):
    [diagnostic] = [d for d in check_project(config) if d.code == code]
    return diagnostic


# --- every rule, failing and passing ----------------------------------------------------------

@pytest.mark.parametrize("case", sorted(FAILING))
def test_failing_fixture_reports_its_rule_and_nothing_else(case, tmp_path):
    assert findings(project(case, tmp_path)) == FAILING[case]


@pytest.mark.parametrize("case", PASSING)
def test_passing_fixture_is_clean(case, tmp_path):
    assert check_project(project(case, tmp_path)) == []


def test_every_fixture_folder_is_a_test_case():
    folders = {p.name for p in FIXTURES.iterdir() if p.is_dir()}
    assert folders == set(FAILING) | set(PASSING)


def test_every_documented_rule_has_a_failing_fixture():
    documented = set(re.findall(r"^(DW\d{3}) ", check_module.__doc__ + lint_module.__doc__, re.M))
    exercised = {code for expected in FAILING.values() for code, *_ in expected}
    assert documented == exercised


# --- messages and positions -------------------------------------------------------------------

def test_misspelled_class_name_names_the_exports_and_the_closest_one(tmp_path):
    found = only(project("dw101_bad", tmp_path), "DW101")
    assert found.message == ('class_name "DynamicWorkflw" is not defined or exported by '
                             'src/entry.py (exports: Default, DynamicWorkflow); '
                             'did you mean "DynamicWorkflow"?')
    assert (found.line, found.column) == (6, 72)    # the class_name value in wrangler.jsonc


def test_missing_main_names_the_closest_python_file(tmp_path):
    config = project("base", tmp_path)
    config.write_text(config.read_text().replace('"src/entry.py"', '"src/entri.py"'))
    found = only(config, "DW003")
    assert found.message == 'main module "src/entri.py" does not exist; did you mean "src/entry.py"?'
    assert found.hint == 'set "main": "src/entry.py"'


def test_refused_tenant_imports_say_why_and_what_to_do(tmp_path):
    found = [d for d in check_project(project("dw208_bad", tmp_path)) if d.code == "DW208"]
    assert [(d.message, d.hint) for d in found] == [
        ("module 'requests' is not available to tenant code in a dynamic worker: only the standard "
         "library, 'workers', 'dynamic_workflows' and the tenant's own modules can be imported",
         "make HTTP calls with `from workers import fetch`, inside a step"),
        ("module 'ctypes' is not available to tenant code in a dynamic worker: it gives direct "
         "access to the process's memory",
         "no isolate offers it; do the work in pure Python, or in the dispatcher"),
    ]


def test_every_error_has_a_hint(tmp_path):
    for case in sorted(FAILING):
        for diagnostic in check_project(project(case, tmp_path)):
            assert diagnostic.hint, (case, diagnostic)


def test_unknown_duration_unit_is_named_with_a_suggestion(tmp_path):
    found = check_project(project("dw303_bad", tmp_path))[0]
    assert "'secnds'" in found.message
    assert found.hint == "did you mean '10 seconds'?"
    assert (found.line, found.column) == (6, 33)


def test_missing_tenant_class_suggests_the_closest(tmp_path):
    found = only(project("dw203_bad", tmp_path), "DW203")
    assert "(exports: Default, TenantWorkflo)" in found.message
    assert found.message.endswith('did you mean "TenantWorkflo"?')


def test_binding_export_and_loader_rules_say_what_to_add(tmp_path):
    assert "from dynamic_workflows import DynamicWorkflowBinding" in \
        only(project("dw102_bad", tmp_path), "DW102").hint
    loader = only(project("dw103_bad", tmp_path), "DW103")
    assert loader.message.startswith("env.LOADER is used")
    assert loader.hint == 'add "worker_loaders": [{"binding": "LOADER"}] to wrangler.jsonc'


def test_config_error_keeps_the_loaders_position_without_repeating_it(tmp_path):
    found = only(project("dw002_bad", tmp_path), "DW002")
    assert found.message == "workflows[0].class_name is required"
    assert (found.line, found.column) == (6, 5)


def test_toml_config_positions_point_at_the_value(tmp_path):
    config = project("dw002_ok", tmp_path)
    config.write_text(config.read_text().replace('"DynamicWorkflow"', '"DynamicWorkflw"'))
    found = only(config, "DW101")
    assert (found.file, found.line, found.column) == ("wrangler.toml", 9, 14)


def test_dispatcher_is_linted_like_tenant_code(tmp_path):
    config = project("base", tmp_path)
    entry = config.parent / "src" / "entry.py"
    entry.write_text(entry.read_text() + "\n\nasync def start(env):\n"
                     "    return await env.WORKFLOWS.create({'id': 'has space'})\n")
    assert findings(config) == [("DW307", "error", "src/entry.py", 23)]


def test_invalid_step_config_lists_each_problem(tmp_path):
    messages = [d.message for d in check_project(project("dw305_bad", tmp_path))]
    assert messages == [
        'step config for "charge" is invalid: retries needs both \'limit\' and \'delay\' (missing: delay)',
        'step config for "refund" is invalid: unknown key \'retry\' (allowed: retries, timeout, sensitive)',
        'step config for "refund" is invalid: timeout must not be 0',
    ]


def test_syntax_errors_are_located(tmp_path):
    dispatcher = only(project("dw100_bad", tmp_path), "DW100")
    assert (dispatcher.line, dispatcher.column) == (5, 35)
    assert "expected ':'" in dispatcher.message
    [tenant] = lint_tenant_source("x = (1,\n", "t.py")
    assert (tenant.code, tenant.file, tenant.line) == ("DW200", "t.py", 1)


def test_fetch_outside_a_step_is_a_replay_warning_and_inside_one_is_not():
    source = (
        "from workers import WorkflowEntrypoint, fetch\n"
        "import workers as w\n"
        "class TenantWorkflow(WorkflowEntrypoint):\n"
        "    async def run(self, event, step):\n"
        "        price = await fetch('https://prices.example/today')\n"
        "        again = await w.fetch('https://prices.example/today')\n"
        "        @step.do('quote')\n"
        "        async def quote():\n"
        "            return (await fetch('https://prices.example/today')).status\n"
        "        return await quote()\n")
    found = sorted((d.code, d.line, d.message.split(" is called")[0])
             for d in lint_tenant_source(source, "index.py"))
    assert found == [("DW308", 5, "fetch()"), ("DW308", 6, "w.fetch()")]


def test_diagnostics_are_sorted_by_file_line_and_column(tmp_path):
    config = project("dw303_bad", tmp_path)
    (config.parent / "src" / "entry.py").write_text("def broken(:\n")
    found = check_project(config)
    assert [d.file for d in found] == ["src/entry.py"] + ["tenants/alpha/index.py"] * 4
    assert found == sorted(found, key=lambda d: (d.file, d.line, d.column))


# --- what check_project does beyond single rules ----------------------------------------------

def test_unparsable_config_is_one_diagnostic_and_tenants_are_still_checked(tmp_path):
    config = project("dw303_bad", tmp_path)
    config.write_text('{\n  "name": "broken",\n  "main": \n}\n')
    found = findings(config)
    assert [(code, file) for code, _, file, _ in found] == \
        [("DW303", "tenants/alpha/index.py")] * 4 + [("DW002", "wrangler.jsonc")]
    assert found[-1][1:] == ("error", "wrangler.jsonc", 4)


def test_missing_config_raises_not_found(tmp_path):
    with pytest.raises(ConfigError) as raised:
        check_project(tmp_path / "wrangler.jsonc")
    assert raised.value.code == "config.not_found"


def test_config_is_found_from_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(project("dw101_bad", tmp_path).parent)
    assert [d.code for d in check_project(None)] == ["DW101"]


def test_tenants_folder_and_entry_class_can_be_chosen(tmp_path):
    config = project("base", tmp_path)
    elsewhere = tmp_path / "tenant-code" / "zeta"
    elsewhere.mkdir(parents=True)
    (elsewhere / "index.py").write_text(
        "from workers import WorkflowEntrypoint\n\n\n"
        "class Flow(WorkflowEntrypoint):\n"
        "    async def run(self, event, step):\n"
        "        await step.sleep('nap', 5)\n")
    found = findings(config, tenants_dir=tmp_path / "tenant-code", entry_class="Flow")
    assert found == [("DW304", "warning", "../tenant-code/zeta/index.py", 6)]
    assert [d.code for d in check_project(config, tenants_dir=tmp_path / "tenant-code")] == \
        ["DW203", "DW304"]


def test_missing_explicit_tenants_folder_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError):
        check_project(project("base", tmp_path), tenants_dir=tmp_path / "nowhere")


def test_report_counts_the_files_it_read(tmp_path):
    report = run_check(project("dw203_ok", tmp_path))
    assert report.files == ["wrangler.jsonc", "src/entry.py", "tenants/alpha/index.py",
                            "tenants/alpha/workflow.py"]
    assert (report.errors, report.warnings) == (0, 0)


def test_shipped_example_is_clean():
    report = run_check(HELLO / "wrangler.jsonc")
    assert report.diagnostics == []
    assert report.files == ["wrangler.jsonc", "src/entry.py", "tenants/acme/index.py",
                            "tenants/globex/index.py"]


# --- the command line -------------------------------------------------------------------------

def invoke(config: Path, *args: str, monkeypatch=None):
    if monkeypatch is not None:
        monkeypatch.chdir(config.parent)     # paths in the output are relative to the cwd
    return runner.invoke(app, ["check", "--config", str(config), *args])


def test_text_output_groups_by_file_and_summarises(tmp_path, monkeypatch):
    config = project("dw308_bad", tmp_path)
    (config.parent / "src" / "entry.py").write_text("def broken(:\n")
    result = invoke(config, monkeypatch=monkeypatch)
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0] == "src/entry.py"
    assert lines[1].split() == ["src/entry.py:1:12", "error", "DW100", "invalid", "Python:",
                                "invalid", "syntax"]
    assert lines[2].startswith("      hint: fix the syntax at this line and column")
    assert lines[3] == ""
    assert lines[4] == "tenants/alpha/index.py"
    assert lines[5].startswith("  tenants/alpha/index.py:10:16  warning DW308  random.random() is called")
    assert lines[6] == "      hint: call it inside a @step.do function, whose result is persisted"
    assert lines[-1] == "1 error, 4 warnings in 3 files"


def test_text_output_when_clean(monkeypatch):
    result = invoke(HELLO / "wrangler.jsonc", monkeypatch=monkeypatch)
    assert result.exit_code == 0
    assert result.stdout == "✓ no problems in 4 files\n"


def test_json_output_is_the_diagnostics(tmp_path, monkeypatch):
    config = project("dw303_bad", tmp_path)
    result = invoke(config, "--format", "json", monkeypatch=monkeypatch)
    assert result.exit_code == 1
    assert json.loads(result.stdout) == [d.to_dict() for d in check_project(config)]
    assert json.loads(invoke(HELLO / "wrangler.jsonc", "--format", "json").stdout) == []


def test_github_output_is_workflow_commands(tmp_path, monkeypatch):
    result = invoke(project("dw101_bad", tmp_path), "--format", "github", monkeypatch=monkeypatch)
    assert result.exit_code == 1
    assert result.stdout == (
        '::error file=wrangler.jsonc,line=6,col=72,title=DW101::class_name "DynamicWorkflw" is not '
        'defined or exported by src/entry.py (exports: Default, DynamicWorkflow); did you mean '
        '"DynamicWorkflow"? (hint: define or import DynamicWorkflw at the top level of '
        'src/entry.py, or change class_name in wrangler.jsonc)\n')


def test_github_output_paths_are_relative_to_the_working_folder(tmp_path, monkeypatch):
    config = project("dw207_bad", tmp_path)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["check", "-c", str(config), "-f", "github"])
    assert result.stdout.startswith(
        "::warning file=dw207_bad/tenants/alpha/index.py,line=5,col=5,title=DW207::")
    assert result.exit_code == 0


def test_github_output_escapes_what_the_runner_would_misread():
    from dynwf_cli.commands.check import _github_command
    from emulator.config.model import Diagnostic
    line = _github_command(Diagnostic("DW303", "error", "100% wrong\nreally", "a,b:c.py", 2, 3))
    assert line == "::error file=a%2Cb%3Ac.py,line=2,col=3,title=DW303::100%25 wrong%0Areally"


def test_exit_codes(tmp_path):
    warnings_only = project("dw304_bad", tmp_path)
    assert invoke(warnings_only).exit_code == 0
    assert invoke(warnings_only, "--strict").exit_code == 1
    assert invoke(project("dw305_bad", tmp_path)).exit_code == 1
    assert invoke(HELLO / "wrangler.jsonc", "--strict").exit_code == 0
    bad_format = invoke(warnings_only, "--format", "xml")
    assert bad_format.exit_code == 2
    assert "xml" in bad_format.output


def test_help_ends_with_an_example():
    result = runner.invoke(app, ["check", "--help"])
    assert result.exit_code == 0
    description = result.stdout.split("Options:")[0].rstrip()
    assert description.endswith(
        "Example:\n\n    dynwf check --config examples/hello/wrangler.jsonc --format github --strict")
    assert "Exit status: 0 when there are no errors" in result.stdout


# --- the installed console script -------------------------------------------------------------

def dynwf(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(DYNWF), *args], capture_output=True, text=True, cwd=cwd, timeout=60)


def test_console_script_checks_the_shipped_example():
    result = dynwf("check", "--config", "examples/hello/wrangler.jsonc")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == "✓ no problems in 4 files\n"


def test_console_script_reports_a_missing_config_in_one_line(tmp_path):
    result = dynwf("check", "--config", "missing.jsonc", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("error [config.not_found] config file missing.jsonc does not exist")


def test_console_script_fails_on_errors(tmp_path):
    config = project("dw303_bad", tmp_path)
    result = dynwf("check", "--config", str(config), "--format", "github", cwd=config.parent)
    assert result.stdout.startswith("::error file=tenants/alpha/index.py,line=6,col=33,title=DW303::")
    assert result.returncode == 1, result.stderr


def test_console_script_rejects_an_unknown_format():
    result = dynwf("check", "--config", "examples/hello/wrangler.jsonc", "--format", "xml")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_a_delay_function_is_accepted_and_its_siblings_still_checked():
    """docs/semantics.md §2.3/§2.4: ``retries.delay`` may be a function (a lambda or a name); the
    rest of the config is still judged."""
    source = (
        "from workers import WorkflowEntrypoint\n"
        "def wait(ctx, error):\n"
        "    return '10 seconds'\n"
        "class TenantWorkflow(WorkflowEntrypoint):\n"
        "    async def run(self, event, step):\n"
        "        @step.do('a', config={'retries': {'limit': 3, 'delay': wait}})\n"
        "        async def a():\n"
        "            return 1\n"
        "        @step.do('b', config={'retries': {'limit': 3, 'delay': lambda ctx: 5,\n"
        "                                          'backoff': 'sideways'}})\n"
        "        async def b():\n"
        "            return 2\n"
        "        return await a() + await b()\n")
    found = [(d.code, d.line) for d in lint_tenant_source(source, "index.py")]
    assert found == [("DW305", 9)], found


def test_config_typos_get_a_did_you_mean_and_wranglers_own_keys_are_not_unknown(tmp_path):
    config = project("base", tmp_path)
    text = config.read_text()
    assert text.count('"main"') == 1 and text.count('"compatibility_date"') == 1
    config.write_text(text.replace('"compatibility_date"', '"compatability_date"').replace(
        '"main"', '"observability": {"enabled": true}, "worker_loader": [], "main"'))
    by_message = {d.message: (d.code, d.severity, d.hint) for d in check_project(config)}
    assert by_message["unknown key 'compatability_date' is ignored; did you mean "
                      "'compatibility_date'?"] == ("DW001", "warning",
                                                   "rename it to 'compatibility_date'")
    assert by_message["unknown key 'worker_loader' is ignored; did you mean "
                      "'worker_loaders'?"][2] == "rename it to 'worker_loaders'"
    assert by_message["wrangler key 'observability' is not emulated by dynwf; ignored"][:2] == (
        "DW005", "warning")
    assert not any("unknown key 'observability'" in message for message in by_message)


def test_a_missing_main_says_what_to_add(tmp_path):
    config = project("base", tmp_path)
    text = config.read_text()
    config.write_text(text.replace('"main": "src/entry.py",', ""))
    found = only(config, "DW002")
    assert found.message == "main is required"
    assert found.hint.startswith('add "main": "src/entry.py"')
