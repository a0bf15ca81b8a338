"""``--database`` / ``DYNWF_DATABASE_URL``: ``dynwf run`` and ``dynwf instances`` on a PostgreSQL
database instead of the state folder's SQLite file, and the errors for a URL dynwf cannot use
(docs/reliability.md, "PostgreSQL: engines on many hosts"; README, "--database")."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from dynwf_cli.app import app, exit_code_for

runner = CliRunner()


@pytest.fixture
def demo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DYNWF_DATABASE_URL", raising=False)
    result = runner.invoke(app, ["init", "demo", "--force"])
    assert result.exit_code == 0, result.output
    return tmp_path / "demo" / "wrangler.jsonc"


def test_run_and_list_on_postgres_leave_no_state_file(demo, postgres_url, monkeypatch):
    result = runner.invoke(app, ["run", "--config", str(demo), "--tenant", "acme", "--params",
                                 '{"name": "Alice"}', "--database", postgres_url])
    assert result.exit_code == 0, result.output
    assert not (demo.parent / ".dynwf" / "state.sqlite").exists()
    monkeypatch.setenv("DYNWF_DATABASE_URL", postgres_url)   # the variable, without the flag
    listed = runner.invoke(app, ["instances", "list", "--config", str(demo), "--json"])
    assert listed.exit_code == 0, listed.output
    [instance] = json.loads(listed.output)
    assert instance["status"] == "complete"
    # the flag wins over the variable: another schema has no instances
    other = postgres_url.replace("?schema=", "?schema=other_")
    listed = runner.invoke(app, ["instances", "list", "--config", str(demo), "--json",
                                 "--database", other])
    assert listed.exit_code == 0 and json.loads(listed.output) == []


def test_an_unknown_scheme_is_a_usage_error(demo):
    result = runner.invoke(app, ["instances", "list", "--config", str(demo),
                                 "--database", "mysql://app:s3cret@db/x"])
    error = result.exception
    assert error.code == "database.url_invalid" and exit_code_for(error) == 2
    assert "s3cret" not in str(error) and "mysql://app:***@db/x" in str(error)


def test_an_unreachable_server_is_named_without_its_password(demo):
    result = runner.invoke(app, ["instances", "list", "--config", str(demo),
                                 "--database", "postgresql://app:s3cret@127.0.0.1:1/x"])
    error = result.exception
    assert error.code == "database.unavailable" and exit_code_for(error) == 1
    assert "s3cret" not in str(error) and "app:***@127.0.0.1:1" in str(error)


@pytest.mark.parametrize("command", [["run"], ["dev"], ["serve"], ["logs"], ["instances", "list"],
                                     ["instances", "describe"]])
def test_help_shows_the_option_with_an_example(command):
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "--database" in result.output and "postgresql://" in result.output
