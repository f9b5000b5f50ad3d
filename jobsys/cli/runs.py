"""``jobsys runs``: list, show, follow, cancel and retry runs."""

from __future__ import annotations

import datetime as dt
import json
import time

import click
from rich.table import Table

from jobsys.cli import actors as cli_actors
from jobsys.cli import bulk as cli_bulk
from jobsys.cli import workflows as cli_workflows
from jobsys.cli.base import (
    DURATION,
    emit_json,
    err,
    handle_errors,
    main,
    make_client,
    out,
    parse_since,
)
from jobsys.store import runs


@main.group("runs")
def runs_group() -> None:
    """Follow and steer runs."""


def _short_time(value: dt.datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


def _state(r: runs.RunRecord) -> str:
    """A run's state, and until when it waits if it has a start time to come (a delayed
    run's, or a retrying run's next attempt), and the limit it waits on if it does
    (``pending (concurrency_limit)``)."""
    due = r.next_attempt_at
    reason = (r.waiting or {}).get("reason") if r.state in runs.WAITING else None
    if reason == "paused":
        return f"{r.state.value} (paused)"  # a pause holds it: ``jobsys queues list``
    limit = f" ({reason})" if reason in _LIMITS else ""
    if r.state in runs.WAITING and due is not None and due > runs.utcnow():
        return f"{r.state.value} until {_short_time(due)}{limit}"
    return r.state.value + limit


_LIMITS = ("concurrency_limit", "rate_limit", "backoff")


@runs_group.command("list")
@click.option("--job", default=None)
@click.option("--state", default=None, type=click.Choice([s.value for s in runs.RunState]))
@click.option("--since", default=None, help="A duration (30m, 2h, 1d) or an ISO time.")
@click.option("--tag", default=None)
@click.option(
    "--search",
    default=None,
    help="Keywords: runs whose error or logs hold them all, or whose job's name, "
    "description or tags do; or, with --mode semantic or hybrid, words matched by meaning.",
)
@click.option(
    "--mode",
    default=None,
    type=click.Choice(["keyword", "semantic", "hybrid"]),
    help="How --search matches: whole words, meaning (needs JOBSYS_EMBEDDER), or both "
    "fused; default hybrid when JOBSYS_EMBEDDER is set, else keyword. Ranked modes list "
    "the best first.",
)
@click.option("--schedule", "schedule_id", default=None, help="Only runs this schedule made.")
@click.option("--workflow", "workflow_id", default=None, help="Only steps of this workflow run.")
@click.option("--parent", "parent_id", default=None, help="Only runs made from this run.")
@click.option(
    "--exhausted/--not-exhausted",
    default=None,
    help="Only runs that used all their attempts (or that did not); with --state failed: "
    "the dead-letter view.",
)
@click.option(
    "--paused/--not-paused",
    default=None,
    help="Only the waiting runs a pause holds (or all but those): see `jobsys queues list`.",
)
@click.option("--archived", is_flag=True, help="Only archived runs (default lists leave them out).")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def runs_list(
    job: str | None,
    state: str | None,
    since: str | None,
    tag: str | None,
    search: str | None,
    mode: str | None,
    schedule_id: str | None,
    workflow_id: str | None,
    parent_id: str | None,
    exhausted: bool | None,
    paused: bool | None,
    archived: bool,
    limit: int,
    as_json: bool,
) -> None:
    """List runs, newest first (archived ones with --archived only; with --search in a
    semantic or hybrid mode, best match first)."""
    mode_used, found = make_client().list_scored(
        job=job,
        state=state,
        since=parse_since(since),
        tag=tag,
        limit=limit,
        search=search,
        schedule_id=schedule_id,
        workflow_id=workflow_id,
        parent_id=parent_id,
        exhausted=exhausted,
        paused=paused,
        archived=archived,
        mode=mode,
    )
    ranked = mode_used != "keyword"  # (semantic, hybrid: best first, with scores)
    if as_json:
        emit_json([r.to_json() | ({"score": s} if ranked else {}) for r, s in found])
        return
    table = Table("id", "job", "state", "attempts", "created (UTC)", "duration")
    if ranked:
        table.add_column("score", justify="right")
    table.columns[0].no_wrap = True
    for r, score in found:
        table.add_row(
            r.id,
            r.job,
            _state(r),
            str(r.attempts),
            _short_time(r.created_at),
            f"{r.duration:.2f} s" if r.duration is not None else "",
            *([f"{score:.3f}" if score is not None else ""] if ranked else []),
        )
    out.print(table)


@runs_group.command("show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def runs_show(run_id: str, as_json: bool) -> None:
    """Show one run record (for a workflow run, ``wf_...``: its DAG of steps)."""
    if run_id.startswith("wf_"):
        cli_workflows.show(make_client(), run_id, as_json)
        return
    record = make_client().status(run_id)
    data = record.to_json()
    if as_json:
        emit_json(data)
        return
    for key, value in data.items():
        if value in (None, [], {}):
            continue
        if key == "error" and isinstance(value, dict):
            value = {k: v for k, v in value.items() if k != "traceback"}
        text = json.dumps(value) if isinstance(value, dict | list) else str(value)
        out.print(f"[bold]{key:>16}[/bold]  {text}")


@runs_group.command("logs")
@click.argument("run_id")
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the run ends.")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def runs_logs(run_id: str, follow: bool, as_json: bool) -> None:
    """Print a run's log lines."""
    c = make_client()
    last = 0
    while True:
        terminal = c.status(run_id).terminal
        for line in c.logs(run_id, last):
            last = line.id
            if as_json:
                click.echo(
                    json.dumps(
                        {
                            "at": line.at.isoformat(),
                            "attempt": line.attempt,
                            "message": line.message,
                        }
                    )
                )
            else:
                click.echo(f"{line.at.isoformat()} [{line.attempt}] {line.message}")
        if not follow or terminal:
            return
        time.sleep(0.5)


@runs_group.command("events")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print {run_id, events, attempts}.")
@handle_errors
def runs_events(run_id: str, as_json: bool) -> None:
    """Print a run's history: each change of state, each attempt with its error and timing,
    and who cancelled or retried it."""
    history = make_client().events(run_id)
    if as_json:
        emit_json(history.to_json())
        return
    table = Table(box=None, header_style="bold")
    for column in ("at", "attempt", "change", "worker", "by", "error"):
        table.add_column(column)
    for e in history.events:
        if e.kind == "action":
            change = str((e.detail or {}).get("action", "action"))
            if (e.detail or {}).get("run_id"):
                change += f" as {e.detail['run_id']}"  # type: ignore[index]
        elif e.kind == "created":
            change = f"created ({e.to_state})"
        elif e.kind == "progress":
            change = f"progress {(e.detail or {}).get('milestone')} %"
        else:
            change = f"{e.from_state} -> {e.to_state}"
        error = f"{e.error.get('type') or ''}: {e.error.get('message') or ''}" if e.error else ""
        table.add_row(
            e.at.isoformat(timespec="milliseconds"),
            str(e.attempt),
            change,
            e.worker or "",
            e.actor or "",
            error,
        )
    out.print(table)
    for a in history.attempts:
        took = f"{a.duration:.3f} s" if a.duration is not None else "running"
        out.print(f"attempt {a.attempt}: {a.outcome or 'running'} after {took} on {a.worker}")


@runs_group.command("result")
@click.argument("run_id")
@click.option(
    "--wait",
    "wait_seconds",
    type=DURATION,
    default=0.0,
    help="How long to wait for the run to finish: seconds, or 30s, 5m.",
)
@click.option("--json", "as_json", is_flag=True, help='Print {"run_id": ..., "output": ...}.')
@handle_errors
def runs_result(run_id: str, wait_seconds: float, as_json: bool) -> None:
    """Print a completed run's output as JSON."""
    output = make_client().result(run_id, timeout=wait_seconds)
    if as_json:
        emit_json({"run_id": run_id, "output": output})
        return
    click.echo(json.dumps(output))


@runs_group.command("cancel")
@click.argument("run_id", required=False)
@cli_bulk.where_option
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def runs_cancel(run_id: str | None, where: tuple[str, ...], dry_run: bool, as_json: bool) -> None:
    """Cancel a run (or every run --where matches): a waiting one never starts, a running one
    is stopped."""
    if cli_bulk.check_target("cancel", run_id, where, dry_run):
        cli_bulk.run_bulk("cancel", where, dry_run, as_json)
        return
    assert run_id is not None
    done = make_client().cancel(run_id)
    record = done.record
    if done.warning:
        err.print(f"[yellow]warning:[/yellow] {done.warning}", markup=True, soft_wrap=True)
    if as_json:
        emit_json(done.to_json())
    elif record.state is runs.RunState.CANCELLED:
        click.echo(f"{run_id} cancelled")
    else:
        click.echo(f"{run_id} is running: asked to stop")


@runs_group.command("retry")
@click.argument("run_id", required=False)
@cli_bulk.where_option
@click.option(
    "--json", "as_json", is_flag=True, help="Print the new run's record (--where: the counts)."
)
@handle_errors
def runs_retry(run_id: str | None, where: tuple[str, ...], dry_run: bool, as_json: bool) -> None:
    """Submit a failed or cancelled run again (or every one --where matches); prints the new
    run id."""
    if cli_bulk.check_target("retry", run_id, where, dry_run):
        cli_bulk.run_bulk("retry", where, dry_run, as_json)
        return
    assert run_id is not None
    c = make_client()
    new_id = c.retry(run_id)
    if as_json:
        emit_json({**c.status(new_id).to_json(), "retry_of": run_id})
        return
    click.echo(new_id)


cli_bulk.delete_command(runs_group)
cli_actors.add_commands(runs_group)


# --- bench ----------------------------------------------------------------------------------
