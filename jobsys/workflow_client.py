"""``Client.workflows``: submit, follow, list and cancel workflow runs."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pydantic

from jobsys import errors, execute, jobs, workflow_checks, workflows

if TYPE_CHECKING:
    from jobsys.client import Client


class WorkflowClient:
    def __init__(self, client: Client) -> None:
        self._client = client
        self._store = client.store.workflows

    @property
    def _tenant(self) -> str:
        return self._client.principal.tenant

    def submit(self, name: str | dict[str, Any], input: dict[str, Any] | None = None) -> str:
        """Start a run of workflow ``name`` (of the catalog), or of a workflow given as data
        (``Workflow.to_data``'s shape, checked here); its id. Every step's job must be one
        this principal may ``execute``."""
        if isinstance(name, dict):
            wf = workflows.from_data(name)
            workflow_checks.check(wf, self._client.registry)
            name = wf.name
        else:
            wf = self._client.registry.workflow(name)
        try:
            model = wf.input_model.model_validate(input or {})
        except pydantic.ValidationError as exc:
            raise errors.InvalidInput(name, execute.field_errors(exc)) from None
        for step in wf.steps:
            self._client.allow("execute", step.job, target=name)
        registry = self._client.registry
        payload, hidden = workflows.split(wf, model, registry)
        record = self._store.create(
            wf,
            payload,
            self._client.principal,
            definition=workflows.stored_definition(wf, registry),
            sealed=self._client.sealer.seal(hidden),
        )
        self._advance(wf, record.id)
        return record.id

    def start(self, workflow_id: str) -> workflows.WorkflowRecord:
        """Start the first steps of a workflow run recorded elsewhere (a schedule's fire)."""
        record = self._store.get(workflow_id)
        return self._advance(record.workflow_def, workflow_id)

    def _advance(self, wf: workflows.Workflow, workflow_id: str) -> workflows.WorkflowRecord:
        def send(spec: jobs.JobSpec, row: dict[str, Any], delay: float) -> None:
            self._client.publish_row(spec, row, delay or None)

        registry, sealer = self._client.registry, self._client.sealer
        return self._store.advance(wf, workflow_id, registry, send, sealer)

    def get(self, workflow_id: str) -> workflows.WorkflowRecord:
        return self._store.get(workflow_id, self._tenant)

    def steps(self, workflow_id: str) -> dict[str, workflows.StepStatus]:
        record = self.get(workflow_id)
        return self._store.statuses(record.workflow_def, record)

    def list(self, limit: int = 50) -> list[workflows.WorkflowRecord]:
        return self._store.select(self._tenant, limit)

    def cancel(self, workflow_id: str) -> workflows.WorkflowRecord:
        """Cancel the run and its running and pending steps."""
        record = self.get(workflow_id)
        wf = record.workflow_def
        for step in wf.steps:
            self._client.allow("update", step.job, target=workflow_id)
        return self._store.cancel(wf, workflow_id, self._tenant)

    def wait(self, workflow_id: str, timeout: float = 600.0) -> workflows.WorkflowRecord:
        deadline = time.monotonic() + timeout
        while True:
            record = self.get(workflow_id)
            if record.terminal:
                return record
            if time.monotonic() > deadline:
                raise errors.WaitTimeout(workflow_id, timeout)
            time.sleep(0.2)
