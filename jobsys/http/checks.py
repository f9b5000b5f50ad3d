"""Checks of request data that the service layer leaves to its callers (typed at the edge).

Runtime definitions carry free-form parts (an alias's ``schedule``, a workflow's steps, an
HTTP job's URL) that reach code expecting well-typed values; they are checked here against the
same models the schedule and workflow routes use, so that a wrong type is a 422 naming the
field, never a crash. A cron expression that is valid but names no time that exists
(``0 0 31 2 *``) becomes an ``InvalidSchedule`` too.
"""

from __future__ import annotations

import contextlib
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pydantic
from croniter import CroniterError

from jobsys import errors, execute, workflows
from jobsys.http.models import Name, ScheduleFields, WorkflowData


class DefinitionSchedule(ScheduleFields):
    """An alias's schedule: ``jobsys.cadence.schedule``'s arguments."""


class DefinitionWorkflow(WorkflowData):
    """A workflow definition's ``workflow``: its name is the definition's."""

    model_config = pydantic.ConfigDict(extra="allow")
    name: Name | None = None  # type: ignore[assignment]


def _invalid(name: str, where: str, exc: pydantic.ValidationError) -> errors.InvalidInput:
    fields = execute.field_errors(exc)
    for f in fields:
        f["loc"] = [where, *f["loc"]]
    return errors.InvalidInput(name, fields, "definition")


def definition(data: dict[str, Any]) -> None:
    """Raise ``InvalidInput`` (422) for a definition part of the wrong shape."""
    name = str(data.get("name", "?"))[:200]
    kind = data.get("kind")
    schedule = data.get("schedule")
    if isinstance(schedule, dict):
        try:
            DefinitionSchedule.model_validate(schedule)
        except pydantic.ValidationError as exc:
            raise _invalid(name, "schedule", exc) from None
    workflow = data.get("workflow")
    if kind == "workflow" and isinstance(workflow, dict):
        try:
            DefinitionWorkflow.model_validate(workflow)
        except pydantic.ValidationError as exc:
            raise _invalid(name, "workflow", exc) from None
    url = data.get("url")
    if kind == "http" and isinstance(url, str):
        try:
            parts = urllib.parse.urlsplit(url)
            _ = parts.port, parts.hostname
        except ValueError as exc:
            problem = {"loc": ["url"], "msg": f"not a URL ({exc})", "type": "url_parsing"}
            raise errors.InvalidInput(name, [problem], "definition") from None


def for_each_inputs(wf: workflows.Workflow, input: dict[str, Any]) -> None:
    """Raise ``InvalidInput`` if a first step iterates (``for_each: $input.x``) over a part of
    the input that is not a list: caught now, before the workflow run is recorded."""
    for step in wf.steps:
        ref = step.for_each
        if step.depends_on or not isinstance(ref, str) or not ref.startswith("$input."):
            continue
        value: Any = input
        path = ref.split(".")[1:]
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        if value is not None and not isinstance(value, list):
            problem = {
                "loc": path,
                "msg": f"must be a list: step {step.name!r} runs once per item ({ref})",
                "type": "list_type",
            }
            raise errors.InvalidInput(wf.name, [problem])


@contextlib.contextmanager
def cron_errors() -> Iterator[None]:
    """A cron expression croniter refuses late (no such date) is an invalid schedule."""
    try:
        yield
    except CroniterError as exc:
        raise errors.InvalidSchedule("cron", f"names no time that exists ({exc})") from None
