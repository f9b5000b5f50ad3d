"""``jobsys schedules``: create, list, show, update, pause, resume, trigger, delete."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from jobsys import cadence, schedules
from jobsys.cli import emit_json, handle_errors, main, make_client, out, parse_input


@main.group("schedules")
def schedules_group() -> None:
    """Schedules: once at a time, every N seconds, cron in a time zone, ongoing until done."""


def _when_options(fn: Any) -> Any:
    """The definition options shared by create and update."""
    options = [
        click.option("--every", type=float, help="Seconds between fires (an interval)."),
        click.option("--cron", "cron_expr", help="Five cron fields or @daily, @hourly ..."),
        click.option("--timezone", "--tz", "tz", help="IANA zone of --cron (default UTC)."),
        click.option("--at", help="Fire once at this ISO 8601 time (with offset or Z)."),
        click.option("--ongoing", type=float, help="Every N seconds until the job says done."),
        click.option("--input", "input_text", help="JSON input of each run."),
        click.option("--metadata", "metadata_text", help="JSON metadata of each run."),
        click.option("--start", "start_at", help="Not before this ISO 8601 time."),
        click.option("--end", "end_at", help="Not after this ISO 8601 time."),
        click.option("--max-runs", type=click.IntRange(1), help="Complete after this many."),
        click.option("--jitter", type=float, help="Up to N random seconds added to each fire."),
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
        click.option("--grace", type=float, help="Seconds late that still count as on time."),
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
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def schedules_create(job: str, name: str | None, as_json: bool, **given: Any) -> None:
    """Create a schedule of JOB (one of --every, --cron, --at, --ongoing)."""
    changes = _changes(**given)
    if "kind" not in changes:
        raise click.UsageError("give one of --every, --cron, --at, --ongoing")
    definition = cadence.schedule(**changes)
    _show(make_client().schedules.create(job, definition, name=name), as_json)


@schedules_group.command("update")
@click.argument("schedule_id")
@_when_options
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def schedules_update(schedule_id: str, as_json: bool, **given: Any) -> None:
    """Change a schedule (a new version); options not given keep their value."""
    changes = _changes(**given)
    if not changes:
        raise click.UsageError("nothing to change: give at least one option")
    _show(make_client().schedules.update(schedule_id, **changes), as_json)


@schedules_group.command("list")
@click.option("--state", type=click.Choice([s.value for s in schedules.ScheduleState]))
@click.option("--job", default=None)
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def schedules_list(state: str | None, job: str | None, limit: int, as_json: bool) -> None:
    """List schedules, newest first, with next fire, run count and last run state."""
    found = make_client().schedules.list(state=state, job=job, limit=limit)
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
@handle_errors
def schedules_trigger(schedule_id: str) -> None:
    """Fire once now, without disturbing the cadence; prints the run id."""
    click.echo(make_client().schedules.trigger(schedule_id))
