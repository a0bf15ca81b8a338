"""Duration grammar (docs/semantics.md §2.6, docs/architecture.md §5): typed units, numbers are
milliseconds, unknown units
are errors that name the closest unit."""

from datetime import timedelta

import pytest
from hypothesis import given, strategies as st

from emulator.rules.durations import format_ms, parse_duration
from emulator.errors import DurationError


@pytest.mark.parametrize("text, ms", [
    ("1 second", 1_000), ("10 seconds", 10_000), ("1 minute", 60_000), ("26 hours", 93_600_000),
    ("1 day", 86_400_000), ("2 weeks", 14 * 86_400_000), ("1 month", 30 * 86_400_000),
    ("1 year", round(365.25 * 86_400_000)), ("30.5 seconds", 30_500), ("500 ms", 500),
    ("250 milliseconds", 250), ("  5   Minutes ", 300_000), (".5 seconds", 500),
])
def test_text_durations(text, ms):
    assert parse_duration(text) == ms


def test_numbers_are_milliseconds_and_timedeltas_are_exact():
    assert parse_duration(1500) == 1500
    assert parse_duration(2.5) == 2  # rounded half to even, sub-millisecond is noise
    assert parse_duration(timedelta(minutes=2)) == 120_000


def test_unknown_unit_names_the_closest_one():
    with pytest.raises(DurationError) as info:
        parse_duration("10 secnds")
    assert info.value.code == "duration.invalid"
    assert "secnds" in info.value.message
    assert info.value.hint == "did you mean '10 seconds'?"


@pytest.mark.parametrize("bad, fragment", [
    ("10", "has no unit"), ("soon", "is not a duration"), ("-5 seconds", "negative"),
    (-1, "negative"), (True, "not a bool"), (None, "not NoneType"), ([1], "not list"),
    (float("nan"), "not a finite"),
])
def test_invalid_durations_fail_clearly(bad, fragment):
    with pytest.raises(DurationError) as info:
        parse_duration(bad)
    assert fragment in str(info.value)


@given(st.integers(min_value=0, max_value=10**6),
       st.sampled_from(["second", "minute", "hour", "day", "week"]), st.booleans())
def test_every_unit_with_or_without_plural(n, unit, plural):
    text = f"{n} {unit}{'s' if plural else ''}"
    factor = {"second": 1_000, "minute": 60_000, "hour": 3_600_000, "day": 86_400_000,
              "week": 604_800_000}[unit]
    assert parse_duration(text) == n * factor


def test_format_ms_is_short_and_readable():
    assert [format_ms(v) for v in (5, 1500, 90_000, 7_200_000, 3 * 86_400_000 + 3_600_000)] == \
        ["5ms", "1.5s", "1m30s", "2h", "3d1h"]
