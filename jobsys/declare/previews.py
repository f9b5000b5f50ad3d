"""Previews of a schedule's next fires (``jobsys schedules preview``, the HTTP API's preview
routes), computed as beat computes them, each noted where a daylight-saving change moves it."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from jobsys.declare import cadence

MAX_PREVIEW = 1000


@dataclasses.dataclass(frozen=True)
class Fire:
    """One fire of a preview: when (UTC and on the wall clock of the zone shown) and, where a
    daylight-saving change moves or merges it, a note saying how."""

    at: dt.datetime
    local: dt.datetime
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "local": self.local.isoformat(), "note": self.note}


def preview(
    c: cadence.Cadence,
    count: int,
    now: dt.datetime,
    timezone: str | None = None,
    first: dt.datetime | None = None,
) -> list[Fire]:
    """The next ``count`` fires of ``c`` from ``now`` (or from ``first``, a saved schedule's
    next fire), computed as beat computes them (``cadence.first_fire``, ``next_fire``), shown
    in ``timezone`` (default: the cron's zone, else UTC), each noted where a daylight-saving
    change moves it, merges fires, or shifts the wall-clock time of an interval."""
    tz = cadence.zone(timezone or (c.timezone if c.kind is cadence.CadenceKind.CRON else "UTC"))
    count = max(0, min(count, MAX_PREVIEW))
    times: list[dt.datetime] = []
    when = first if first is not None else cadence.first_fire(c, now)
    while when is not None and len(times) < count:
        times.append(when)
        when = cadence.next_fire(c, when)
    notes = (
        _cron_notes(c, times) if c.kind is cadence.CadenceKind.CRON and c.timezone == tz.key else {}
    )
    fires = []
    for i, at in enumerate(times):
        local = at.astimezone(tz)
        note = notes.get(at)
        if note is None and i and c.kind is not cadence.CadenceKind.CRON:
            before = times[i - 1].astimezone(tz)
            if before.utcoffset() != local.utcoffset():
                note = (
                    f"clocks change in {tz.key} before this fire ({before.tzname()} to "
                    f"{local.tzname()}): an interval counts real seconds, so its wall-clock "
                    "time moves"
                )
        fires.append(Fire(at, local, note))
    return fires


def _cron_notes(c: cadence.Cadence, times: list[dt.datetime]) -> dict[dt.datetime, str]:
    """For each fire in ``times``, what a daylight-saving change did to the wall times the
    cron expression names: a time in a gap fires at the end of the gap (several such times
    make one fire), a time that occurs twice fires once, at its first occurrence."""
    if not times:
        return {}
    from croniter import croniter

    assert c.cron is not None
    tz = cadence.zone(c.timezone)
    expr = cadence.ALIASES.get(c.cron.strip(), c.cron)
    start = (times[0] - dt.timedelta(microseconds=1)).astimezone(tz).replace(tzinfo=None)
    it = croniter(expr, start)
    wanted = set(times)
    found: dict[dt.datetime, list[str]] = {}
    for _ in range(100_000):
        wall: dt.datetime = it.get_next(dt.datetime)
        instant = cadence.resolve(wall, tz)
        if instant > times[-1]:
            break
        if instant not in wanted:
            continue
        moved = instant.astimezone(tz)
        day = f"{wall:%Y-%m-%d}"
        if moved.replace(tzinfo=None) != wall:
            found.setdefault(instant, []).append(
                f"{wall:%H:%M} does not exist on {day} in {tz.key} (clocks spring forward)"
            )
        elif wall.replace(tzinfo=tz, fold=1).utcoffset() != wall.replace(tzinfo=tz).utcoffset():
            found.setdefault(instant, []).append(
                f"{wall:%H:%M} occurs twice on {day} in {tz.key} (clocks fall back): "
                f"fires once, at the first ({moved.tzname()})"
            )
    notes = {}
    for instant, said in found.items():
        gap = [s for s in said if "does not exist" in s]
        if gap:
            times_named = ", ".join(s.split(" ", 1)[0] for s in gap)
            verb = "do not exist" if len(gap) > 1 else "does not exist"
            local = instant.astimezone(tz)
            day = f"{local:%Y-%m-%d}"
            notes[instant] = (
                f"{times_named} {verb} on {day} in {tz.key} (clocks spring forward): "
                f"fires at {local:%H:%M} {local.tzname()}"
                + (" (once for all of them)" if len(gap) > 1 else "")
            )
        else:
            notes[instant] = said[0]
    return notes
