"""The one parser of typed times (CLI options and HTTP query fields)."""

from __future__ import annotations

import datetime as dt

import pytest

from jobsys.base import timeparse

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("text", "sign", "expected"),
    [
        ("30m", -1, NOW - dt.timedelta(minutes=30)),
        ("1.5h", 1, NOW + dt.timedelta(hours=1.5)),
        (" 7d ", -1, NOW - dt.timedelta(days=7)),
        ("2026-11-25T09:00", -1, dt.datetime(2026, 11, 25, 9, 0, tzinfo=dt.UTC)),
        ("2026-11-25T09:00+01:00", -1, dt.datetime(2026, 11, 25, 8, 0, tzinfo=dt.UTC)),
    ],
)
def test_instants_and_durations(text: str, sign: int, expected: dt.datetime) -> None:
    assert timeparse.parse_instant(text, sign, now=NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "30x", "-5m", "9999999999d", "999999999d", ""])
def test_anything_else_names_the_forms_accepted(text: str) -> None:
    with pytest.raises(ValueError, match=r"ISO 8601 time like .* or a duration like 30m"):
        timeparse.parse_instant(text, now=NOW)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0),
        ("2.5", 2.5),
        (45, 45.0),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("2d", 172_800.0),
        (" 1W2D ", 777_600.0),
        ("1.5h", 5400.0),
        ("1d2h3m4s", 93_784.0),
    ],
)
def test_seconds_typed_as_people_type_them(text: str | float, seconds: float) -> None:
    assert timeparse.parse_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "30x", "1m1h", "-5", "-5m", "1e5", "5 m", "ten"])
def test_durations_that_are_not_name_the_forms(text: str) -> None:
    with pytest.raises(ValueError, match=r"a number of seconds or a duration like 30s"):
        timeparse.parse_seconds(text)


def test_a_duration_field_takes_numbers_and_durations_and_keeps_its_bounds() -> None:
    from typing import Annotated

    import pydantic

    class Model(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(strict=True)
        every: Annotated[timeparse.DurationSeconds, pydantic.Field(ge=1)]

    assert Model(every="1h30m").every == 5400.0
    assert Model(every=60).every == 60.0
    with pytest.raises(pydantic.ValidationError, match="valid number"):
        Model(every="60")  # strict: a number is given as a number
    with pytest.raises(pydantic.ValidationError, match="greater than or equal to 1"):
        Model(every="0s")
    with pytest.raises(pydantic.ValidationError, match="duration like 30s"):
        Model(every="soon")


def test_seconds_described_back() -> None:
    assert [timeparse.describe_seconds(s) for s in (5400, 90, 2.5, 172_860)] == [
        "1h30m",
        "1m30s",
        "2.5s",
        "2d1m",
    ]
