"""When a schedule fires: pure functions of a schedule's cadence and a UTC instant, and the
``ScheduleSpec`` (cadence, input, metadata, options) a schedule is made of. Previews of the next
fires are in ``jobsys.declare.previews``.

Everything is computed and stored in UTC; a cron expression is read in its IANA time zone
with ``zoneinfo``. The rules at daylight-saving changes:

* a local time that does not exist (the clock jumps from 02:00 to 03:00) fires at the first
  valid instant after the gap (03:00 local);
* a local time that occurs twice (the clock goes back from 02:00 to 01:00) fires once, at its
  first occurrence;
* intervals count real seconds, whatever the clocks do.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import functools
import hashlib
import json
import threading
import zoneinfo
from typing import Any

from jobsys.base import bounds, errors

UTC = dt.UTC


class CadenceKind(enum.StrEnum):
    ONCE = "once"
    INTERVAL = "interval"
    CRON = "cron"
    ONGOING = "ongoing"
    """Repeats every ``every`` seconds until the job reports it is done (or an end is met)."""


ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


@dataclasses.dataclass(frozen=True)
class Cadence:
    """The timing part of a schedule."""

    kind: CadenceKind
    at: dt.datetime | None = None
    """``once``: the instant (UTC)."""
    every: float | None = None
    """``interval`` and ``ongoing``: seconds between fires."""
    cron: str | None = None
    """``cron``: five fields, or an alias such as ``@daily``."""
    timezone: str = "UTC"
    """``cron``: the IANA zone its fields are read in."""
    start_at: dt.datetime | None = None
    end_at: dt.datetime | None = None

    def __post_init__(self) -> None:
        check(self)

    def to_json(self) -> dict[str, Any]:
        """The fields that matter for this kind (a ``once`` has no ``every``, ...)."""
        out: dict[str, Any] = {"kind": self.kind.value}
        own = {
            CadenceKind.ONCE: ("at",),
            CadenceKind.INTERVAL: ("every",),
            CadenceKind.ONGOING: ("every",),
            CadenceKind.CRON: ("cron", "timezone"),
        }[self.kind]
        for name in (*own, "start_at", "end_at"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value.isoformat() if isinstance(value, dt.datetime) else value
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Cadence:
        try:
            kind = CadenceKind(str(data.get("kind")))
        except ValueError:
            choices = ", ".join(k.value for k in CadenceKind)
            raise errors.InvalidSchedule("kind", f"must be one of {choices}") from None
        times = {n: _instant(n, data.get(n)) for n in ("at", "start_at", "end_at")}
        every = data.get("every")
        if every is not None and not isinstance(every, int | float):
            raise errors.InvalidSchedule("every", "must be a number of seconds")
        for field in ("cron", "timezone"):
            if data.get(field) is not None and not isinstance(data[field], str):
                raise errors.InvalidSchedule(field, "must be a string")
        return cls(
            kind=kind,
            every=float(every) if every is not None else None,
            cron=data.get("cron"),
            timezone=data.get("timezone") or "UTC",
            **times,
        )


def _instant(field: str, value: Any) -> dt.datetime | None:
    if value is None or isinstance(value, dt.datetime):
        return aware(field, value) if value is not None else None
    try:
        parsed = dt.datetime.fromisoformat(str(value))
    except ValueError:
        raise errors.InvalidSchedule(field, f"{value!r} is not an ISO 8601 time") from None
    return aware(field, parsed)


def aware(field: str, value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        raise errors.InvalidSchedule(
            field, "needs a UTC offset or zone (for example 2026-12-01T09:00Z)"
        )
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise errors.InvalidSchedule(field, f"{value.isoformat()} is out of range") from None


def check(c: Cadence) -> None:
    """Refuse a cadence that cannot fire, naming the field."""
    if c.kind is CadenceKind.ONCE and c.at is None:
        raise errors.InvalidSchedule("at", "a 'once' schedule needs the time to fire")
    if c.kind in (CadenceKind.INTERVAL, CadenceKind.ONGOING) and (
        c.every is None or not c.every >= 1
    ):
        raise errors.InvalidSchedule("every", "must be at least 1 second")
    if c.every is not None and (problem := bounds.seconds(c.every, bounds.MAX_EVERY)):
        raise errors.InvalidSchedule("every", problem)
    for field in ("at", "start_at", "end_at"):
        value = getattr(c, field)
        if value is not None and value >= bounds.LATEST_INSTANT:
            raise errors.InvalidSchedule(field, f"must be before {bounds.LATEST_INSTANT.date()}")
    if c.kind is CadenceKind.CRON:
        if not c.cron:
            raise errors.InvalidSchedule(
                "cron", "a 'cron' schedule needs an expression, e.g. '0 8 * * 1'"
            )
        from croniter import croniter

        expr = ALIASES.get(c.cron.strip(), c.cron)
        if len(expr.split()) != 5 or not croniter.is_valid(expr):
            raise errors.InvalidSchedule("cron", f"{c.cron!r} is not five cron fields or an @alias")
        zone(c.timezone)
    if c.start_at and c.end_at and c.end_at <= c.start_at:
        raise errors.InvalidSchedule("end_at", "must be after start_at")


def zone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise errors.InvalidSchedule("timezone", f"{name!r} is not an IANA time zone") from None


def first_fire(c: Cadence, now: dt.datetime) -> dt.datetime | None:
    """The first fire of a new (or resumed) schedule at ``now``."""
    if c.kind is CadenceKind.ONCE:
        return c.at
    start = c.start_at or now
    if c.kind is CadenceKind.CRON:
        return _bounded(c, next_cron(c, start - dt.timedelta(microseconds=1)))
    return _bounded(c, start)


def next_fire(c: Cadence, fired: dt.datetime) -> dt.datetime | None:
    """The fire after the one due at ``fired`` (``None``: the schedule is over)."""
    if c.kind is CadenceKind.ONCE:
        return None
    if c.kind is CadenceKind.CRON:
        return _bounded(c, next_cron(c, fired))
    assert c.every is not None
    return _bounded(c, fired + dt.timedelta(seconds=c.every))


def next_after(c: Cadence, fired: dt.datetime, now: dt.datetime) -> dt.datetime | None:
    """The first fire strictly after ``now`` on the cadence of ``fired`` (misfire skipping)."""
    if c.kind is CadenceKind.ONCE:
        return None
    if c.kind is CadenceKind.CRON:
        return _bounded(c, next_cron(c, max(fired, now)))
    assert c.every is not None
    missed = int((now - fired).total_seconds() // c.every) + 1
    return _bounded(c, fired + dt.timedelta(seconds=c.every * max(1, missed)))


def _bounded(c: Cadence, when: dt.datetime | None) -> dt.datetime | None:
    if when is None or (c.end_at is not None and when > c.end_at):
        return None
    return when


def next_cron(c: Cadence, after: dt.datetime) -> dt.datetime:
    """The first instant strictly after ``after`` (UTC) that the cron expression names in its
    zone, by the rules in the module docstring."""
    assert c.cron is not None
    return _next_cron(c.cron, c.timezone, after)


@functools.lru_cache(maxsize=4096)
def _next_cron(cron: str, timezone: str, after: dt.datetime) -> dt.datetime:
    """``next_cron``, remembered: the schedules of a burst (thousands on one expression and
    zone, due at the same instant) compute their next fire once."""
    tz = zone(timezone)
    expr = ALIASES.get(cron.strip(), cron)
    local = after.astimezone(tz).replace(tzinfo=None)
    it = _iterator(expr, local)
    # Candidates at or before ``after`` come only from a repeated hour: its wall times were
    # already fired at their first occurrence, so they are passed over.
    from croniter import CroniterError

    for _ in range(100_000):
        try:
            candidate: dt.datetime = it.get_next(dt.datetime)
        except CroniterError:  # valid fields that name no date (0 0 31 2 *)
            raise errors.InvalidSchedule("cron", f"{cron!r} names no time that exists") from None
        instant = resolve(candidate, tz)
        if instant > after:
            return instant
    raise errors.InvalidSchedule("cron", f"{cron!r} names no time after {after.isoformat()}")


_ITERATORS = threading.local()


def _iterator(expr: str, start: dt.datetime) -> Any:
    """A croniter for ``expr`` set to ``start``; parsed once per expression and thread."""
    from croniter import croniter  # only where schedules are computed (beat, clients)

    cache: dict[str, Any] = _ITERATORS.__dict__.setdefault("cache", {})
    it = cache.get(expr)
    if it is None:
        if len(cache) > 1024:
            cache.clear()
        it = cache[expr] = croniter(expr, start)
    else:
        it.set_current(start, force=True)
    return it


def resolve(local: dt.datetime, tz: zoneinfo.ZoneInfo) -> dt.datetime:
    """The UTC instant of a naive wall time in ``tz``: the first occurrence of an ambiguous
    time; the end of the gap for a time that does not exist."""
    first = local.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if first.astimezone(tz).replace(tzinfo=None) == local:
        return first  # exists (the first of two, if it is ambiguous)
    # In a gap: fold=1 reads it with the offset after the change, fold=0 with the one before;
    # the change itself lies between the two readings. Find the minute it happens.
    low = local.replace(tzinfo=tz, fold=1).astimezone(UTC)
    high = first
    low, high = min(low, high), max(low, high)
    after_offset = high.astimezone(tz).utcoffset()
    step = dt.timedelta(minutes=1)
    instant = low
    while instant < high and instant.astimezone(tz).utcoffset() != after_offset:
        instant += step
    return instant


class Overlap(enum.StrEnum):
    SKIP = "skip"
    """No new run while the previous one is waiting or running (the fire is skipped)."""
    ALLOW = "allow"
    QUEUE = "queue"
    """One fire waits for the previous run to end, then runs; further ones are skipped."""


class Misfire(enum.StrEnum):
    RUN_ONCE = "run_once"
    """After downtime, fire once to catch up (trigger ``catch-up``), then resume the cadence."""
    SKIP = "skip"


@dataclasses.dataclass(frozen=True)
class Options:
    max_runs: int | None = None
    jitter: float = 0.0
    """Up to this many seconds added at random to each fire time (spreads load)."""
    overlap: Overlap = Overlap.SKIP
    misfire: Misfire = Misfire.RUN_ONCE
    grace: float = 60.0
    """A fire this many seconds late still counts as on time; later it is a misfire."""
    priority: int | None = None
    """Of the runs it makes, 0 (lowest) to 9 (highest); ``None``: the job's (or the step's)."""

    def __post_init__(self) -> None:
        if self.max_runs is not None and self.max_runs < 1:
            raise errors.InvalidSchedule("max_runs", "must be at least 1")
        if not 0 <= self.jitter <= 86_400:
            raise errors.InvalidSchedule("jitter", "must be between 0 and 86400 seconds")
        if not 0 <= self.grace <= 86_400 * 7:
            raise errors.InvalidSchedule("grace", "must be between 0 and 604800 seconds")
        if self.priority is not None and (problem := bounds.priority(self.priority)):
            raise errors.InvalidSchedule("priority", problem)

    def to_json(self) -> dict[str, Any]:
        # A priority only when set: a definition without one keeps the digest it had before.
        return {
            "max_runs": self.max_runs,
            "jitter": self.jitter,
            "overlap": self.overlap.value,
            "misfire": self.misfire.value,
            "grace": self.grace,
        } | ({} if self.priority is None else {"priority": self.priority})

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Options:
        try:
            return cls(
                max_runs=data.get("max_runs"),
                jitter=float(data.get("jitter", 0.0)),
                overlap=Overlap(data.get("overlap", "skip")),
                misfire=Misfire(data.get("misfire", "run_once")),
                grace=float(data.get("grace", 60.0)),
                priority=data.get("priority"),
            )
        except ValueError as exc:  # (an InvalidSchedule is not one: it goes through)
            field = "overlap" if "Overlap" in str(exc) else "misfire"
            raise errors.InvalidSchedule(field, str(exc)) from None


@dataclasses.dataclass(frozen=True)
class ScheduleSpec:
    """What a schedule is: when, and the runs it makes. Declared in code or given at runtime."""

    cadence: Cadence
    input: dict[str, Any] = dataclasses.field(default_factory=dict)
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    options: Options = Options()

    def to_json(self) -> dict[str, Any]:
        return {
            "cadence": self.cadence.to_json(),
            "input": self.input,
            "metadata": self.metadata,
            "options": self.options.to_json(),
        }

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()


def schedule(
    kind: CadenceKind | str,
    *,
    at: dt.datetime | str | None = None,
    every: float | None = None,
    cron: str | None = None,
    timezone: str = "UTC",
    start_at: dt.datetime | str | None = None,
    end_at: dt.datetime | str | None = None,
    input: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
    max_runs: int | None = None,
    jitter: float = 0.0,
    overlap: Overlap | str = Overlap.SKIP,
    misfire: Misfire | str = Misfire.RUN_ONCE,
    grace: float = 60.0,
    priority: int | None = None,
) -> ScheduleSpec:
    """A ``ScheduleSpec``; raises ``errors.InvalidSchedule`` naming the field that is wrong."""
    when = {"at": at, "start_at": start_at, "end_at": end_at}
    data = {"kind": str(kind), "every": every, "cron": cron, "timezone": timezone}
    data.update({k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in when.items()})
    options: dict[str, Any] = {"max_runs": max_runs, "jitter": jitter, "grace": grace}
    options.update(overlap=str(overlap), misfire=str(misfire), priority=priority)
    return ScheduleSpec(
        Cadence.from_json(data), dict(input or {}), dict(metadata or {}), Options.from_json(options)
    )


def once(at: dt.datetime | str, **options: Any) -> ScheduleSpec:
    """Fire once, at ``at`` (an aware datetime or an ISO 8601 time with an offset)."""
    return schedule(CadenceKind.ONCE, at=at, **options)


def every(seconds: float, **options: Any) -> ScheduleSpec:
    """Fire every ``seconds`` (real seconds), from ``start_at`` or now."""
    return schedule(CadenceKind.INTERVAL, every=seconds, **options)


def cron(expression: str, timezone: str = "UTC", **options: Any) -> ScheduleSpec:
    """Fire at the times a cron expression names (five fields or ``@daily`` and the like),
    read in the IANA ``timezone``."""
    return schedule(CadenceKind.CRON, cron=expression, timezone=timezone, **options)


def ongoing(seconds: float, **options: Any) -> ScheduleSpec:
    """Fire every ``seconds`` until the job calls ``ctx.done()`` (or an end is reached)."""
    return schedule(CadenceKind.ONGOING, every=seconds, **options)
