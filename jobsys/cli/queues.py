"""``jobsys queues list|pause|resume`` and ``jobsys jobs pause|resume``: paused work stays
pending, resuming publishes it in priority order (over ``Client.pauses``, as the HTTP API and
the MCP tools)."""

from __future__ import annotations

import click
from rich.table import Table

from jobsys.cli.base import emit_json, fail, handle_errors, main, make_client, out
from jobsys.cli.jobs import jobs_group
from jobsys.service.pause_client import Resumed
from jobsys.store.pauses import Pause


@main.group("queues")
def queues_group() -> None:
    """The queues the jobs use: paused or not, and their runs waiting."""


@queues_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def queues_list(as_json: bool) -> None:
    """Each queue the jobs use (and any paused one): paused or not, by whom and since when,
    its runs waiting and how many of them a pause holds."""
    found = make_client().pauses.queues()
    if as_json:
        emit_json([q.to_json() for q in found])
        return
    table = Table("queue", "state", "paused by", "since", "waiting", "paused runs")
    for q in found:
        first = q.pauses[0] if q.pauses else None
        table.add_row(
            q.name,
            "paused" + (" (everything)" if first and first.scope == "all" else "")
            if q.paused
            else "running",
            ", ".join(p.paused_by for p in q.pauses),
            first.paused_at.isoformat(timespec="seconds") if first else "",
            str(q.waiting),
            str(q.parked),
        )
    out.print(table)


@queues_group.command("pause")
@click.argument("name", required=False)
@click.option("--all", "everything", is_flag=True, help="Pause everything (every queue).")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def queues_pause(name: str | None, everything: bool, as_json: bool) -> None:
    """Pause queue NAME (or everything, with --all): none of its runs starts until it is
    resumed; they stay pending, and running runs finish."""
    pauses = make_client().pauses
    pause = pauses.pause_all() if _everything(name, everything) else pauses.pause_queue(str(name))
    _paused(pause, as_json)


@queues_group.command("resume")
@click.argument("name", required=False)
@click.option("--all", "everything", is_flag=True, help="Resume everything paused with --all.")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def queues_resume(name: str | None, everything: bool, as_json: bool) -> None:
    """Resume queue NAME (or everything, with --all): the runs it held are queued, highest
    priority first."""
    pauses = make_client().pauses
    done = pauses.resume_all() if _everything(name, everything) else pauses.resume_queue(str(name))
    _resumed(done, as_json)


@jobs_group.command("pause")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def jobs_pause(name: str, as_json: bool) -> None:
    """Pause job NAME: none of its runs starts until it is resumed."""
    _paused(make_client().pauses.pause_job(name), as_json)


@jobs_group.command("resume")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def jobs_resume(name: str, as_json: bool) -> None:
    """Resume job NAME: the runs it held are queued, highest priority first."""
    _resumed(make_client().pauses.resume_job(name), as_json)


def _everything(name: str | None, everything: bool) -> bool:
    if everything and name:
        fail("give a queue's NAME or --all, not both", code=2)
    if not everything and not name:
        fail("give the queue's NAME (`jobsys queues list` shows them), or --all", code=2)
    return everything


def _paused(pause: Pause, as_json: bool) -> None:
    if as_json:
        emit_json(pause.to_json())
        return
    out.print(pause.describe(), markup=False, highlight=False)


def _resumed(done: Resumed, as_json: bool) -> None:
    if as_json:
        emit_json(done.to_json())
        return
    if not done.resumed:
        out.print("it was not paused", markup=False)
    for p in done.resumed:
        out.print(f"resumed: {p.describe()}", markup=False, highlight=False)
    out.print(f"{done.published} paused runs queued, highest priority first", markup=False)
    for p in done.still_paused:
        out.print(f"still held: {p.describe()}", markup=False, highlight=False)
