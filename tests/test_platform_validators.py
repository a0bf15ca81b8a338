"""Cloudflare's tests of the Workflows validators, as dynwf's conformance suite.

Each test follows one case (a table of values) of workers-sdk
``packages/workflows-shared/tests/validators.test.ts``, named in its docstring, and asserts the
same verdicts of dynwf's own checks (docs/semantics.md §1.1, §2.3, §5): workflow names where the
wrangler file is read, instance ids and step names in ``rules/limits.py``, step configs in
``rules/retries.py``.
"""

from __future__ import annotations

import json
import math

import pytest

from emulator.config import load_config
from emulator.errors import ConfigError, InvalidStepNameError
from emulator.rules.limits import (MAX_ID_LENGTH, MAX_STEP_NAME_LENGTH, MAX_WORKFLOW_NAME_LENGTH,
                                   check_step_name, is_valid_id, is_valid_workflow_name)
from emulator.rules.retries import step_config_problems


def load_with_workflow_name(tmp_path, name):
    config = {"name": "x", "main": "entry.py",
              "workflows": [{"name": name, "binding": "W", "class_name": "C"}]}
    (tmp_path / "wrangler.jsonc").write_text(json.dumps(config), encoding="utf-8")
    return load_config(tmp_path / "wrangler.jsonc")


@pytest.mark.parametrize("name", ["", math.nan, None, "   ", "\n\nhello",
                                  "w" * (MAX_WORKFLOW_NAME_LENGTH + 1), "#1231231!!!!",
                                  "-badName"])
def test_invalid_workflow_names_are_rejected(tmp_path, name):
    """follows workers-sdk packages/workflows-shared/tests/validators.test.ts, 'Workflow name
    validation' / 'should reject invalid names': refused where the wrangler file is read, with
    the rule and a hint."""
    assert not is_valid_workflow_name(name)
    with pytest.raises(ConfigError) as caught:
        load_with_workflow_name(tmp_path, name)
    assert "workflows[0].name" in caught.value.message
    assert caught.value.hint


@pytest.mark.parametrize("name", ["abc", "NAME_123-hello", "a-valid-string",
                                  "w" * MAX_WORKFLOW_NAME_LENGTH])
def test_valid_workflow_names_are_accepted(tmp_path, name):
    """follows workers-sdk packages/workflows-shared/tests/validators.test.ts, 'Workflow name
    validation' / 'should accept valid names'."""
    assert is_valid_workflow_name(name)
    assert load_with_workflow_name(tmp_path, name).workflows[0].name == name


@pytest.mark.parametrize("value", ["", math.nan, None, "   ", "\n\nhello",
                                   "w" * (MAX_ID_LENGTH + 1), "#1231231!!!!"])
def test_invalid_instance_ids_are_rejected(value):
    """follows workers-sdk packages/workflows-shared/tests/validators.test.ts, 'Workflow instance
    ID validation' / 'should reject invalid IDs'."""
    assert not is_valid_id(value)


@pytest.mark.parametrize("value", ["abc", "NAME_123-hello", "a-valid-string", "w" * MAX_ID_LENGTH])
def test_valid_instance_ids_are_accepted(value):
    """follows workers-sdk packages/workflows-shared/tests/validators.test.ts, 'Workflow instance
    ID validation' / 'should accept valid IDs'."""
    assert is_valid_id(value)


@pytest.mark.parametrize("value", ["\x00", "w" * (MAX_STEP_NAME_LENGTH + 1)])
def test_invalid_step_names_are_rejected(value):
    """follows workers-sdk packages/workflows-shared/tests/validators.test.ts, 'Workflow instance
    step name validation' / 'should reject invalid names'."""
    with pytest.raises(InvalidStepNameError):
        check_step_name(value)


@pytest.mark.parametrize("value", ["abc", "NAME_123-hello", "a-valid-string",
                                   "w" * MAX_STEP_NAME_LENGTH, "valid step name"])
def test_valid_step_names_are_accepted(value):
    """follows workers-sdk packages/workflows-shared/tests/validators.test.ts, 'Workflow instance
    step name validation' / 'should accept valid names'."""
    assert check_step_name(value) == value


@pytest.mark.parametrize("config", [
    {"timeout": "5 years", "retries": {"limit": 1}},
    {"timeout": "5 years", "retries": {"delay": 50}},
    {"timeout": "5 years", "retries": {"backoff": "exponential"}},
    {"timeout": "5 years", "retries": {"delay": "10 minutes", "limit": 5,
                                       "i-like-trains": "yes" * 100}},
    {"retries": {"limit": 3, "delay": "i like trains", "backoff": "constant"},
     "timeout": "10 minutes"},
    {"retries": {"limit": 3, "delay": 10, "backoff": "constant"}, "timeout": 0},
    {"timeout": "5 minutes", "sensitive": "all"},
    {"timeout": "5 minutes", "sensitive": True},
])
def test_invalid_step_configs_are_rejected(config):
    """follows workers-sdk packages/workflows-shared/tests/validators.test.ts, 'Workflow step
    config validation' / 'should reject invalid step configs'."""
    assert step_config_problems(config)


def test_a_dynamic_delay_function_is_accepted():
    """follows workers-sdk packages/workflows-shared/tests/validators.test.ts, 'Workflow step
    config validation' / 'should accept a dynamic delay function' (§2.3, §2.4)."""
    config = {"retries": {"limit": 3, "delay": lambda: "10 seconds", "backoff": "constant"},
              "timeout": "10 minutes"}
    assert step_config_problems(config) == []


@pytest.mark.parametrize("config", [
    {"retries": {"limit": 0, "delay": 100000, "backoff": "exponential"}, "timeout": "15 minutes"},
    {"retries": {"limit": 5, "delay": 0, "backoff": "constant"}, "timeout": "2 minutes"},
    {"retries": {"limit": 3, "delay": 10, "backoff": "constant"}, "timeout": "2 minutes",
     "sensitive": "output"},
])
def test_valid_step_configs_are_accepted(config):
    """follows workers-sdk packages/workflows-shared/tests/validators.test.ts, 'Workflow step
    config validation' / 'should accept valid step configs'."""
    assert step_config_problems(config) == []
