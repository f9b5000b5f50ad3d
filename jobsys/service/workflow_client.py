"""``Client.workflows``: submit, follow, list and cancel workflow runs."""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

import pydantic

from jobsys.base import bounds, errors
from jobsys.declare import jobs, workflow_checks, workflows
from jobsys.store import runs, workflow_runs

if TYPE_CHECKING:
    from jobsys.service.client import Client


class WorkflowClient:
    def __init__(self, client: Client) -> None:
        self._client = client
        self._store = client.store.workflows

    @property
    def _tenant(self) -> str:
        return self._client.principal.tenant

    def submit(
        self,
        name: str | dict[str, Any],
        input: dict[str, Any] | None = None,
        priority: int | None = None,
    ) -> str:
        """Start a run of workflow ``name`` (of the catalog), or of a workflow given as data
        (``Workflow.to_data``'s shape, checked here); its id. Every step's job must be one
        this principal may ``execute``. ``priority``: of the runs of the steps that give
        none of their own (0 lowest .. 9 highest; by default each step's job's)."""
        if priority is not None and (problem := bounds.priority(priority)):
            field = {"loc": ["priority"], "type": "value_error", "msg": problem}
            label = name if isinstance(name, str) else str(name.get("name", "workflow"))
            raise errors.InvalidInput(label, [field], "options")
        if isinstance(name, dict):
            wf = workflows.from_data(name)
            workflow_checks.check(wf, self._client.registry)
            name = wf.name
        else:
            wf = self._client.registry.workflow(name)
        wf = wf.at_priority(priority)
        try:
            model = wf.input_model.model_validate(input or {})
        except pydantic.ValidationError as exc:
            raise errors.InvalidInput(name, errors.field_errors(exc)) from None
        for step in wf.steps:
            self._client.allow("execute", step.job, target=name)
        registry = self._client.registry
        payload, hidden = workflows.split(wf, model, registry)
        problems = runs.nul_errors(payload)
        if problems:
            raise errors.InvalidInput(name, problems)
        record = self._store.create(
            wf,
            payload,
            self._client.principal,
            definition=workflows.run_copy(wf, registry),
            sealed=self._client.sealer.seal(hidden),
        )
        try:
            self._advance(wf, record.id)
        except BaseException as exc:  # nothing is left running when submit fails
            self._store.abandon(wf, record.id, f"could not start: {type(exc).__name__}: {exc}")
            raise
        return record.id

    def start(self, workflow_id: str) -> workflow_runs.WorkflowRecord:
        """Start the first steps of a workflow run recorded elsewhere (a schedule's fire)."""
        record = self._store.get(workflow_id)
        return self._advance(record.workflow_def, workflow_id)

    def _advance(self, wf: workflows.Workflow, workflow_id: str) -> workflow_runs.WorkflowRecord:
        def send(spec: jobs.JobSpec, row: dict[str, Any], delay: float) -> None:
            self._client.publish_row(spec, row, delay or None)

        registry, sealer = self._client.registry, self._client.sealer
        return self._store.advance(wf, workflow_id, registry, send, sealer)

    def get(self, workflow_id: str) -> workflow_runs.WorkflowRecord:
        """The workflow run (of this tenant), as this principal is shown it (``shown``)."""
        return self.shown(self._store.get(workflow_id, self._tenant))

    def steps(self, workflow_id: str) -> dict[str, workflow_runs.StepStatus]:
        """Each step's state and runs; the runs of a step whose job this principal may not
        ``read`` come without their input, output, error and progress (``Client.shown``),
        as they would from ``Client.status`` or ``Client.list``."""
        record = self._store.get(workflow_id, self._tenant)
        wf = record.workflow_def
        out = {}
        for name, st in self._store.statuses(wf, record).items():
            readable = self._client.may_read(wf.step(name).job)
            shown = [self._client.shown(r, readable) for r in st.runs]
            out[name] = workflow_runs.StepStatus(st.name, st.state, shown, withheld=not readable)
        return out

    def list(self, limit: int = 50) -> list[workflow_runs.WorkflowRecord]:
        return [self.shown(r) for r in self._store.select(self._tenant, limit)]

    def shown(self, record: workflow_runs.WorkflowRecord) -> workflow_runs.WorkflowRecord:
        """The workflow run as this principal is shown it: the same read rules as for the
        steps' own runs. If it may not read a step's job, that step's output is left out,
        and so is the workflow's input (the steps take their input from it)."""
        steps = record.definition.get("steps", [])
        hidden = tuple(s["name"] for s in steps if not self._client.may_read(s["job"]))
        if not hidden:
            return record
        output = record.output
        if isinstance(output, dict):
            output = {k: v for k, v in output.items() if k not in hidden}
        definition = {  # an ad hoc workflow's steps may carry their input as data
            **record.definition,
            "steps": [{**s, "input": {}} if s["name"] in hidden else s for s in steps],
        }
        return dataclasses.replace(
            record, input={}, output=output, definition=definition, withheld=hidden
        )

    def cancel(self, workflow_id: str) -> workflow_runs.WorkflowRecord:
        """Cancel the run and its running and pending steps."""
        wf = self._store.get(workflow_id, self._tenant).workflow_def
        for step in wf.steps:
            self._client.allow("update", step.job, target=workflow_id)
        return self.shown(self._store.cancel(wf, workflow_id, self._tenant))

    def wait(self, workflow_id: str, timeout: float = 600.0) -> workflow_runs.WorkflowRecord:
        deadline = time.monotonic() + timeout
        while True:
            record = self.get(workflow_id)
            if record.terminal:
                return record
            if time.monotonic() > deadline:
                raise errors.WaitTimeout(workflow_id, timeout)
            time.sleep(0.2)
