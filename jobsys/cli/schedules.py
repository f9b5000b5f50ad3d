"""``jobsys schedules``: create, list, show, update, pause, resume, trigger, delete, preview,
clear."""

from __future__ import annotations

import datetime as dt
from typing import Any

import click
from rich.table import Table

from jobsys.base import bounds, timeparse
from jobsys.cli.base import (
    DURATION,
    emit_json,
    handle_errors,
    main,
    make_client,
    out,
    parse_input,
)
from jobsys.declare import cadence, previews
from jobsys.store import runs, schedules


@main.group("schedules")
def schedules_group() -> None:
    """Schedules: once at a time, every N seconds, cron in a time zone, ongoing until done."""


def _when_options(fn: Any) -> Any:
    """The definition options shared by create and update."""
    options = [
        click.option(
            "--every", type=DURATION, help="Time between fires: seconds, or 30s, 5m, 1h30m, 2d."
        ),
        click.option("--cron", "cron_expr", help="Five cron fields or @daily, @hourly ..."),
        click.option("--timezone", "--tz", "tz", help="IANA zone of --cron (default UTC)."),
        click.option("--at", help="Fire once at this ISO 8601 time (with offset or Z)."),
        click.option(
            "--ongoing", type=DURATION, help="Every N seconds (or 5m, 1h) until the job says done."
        ),
        click.option("--input", "input_text", help="JSON input of each run."),
        click.option("--metadata", "metadata_text", help="JSON metadata of each run."),
        click.option("--start", "start_at", help="Not before this ISO 8601 time."),
        click.option("--end", "end_at", help="Not after this ISO 8601 time."),
        click.option("--max-runs", type=click.IntRange(1), help="Complete after this many."),
        click.option(
            "--jitter", type=DURATION, help="Up to this long (seconds, or 30s) added at random."
        ),
        click.option(
            "--overlap",
            type=click.Choice([o.value for o in cadence.Overlap]),
            help="While the previous run is active: skip (default), allow, or queue one.",
        ),
        click.option(
            "--misfire",
            type=click.Choice([m.value for m in cadence.Misfire]),
            help="After downtime: run_once to catch up (default), or skip.",
        ),
        click.option(
            "--grace", type=DURATION, help="How late (seconds, or 5m) still counts as on time."
        ),
        click.option(
            "--priority",
            type=click.IntRange(bounds.LOWEST_PRIORITY, bounds.HIGHEST_PRIORITY),
            help=f"Of the runs it makes: {bounds.PRIORITY_HELP}. Default: the job's.",
        ),
        click.option("--description", help="What the schedule is for, in words."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _changes(
    every: float | None,
    cron_expr: str | None,
    at: str | None,
    ongoing: float | None,
    tz: str | None,
    input_text: str | None,
    metadata_text: str | None,
    description: str | None = None,
    **rest: Any,
) -> dict[str, Any]:
    """The ``cadence.schedule`` keywords of the options given (and only those)."""
    kinds = {"interval": every, "cron": cron_expr, "once": at, "ongoing": ongoing}
    chosen = [(k, v) for k, v in kinds.items() if v is not None]
    if len(chosen) > 1:
        raise click.UsageError("give one of --every, --cron, --at, --ongoing")
    changes: dict[str, Any] = {k: v for k, v in rest.items() if v is not None}
    for kind, value in chosen:
        key = {"interval": "every", "ongoing": "every", "cron": "cron", "once": "at"}[kind]
        changes.update(kind=kind, **{key: value})
    if tz is not None:
        changes["timezone"] = tz
    if input_text is not None:
        changes["input"] = parse_input(input_text)
    if metadata_text is not None:
        changes["metadata"] = parse_input(metadata_text, "--metadata")
    return changes


def describe(c: dict[str, Any]) -> str:
    """A cadence in words: ``every 300 s``, ``0 8 * * 1 (Europe/Paris)``..."""
    kind = c["kind"]
    if kind == "once":
        return f"at {c['at']}"
    if kind == "cron":
        return f"{c['cron']} ({c['timezone']})"
    until = " until done" if kind == "ongoing" else ""
    return f"every {c['every']:g} s{until}"


def _row(s: schedules.ScheduleRecord) -> list[str]:
    when = describe(s.cadence)
    return [
        s.id,
        s.job,
        when,
        s.state.value,
        s.next_fire_at.strftime("%Y-%m-%d %H:%M:%S") if s.next_fire_at else "",
        str(s.run_count),
        s.last_state or "",
    ]


def _table() -> Table:
    table = Table("id", "job", "when", "state", "next (UTC)", "runs", "last run")
    table.columns[0].no_wrap = True
    return table


def _show(s: schedules.ScheduleRecord, as_json: bool) -> None:
    if as_json:
        emit_json(s.to_json())
        return
    table = _table()
    table.add_row(*_row(s))
    out.print(table)


@schedules_group.command("create")
@click.argument("job")
@_when_options
@click.option("--name", help="A label to recognise it by.")
@click.option("--paused", is_flag=True, help="Create it inactive: it fires once resumed.")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def schedules_create(job: str, name: str | None, paused: bool, as_json: bool, **given: Any) -> None:
    """Create a schedule of JOB (one of --every, --cron, --at, --ongoing)."""
    changes = _changes(**given)
    if "kind" not in changes:
        raise click.UsageError("give one of --every, --cron, --at, --ongoing")
    definition = cadence.schedule(**changes)
    api = make_client().schedules
    made = api.create(
        job, definition, name=name, description=given.get("description"), paused=paused
    )
    _show(made, as_json)


@schedules_group.command("update")
@click.argument("schedule_id")
@_when_options
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def schedules_update(schedule_id: str, as_json: bool, **given: Any) -> None:
    """Change a schedule (a new version); options not given keep their value."""
    changes = _changes(**given)
    description = given.get("description")
    if not changes and description is None:
        raise click.UsageError("nothing to change: give at least one option")
    _show(make_client().schedules.update(schedule_id, description=description, **changes), as_json)


@schedules_group.command("list")
@click.option("--state", type=click.Choice([s.value for s in schedules.ScheduleState]))
@click.option("--job", default=None, help="Only the schedules of this job (or workflow).")
@click.option("--name", default=None, help="Only those whose name holds this (any case).")
@click.option(
    "--next-after",
    default=None,
    help="Only those next firing at or after this: an ISO time, or 30m, 2h from now.",
)
@click.option(
    "--next-before",
    default=None,
    help="Only those next firing before this: an ISO time, or 30m, 2h, 1d from now.",
)
@click.option(
    "--archived", is_flag=True, help="Only archived schedules (default lists leave them out)."
)
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def schedules_list(
    state: str | None,
    job: str | None,
    name: str | None,
    next_after: str | None,
    next_before: str | None,
    archived: bool,
    limit: int,
    as_json: bool,
) -> None:
    """List schedules, newest first, with next fire, run count and last run state (archived
    ones with --archived only)."""
    found = make_client().schedules.list(
        state=state,
        job=job,
        limit=limit,
        name=name,
        next_after=_future(next_after, "--next-after"),
        next_before=_future(next_before, "--next-before"),
        archived=archived,
    )
    if as_json:
        emit_json([s.to_json() for s in found])
        return
    table = _table()
    for s in found:
        table.add_row(*_row(s))
    out.print(table)


@schedules_group.command("show")
@click.argument("schedule_id")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def schedules_show(schedule_id: str, as_json: bool) -> None:
    """One schedule, with its versions."""
    c = make_client()
    s = c.schedules.get(schedule_id)
    if as_json:
        emit_json({**s.to_json(), "versions": c.schedules.versions(schedule_id)})
        return
    _show(s, False)
    for v in c.schedules.versions(schedule_id):
        when = v["changed_at"].strftime("%Y-%m-%d %H:%M:%S")
        out.print(f"version {v['version']} at {when} UTC by {v['changed_by']}")


def _lifecycle(name: str, doc: str) -> None:
    @schedules_group.command(name, help=doc)
    @click.argument("schedule_id")
    @click.option("--json", "as_json", is_flag=True)
    @handle_errors
    def command(schedule_id: str, as_json: bool) -> None:
        api = make_client().schedules
        action = {"pause": api.pause, "resume": api.resume, "delete": api.delete}[name]
        _show(action(schedule_id), as_json)


_lifecycle("pause", "Stop firing until resumed.")
_lifecycle("resume", "Fire again, from now on (missed fires are not replayed).")
_lifecycle("delete", "Never fire again (the schedule and its runs stay listed, cancelled).")


@schedules_group.command("trigger")
@click.argument("schedule_id")
@click.option(
    "--version",
    type=click.IntRange(1),
    default=None,
    help="Fire this version of the schedule (its input and metadata; default: the current).",
)
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def schedules_trigger(schedule_id: str, version: int | None, as_json: bool) -> None:
    """Fire once now, without disturbing the cadence; prints the run id."""
    made = make_client().schedules.trigger(schedule_id, version=version)
    if as_json:
        key = "workflow_run_id" if made.startswith("wf_") else "run_id"
        emit_json({"schedule_id": schedule_id, key: made, "run_id": made, "version": version})
        return
    click.echo(made)


def _future(text: str | None, option: str) -> dt.datetime | None:
    """An ISO time, or a duration from now (``2h``: in two hours)."""
    if text is None:
        return None
    try:
        return timeparse.parse_instant(text, 1)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


@schedules_group.command("preview")
@click.argument("schedule_id", required=False)
@click.option("--cron", "cron_expr", help="Five cron fields or @daily, @hourly ...")
@click.option("--every", type=DURATION, help="An interval: seconds, or 30s, 5m, 1h30m, 2d.")
@click.option("--at", help="Once, at this ISO 8601 time (with offset or Z).")
@click.option(
    "--timezone",
    "--tz",
    "tz",
    help="IANA zone: of --cron (default UTC), and the wall-clock times are shown in.",
)
@click.option("--start", "start_at", help="Not before this ISO 8601 time.")
@click.option("--end", "end_at", help="Not after this ISO 8601 time.")
@click.option(
    "-n", "--count", type=click.IntRange(1, previews.MAX_PREVIEW), default=10, show_default=True
)
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def schedules_preview(
    schedule_id: str | None,
    cron_expr: str | None,
    every: float | None,
    at: str | None,
    tz: str | None,
    start_at: str | None,
    end_at: str | None,
    count: int,
    as_json: bool,
) -> None:
    """The next fire times of schedule SCHEDULE_ID, or of a cadence not saved (--cron, --every
    or --at, with --tz): noting where a daylight-saving change moves or merges a fire."""
    given = {"cron": cron_expr, "every": every, "at": at}
    chosen = {k: v for k, v in given.items() if v is not None}
    if schedule_id is not None:
        if chosen or start_at or end_at:
            raise click.UsageError("give a schedule id, or --cron/--every/--at; not both")
        fires = make_client().schedules.preview(schedule_id, count, tz)
        shown = tz or _zone_of(fires)
    else:
        if len(chosen) != 1:
            raise click.UsageError("give a schedule id, or one of --cron, --every, --at")
        ((field, value),) = chosen.items()
        kind = {"cron": "cron", "every": "interval", "at": "once"}[field]
        when = cadence.Cadence.from_json(
            {"kind": kind, field: value, "timezone": tz if kind == "cron" else None}
            | {"start_at": start_at, "end_at": end_at}
        )
        fires = previews.preview(when, count, runs.utcnow(), tz)
        shown = tz or (when.timezone if kind == "cron" else "UTC")
    if as_json:
        data = {"timezone": shown, "fires": [f.to_json() for f in fires]}
        emit_json(({"schedule_id": schedule_id} if schedule_id else {}) | data)
        return
    if not fires:
        out.print("no more fires")
        return
    table = Table("#", "UTC", f"local ({shown})", "note")
    for i, f in enumerate(fires, 1):
        local = f"{f.local:%Y-%m-%d %H:%M:%S %Z}"
        table.add_row(str(i), f"{f.at:%Y-%m-%d %H:%M:%S}", local, f.note or "")
    out.print(table)


def _zone_of(fires: list[previews.Fire]) -> str:
    return str(getattr(fires[0].local.tzinfo, "key", "UTC")) if fires else "UTC"


@schedules_group.command("clear")
@click.option("--dry-run", is_flag=True, help="Only list the schedules it would clear.")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def schedules_clear(dry_run: bool, as_json: bool) -> None:
    """Admins: delete (cancel) every schedule of your tenant made at runtime (those declared
    in code stay). Other tenants' schedules are never touched."""
    found = make_client().schedules.clear(dry_run=dry_run)
    if as_json:
        emit_json({"dry_run": dry_run, "cleared": [s.to_json() for s in found]})
        return
    table = _table()
    for s in found:
        table.add_row(*_row(s))
    out.print(table)
    verb = "would clear" if dry_run else "cleared"
    out.print(f"{verb} {len(found)} schedule{'s' if len(found) != 1 else ''}")
