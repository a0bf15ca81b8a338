"""Bad input, fuzzed (hypothesis): whatever the bytes or values, the readers answer with a value or
a coded, located error, never a crash, and nothing half-written (docs/reliability.md, "fuzzed input")."""

import asyncio
import json

from hypothesis import HealthCheck, given, settings, strategies as st

from emulator.config import load_config, parse_jsonc
from emulator.engine import Engine, VirtualClock, WorkflowDefinition
from emulator.rules.durations import parse_duration
from emulator.rules.limits import is_valid_id
from emulator.rules.retries import step_config_problems
from emulator.errors import ConfigError, DurationError, DynwfError

FAST = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@FAST
@given(st.binary(max_size=400))
def test_jsonc_reader_never_crashes_on_random_bytes(data):
    text = data.decode("utf-8", errors="replace")
    try:
        parse_jsonc(text, source="wrangler.jsonc")
    except ConfigError as exc:
        assert exc.line is not None and exc.line >= 1 and exc.column >= 1
        assert str(exc).startswith("[config.invalid] wrangler.jsonc:")


@FAST
@given(st.text(alphabet='{}[]",:/*\n\r\t 0123456789abtrufnl\\', max_size=200))
def test_jsonc_reader_on_json_shaped_noise(text):
    try:
        parse_jsonc(text)
    except ConfigError as exc:
        lines = text.splitlines() or [""]
        assert 1 <= exc.line <= max(len(lines), 1) + 1


@FAST
@given(st.dictionaries(st.sampled_from(["name", "main", "workflows", "dev", "vars",
                                        "compatibility_date", "worker_loaders", "x"]),
                       st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                                    lambda inner: st.lists(inner, max_size=3)
                                    | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                                    max_leaves=8), max_size=6))
def test_config_loader_gives_a_config_or_a_located_error(tmp_path_factory, document):
    path = tmp_path_factory.mktemp("cfg") / "wrangler.jsonc"
    path.write_text(json.dumps(document))
    try:
        config = load_config(path)
    except ConfigError as exc:
        assert exc.code in ("config.invalid", "config.not_found") and exc.line is not None
    else:
        assert isinstance(config.name, str) and isinstance(config.main, str)


@FAST
@given(st.one_of(st.text(max_size=30), st.integers(), st.floats(allow_nan=True), st.none(),
                 st.booleans(), st.lists(st.integers(), max_size=2)))
def test_durations_parse_or_refuse_with_a_code(value):
    try:
        ms = parse_duration(value)
    except DurationError as exc:
        assert exc.code == "duration.invalid" and exc.message
    else:
        assert isinstance(ms, int) and ms >= 0


@FAST
@given(st.text(max_size=120))
def test_ids_follow_the_platform_rule(value):
    import re
    assert is_valid_id(value) == bool(re.fullmatch(r"[a-zA-Z0-9_][a-zA-Z0-9\-_]{0,99}", value))


@FAST
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=6),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.sampled_from(["retries", "limit", "delay", "backoff",
                                                       "timeout", "x"]), inner, max_size=4),
                    max_leaves=10))
def test_step_configs_are_valid_or_explained(config):
    problems = step_config_problems(config)
    assert all(isinstance(p, str) and p for p in problems)


class Echo:
    async def run(self, event, step):
        @step.do("echo")
        async def echo():
            return event["payload"]
        return await echo()


params_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**53, max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(params_values, st.just(object()), st.just({"deep": [[[[[[[[[[1]]]]]]]]]]}),
                 st.just("x" * (1024 * 1024 + 1)), st.just(float("nan"))))
def test_params_round_trip_or_are_refused_with_nothing_written(tmp_path_factory, params):
    async def scenario():
        path = tmp_path_factory.mktemp("engine") / "db.sqlite"
        engine = Engine(path, [WorkflowDefinition("wf", lambda row: Echo())],
                        clock=VirtualClock(flowing=False))
        try:
            binding = engine.binding("wf")
            try:
                await binding.create({"id": "p", "params": params})
            except DynwfError as exc:
                assert exc.code in ("payload.not_serialisable", "payload.too_large")
                assert engine.store.list_instances() == []
                return None
            await engine.drain()
            return await (await binding.get("p")).status()
        finally:
            engine.close()
    status = asyncio.run(scenario())
    if status is not None:
        assert status["status"] == "complete"
        assert status["output"] == json.loads(json.dumps(params))
