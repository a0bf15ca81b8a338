"""``dynwf init``: the template it writes, every edge of writing it, and the installed wheel.

Each case runs through Typer's ``CliRunner`` for what the user reads, and through the real
``dynwf`` console script where the exit code and the one-line error are the point (the runner
sees a ``DynwfError`` as an exception; ``main()`` is what turns it into an exit code).

Exit codes (docs/architecture.md §9): an unknown ``--template`` is a usage error, 2, like any bad
option value;
a folder that is not empty, or a path in the way, is the command failing at its job, 1.
"""

from __future__ import annotations

import asyncio
import errno
import json
import re
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dynwf_cli.app import app
from emulator.analysis.check import check_project, run_check
from emulator.errors import DynwfError, UsageError
from emulator.templates import (list_templates, plan_template, project_name, templates_root,
                                write_template)

REPO = Path(__file__).resolve().parent.parent
DYNWF = Path(sys.executable).with_name("dynwf")
TEMPLATE_FILES = [".gitignore", "README.md", "wrangler.jsonc", "src/entry.py",
                  "tenants/acme/index.py", "tenants/globex/index.py"]
NEXT = ["dynwf check", """dynwf run --tenant acme --params '{"name": "Alice"}'"""]
runner = CliRunner()


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every entry under ``root``: file contents, and None for folders."""
    return {path.relative_to(root).as_posix(): None if path.is_dir() else path.read_bytes()
            for path in sorted(root.rglob("*"))}


def dynwf(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(DYNWF), *args], capture_output=True, text=True, cwd=cwd, timeout=60)


# ---- the template ----------------------------------------------------------------------------

def test_templates_are_found_in_the_source_tree():
    assert templates_root() == REPO / "templates"
    assert list_templates() == ["basic"]


def test_the_template_folder_itself_is_a_clean_project():
    report = run_check(REPO / "templates" / "basic" / "wrangler.jsonc")
    assert report.diagnostics == []
    assert report.files == ["wrangler.jsonc", "src/entry.py", "tenants/acme/index.py",
                            "tenants/globex/index.py"]


@pytest.mark.parametrize("folder, name", [
    ("My Project", "my-project"), ("acme_flows.v2", "acme-flows-v2"), ("--x--", "x"),
    ("日本", "dynamic-workflows"), ("a" * 80, "a" * 63),
])
def test_project_name_is_a_valid_worker_name(tmp_path, folder, name):
    assert project_name(tmp_path / folder) == name


def test_the_written_project_runs_both_tenants_workflows(tmp_path):
    """Acme greets, sleeps a day and follows up; Globex deploys when approved and stops cleanly
    when the approval times out. Fast-forward ends the day's sleep and, asked to skip event
    timeouts too, the hour's wait: each instance's own timer, early (docs/semantics.md, "Time")."""
    from emulator.config import load_config
    from emulator.engine import VirtualClock
    from emulator.host import HostOptions, ProjectHost

    write_template("basic", tmp_path / "proj", force=False)

    async def scenario():
        options = HostOptions(state_dir=tmp_path / "state", clock=VirtualClock(flowing=False))
        host = ProjectHost(load_config(tmp_path / "proj" / "wrangler.jsonc"), options)
        await host.start()
        from dynamic_workflows import scoped_instance_id
        from workers import Request  # importable once the host has put the runtime on the path

        async def post(tenant, body):
            response = await host.fetch(Request("http://localhost/", method="POST",
                                                headers={"x-tenant-id": tenant},
                                                body=json.dumps(body)))
            assert response.status == 200, await response.text()
            return (await response.json())["id"]

        try:
            acme = await post("acme", {"name": "Alice"})
            approved = await post("globex", {"ref": "v1"})
            ignored = await post("globex", {"ref": "v2"})
            await host.engine.drain(jump=False)     # everyone is asleep or waiting now
            await post("globex", {"approve": approved})
            await host.engine.drain(jump_kinds=("sleep", "retry", "event_timeout"))
            raw = host.engine.binding("tenant-workflows")
            return [await (await raw.get(scoped_instance_id({"tenantId": tenant}, id_))).status()
                    for tenant, id_ in (("acme", acme), ("globex", approved), ("globex", ignored))]
        finally:
            await host.close()

    acme, approved, ignored = asyncio.run(asyncio.wait_for(scenario(), 120))
    assert acme == {"status": "complete", "error": None, "output": {
        "greeting": "Hello, Alice!", "follow_up": "Hello, Alice! How was your first day?"}}
    assert approved["output"] == {"deployed": True, "ref": "v1", "artifact": "release-v1.tar.gz"}
    assert ignored["status"] == "complete"
    assert ignored["output"] == {"deployed": False, "reason": "not approved within 1 hour",
                                 "ref": "v2", "artifact": "release-v2.tar.gz"}


# ---- the command line ------------------------------------------------------------------------

def test_init_creates_a_new_folder_that_passes_check(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["init", "nested/My Flows"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "Wrote the basic template into nested/My Flows/:", *(f"  {f}" for f in TEMPLATE_FILES),
        "", "Next:", "  cd 'nested/My Flows'", *(f"  {step}" for step in NEXT)]
    project = tmp_path / "nested" / "My Flows"
    assert sorted(snapshot(project)) == sorted(TEMPLATE_FILES + ["src", "tenants", "tenants/acme",
                                                                 "tenants/globex"])
    assert '"name": "my-flows",' in (project / "wrangler.jsonc").read_text()
    assert (project / "README.md").read_text().startswith("# my-flows\n")
    assert ".dynwf/" in (project / ".gitignore").read_text().splitlines()
    assert check_project(project / "wrangler.jsonc") == []


def test_init_fills_an_empty_current_folder(tmp_path, monkeypatch):
    project = tmp_path / "flows"
    (project / ".git").mkdir(parents=True)      # a fresh clone still counts as empty
    monkeypatch.chdir(project)
    result = runner.invoke(app, ["init"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "Wrote the basic template into the current folder:"
    assert lines[-3:] == ["Next:", *(f"  {step}" for step in NEXT)]   # no `cd` to where we are
    assert sorted(p for p, content in snapshot(project).items() if content is not None) \
        == sorted(TEMPLATE_FILES)
    assert check_project(project / "wrangler.jsonc") == []


def test_a_folder_that_is_not_empty_is_refused_and_left_alone(tmp_path):
    project = tmp_path / "flows"
    project.mkdir()
    (project / "notes.txt").write_text("mine\n")
    (project / "README.md").write_text("# my own readme\n")
    before = snapshot(project)
    result = dynwf("init", "flows", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("error [init.not_empty] flows is not empty (it has README.md, "
                           "notes.txt); the template would overwrite README.md (hint: ")
    assert "--force" in line
    assert snapshot(project) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flows"]   # no staging folder left


def test_force_overwrites_only_what_differs_and_reports_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert runner.invoke(app, ["init", "flows"]).exit_code == 0
    project = tmp_path / "flows"
    (project / "notes.txt").write_text("mine\n")
    (project / "tenants" / "acme" / "index.py").write_text("# edited\n")
    (project / "README.md").unlink()
    entry_mtime = (project / "src" / "entry.py").stat().st_mtime_ns

    result = runner.invoke(app, ["init", "flows", "--force"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[:3] == ["Wrote the basic template into flows/:", "  README.md",
                         "  tenants/acme/index.py  (overwritten)"]
    assert lines[3].startswith("  the files it replaced are kept in flows/.dynwf/backups/init-")
    backups = list((project / ".dynwf" / "backups").iterdir())
    assert len(backups) == 1 and lines[3].endswith(f"{backups[0].name}/")
    assert (backups[0] / "tenants" / "acme" / "index.py").read_text() == "# edited\n"
    assert sorted(p.relative_to(backups[0]).as_posix() for p in backups[0].rglob("*")
                  if p.is_file()) == ["tenants/acme/index.py"]   # only what was replaced
    assert lines[4] == ("  already as in the template, left alone: .gitignore, wrangler.jsonc, "
                        "src/entry.py, tenants/globex/index.py")
    assert (project / "notes.txt").read_text() == "mine\n"
    assert (project / "src" / "entry.py").stat().st_mtime_ns == entry_mtime
    assert check_project(project / "wrangler.jsonc") == []

    again = runner.invoke(app, ["init", "flows", "--force", "--json"])
    assert again.exit_code == 0
    assert json.loads(again.stdout) == {
        "directory": str(project), "template": "basic", "files": [], "overwritten": [],
        "unchanged": TEMPLATE_FILES, "backup": None}


def test_json_lists_the_files_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["init", "flows", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {
        "directory": str(tmp_path / "flows"), "template": "basic", "files": TEMPLATE_FILES,
        "overwritten": [], "unchanged": [], "backup": None}


def test_force_still_refuses_a_path_it_cannot_replace(tmp_path):
    project = tmp_path / "flows"
    project.mkdir()
    (project / "src").write_text("a file where the template has a folder\n")
    (project / "README.md").mkdir()
    before = snapshot(project)
    result = dynwf("init", "flows", "--force", cwd=tmp_path)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("error [init.conflict] cannot write the template into flows: "
                           "README.md is a folder where the template has a file; "
                           "src is a file where the template has a folder (hint: ")
    assert snapshot(project) == before


def test_a_file_as_target_is_refused(tmp_path):
    (tmp_path / "flows").write_text("x")
    result = dynwf("init", "flows", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("error [init.not_a_directory] flows exists and is not a folder")


def test_an_unknown_template_is_a_usage_error_naming_the_available_ones(tmp_path):
    result = dynwf("init", "flows", "--template", "fancy", cwd=tmp_path)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line == ("error [init.unknown_template] unknown template 'fancy'; available: basic "
                    "(hint: pass --template basic)")
    assert list(tmp_path.iterdir()) == []

    in_process = runner.invoke(app, ["init", str(tmp_path / "flows"), "-t", "../templates"])
    assert isinstance(in_process.exception, UsageError)
    assert in_process.exception.code == "init.unknown_template"
    assert list(tmp_path.iterdir()) == []


def test_console_script_writes_a_project_that_checks_clean(tmp_path):
    result = dynwf("init", "flows", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "  tenants/globex/index.py" in result.stdout.splitlines()
    checked = dynwf("check", cwd=tmp_path / "flows")
    assert checked.returncode == 0, checked.stdout
    assert checked.stdout == "✓ no problems in 4 files\n"


def test_help_ends_with_an_example():
    result = runner.invoke(app, ["init", "--help"])
    assert result.exit_code == 0
    description = result.stdout.split("Arguments:")[0].rstrip()
    assert description.endswith(
        "Example:\n\n    dynwf init my-workflows && cd my-workflows && dynwf check")
    assert "--force" in result.stdout and "--template" in result.stdout
    commands = [line.split()[0] for line in runner.invoke(app, ["--help"]).stdout
                .split("Commands:")[1].splitlines() if line.strip()]
    assert commands[:2] == ["init", "check"]     # the first command a newcomer runs comes first
    assert re.search(r"^\s+init\s+Create a project from a template\.$",
                     runner.invoke(app, ["--help"]).stdout, re.MULTILINE)


# ---- all or nothing --------------------------------------------------------------------------

def fail_after(count: int, error: BaseException):
    moved: list[Path] = []

    def on_moved(path: Path) -> None:
        moved.append(path)
        if len(moved) == count:
            raise error
    return on_moved, moved


def test_a_failure_part_way_into_an_existing_folder_restores_it(tmp_path):
    project = tmp_path / "flows"
    project.mkdir()
    (project / "notes.txt").write_text("mine\n")
    (project / "README.md").write_text("# my own readme\n")
    before = snapshot(project)
    assert [p.state for p in plan_template("basic", project)][:2] == ["new", "overwrite"]
    disk_full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(project / "src"))
    on_moved, moved = fail_after(4, disk_full)
    with pytest.raises(DynwfError) as failed:
        write_template("basic", project, force=True, on_moved=on_moved)
    assert failed.value.code == "init.write_failed"
    assert failed.value.message.endswith("flows/src: No space left on device")
    assert len(moved) == 4                      # the README had already been replaced
    assert snapshot(project) == before          # ...and is back, with no new files or folders


def test_an_interrupt_while_creating_a_folder_leaves_no_trace(tmp_path):
    on_moved, _ = fail_after(1, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        write_template("basic", tmp_path / "a" / "b" / "flows", force=False, on_moved=on_moved)
    assert list(tmp_path.iterdir()) == []       # neither the project nor its new parents


def test_write_template_returns_the_paths_it_wrote(tmp_path):
    written = write_template("basic", tmp_path / "flows", force=False)
    assert written == [tmp_path / "flows" / f for f in TEMPLATE_FILES]
    assert write_template("basic", tmp_path / "flows", force=True) == []
    with pytest.raises(DynwfError) as refused:
        write_template("basic", tmp_path / "flows", force=False)
    assert refused.value.code == "init.not_empty"


# ---- the installed wheel ---------------------------------------------------------------------

def test_the_wheel_ships_the_templates_and_init_works_from_an_installed_copy(tmp_path):
    """Build the wheel, install it into a fresh venv and run ``dynwf init`` far from the source.

    Choices, for a test that is reliable offline-ish and quick (about 10 s here):

    - Build: ``pip wheel --no-deps`` with pip's default build isolation, so the build backend
      pinned in ``[build-system]`` is fetched the way any install fetches it (``pip install -e .``
      needed it already); the dev venv needs no hatchling of its own.
    - Install: a fresh venv without system site packages and without pip, into which this venv's
      pip installs the wheel through ``pip --python`` with ``--no-deps --no-index``: no registry.
    - Runtime dependencies (typer, rich, sqlite-utils): one ``.pth`` line in the fresh venv names
      this venv's site-packages. A ``.pth`` line only appends a folder to ``sys.path``; the
      ``.pth`` files inside that folder (among them the editable install's, which points at the
      source tree) are not processed, so ``dynwf`` can only come from the wheel, which the test
      confirms by asking the installed copy where its modules and templates are.
    """
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                            str(wheels), str(REPO)], capture_output=True, text=True, timeout=180)
    assert build.returncode == 0, build.stderr
    [wheel] = wheels.glob("dynwf-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    assert {f"dynwf_cli/templates/basic/{f}" for f in TEMPLATE_FILES} <= shipped

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=60)
    python = venv / "bin" / "python"
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                              "-q", "--no-deps", "--no-index", str(wheel)],
                             capture_output=True, text=True, timeout=120)
    assert install.returncode == 0, install.stderr
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], capture_output=True, text=True, check=True).stdout
    (Path(site.strip()) / "dynwf_test_dependencies.pth").write_text(
        "\n".join(sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}))
        + "\n")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    where = subprocess.run(
        [str(python), "-c", "import dynwf_cli, emulator.templates as t; "
                            "print(dynwf_cli.__file__); print(t.templates_root())"],
        capture_output=True, text=True, cwd=elsewhere, env=env, timeout=60)
    assert where.returncode == 0, where.stderr
    module, root = map(Path, where.stdout.split("\n")[:2])
    assert module.is_relative_to(venv) and root == module.parent / "templates"

    created = subprocess.run([str(venv / "bin" / "dynwf"), "init", "flows"], capture_output=True,
                             text=True, cwd=elsewhere, env=env, timeout=60)
    assert created.returncode == 0, created.stderr
    project = elsewhere / "flows"
    assert sorted(p for p, content in snapshot(project).items() if content is not None) \
        == sorted(TEMPLATE_FILES)
    assert '"name": "flows",' in (project / "wrangler.jsonc").read_text()
    checked = subprocess.run([str(venv / "bin" / "dynwf"), "check"], capture_output=True,
                             text=True, cwd=project, env=env, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout == "✓ no problems in 4 files\n"
