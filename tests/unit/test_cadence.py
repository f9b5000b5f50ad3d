"""When schedules fire: UTC storage, IANA zones and the documented DST rules."""

from __future__ import annotations

import datetime as dt

import pytest

from jobsys.base import errors
from jobsys.declare import cadence, previews

UTC = dt.UTC


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).astimezone(UTC)


def cron(expr: str, tz: str = "UTC") -> cadence.Cadence:
    return cadence.Cadence(cadence.CadenceKind.CRON, cron=expr, timezone=tz)


def fires(c: cadence.Cadence, after: str, n: int) -> list[str]:
    out, when = [], at(after)
    for _ in range(n):
        when = cadence.next_cron(c, when)
        out.append(when.isoformat())
    return out


def test_cron_in_a_zone_fires_at_local_time_in_utc() -> None:
    monday_8_ny = cron("0 8 * * 1", "America/New_York")
    # 2026-11-30 is a Monday; New York is at -05:00 in winter
    assert fires(monday_8_ny, "2026-11-25T00:00:00+00:00", 2) == [
        "2026-11-30T13:00:00+00:00",
        "2026-12-07T13:00:00+00:00",
    ]


def test_a_local_time_that_does_not_exist_fires_at_the_end_of_the_gap() -> None:
    # New York, 2026-03-08: 02:00 EST jumps to 03:00 EDT; 02:30 does not exist that day.
    daily_0230 = cron("30 2 * * *", "America/New_York")
    assert fires(daily_0230, "2026-03-07T12:00:00+00:00", 3) == [
        "2026-03-08T07:00:00+00:00",  # 03:00 EDT, the first valid instant
        "2026-03-09T06:30:00+00:00",  # 02:30 EDT
        "2026-03-10T06:30:00+00:00",
    ]


def test_an_ambiguous_local_time_fires_once() -> None:
    # New York, 2026-11-01: 02:00 EDT goes back to 01:00 EST; 01:30 happens twice.
    daily_0130 = cron("30 1 * * *", "America/New_York")
    assert fires(daily_0130, "2026-10-31T12:00:00+00:00", 2) == [
        "2026-11-01T05:30:00+00:00",  # 01:30 EDT, the first occurrence only
        "2026-11-02T06:30:00+00:00",  # 01:30 EST
    ]


def test_intervals_count_real_seconds_across_a_dst_change() -> None:
    hourly = cadence.Cadence(cadence.CadenceKind.INTERVAL, every=3600)
    first = at("2026-11-01T04:30:00+00:00")
    assert cadence.next_fire(hourly, first) - first == dt.timedelta(hours=1)


def test_aliases_and_utc_default() -> None:
    assert fires(cron("@daily"), "2026-11-25T10:00:00+00:00", 1) == ["2026-11-26T00:00:00+00:00"]
    assert fires(cron("@hourly"), "2026-11-25T10:00:00+00:00", 1) == ["2026-11-25T11:00:00+00:00"]


def test_once_fires_once_and_bounds_are_kept() -> None:
    when = at("2026-12-01T09:00:00+00:00")
    once = cadence.once(when).cadence
    assert cadence.first_fire(once, at("2026-11-25T00:00:00+00:00")) == when
    assert cadence.next_fire(once, when) is None
    bounded = cadence.Cadence(
        cadence.CadenceKind.INTERVAL, every=60, end_at=at("2026-11-25T00:02:00+00:00")
    )
    t0 = at("2026-11-25T00:01:00+00:00")
    assert cadence.next_fire(bounded, t0) == at("2026-11-25T00:02:00+00:00")
    assert cadence.next_fire(bounded, at("2026-11-25T00:02:00+00:00")) is None


def test_after_downtime_the_next_fire_is_the_first_one_in_the_future() -> None:
    every_10 = cadence.Cadence(cadence.CadenceKind.INTERVAL, every=10)
    fired = at("2026-11-25T00:00:00+00:00")
    now = at("2026-11-25T00:01:05+00:00")
    assert cadence.next_after(every_10, fired, now) == at("2026-11-25T00:01:10+00:00")


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: cadence.cron("61 * * * *"), "cron"),
        (lambda: cadence.cron("0 8 * * 1", timezone="Mars/Base"), "timezone"),
        (lambda: cadence.once("2026-12-01T09:00"), "at"),
        (lambda: cadence.every(0), "every"),
        (lambda: cadence.every(5, overlap="sometimes"), "overlap"),
        (lambda: cadence.every(5, max_runs=0), "max_runs"),
        (lambda: cadence.every(5, priority=10), "priority"),
        (lambda: cadence.every(5, priority="high"), "priority"),
        (
            lambda: cadence.every(5, start_at="2026-12-02T00:00Z", end_at="2026-12-01T00:00Z"),
            "end_at",
        ),
    ],
)
def test_bad_definitions_are_refused_naming_the_field(call: object, field: str) -> None:
    with pytest.raises(errors.InvalidSchedule) as caught:
        call()  # type: ignore[operator]
    assert caught.value.field == field


def test_definitions_round_trip_through_json() -> None:
    d = cadence.cron("0 8 * * 1", timezone="Europe/Paris", input={"x": 1}, jitter=5)
    again = cadence.ScheduleSpec(
        cadence.Cadence.from_json(d.cadence.to_json()),
        d.input,
        d.metadata,
        cadence.Options.from_json(d.options.to_json()),
    )
    assert again == d and again.digest() == d.digest()


def test_a_priority_is_kept_with_the_options_only_when_given() -> None:
    """A definition without a priority is what it was before schedules had one (the digest
    of a schedule declared in code is unchanged, so upgrading keeps its runtime edits)."""
    plain = cadence.every(60, input={"x": 1})
    assert "priority" not in plain.options.to_json()
    assert plain.digest() == "5233f55a6914aa6bbb81c06c361cc3e8aa56f954d8a02f93c6c4abd31a9a2d3c"
    urgent = cadence.every(60, input={"x": 1}, priority=9)
    assert urgent.options.to_json()["priority"] == 9
    assert cadence.Options.from_json(urgent.options.to_json()).priority == 9


# --- previews --------------------------------------------------------------------------------


def test_preview_notes_a_cron_time_the_spring_forward_skips() -> None:
    c = cron("30 2 * * *", "Europe/Berlin")
    shown = previews.preview(c, 3, at("2026-03-28T00:00Z"))
    assert [f.local.isoformat() for f in shown] == [
        "2026-03-28T02:30:00+01:00",
        "2026-03-29T03:00:00+02:00",  # 02:30 does not exist that day
        "2026-03-30T02:30:00+02:00",
    ]
    assert [f.at for f in shown] == [
        at("2026-03-28T01:30Z"),
        at("2026-03-29T01:00Z"),
        at("2026-03-30T00:30Z"),
    ]
    assert shown[0].note is None and shown[2].note is None
    assert shown[1].note == (
        "02:30 does not exist on 2026-03-29 in Europe/Berlin (clocks spring forward): "
        "fires at 03:00 CEST"
    )


def test_preview_times_agree_with_the_fires_beat_makes() -> None:
    c = cron("*/20 2 * * *", "Europe/Berlin")
    now = at("2026-03-28T12:00Z")
    shown = previews.preview(c, 6, now)
    when, made = cadence.first_fire(c, now), []
    for _ in range(6):
        assert when is not None
        made.append(when)
        when = cadence.next_fire(c, when)
    assert [f.at for f in shown] == made
    merged = [f for f in shown if f.note]
    assert len(merged) == 1 and merged[0].local.isoformat() == "2026-03-29T03:00:00+02:00"
    assert merged[0].note is not None
    assert merged[0].note.startswith("02:00, 02:20, 02:40 do not exist on 2026-03-29")
    assert merged[0].note.endswith("(once for all of them)")


def test_preview_notes_a_time_the_fall_back_repeats() -> None:
    shown = previews.preview(cron("30 2 * * *", "Europe/Berlin"), 2, at("2026-10-24T12:00Z"))
    assert shown[0].at == at("2026-10-25T00:30Z")  # the first 02:30 (CEST), once
    assert shown[0].note is not None and "occurs twice" in shown[0].note
    assert shown[1].note is None


def test_preview_of_an_interval_notes_the_wall_clock_moving() -> None:
    daily = cadence.Cadence(cadence.CadenceKind.INTERVAL, every=86_400)
    shown = previews.preview(daily, 3, at("2026-03-28T08:00Z"), "Europe/Berlin")
    assert [f.local.strftime("%H:%M") for f in shown] == ["09:00", "10:00", "10:00"]
    assert [f.note is not None for f in shown] == [False, True, False]
    assert shown[1].note is not None and "CET to CEST" in shown[1].note


def test_preview_ends_with_the_schedule() -> None:
    once = cadence.Cadence(cadence.CadenceKind.ONCE, at=at("2030-01-01T00:00Z"))
    assert [f.at for f in previews.preview(once, 5, at("2026-01-01T00:00Z"))] == [
        at("2030-01-01T00:00Z")
    ]
    ending = cadence.Cadence(cadence.CadenceKind.INTERVAL, every=60, end_at=at("2026-01-01T00:02Z"))
    assert len(previews.preview(ending, 10, at("2026-01-01T00:00Z"))) == 3
