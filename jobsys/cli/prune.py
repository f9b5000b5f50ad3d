"""``jobsys runs prune``: delete ended runs now by the retention policies (or by age), and
``jobsys runs|schedules archive|unarchive``: keep runs and schedules out of default lists
without deleting them (``service/retention.py``)."""

from __future__ import annotations

import click

from jobsys.base import timeparse
from jobsys.cli.base import DURATION, emit_json, handle_errors, make_client
from jobsys.cli.runs import runs_group
from jobsys.cli.schedules import schedules_group
from jobsys.store import retention


def summary(result: retention.PruneResult) -> str:
    """What a person reads: how many runs went (would go), by state."""
    states = ", ".join(f"{n} {state}" for state, n in sorted(result.by_state.items()) if n)
    verb = "would be deleted" if result.dry_run else "deleted"
    line = f"{result.runs} run{'s' if result.runs != 1 else ''} {verb}"
    if states:
        line += f" ({states})"
    if result.workflow_runs:
        line += f", {result.workflow_runs} workflow runs"
    if result.dry_run:
        return line + " (dry run: nothing changed)"
    return line + f" in {result.batches} batches, {result.seconds:.1f} s"


@runs_group.command("prune")
@click.option(
    "--older-than",
    type=DURATION,
    default=None,
    help="Every ended run older than this (30d, 12h) instead of the policies' ages "
    "(each job's newest JOBSYS_KEEP_LAST ended runs still stay).",
)
@click.option("--job", default=None, help="Only this job's runs.")
@click.option("--dry-run", is_flag=True, help="Count the runs; delete nothing.")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def runs_prune(older_than: float | None, job: str | None, dry_run: bool, as_json: bool) -> None:
    """Delete ended runs past their retention now, with their logs and history (admin
    only; a tenant's admin prunes its tenant's runs)."""
    if older_than is not None and older_than <= 0:
        raise click.BadParameter(
            f"must be a positive duration like 30d, got {timeparse.describe_seconds(older_than)}",
            param_hint="--older-than",
        )
    problem = retention.older_than_problem(older_than)
    if problem is not None:
        raise click.BadParameter(problem, param_hint="--older-than")
    result = make_client().retention.prune(older_than, job, dry_run)
    if as_json:
        emit_json(result.to_json())
        return
    click.echo(summary(result))


def _archiving(group: click.Group, what: str, archived: bool) -> None:
    verb = "archive" if archived else "unarchive"
    doc = (
        f"Archive {what}s: out of default lists (--archived lists them), kept, never pruned."
        if archived
        else f"Bring archived {what}s back into the default lists."
    )
    if what == "schedule" and archived:
        doc += " An archived schedule is paused."
    if what == "schedule" and not archived:
        doc += " It stays paused: resume it to fire again."

    @group.command(verb, help=doc)
    @click.argument("ids", nargs=-1, required=True)
    @click.option("--json", "as_json", is_flag=True)
    @handle_errors
    def command(ids: tuple[str, ...], as_json: bool) -> None:
        api = make_client().retention
        if what == "run":
            done = api.archive(ids) if archived else api.unarchive(ids)
        else:
            done = api.archive_schedules(ids) if archived else api.unarchive_schedules(ids)
        if as_json:
            emit_json({verb + "d": done})
            return
        for item in ids:
            click.echo(f"{item} {verb}d" if item in done else f"{item} already {verb}d")


_archiving(runs_group, "run", True)
_archiving(runs_group, "run", False)
_archiving(schedules_group, "schedule", True)
_archiving(schedules_group, "schedule", False)
