"""The MCP tools of bulk actions, ``runs_bulk_cancel``, ``runs_bulk_retry`` and
``runs_bulk_delete``, and ``runs_prune``: their arguments and handlers (``service/bulk.py``
and ``service/retention.py`` do the work)."""

from __future__ import annotations

from typing import Annotated, Any

import pydantic

from jobsys.base.timeparse import DurationSeconds
from jobsys.mcp.args import Args, Name
from jobsys.service import bulk
from jobsys.service.client import Client

WhereValue = Annotated[str, pydantic.StringConstraints(max_length=500)] | int | bool | list[str]


class BulkArgs(Args):
    where: dict[str, WhereValue] = pydantic.Field(
        description="Conditions, all of which must hold: "
        + "; ".join(f"`{k}`: {v}" for k, v in bulk.WHERE_KEYS.items())
        + '. At least one, or {"all": true}. Example: {"state": "failed", "exhausted": true}.',
        max_length=20,
    )
    dry_run: bool = pydantic.Field(
        False, description="Count the runs (and show a few ids); change nothing. Do it first."
    )


class PruneArgs(Args):
    older_than: Annotated[DurationSeconds, pydantic.Field(gt=0)] | None = pydantic.Field(
        None,
        description="Every ended run older than this (seconds, or '30d') instead of the "
        "retention policies' ages; each job's newest JOBSYS_KEEP_LAST ended runs still stay.",
    )
    job: Name | None = pydantic.Field(None, description="Only this job's runs.")
    dry_run: bool = pydantic.Field(False, description="Count the runs; delete nothing.")


def runs_prune(c: Client, a: PruneArgs) -> dict[str, Any]:
    return c.retention.prune(a.older_than, a.job, a.dry_run).to_json()


def _act(c: Client, action: bulk.Action, a: BulkArgs) -> dict[str, Any]:
    return c.bulk.act(action, a.where, a.dry_run).to_json()


def runs_bulk_cancel(c: Client, a: BulkArgs) -> dict[str, Any]:
    return _act(c, "cancel", a)


def runs_bulk_retry(c: Client, a: BulkArgs) -> dict[str, Any]:
    return _act(c, "retry", a)


def runs_bulk_delete(c: Client, a: BulkArgs) -> dict[str, Any]:
    return _act(c, "delete", a)


ANSWER = (
    " Answers matched, done, skipped (by reason: state, permission, already_retried, "
    "unknown_job, invalid_input, workflow_running) and a few ids."
)
DESCRIPTIONS = {
    "runs_bulk_cancel": "Cancel every run of yours that matches `where` (a waiting run never "
    "starts, a running one is stopped); `dry_run` counts them first." + ANSWER,
    "runs_bulk_retry": "Retry every failed or cancelled run that matches `where`, each as a new "
    "run (the dead letters: where {state: failed, exhausted: true}); a run retried before "
    "is skipped; `dry_run` counts them first." + ANSWER,
    "runs_prune": "DELETE the ended runs past their retention now (admin roles only; your "
    "tenant's runs), with their logs and history; `dry_run` counts them first. Answers runs, "
    "by_state, workflow_runs, batches.",
    "runs_bulk_delete": "DELETE every ended run that matches `where`, with its logs (running "
    "and waiting runs are kept); `dry_run` counts them first." + ANSWER,
}
