"""Workflow runs in the store: their records, and ``advance``, the one place that moves a
workflow on (the model, ``Workflow`` and ``Step``, is ``jobsys/declare/workflows.py``)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any

import pydantic
import sqlalchemy as sa

from jobsys.base import errors, sealing
from jobsys.declare import jobs, permissions, workflows
from jobsys.store import records, rows, runs, schema

W = schema.workflow_runs
R = schema.runs


@dataclasses.dataclass(frozen=True)
class WorkflowRecord:
    id: str
    workflow: str
    definition: dict[str, Any]
    """The workflow as it was when this run started; the run advances by it."""
    state: workflows.WorkflowState
    input: dict[str, Any]
    output: Any
    error: dict[str, Any] | None
    skipped: list[str]
    principal: dict[str, Any]
    principal_id: str
    tenant: str
    created_at: dt.datetime
    timeout_at: dt.datetime
    finished_at: dt.datetime | None
    withheld: tuple[str, ...] = ()
    """The steps whose data the reader may not read (their jobs' ``read`` rule): their
    outputs are left out of ``output``, and the workflow's ``input`` too (steps take theirs
    from it); never stored."""
    sealed: str | None = None
    """The secret values of ``input`` and of the steps' inputs in ``definition``, encrypted
    (kept in the definition's column: ``workflows.SEALED_KEY``); never shown."""

    @property
    def terminal(self) -> bool:
        return self.state is not workflows.WorkflowState.RUNNING

    @property
    def workflow_def(self) -> workflows.Workflow:
        return workflows.from_data(self.definition)

    def to_json(self) -> dict[str, Any]:
        return runs.as_json(self)


@dataclasses.dataclass(frozen=True)
class StepStatus:
    name: str
    state: str
    """``waiting``, ``running``, ``succeeded``, ``failed``, ``skipped``."""
    runs: list[runs.RunRecord]
    withheld: bool = False
    """The reader may not read this step's job: its runs come without their data."""


Publish = Callable[[jobs.JobSpec, dict[str, Any], float], None]
"""Publishes a new run row (the spec, the row, a delay in seconds)."""


class WorkflowStore:
    """Workflow runs, and ``advance``: the one place that moves a workflow on."""

    def __init__(self, store: runs.RunStore) -> None:
        self.store = store
        self.engine = store.engine

    def create(
        self,
        wf: workflows.Workflow,
        input: dict[str, Any],
        principal: permissions.Principal,
        definition: dict[str, Any] | None = None,
        sealed: str | None = None,
    ) -> WorkflowRecord:
        """A new running workflow run. ``input`` and ``definition`` (``run_copy``)
        with their secrets redacted, and those secrets ``sealed`` (see ``split``)."""
        row = rows.new_workflow_run(
            wf,
            dict(definition or wf.to_data()),
            input,
            principal=principal.model_dump(mode="json"),
            principal_id=principal.id,
            tenant=principal.tenant,
            now=runs.utcnow(),
            sealed=sealed,
        )
        with self.engine.begin() as conn:
            conn.execute(W.insert().values(**row))
        workflow_id = str(row["id"])
        return self.get(workflow_id)

    def get(self, workflow_id: str, tenant: str | None = None) -> WorkflowRecord:
        query = sa.select(W).where(W.c.id == workflow_id)
        if tenant is not None:
            query = query.where(W.c.tenant == tenant)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            raise errors.WorkflowNotFound(workflow_id)
        return _record(row)

    def select(self, tenant: str | None = None, limit: int = 50) -> list[WorkflowRecord]:
        query = sa.select(W).order_by(W.c.created_at.desc()).limit(limit)
        if tenant is not None:
            query = query.where(W.c.tenant == tenant)
        with self.engine.connect() as conn:
            return [_record(r) for r in conn.execute(query)]

    def running(self, limit: int = 200) -> list[str]:
        query = (
            sa.select(W.c.id).where(W.c.state == workflows.WorkflowState.RUNNING.value).limit(limit)
        )
        with self.engine.connect() as conn:
            return [str(r.id) for r in conn.execute(query)]

    def step_runs(self, workflow_id: str) -> list[runs.RunRecord]:
        query = sa.select(R).where(R.c.workflow_id == workflow_id).order_by(R.c.created_at)
        with self.engine.connect() as conn:
            return [records.record(r) for r in conn.execute(query)]

    def statuses(self, wf: workflows.Workflow, record: WorkflowRecord) -> dict[str, StepStatus]:
        by_step: dict[str, list[runs.RunRecord]] = {s.name: [] for s in wf.steps}
        for r in self.step_runs(record.id):
            by_step.setdefault(str(r.meta.get("step")), []).append(r)
        out = {}
        for s in wf.steps:
            made = sorted(by_step[s.name], key=lambda r: int(r.meta.get("index", 0)))
            out[s.name] = StepStatus(s.name, _step_state(s.name, made, record), made)
        return out

    def advance(
        self,
        wf: workflows.Workflow,
        workflow_id: str,
        registry: jobs.Registry,
        publish: Publish,
        sealer: sealing.Sealer | None = None,
    ) -> WorkflowRecord:
        """Start every step whose dependencies are done, skip those whose condition fails,
        cancel and finish as the failure policy and the timeout say. Safe to call at any
        time, from any number of processes. Step jobs resolve in the workflow run's tenant;
        ``sealer`` opens the run's secrets and seals those of the steps' runs."""
        record = self.get(workflow_id)
        if record.terminal:
            return record
        registry = registry.scoped(record.tenant)
        wf, record = _revealed(wf, record, sealer)
        status = self.statuses(wf, record)
        if runs.utcnow() >= record.timeout_at:
            return self._end(record, status, workflows.WorkflowState.CANCELLED, "timeout")
        failed = [n for n, st in status.items() if st.state in UNSUCCESSFUL]
        if failed and wf.failure == "fail_fast":
            return self._end(
                record, status, workflows.WorkflowState.FAILED, f"step {failed[0]!r} failed"
            )
        for s in wf.steps:
            problem = self._start_if_ready(s, record, status, registry, (publish, sealer))
            if problem:
                return self._end(record, status, workflows.WorkflowState.FAILED, problem)
        if all(st.state in ("succeeded", "skipped", *UNSUCCESSFUL) for st in status.values()):
            end = workflows.WorkflowState.FAILED if failed else workflows.WorkflowState.COMPLETED
            return self._end(record, status, end, f"step {failed[0]!r} failed" if failed else None)
        return self.get(workflow_id)

    def _start_if_ready(
        self,
        s: workflows.Step,
        record: WorkflowRecord,
        status: dict[str, StepStatus],
        registry: jobs.Registry,
        out: tuple[Publish, sealing.Sealer | None],
    ) -> str | None:
        """Start (or skip) step ``s`` if its dependencies are done; a problem, or ``None``."""
        if status[s.name].state != "waiting":
            return None
        deps = [status[d].state for d in s.depends_on]
        if any(d in ("waiting", "running") for d in deps):
            return None
        if not _condition(s.when, deps):
            self._skip(record.id, s.name)
            status[s.name] = StepStatus(s.name, "skipped", [])
            return None
        publish, sealer = out
        try:
            new = self._rows(s, record, status, registry, sealer)
        except (errors.InvalidInput, errors.UnknownJob) as exc:
            return f"step {s.name!r}: {exc}"
        except (OverflowError, ValueError) as exc:  # a run stored before delays were bounded
            return f"step {s.name!r}: cannot be scheduled ({exc})"
        spec = registry.get(s.job)
        if new and self.store.insert_new(new):
            for row in new:
                publish(spec, row, s.delay)
        status[s.name] = StepStatus(s.name, "running" if new else "succeeded", [])
        return None

    def _rows(
        self,
        s: workflows.Step,
        record: WorkflowRecord,
        status: dict[str, StepStatus],
        registry: jobs.Registry,
        sealer: sealing.Sealer | None,
    ) -> list[dict[str, Any]]:
        spec = registry.get(s.job)
        items: list[Any] = [None]
        if s.for_each is not None:
            raw = _resolve(s.for_each, record.input, status, None)
            if raw is not None and not isinstance(raw, list):
                problem = {
                    "loc": ["for_each"],
                    "type": "list_type",
                    "msg": f"{s.for_each} is {type(raw).__name__}, not a list: step "
                    f"{s.name!r} runs once per item",
                }
                raise errors.InvalidInput(spec.name, [problem])
            items = list(raw or [])
        principal = permissions.Principal.model_validate(record.principal)
        owner = principal.model_dump(mode="json")
        now = runs.utcnow()
        made: list[dict[str, Any]] = []
        for index, item in enumerate(items):
            data = {k: _resolve(v, record.input, status, item) for k, v in s.input.items()}
            try:
                model = spec.input_model.model_validate(data)
            except pydantic.ValidationError as exc:
                raise errors.InvalidInput(spec.name, errors.field_errors(exc)) from None
            payload, hidden = sealing.split(model, sealing.secret_paths(spec.input_model))
            made.append(
                rows.new_run(
                    spec,
                    payload,
                    principal=owner,
                    principal_id=principal.id,
                    tenant=principal.tenant,
                    now=now,
                    meta={"step": s.name, "index": index, **_retry_meta(s)},
                    sealed=workflows.seal_hidden(sealer, hidden),
                    max_attempts=(s.retry or spec.retry).max_attempts,
                    timeout=s.timeout or spec.timeout,
                    priority=s.priority,
                    delay=s.delay,
                    idempotency_key=f"{record.id}:{s.name}:{index}",
                    workflow_id=record.id,
                )
            )
        return made

    def _skip(self, workflow_id: str, step: str) -> None:
        record = self.get(workflow_id)
        if step in record.skipped:
            return
        with self.engine.begin() as conn:
            conn.execute(
                W.update()
                .where(W.c.id == workflow_id, W.c.state == workflows.WorkflowState.RUNNING.value)
                .values(skipped=[*record.skipped, step])
            )

    def _end(
        self,
        record: WorkflowRecord,
        status: dict[str, StepStatus],
        state: workflows.WorkflowState,
        reason: str | None,
    ) -> WorkflowRecord:
        """End the workflow run ``state``, cancelling its steps still pending or running in
        the same transaction. The end is guarded (only a running workflow run ends): of two
        callers ending it at once (a failed submit's clean-up, a reaper advancing it), the
        first to commit says why, and the other changes nothing."""
        output = {
            name: (st.runs[0].output if len(st.runs) == 1 else [r.output for r in st.runs])
            for name, st in status.items()
            if st.state == "succeeded"
        }
        error = {"message": reason, "reason": state.value} if reason else None
        with self.engine.begin() as conn:
            ended = conn.execute(
                W.update()
                .where(W.c.id == record.id, W.c.state == workflows.WorkflowState.RUNNING.value)
                .values(state=state.value, output=output, error=error, finished_at=runs.utcnow())
            ).rowcount
            if ended and state is not workflows.WorkflowState.COMPLETED:
                for st in status.values():  # pending and running steps are cancelled
                    for r in st.runs:
                        if not r.terminal:
                            self.store.cancel_in(conn, r.id)
        return self.get(record.id)

    def abandon(self, wf: workflows.Workflow, workflow_id: str, reason: str) -> WorkflowRecord:
        """End a workflow run failed (its steps cancelled): starting it failed."""
        record = self.get(workflow_id)
        return self._end(
            record, self.statuses(wf, record), workflows.WorkflowState.FAILED, reason[:500]
        )

    def cancel(
        self, wf: workflows.Workflow, workflow_id: str, tenant: str | None = None
    ) -> WorkflowRecord:
        record = self.get(workflow_id, tenant)
        if record.terminal:
            raise errors.InvalidTransition(workflow_id, record.state.value, "cancel", "workflow")
        return self._end(
            record, self.statuses(wf, record), workflows.WorkflowState.CANCELLED, "cancelled"
        )


def _retry_meta(s: workflows.Step) -> dict[str, Any]:
    """A step's retry override, as the worker reads it from the run's metadata."""
    if s.retry is None:
        return {}
    r = s.retry
    backoff = {
        "initial_backoff": r.initial_backoff,
        "multiplier": r.multiplier,
        "max_backoff": r.max_backoff,
        "jitter": r.jitter,
        "retry_on_timeout": r.retry_on_timeout,
    }
    return {"retry": backoff}


def _step_state(name: str, made: list[runs.RunRecord], record: WorkflowRecord) -> str:
    if name in record.skipped:
        return "skipped"
    if not made:
        return "waiting"
    if any(not r.terminal for r in made):
        return "running"
    if all(r.state is runs.RunState.COMPLETED for r in made):
        return "succeeded"
    if any(r.state is runs.RunState.FAILED for r in made):
        return "failed"
    return "cancelled"


UNSUCCESSFUL = ("failed", "cancelled")
"""Step states that count as a failed step for the failure policy and ``when`` conditions."""


def _condition(when: str, deps: list[str]) -> bool:
    if when == "always":
        return True
    if when == "failed":
        return any(d in UNSUCCESSFUL for d in deps)
    return all(d == "succeeded" for d in deps)


def _resolve(value: Any, input: dict[str, Any], status: dict[str, StepStatus], item: Any) -> Any:
    if not (isinstance(value, str) and value.startswith("$")):
        return value
    parts = value[1:].split(".")
    if parts[0] == "input":
        return _dig(input, parts[1:])
    if parts[0] == "item":
        return _dig(item, parts[1:])
    made = status[parts[1]].runs
    if parts[2] == "output":
        return _dig(made[0].output if made else None, parts[3:])
    return [_dig(r.output, parts[3:]) for r in made]


def _dig(value: Any, path: list[str]) -> Any:
    for part in path:
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _revealed(
    wf: workflows.Workflow, record: WorkflowRecord, sealer: sealing.Sealer | None
) -> tuple[workflows.Workflow, WorkflowRecord]:
    """The workflow and the record with their secrets in place (to make the steps' runs)."""
    if not record.sealed:
        return wf, record
    if sealer is None:
        raise errors.ConfigError(f"workflow run {record.id} has secrets: advance it with a key")
    hidden = sealer.open(record.sealed)
    steps = workflows.from_data(sealing.merge(record.definition, hidden, ("definition",))).steps
    revealed = sealing.merge(record.input, hidden, ("input",))
    return dataclasses.replace(wf, steps=steps), dataclasses.replace(record, input=revealed)


def _record(row: sa.Row[Any]) -> WorkflowRecord:
    data = row._asdict()
    data["definition"] = dict(data["definition"])
    data["sealed"] = data["definition"].pop(workflows.SEALED_KEY, None)
    data["state"] = workflows.WorkflowState(data["state"])
    data["skipped"] = list(data["skipped"] or [])
    return WorkflowRecord(**data)
