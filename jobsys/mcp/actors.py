"""The MCP tools of runs driven from outside, by which an AI agent takes and completes a run
of an external job (``service/actor_client.py`` does the work): ``job_take``, ``job_report``,
``job_complete`` and ``job_fail``. The agent's MCP token takes the run; the reports carry the
run token the take answered (``run_token``), as the HTTP routes do."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import pydantic

from jobsys.base import errors
from jobsys.mcp.args import Args
from jobsys.service.actor_client import MAX_TEXT
from jobsys.service.client import Client

Text = Annotated[str, pydantic.StringConstraints(max_length=MAX_TEXT)]
RunId = Annotated[str, pydantic.StringConstraints(min_length=1, max_length=64)]
Token = Annotated[str, pydantic.StringConstraints(min_length=1, max_length=200)]


class TakeArgs(Args):
    job: Annotated[str, pydantic.StringConstraints(min_length=1, max_length=200)] | None = (
        pydantic.Field(None, description="Take the next waiting run of this external job.")
    )
    run_id: RunId | None = pydantic.Field(None, description="Or take this run.")


class HeldArgs(Args):
    run_id: RunId = pydantic.Field(description="The run you took.")
    run_token: Token = pydantic.Field(description="The `run_token` job_take answered.")


class ReportArgs(HeldArgs):
    progress: float | int | None = pydantic.Field(
        None, ge=0, le=100, allow_inf_nan=False, description="Percent done, 0 to 100."
    )
    message: Text | None = pydantic.Field(None, description="What you are doing now.")
    log: Text | None = pydantic.Field(None, description="A log line.")
    note: Text | None = pydantic.Field(
        None, description="A note for whoever takes the run after you, should you stop."
    )


class CompleteArgs(HeldArgs):
    output: Any = pydantic.Field(description="The result: must match the job's output schema.")


class FailArgs(HeldArgs):
    error: Text = pydantic.Field(description="What went wrong.")
    retry: bool = pydantic.Field(
        False, description="Let another actor try (while attempts remain) instead of failing."
    )


def job_take(c: Client, a: TakeArgs) -> dict[str, Any]:
    if (a.job is None) == (a.run_id is None):
        raise errors.InvalidInput(
            "job_take",
            [{"loc": ["job"], "msg": "give `job` or `run_id`, one of them", "type": "missing"}],
            "arguments",
        )
    taken = c.actors.take_job(a.job) if a.job is not None else c.actors.take_run(str(a.run_id))
    return taken.to_json()


def job_report(c: Client, a: ReportArgs) -> dict[str, Any]:
    return c.actors.report(
        a.run_id,
        a.run_token,
        pct=None if a.progress is None else float(a.progress),
        message=a.message,
        log=a.log,
        note=a.note,
    )


def job_complete(c: Client, a: CompleteArgs) -> dict[str, Any]:
    return c.actors.complete(a.run_id, a.run_token, a.output).to_json()


def job_fail(c: Client, a: FailArgs) -> dict[str, Any]:
    return c.actors.fail(a.run_id, a.run_token, a.error, a.retry).to_json()


Handler = Callable[[Client, Any], dict[str, Any]]
TOOLS: dict[str, tuple[str, type[Args], Handler]] = {
    "job_take": (
        "Take a run of an external job to do its work yourself: by `job` (the next waiting "
        "run) or by `run_id`. Answers its input, attempt, the notes and log lines of the "
        "attempts before yours, the output schema, the lease (seconds you may stay silent) "
        "and a `run_token` for job_report, job_complete and job_fail.",
        TakeArgs,
        job_take,
    ),
    "job_report": (
        "Report on a run you took (with its run_token): progress, a message, a log line, a "
        "note for a later attempt; any call renews your lease (send one as a heartbeat). "
        "Answers cancel_requested: stop and job_fail if true.",
        ReportArgs,
        job_report,
    ),
    "job_complete": (
        "Complete a run you took with its output (checked against the job's output schema: "
        "a bad one is refused naming the field, the run stays yours to send it again).",
        CompleteArgs,
        job_complete,
    ),
    "job_fail": (
        "Fail a run you took, with an error message; `retry` hands it to another actor "
        "while attempts remain (your notes go with it).",
        FailArgs,
        job_fail,
    ),
}
