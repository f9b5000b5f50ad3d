"""The one parser of typed times (CLI options and HTTP query fields)."""

from __future__ import annotations

import datetime as dt

import pytest

from jobsys import timeparse

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
