"""A submit's start (``countdown``, ``start_at``): when the run is due, whether it waits in the
run store, and the bad values refused naming the field."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from jobsys.base import errors
from jobsys.service.submit_options import Start, SubmitOptions, check

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
HORIZON = 60.0


def start(**options: Any) -> Start:
    return check("t.job", SubmitOptions(**options), NOW, HORIZON)


def test_no_start_short_starts_and_far_starts() -> None:
    assert start() == Start() and start(countdown=0) == Start()
    assert start(countdown=30) == Start(NOW + dt.timedelta(seconds=30), held=False)
    assert start(countdown=60) == Start(NOW + dt.timedelta(seconds=60), held=False)
    three_days = NOW + dt.timedelta(days=3)
    assert start(countdown=3 * 86400) == Start(three_days, held=True)
    paris = dt.timezone(dt.timedelta(hours=2))
    assert start(start_at=three_days.astimezone(paris)) == Start(three_days, held=True)
    assert start(start_at="2026-06-04T14:00:00+02:00") == Start(three_days, held=True)
    assert start(start_at="2026-06-04T12:00:00Z") == Start(three_days, held=True)
    # a start a moment ago (a clock a little behind): at once
    assert start(start_at=NOW - dt.timedelta(seconds=30)) == Start()


@pytest.mark.parametrize(
    ("options", "field", "says"),
    [
        ({"countdown": -1}, "countdown", "must be between 0 and 31622400 s (366 days), got -1"),
        ({"countdown": 1.7e9}, "countdown", "for a time, give start_at"),
        ({"countdown": float("nan")}, "countdown", "must be between 0"),
        ({"countdown": "soon"}, "countdown", "must be a number of seconds"),
        ({"countdown": 5, "start_at": NOW}, "start_at", "give countdown or start_at, not both"),
        ({"start_at": dt.datetime(2026, 6, 4, 9)}, "start_at", "has no UTC offset or zone"),
        ({"start_at": "2026-06-04T09:00"}, "start_at", "has no UTC offset or zone"),
        ({"start_at": "next tuesday"}, "start_at", "is not an ISO 8601 time"),
        ({"start_at": NOW - dt.timedelta(hours=1)}, "start_at", "3600 s in the past"),
        ({"start_at": NOW + dt.timedelta(days=400)}, "start_at", "more than 366 days ahead"),
        ({"start_at": 1780000000}, "start_at", "must be a time"),
        ({"priority": 10}, "priority", "must be from 0 (lowest) to 9 (highest)"),
    ],
)
def test_bad_starts_are_refused_naming_the_field(
    options: dict[str, Any], field: str, says: str
) -> None:
    with pytest.raises(errors.InvalidInput) as caught:
        start(**options)
    assert caught.value.what == "options"
    (problem,) = caught.value.errors
    assert problem["loc"] == [field] and says in problem["msg"], problem
    assert f"{field}: " in str(caught.value)
