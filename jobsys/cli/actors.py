"""``jobsys runs take``, ``runs report``, ``runs complete``, ``runs fail``: a person (or a
script) does the work of an external job's run from the shell. ``take`` acts as ``--token``'s
principal; the others take the run token it printed (``--run-token`` or ``JOBSYS_RUN_TOKEN``)."""

from __future__ import annotations

import json
from typing import Any

import click

from jobsys.cli.base import emit_json, handle_errors, make_client

RUN_TOKEN = click.option(
    "--run-token",
    envvar="JOBSYS_RUN_TOKEN",
    required=True,
    help="The run token `jobsys runs take` printed (default: $JOBSYS_RUN_TOKEN).",
)


def _no_constant(name: str) -> Any:
    """``NaN`` and the infinities Python's JSON reader takes are no JSON (a database refuses
    them)."""
    raise ValueError(f"{name} is not JSON (use null or a finite number)")


def _show(answer: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(answer)
        return
    for key in ("run_id", "state", "attempt", "lease_expires_at", "cancel_requested"):
        if key in answer and answer[key] is not None:
            click.echo(f"{key}: {answer[key]}")


def add_commands(group: click.Group) -> None:
    """Add the commands of runs driven from outside to ``jobsys runs``."""

    @group.command("take")
    @click.argument("target")
    @click.option("--json", "as_json", is_flag=True, help="Print the whole answer as JSON.")
    @handle_errors
    def runs_take(target: str, as_json: bool) -> None:
        """Take a run of an external job: TARGET is the job (its next waiting run) or a run
        id. Prints the input, the notes of earlier attempts and the run token."""
        c = make_client()
        taken = c.actors.take_job(target) if target in c.registry else c.actors.take_run(target)
        answer = taken.to_json()
        if as_json:
            emit_json(answer)
            return
        click.echo(f"run {answer['run_id']} of {answer['job']}, attempt {answer['attempt']}")
        click.echo(f"input: {json.dumps(answer['input'])}")
        for note in answer["notes"]:
            click.echo(f"note (attempt {note['attempt']}): {note['message']}")
        click.echo(f"lease: {answer['lease']:g} s: report at least that often")
        click.echo(f"export JOBSYS_RUN_TOKEN={answer['run_token']}")

    @group.command("report")
    @click.argument("run_id")
    @RUN_TOKEN
    @click.option("--progress", type=click.FloatRange(0, 100), default=None, help="Percent done.")
    @click.option("--message", default=None, help="What is being done now.")
    @click.option("--log", "log_line", default=None, help="A log line.")
    @click.option("--note", default=None, help="A note for whoever takes the run next.")
    @click.option("--json", "as_json", is_flag=True)
    @handle_errors
    def runs_report(
        run_id: str,
        run_token: str,
        progress: float | None,
        message: str | None,
        log_line: str | None,
        note: str | None,
        as_json: bool,
    ) -> None:
        """Report on a run taken (renews its lease; with no option, a heartbeat)."""
        answer = make_client().actors.report(
            run_id, run_token, pct=progress, message=message, log=log_line, note=note
        )
        _show(answer, as_json)

    @group.command("complete")
    @click.argument("run_id")
    @RUN_TOKEN
    @click.option("--output", required=True, help="The output, as JSON.")
    @click.option("--json", "as_json", is_flag=True)
    @handle_errors
    def runs_complete(run_id: str, run_token: str, output: str, as_json: bool) -> None:
        """Complete a run taken with its output (checked against the job's output model)."""
        try:
            value = json.loads(output, parse_constant=_no_constant)
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--output") from None
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--output") from None
        except RecursionError:
            raise click.BadParameter(
                "the JSON is nested too deep; flatten it", param_hint="--output"
            ) from None
        record = make_client().actors.complete(run_id, run_token, value)
        _show(record.to_json() | {"run_id": record.id}, as_json)

    @group.command("fail")
    @click.argument("run_id")
    @RUN_TOKEN
    @click.option("--error", "error", required=True, help="What went wrong.")
    @click.option("--retry", is_flag=True, help="Hand it to another actor (attempts left).")
    @click.option("--json", "as_json", is_flag=True)
    @handle_errors
    def runs_fail(run_id: str, run_token: str, error: str, retry: bool, as_json: bool) -> None:
        """Fail a run taken, or with --retry hand it to another actor."""
        record = make_client().actors.fail(run_id, run_token, error, retry)
        _show(record.to_json() | {"run_id": record.id}, as_json)
