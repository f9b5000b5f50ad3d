"""``jobsys jobs list/show`` (over ``jobsys.service.views``, as the HTTP API and the MCP tools)
and ``jobsys submit``; ``jobsys jobs register/remove/definitions`` are in ``definitions.py``."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import click
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from jobsys.base import bounds, errors
from jobsys.cli.base import (
    DURATION,
    emit_json,
    err,
    fail,
    handle_errors,
    main,
    make_client,
    out,
    parse_input,
)
from jobsys.declare import definitions
from jobsys.service import client as client_mod
from jobsys.service import views
from jobsys.store import rows, runs


@main.group("jobs")
def jobs_group() -> None:
    """Discover the declared jobs."""


@jobs_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.option("--all", "include_hidden", is_flag=True, help="Include hidden jobs.")
@click.option("--tag", default=None, help="Only jobs with this tag.")
@click.option(
    "--label",
    "labels",
    multiple=True,
    help="Only jobs with this label: key=value, or key for any value (repeat: all of them).",
)
@click.option(
    "--search", "query", default=None, help="Keywords the name, description, tags or labels hold."
)
@handle_errors
def jobs_list(
    as_json: bool, include_hidden: bool, tag: str | None, labels: tuple[str, ...], query: str | None
) -> None:
    """List the jobs you may see (as the HTTP API and the MCP tool list_jobs do)."""
    c = make_client()
    found = views.list_jobs(c, views.JobFilter.parse(tag, labels, query), include_hidden).jobs
    if as_json:
        emit_json([views.job_json(s, c) for s in found])
        return
    table = Table("name", "kind", "description", "tags", "queue", "timeout")
    for s in found:
        table.add_row(
            s.name,
            definitions.kind_of(s),
            s.description.splitlines()[0] if s.description else "",
            ", ".join(s.tags),
            s.queue,
            f"{s.timeout:g} s",
        )
    out.print(table)


@jobs_group.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def jobs_show(name: str, as_json: bool) -> None:
    """Show one job with its input and output schemas."""
    data = views.describe_job(make_client(), name)
    if as_json:
        emit_json(data)
        return
    for key, value in data.items():
        text = json.dumps(value, indent=2) if isinstance(value, dict | list) else str(value)
        out.print(f"[bold]{key}[/bold]: {text}")


# --- submit ---------------------------------------------------------------------------------


@main.command()
@click.argument("name")
@click.option("--input", "input_text", default="{}", show_default=True, help="Input as JSON.")
@click.option("--wait", is_flag=True, help="Wait for the run, then print its output.")
@click.option(
    "--timeout",
    type=DURATION,
    default=3600.0,
    show_default=True,
    help="How long to wait with --wait: seconds, or 30s, 5m, 1h.",
)
@click.option(
    "--countdown",
    type=DURATION,
    default=None,
    help="Not before this long from now: seconds, or 30s, 5m, 1h, 3d (up to 366 days).",
)
@click.option(
    "--at",
    "start_at",
    default=None,
    help="Not before this time: ISO 8601 with its offset, e.g. 2026-12-01T09:00:00Z "
    "(instead of --countdown).",
)
@click.option(
    "--priority",
    type=click.IntRange(bounds.LOWEST_PRIORITY, bounds.HIGHEST_PRIORITY),
    default=None,
    help=f"{bounds.PRIORITY_HELP}. Default: the job's (`jobs show`; 5 unless declared).",
)
@click.option(
    "--idempotency-key", default=None, help="Submitting again with it gives the first run."
)
@click.option("--tag", "tags", multiple=True, help="A tag of the run (repeat).")
@click.option(
    "--metadata",
    "metadata_items",
    multiple=True,
    help="Metadata of the run: KEY=VALUE (a string) or a JSON object (repeat).",
)
@click.option("--depends-on", "depends_on", multiple=True, help="A run id to wait for (repeat).")
@click.option("--run-anyway", is_flag=True, help="Run even if a run it depends on fails.")
@click.option(
    "--require-queued",
    is_flag=True,
    help="Queued on the broker or nothing: fail (exit 1) and keep no record if the broker "
    "cannot take the run. By default it is kept, not yet queued, and a worker queues it "
    "when the broker is back.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the run record as JSON.")
@handle_errors
def submit(
    name: str,
    input_text: str,
    wait: bool,
    timeout: float,
    countdown: float | None,
    start_at: str | None,
    priority: int | None,
    idempotency_key: str | None,
    tags: tuple[str, ...],
    metadata_items: tuple[str, ...],
    depends_on: tuple[str, ...],
    run_anyway: bool,
    require_queued: bool,
    as_json: bool,
) -> None:
    """Submit a run of job NAME; prints the run id (or, with --wait, the output).

    With --countdown or --at, the run starts then, not before: hours or weeks ahead, it waits
    in the run store (pending; `runs show` says until when) and is queued when due."""
    if countdown is not None and start_at is not None:
        fail("--countdown and --at: give one of them", 2)
    c = make_client()
    options = client_mod.SubmitOptions(
        idempotency_key=idempotency_key,
        tags=tags,
        metadata=parse_metadata(metadata_items),
        depends_on=depends_on,
        run_anyway=run_anyway,
        countdown=countdown,
        start_at=start_at,
        priority=priority,
        require_queued=require_queued,
    )
    run_id = _submit(c, name, parse_input(input_text), options)
    if len(c.outbox) and c.outbox.drain():  # one more try before this process ends
        err.print(
            f"[yellow]run {run_id} is recorded but not yet queued: the broker did not "
            "answer. A worker's reconciler queues it once the broker is back (within "
            "JOBSYS_REAPER_SECONDS); `jobsys runs show` says so meanwhile.[/yellow]"
        )
    if not wait:
        if as_json:
            emit_json(c.status(run_id).to_json())
        else:
            click.echo(run_id)
        return
    err.print(f"run {run_id}")
    record = _wait_with_progress(c, run_id, timeout)
    if as_json:
        emit_json(record.to_json())
    elif record.state is runs.RunState.COMPLETED:
        click.echo(json.dumps(record.output))
    if record.state is not runs.RunState.COMPLETED:
        raise errors.RunFailed(run_id, record.state.value, record.error)


_OPTIONS = {"start_at": "--at", "countdown": "--countdown", "priority": "--priority"}
"""The submit options by the names of this command's options."""


def _submit(c: client_mod.Client, name: str, input: Any, options: client_mod.SubmitOptions) -> str:
    """``c.submit``, with the errors of its options named as this command's options."""
    try:
        return c.submit(name, input, options)
    except errors.InvalidInput as exc:
        if exc.what != "options":
            raise
        for e in exc.errors:
            e["loc"] = [_OPTIONS.get(str(p), p) for p in e["loc"]]
        raise errors.InvalidInput(exc.job, exc.errors, exc.what) from None


def parse_metadata(items: tuple[str, ...]) -> dict[str, Any] | None:
    """``--metadata`` given as ``KEY=VALUE`` (a string value) or a JSON object, each time
    merged into one mapping (a later key wins); ``None`` if none was given."""
    if not items:
        return None
    merged: dict[str, Any] = {}
    for item in items:
        if item.lstrip().startswith("{"):
            value = parse_input(item, "--metadata")
            if not isinstance(value, dict):
                fail(f"--metadata: {item[:60]!r} is not a JSON object", 2)
            merged.update(value)
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            fail(f"--metadata: {item[:60]!r} is neither KEY=VALUE nor a JSON object", 2)
        merged[key.strip()] = value
    return merged


def _wait_with_progress(c: client_mod.Client, run_id: str, timeout: float) -> runs.RunRecord:
    deadline = time.monotonic() + timeout
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
    )
    notes = _WaitNotes(c)
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("pending", total=100)
        while True:
            record = c.status(run_id)
            pct = (record.progress or {}).get("pct", 0.0)
            note = (record.progress or {}).get("message") or record.state.value
            waiting = notes.reason(record)
            if waiting and waiting != notes.said:  # a line of its own: shown on any stderr
                bar.console.print(
                    f"run {run_id} waits: {waiting}", markup=False, highlight=False, soft_wrap=True
                )
                notes.said = waiting
            if waiting:
                note = f"{record.state.value}: waiting for a worker that runs {record.job}"
                why = record.waiting or {}
                if why.get("reason") == rows.DELAYED:
                    note = f"{record.state.value}: delayed until {why.get('until')}"
            bar.update(task, completed=100 if record.terminal else pct, description=note)
            if record.terminal:
                return record
            if time.monotonic() > deadline:
                raise errors.WaitTimeout(run_id, timeout, waiting)
            with contextlib.suppress(errors.WaitTimeout):
                c.wait(run_id, timeout=0.25, poll=0.25)


class _WaitNotes:
    """Why a run that `submit --wait` follows has not started: what the worker that parked
    its message recorded (``RunRecord.waiting``) or, when no worker took it at all, that no
    live worker announced its job (looked at after 2 s of waiting, then every 5 s)."""

    FIRST_LOOK, LOOK_EVERY = 2.0, 5.0

    def __init__(self, c: client_mod.Client) -> None:
        self.c = c
        self.said: str | None = None
        self._since = time.monotonic()
        self._looked = 0.0
        self._unannounced: str | None = None

    def reason(self, record: runs.RunRecord) -> str | None:
        recorded = client_mod.waiting_message(record)
        if recorded or record.state is not runs.RunState.PENDING:
            return recorded
        now = time.monotonic()
        if now - self._since >= self.FIRST_LOOK and now - self._looked >= self.LOOK_EVERY:
            self._looked = now
            self._unannounced = None
            if self.c.announced(record.job) is False:
                self._unannounced = (
                    f"no live worker runs job {record.job!r}: none announced it (a worker "
                    "runs the jobs of its catalog whose queue it reads; this job's queue is "
                    f"{record.queue!r})"
                )
        return self._unannounced
