"""Step config validation, defaults and back-off (docs/semantics.md §2.3-§2.4, docs/semantics.md §9)."""

import pytest

from emulator.rules.retries import (DEFAULT_STEP_CONFIG, StepConfig, resolve_step_config,
                                     step_config_problems)
from emulator.errors import StepConfigError


def test_defaults_are_the_documented_production_ones():
    assert DEFAULT_STEP_CONFIG.to_dict() == {
        "retries": {"limit": 5, "delay": 10_000, "backoff": "exponential"}, "timeout": 600_000}
    assert resolve_step_config(None, "s") == DEFAULT_STEP_CONFIG


def test_user_config_merges_over_defaults():
    config = resolve_step_config({"retries": {"limit": 2, "delay": "1 second"}, "timeout": "5 minutes"}, "s")
    assert (config.limit, config.delay_ms, config.backoff, config.timeout_ms) == \
        (2, 1000, "exponential", 300_000)


@pytest.mark.parametrize("backoff, delays", [
    ("constant", [10, 10, 10, 10]), ("linear", [10, 20, 30, 40]),
    ("exponential", [10, 20, 40, 80]),
])
def test_backoff_formulas(backoff, delays):
    config = StepConfig(limit=4, delay_ms=10, backoff=backoff)
    assert [config.delay_before_retry(n) for n in range(1, 5)] == delays


def test_limit_counts_retries_not_attempts():
    config = StepConfig(limit=2)
    assert [config.will_retry(n) for n in (1, 2, 3)] == [True, True, False]


def test_retry_delay_is_the_back_off_until_the_limit_and_none_after_or_when_not_retryable():
    """The one decision an engine makes after a failed attempt (a failure in a step's body and an
    attempt lost with its isolate alike)."""
    config = StepConfig(limit=2, delay_ms=10, backoff="linear")
    assert [config.retry_delay(n) for n in (1, 2, 3)] == [10, 20, None]
    assert config.retry_delay(1, retryable=False) is None


@pytest.mark.parametrize("config, fragment", [
    ({"retries": {"limit": 1}}, "needs both 'limit' and 'delay'"),
    ({"timeout": 0}, "timeout must not be 0"),
    ({"retry": {}}, "unknown key 'retry'"),
    ({"retries": {"limit": 1, "delay": 1, "jitter": True}}, "unknown key 'retries.jitter'"),
    ({"retries": {"limit": -1, "delay": 1}}, "retries.limit must be"),
    ({"retries": {"limit": 1, "delay": "10 secnds"}}, "unknown unit 'secnds'"),
    ({"retries": {"limit": 1, "delay": 1, "backoff": "random"}}, "retries.backoff must be one of"),
    ({"sensitive": "input"}, "sensitive may only be 'output'"),
    ("fast", "config must be a dict"),
])
def test_invalid_configs_are_refused_with_the_step_name(config, fragment):
    assert any(fragment in p for p in step_config_problems(config))
    with pytest.raises(StepConfigError) as info:
        resolve_step_config(config, "charge card")
    assert '"charge card"' in info.value.message
    assert info.value.code == "step.invalid_config"
