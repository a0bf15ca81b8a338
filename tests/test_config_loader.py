"""Finding and loading wrangler files: equivalence of formats, validation errors and warnings."""

import dataclasses
import json
from pathlib import Path

import pytest

from emulator.config import (DevConfig, ProjectConfig, WorkerLoaderConfig, WorkflowConfig,
                             find_config, load_config)
from emulator.errors import ConfigError

JSONC = """\
/**
 * For more details on how to configure Wrangler, refer to:
 * https://developers.cloudflare.com/workers/wrangler/configuration/
 */
{
  "$schema": "node_modules/wrangler/config-schema.json",
  "name": "tenants",
  "main": "src/entry.py",
  "compatibility_date": "2025-04-01",
  "compatibility_flags": ["python_workers"],
  "workflows": [
    {
      "name": "tenant-workflow",
      "binding": "WORKFLOWS",
      "class_name": "TenantWorkflow",
      "limits": { "steps": 500 }, // a tenant's plan
    },
  ],
  "worker_loaders": [{ "binding": "LOADER" }],
  "vars": { "GREETING": "hello" },
  "dev": { "port": 9000 },
}
"""

JSON = json.dumps({
    "$schema": "node_modules/wrangler/config-schema.json",
    "name": "tenants", "main": "src/entry.py", "compatibility_date": "2025-04-01",
    "compatibility_flags": ["python_workers"],
    "workflows": [{"name": "tenant-workflow", "binding": "WORKFLOWS",
                   "class_name": "TenantWorkflow", "limits": {"steps": 500}}],
    "worker_loaders": [{"binding": "LOADER"}],
    "vars": {"GREETING": "hello"},
    "dev": {"port": 9000},
}, indent=2)

TOML = """\
"$schema" = "node_modules/wrangler/config-schema.json"
name = "tenants"
main = "src/entry.py"
compatibility_date = "2025-04-01"
compatibility_flags = ["python_workers"]
worker_loaders = [{ binding = "LOADER" }]

[[workflows]]
name = "tenant-workflow"
binding = "WORKFLOWS"
class_name = "TenantWorkflow"
limits = { steps = 500 }

[vars]
GREETING = "hello"

[dev]
port = 9000
"""

EXPECTED = ProjectConfig(
    path=Path("unset"), name="tenants", main="src/entry.py", compatibility_date="2025-04-01",
    compatibility_flags=["python_workers"],
    workflows=[WorkflowConfig(name="tenant-workflow", binding="WORKFLOWS",
                              class_name="TenantWorkflow", step_limit=500)],
    worker_loaders=[WorkerLoaderConfig(binding="LOADER")],
    vars={"GREETING": "hello"}, dev=DevConfig(ip="127.0.0.1", port=9000),
    extra={"$schema": "node_modules/wrangler/config-schema.json"},
)


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_bytes(text.encode("utf-8"))    # bytes, so CRLF reaches the loader untouched
    return path


def load_text(tmp_path: Path, text: str, name: str = "wrangler.jsonc") -> ProjectConfig:
    return load_config(write(tmp_path, name, text))


def load_error(tmp_path: Path, text: str, name: str = "wrangler.jsonc") -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, text, name)
    return caught.value


@pytest.mark.parametrize(("name", "text"), [("wrangler.jsonc", JSONC), ("wrangler.json", JSON),
                                            ("wrangler.toml", TOML)])
def test_equivalent_files_load_to_the_same_config(tmp_path, name, text):
    config = load_text(tmp_path, text, name)
    assert config == dataclasses.replace(EXPECTED, path=tmp_path.resolve() / name)
    assert config.warnings == []    # "$schema" is kept but not worth a warning


def test_path_is_resolved_and_main_is_relative_to_it(tmp_path, monkeypatch):
    (tmp_path / "project").mkdir()
    write(tmp_path / "project", "wrangler.jsonc", JSONC)
    monkeypatch.chdir(tmp_path)
    config = load_config(Path("project/wrangler.jsonc"))
    assert config.path == (tmp_path / "project" / "wrangler.jsonc").resolve()
    assert config.path.is_absolute()
    assert config.main_path == config.root / "src" / "entry.py"


def test_minimal_config_gets_defaults(tmp_path):
    config = load_text(tmp_path, '{"name": "x", "main": "entry.py"}')
    assert (config.compatibility_date, config.compatibility_flags, config.workflows) == \
        (None, [], [])
    assert config.dev == DevConfig(ip="127.0.0.1", port=8787)
    assert (config.vars, config.extra, config.warnings) == ({}, {}, [])


def test_find_config_prefers_jsonc_then_json_then_toml(tmp_path):
    for name, text in [("wrangler.toml", TOML), ("wrangler.json", JSON), ("wrangler.jsonc", JSONC)]:
        write(tmp_path, name, text)
    assert find_config(tmp_path) == (tmp_path / "wrangler.jsonc").resolve()
    (tmp_path / "wrangler.jsonc").unlink()
    assert find_config(tmp_path) == (tmp_path / "wrangler.json").resolve()
    (tmp_path / "wrangler.json").unlink()
    assert find_config(tmp_path) == (tmp_path / "wrangler.toml").resolve()


def test_find_config_defaults_to_the_current_directory(tmp_path, monkeypatch):
    write(tmp_path, "wrangler.toml", TOML)
    monkeypatch.chdir(tmp_path)
    assert find_config() == (tmp_path / "wrangler.toml").resolve()


def test_find_config_takes_an_explicit_file_over_the_search(tmp_path):
    write(tmp_path, "wrangler.jsonc", JSONC)
    other = write(tmp_path, "staging.toml", TOML)
    assert find_config(tmp_path, explicit=other) == other.resolve()


def test_find_config_searches_an_explicit_directory(tmp_path):
    write(tmp_path, "wrangler.json", JSON)
    assert find_config(Path("/nonexistent"), explicit=tmp_path) == \
        (tmp_path / "wrangler.json").resolve()


def test_find_config_reports_a_missing_explicit_file(tmp_path):
    with pytest.raises(ConfigError) as caught:
        find_config(tmp_path, explicit=tmp_path / "nope.jsonc")
    assert caught.value.code == "config.not_found"
    assert "nope.jsonc does not exist" in caught.value.message


def test_find_config_reports_nothing_to_load(tmp_path):
    with pytest.raises(ConfigError) as caught:
        find_config(tmp_path)
    error = caught.value
    assert error.code == "config.not_found"
    assert str(tmp_path) in error.message
    assert error.hint == "run dynwf init, or pass --config FILE"
    assert str(error).endswith("(hint: run dynwf init, or pass --config FILE)")


def test_missing_name_points_at_the_top_level_object(tmp_path):
    error = load_error(tmp_path, '// header\n\n  {"main": "entry.py"}\n')
    assert (error.code, error.message) == \
        ("config.invalid", "wrangler.jsonc:3:3: name is required")
    assert (error.path, error.line, error.column) == ("wrangler.jsonc", 3, 3)


def test_missing_class_name_points_at_the_workflow_entry(tmp_path):
    text = ('{\n  "name": "x",\n  "main": "entry.py",\n  "workflows": [\n'
            '    {"name": "w", "binding": "W"},\n  ],\n}\n')
    error = load_error(tmp_path, text)
    assert error.message == "wrangler.jsonc:5:5: workflows[0].class_name is required"


def test_wrong_type_of_dev_port_points_at_the_value(tmp_path):
    text = '{\n  "name": "x",\n  "main": "entry.py",\n  "dev": { "port": "8787" }\n}'
    error = load_error(tmp_path, text)
    assert error.message == 'wrangler.jsonc:4:20: dev.port must be an integer, got "8787"'


@pytest.mark.parametrize(("dev", "message"), [
    ('{"port": 70000}', "dev.port must be between 1 and 65535, got 70000"),
    ('{"port": true}', "dev.port must be an integer, got true"),
    ('{"ip": 127}', "dev.ip must be a string, got 127"),
    ('"localhost"', 'dev must be an object, got "localhost"'),
])
def test_bad_dev_settings(tmp_path, dev, message):
    error = load_error(tmp_path, f'{{"name": "x", "main": "m.py", "dev": {dev}}}')
    assert error.message.endswith(": " + message)


@pytest.mark.parametrize("date", ["2024/01/01", "2024-02-30", "24-01-01", "2024-1-1"])
def test_bad_compatibility_date(tmp_path, date):
    text = f'{{\n  "name": "x",\n  "main": "m.py",\n  "compatibility_date": "{date}"\n}}'
    error = load_error(tmp_path, text)
    assert error.message == (f'wrangler.jsonc:4:25: compatibility_date must be a date written '
                             f'YYYY-MM-DD, got "{date}"')


@pytest.mark.parametrize(("body", "message", "where"), [
    ('"workflows": {}', "workflows must be a list, got an object", (1, 44)),
    ('"workflows": ["w"]', 'workflows[0] must be an object, got "w"', (1, 45)),
    ('"workflows": [{"name": "w", "binding": "W", "class_name": "C", "limits": {"steps": 0}}]',
     "workflows[0].limits.steps must be between 1 and 25000, got 0", (1, 114)),
    ('"workflows": [{"name": "w", "binding": 1, "class_name": "C"}]',
     "workflows[0].binding must be a string, got 1", (1, 70)),
    ('"worker_loaders": [{}]', "worker_loaders[0].binding is required", (1, 50)),
    ('"compatibility_flags": ["a", 2]', "compatibility_flags[1] must be a string, got 2", (1, 60)),
    ('"vars": []', "vars must be an object, got a list", (1, 39)),
])
def test_invalid_sections(tmp_path, body, message, where):
    error = load_error(tmp_path, f'{{"name": "x", "main": "m.py", {body}}}')
    assert error.message.endswith(": " + message)
    assert (error.line, error.column) == where


def test_top_level_must_be_an_object(tmp_path):
    error = load_error(tmp_path, "// nothing useful\n[1, 2]")
    assert error.message == "wrangler.jsonc:2:1: the top level must be an object, got a list"


def test_workflow_step_limit_is_read(tmp_path):
    config = load_text(tmp_path, '{"name": "x", "main": "m.py", "workflows": [{"name": "w", '
                                 '"binding": "W", "class_name": "C", "script_name": "other", '
                                 '"limits": {"steps": 25000}}]}')
    assert config.workflows == [WorkflowConfig(name="w", binding="W", class_name="C",
                                               script_name="other", step_limit=25000)]


def test_wrangler_keys_dynwf_does_not_emulate_are_kept_and_named_as_wranglers(tmp_path):
    text = ('{\n  "name": "x",\n  "main": "m.py",\n  "routes": ["example.com/*"],\n'
            '  "observability": {"enabled": true}\n}')
    config = load_text(tmp_path, text)
    assert config.extra == {"routes": ["example.com/*"], "observability": {"enabled": True}}
    assert [(w.code, w.severity, w.message, w.file, w.line, w.column) for w in config.warnings] == [
        ("DW005", "warning", "wrangler key 'routes' is not emulated by dynwf; ignored",
         "wrangler.jsonc", 4, 3),
        ("DW005", "warning", "wrangler key 'observability' is not emulated by dynwf; ignored",
         "wrangler.jsonc", 5, 3),
    ]
    assert all("wrangler deploy still uses it" in w.hint for w in config.warnings)


def test_misspelt_keys_are_unknown_with_the_closest_known_key(tmp_path):
    text = ('{"name": "x", "main": "m.py",\n "compatability_date": "2025-04-01",\n'
            ' "worker_loader": [{"binding": "LOADER"}],\n "dev": {"prot": 9000},\n "zzz": 1}')
    config = load_text(tmp_path, text)
    assert [(w.code, w.message, w.hint, w.line) for w in config.warnings] == [
        ("DW001", "unknown key 'compatability_date' is ignored; did you mean 'compatibility_date'?",
         "rename it to 'compatibility_date'", 2),
        ("DW001", "unknown key 'worker_loader' is ignored; did you mean 'worker_loaders'?",
         "rename it to 'worker_loaders'", 3),
        ("DW001", "unknown key 'dev.prot' is ignored; did you mean 'port'?", "rename it to 'port'", 4),
        ("DW001", "unknown key 'zzz' is not emulated by dynwf; ignored",
         "keys dynwf reads here: compatibility_date, compatibility_flags, dev, main, name, vars, "
         "worker_loaders, workflows", 5),
    ]


@pytest.mark.parametrize(("text", "hint"), [
    ('{"main": "m.py"}', 'add "name": "my-project", the worker\'s name'),
    ('{"name": "x"}', 'add "main": "src/entry.py", the dispatcher module (Default and the workflow '
                      'class)'),
    ('{"name": "x", "main": "m.py", "workflows": [{"name": "w", "binding": "W"}]}',
     'add "class_name": "DynamicWorkflow", the dispatcher\'s class that runs the workflow'),
    ('{"name": "x", "main": 3}', 'write it as "main": "text"'),
    ('{"name": "x", "main": "m.py", "compatibility_date": "April"}',
     'e.g. "compatibility_date": "2025-04-01"'),
    ('[1]', 'start from {"name": ..., "main": ...}; `dynwf init` writes one'),
])
def test_every_config_error_has_a_hint(tmp_path, text, hint):
    assert load_error(tmp_path, text).hint == hint


def test_unknown_keys_inside_sections_are_warnings(tmp_path):
    text = ('{"name": "x", "main": "m.py",\n "workflows": [{"name": "w", "binding": "W",\n'
            '   "class_name": "C", "retries": 3}],\n "dev": {"port": 9000, "local_protocol": "http"}}')
    config = load_text(tmp_path, text)
    assert [(w.message, w.line, w.column) for w in config.warnings] == [
        ("unknown key 'workflows[0].retries' is not emulated by dynwf; ignored", 3, 23),
        ("wrangler key 'dev.local_protocol' is not emulated by dynwf; ignored", 4, 24),
    ]
    assert config.extra == {}


def test_crlf_file_errors_at_the_right_line(tmp_path):
    text = '{\r\n  // c\r\n  "name": "x",\r\n  "main": "m.py",\r\n  "dev": {"port": 0}\r\n}\r\n'
    error = load_error(tmp_path, text)
    assert error.message == "wrangler.jsonc:5:19: dev.port must be between 1 and 65535, got 0"


def test_crlf_syntax_error_at_the_right_line(tmp_path):
    error = load_error(tmp_path, '{\r\n  "name": "x", /* a\r\n b */\r\n  "main" "m.py"\r\n}',
                       name="wrangler.json")
    assert error.message == "wrangler.json:4:10: Expecting ':' delimiter"


def test_toml_syntax_error_has_a_position(tmp_path):
    error = load_error(tmp_path, 'name = "x"\nmain = \n', name="wrangler.toml")
    assert (error.path, error.line, error.column) == ("wrangler.toml", 2, 8)
    assert "Invalid value" in error.message


def test_toml_errors_and_warnings_point_at_their_lines(tmp_path):
    text = ('name = "x"\nmain = "m.py"\nroutes = ["a"]\n\n[[workflows]]\nname = "a"\nbinding = "A"\n'
            'class_name = "A"\n\n[[workflows]]\nname = "b"\nbinding = "B"\n')
    error = load_error(tmp_path, text, name="wrangler.toml")
    assert error.message == "wrangler.toml:10:1: workflows[1].class_name is required"
    config = load_text(tmp_path, text + 'class_name = "B"\nretries = 2\n', name="wrangler.toml")
    assert [(w.message, w.line) for w in config.warnings] == [
        ("wrangler key 'routes' is not emulated by dynwf; ignored", 3),
        ("unknown key 'workflows[1].retries' is not emulated by dynwf; ignored", 14),
    ]


def test_toml_accepts_an_unquoted_date(tmp_path):
    config = load_text(tmp_path, 'name = "x"\nmain = "m.py"\ncompatibility_date = 2025-04-01\n',
                       name="wrangler.toml")
    assert config.compatibility_date == "2025-04-01"


def test_file_that_is_not_utf8_is_reported(tmp_path):
    path = tmp_path / "wrangler.jsonc"
    path.write_bytes(b'{\n  "name": "caf\xe9"\n}')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.message == "wrangler.jsonc:2:15: the file is not valid UTF-8"


def test_loading_a_missing_file_is_not_found(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "wrangler.jsonc")
    assert caught.value.code == "config.not_found"


def test_the_config_is_found_from_a_subfolder_as_wrangler_finds_it(tmp_path, monkeypatch):
    """A command run from inside a project (a tenant's folder, say) uses the nearest wrangler
    file above it; a folder named with --config is searched alone."""
    from emulator.config import find_config
    from emulator.errors import ConfigError
    project = tmp_path / "proj"
    inner = project / "tenants" / "acme"
    inner.mkdir(parents=True)
    (project / "wrangler.jsonc").write_text('{"name": "x", "main": "src/entry.py"}')
    monkeypatch.chdir(inner)
    assert find_config() == (project / "wrangler.jsonc").resolve()
    assert find_config(inner.parent) == (project / "wrangler.jsonc").resolve()
    with pytest.raises(ConfigError) as caught:
        find_config(explicit=inner)
    assert caught.value.code == "config.not_found" and "above" not in caught.value.message
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        find_config()
    assert "or any folder above it" in caught.value.message


def test_dev_vars_are_dotenv_lines(tmp_path):
    from emulator.config.dev_vars import load_dev_vars
    assert load_dev_vars(tmp_path) == {}
    (tmp_path / ".dev.vars").write_text(
        '# secrets\n\nA=1\nexport B = two words # note\nC="line\\nbreak"\nD=\'#kept\'\nE=x=y\n')
    assert load_dev_vars(tmp_path) == {"A": "1", "B": "two words", "C": "line\nbreak",
                                       "D": "#kept", "E": "x=y"}
    (tmp_path / ".dev.vars").write_text("A=1\nnot a line\n")
    with pytest.raises(ConfigError) as caught:
        load_dev_vars(tmp_path)
    assert (caught.value.line, caught.value.hint) == (2, "one variable per line, e.g. API_TOKEN=abc123")
