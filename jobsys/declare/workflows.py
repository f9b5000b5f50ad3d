"""Workflows: DAGs of jobs whose steps pass outputs downstream, orchestrated from the store.

A ``Workflow`` has steps; each step runs a registered job with an input built from the
workflow's input and upstream outputs through references, checked against the jobs' schemas
when the workflow is declared (``workflow_checks.py``):

* ``"$input.f"``: field ``f`` of the workflow input;
* ``"$steps.S.output"`` / ``"$steps.S.output.f"``: step ``S``'s output, or one field of it;
* ``"$steps.S.outputs"`` / ``"$steps.S.outputs.f"``: the list of the outputs of every run of
  ``S`` (a fan-out step), or of one field of each (fan-in);
* ``"$item"`` / ``"$item.f"``: in a step with ``for_each``, the item this run handles.

``for_each`` names a list (by the same references): the step makes one run per item. ``when``
runs a step if its dependencies all ``succeeded`` (the default), if one ``failed``, or
``always``; a step whose condition fails is skipped. ``delay`` holds a step's runs back.

Secrets: a field of the workflow input is secret when its input model says so, or when a
step passes it (``$input.f``, or the items of ``for_each: $input.xs``) to a secret field of
its job; a value written into a step's input for a secret field is secret too. They are
sealed like a run's (``sealing.py``): the workflow run keeps them redacted in ``input`` and
``definition`` and sealed with its definition; each step's run seals its own.

A workflow run is a row of ``jobsys_workflow_runs``; each step's runs are normal runs with
its ``workflow_id`` and an idempotency key (workflow run, step, item), so a step never starts
twice whoever advances the workflow. ``advance`` moves a workflow on from what the store
says: a worker calls it when a step's run ends, and every reaper pass calls it for running
workflows (a worker killed between steps stalls nothing; timeouts are enforced there too).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pydantic
import sqlalchemy as sa

from jobsys.base import errors, sealing
from jobsys.declare import jobs, permissions
from jobsys.store import runs, schema

W = schema.workflow_runs
R = schema.runs
WHEN = ("succeeded", "failed", "always")


class WorkflowState(enum.StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Empty(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")


@dataclasses.dataclass(frozen=True)
class Step:
    name: str
    job: str
    input: dict[str, Any] = dataclasses.field(default_factory=dict)
    depends_on: tuple[str, ...] = ()
    when: str = "succeeded"
    for_each: str | None = None
    delay: float = 0.0
    retry: jobs.RetryPolicy | None = None
    """This step's retry policy instead of its job's."""
    timeout: float | None = None
    """This step's timeout instead of its job's (enforced by inline workers)."""

    def __init__(
        self,
        name: str,
        job: str,
        input: dict[str, Any] | None = None,
        depends_on: Iterable[str] = (),
        when: str = "succeeded",
        for_each: str | None = None,
        delay: float = 0.0,
        retry: jobs.RetryPolicy | None = None,
        timeout: float | None = None,
    ) -> None:
        for field, value in (
            ("name", name),
            ("job", job),
            ("input", dict(input or {})),
            ("depends_on", tuple(depends_on)),
            ("when", when),
            ("for_each", for_each),
            ("delay", delay),
            ("retry", retry),
            ("timeout", timeout),
        ):
            object.__setattr__(self, field, value)


@dataclasses.dataclass(frozen=True)
class Workflow:
    name: str
    steps: tuple[Step, ...]
    input_model: type[pydantic.BaseModel] = Empty
    timeout: float = 600.0
    failure: str = "fail_fast"
    """``fail_fast``: a failed step cancels the pending ones; ``continue``: independent
    branches go on, and the workflow fails at the end."""
    description: str = ""

    def to_data(self) -> dict[str, Any]:
        """The workflow as JSON (kept with each of its runs, which advance by it)."""
        return {
            "name": self.name,
            "description": self.description,
            "timeout": self.timeout,
            "failure": self.failure,
            "steps": [_step_data(s) for s in self.steps],
        }

    def step(self, name: str) -> Step:
        return next(s for s in self.steps if s.name == name)

    def upstream(self, name: str) -> set[str]:
        """Every step ``name`` depends on, directly or not."""
        seen: set[str] = set()
        todo = list(self.step(name).depends_on)
        while todo:
            current = todo.pop()
            if current not in seen:
                seen.add(current)
                todo.extend(self.step(current).depends_on)
        return seen


def workflow(
    name: str,
    steps: Sequence[Step],
    input: type[pydantic.BaseModel] = Empty,
    timeout: float = 600.0,
    failure: str = "fail_fast",
    description: str = "",
) -> Workflow:
    """Declare a workflow; checked against the jobs when the catalog is loaded."""
    return Workflow(name, tuple(steps), input, timeout, failure, description)


class AnyInput(pydantic.BaseModel):
    """The input of a workflow declared as data: any JSON object."""

    model_config = pydantic.ConfigDict(extra="allow")


def from_data(data: dict[str, Any]) -> Workflow:
    """A workflow declared as data at runtime (the shape ``Workflow.to_data`` gives); check it
    with ``check`` before use."""
    try:
        steps = [
            Step(
                name=str(s["name"]),
                job=str(s["job"]),
                input=dict(s.get("input") or {}),
                depends_on=tuple(s.get("depends_on") or ()),
                when=str(s.get("when", "succeeded")),
                for_each=_text_or_none(s.get("for_each"), "for_each"),
                delay=float(s.get("delay", 0.0)),
                retry=jobs.RetryPolicy(**s["retry"]) if s.get("retry") else None,
                timeout=float(s["timeout"]) if s.get("timeout") else None,
            )
            for s in data["steps"]
        ]
        return Workflow(
            name=str(data["name"]),
            steps=tuple(steps),
            input_model=AnyInput,
            timeout=float(data.get("timeout", 600.0)),
            failure=str(data.get("failure", "fail_fast")),
            description=str(data.get("description", "")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise errors.WorkflowDeclarationError(
            str(data.get("name", "?")) if isinstance(data, dict) else "?",
            "-",
            "definition",
            f"not a workflow definition ({exc!r}); see Workflow.to_data",
        ) from None


def _text_or_none(value: Any, field: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{field} must be a reference like '$input.items'")
    return value


def _step_data(s: Step) -> dict[str, Any]:
    out: dict[str, Any] = {"name": s.name, "job": s.job, "input": s.input}
    if s.depends_on:
        out["depends_on"] = list(s.depends_on)
    if s.when != "succeeded":
        out["when"] = s.when
    if s.for_each:
        out["for_each"] = s.for_each
    if s.delay:
        out["delay"] = s.delay
    if s.timeout:
        out["timeout"] = s.timeout
    if s.retry is not None:
        r = s.retry
        out["retry"] = {
            "max_attempts": r.max_attempts,
            "initial_backoff": r.initial_backoff,
            "multiplier": r.multiplier,
            "max_backoff": r.max_backoff,
            "jitter": r.jitter,
            "retry_on_timeout": r.retry_on_timeout,
        }
    return out


# --- secrets ------------------------------------------------------------------------------

SEALED_KEY = "sealed"
"""The key of a workflow run's stored definition that holds its sealed secrets."""


def secret_input_paths(wf: Workflow, registry: jobs.Registry) -> list[sealing.Path_]:
    """The secret paths of the workflow's input: those its input model declares, and those
    its steps pass by reference (``$input.f``, ``$item`` of ``for_each: $input.xs``) to a
    secret field of their job."""
    found = list(sealing.secret_paths(wf.input_model))
    for s in wf.steps:
        for key, value in s.input.items():
            source = _input_source(value, s.for_each)
            if source is not None:
                found.extend((*source, *rest) for rest in _secret_under(registry, s.job, key))
    return [p for p in dict.fromkeys(found) if p]


def _input_source(value: Any, for_each: str | None) -> sealing.Path_ | None:
    """The path in the workflow input that reference ``value`` reads (``None``: another)."""
    if not (isinstance(value, str) and value.startswith("$")):
        return None
    parts = value[1:].split(".")
    if parts[0] == "input":
        return tuple(parts[1:])
    if parts[0] == "item" and for_each is not None:
        outer = _input_source(for_each, None)
        return None if outer is None else (*outer, sealing.ANY, *parts[1:])
    return None


def _secret_under(registry: jobs.Registry, job: str, key: str) -> list[sealing.Path_]:
    """The secret paths under field ``key`` of ``job``'s input (``()``: the field itself)."""
    if job not in registry:
        return []
    return [p[1:] for p in sealing.secret_paths(registry.get(job).input_model) if p[0] == key]


def _literal_paths(wf: Workflow, registry: jobs.Registry) -> list[tuple[str | int, ...]]:
    """Places in ``Workflow.to_data()`` of the secrets written into the steps' inputs."""
    found: list[tuple[str | int, ...]] = []
    for index, s in enumerate(wf.steps):
        for key, value in s.input.items():
            if not (isinstance(value, str) and value.startswith("$")):
                under = _secret_under(registry, s.job, key)
                found.extend(("steps", index, "input", key, *rest) for rest in under)
    return found


def refuse_secret_literals(wf: Workflow, registry: jobs.Registry) -> None:
    """Raise ``WorkflowDeclarationError`` if a step's input holds a value for a secret field:
    a definition registered at runtime is stored and shown as it is, so its secrets come with
    each run, in the workflow's input (``$input.f``)."""
    for path in _literal_paths(wf, registry):
        step, field = wf.steps[int(path[1])].name, ".".join(str(p) for p in path[3:])
        raise errors.WorkflowDeclarationError(
            wf.name,
            step,
            f"input.{field}",
            "is secret: pass it in the workflow's input with each run ($input...), "
            "never in the definition",
        )


def stored_definition(wf: Workflow, registry: jobs.Registry) -> dict[str, Any]:
    """The workflow as a run keeps it: ``to_data()`` with the secrets of its steps' inputs
    redacted."""
    return sealing.split_json(wf.to_data(), _literal_paths(wf, registry))[0]


def split(
    wf: Workflow, input: pydantic.BaseModel, registry: jobs.Registry
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The workflow's validated input as JSON with its secrets redacted, and the secrets of
    the input and of the steps' inputs, placed under ``input`` and ``definition`` (what
    ``WorkflowStore.create``'s ``sealed`` holds, once sealed)."""
    data, hidden = sealing.split(input, secret_input_paths(wf, registry))
    literals = sealing.split_json(wf.to_data(), _literal_paths(wf, registry))[1]
    return data, {
        **sealing.prefixed("input", hidden),
        **sealing.prefixed("definition", literals),
    }


def _seal(sealer: sealing.Sealer | None, hidden: dict[str, Any]) -> str | None:
    if not hidden:
        return None
    if sealer is None:
        raise errors.ConfigError("a workflow run with secrets needs the installation's key")
    return sealer.seal(hidden)


# --- running ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class WorkflowRecord:
    id: str
    workflow: str
    definition: dict[str, Any]
    """The workflow as it was when this run started; the run advances by it."""
    state: WorkflowState
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
    (kept in the definition's column: ``SEALED_KEY``); never shown."""

    @property
    def terminal(self) -> bool:
        return self.state is not WorkflowState.RUNNING

    @property
    def workflow_def(self) -> Workflow:
        return from_data(self.definition)

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
        wf: Workflow,
        input: dict[str, Any],
        principal: permissions.Principal,
        definition: dict[str, Any] | None = None,
        sealed: str | None = None,
    ) -> WorkflowRecord:
        """A new running workflow run. ``input`` and ``definition`` (``stored_definition``)
        with their secrets redacted, and those secrets ``sealed`` (see ``split``)."""
        now = runs.utcnow()
        workflow_id = "wf_" + uuid.uuid4().hex[:24]
        definition = dict(definition or wf.to_data())
        if sealed:
            definition[SEALED_KEY] = sealed
        with self.engine.begin() as conn:
            conn.execute(
                W.insert().values(
                    id=workflow_id,
                    workflow=wf.name,
                    definition=definition,
                    state=WorkflowState.RUNNING.value,
                    input=input,
                    skipped=[],
                    principal=principal.model_dump(mode="json"),
                    principal_id=principal.id,
                    tenant=principal.tenant,
                    created_at=now,
                    timeout_at=now + dt.timedelta(seconds=wf.timeout),
                )
            )
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
        query = sa.select(W.c.id).where(W.c.state == WorkflowState.RUNNING.value).limit(limit)
        with self.engine.connect() as conn:
            return [str(r.id) for r in conn.execute(query)]

    def step_runs(self, workflow_id: str) -> list[runs.RunRecord]:
        query = sa.select(R).where(R.c.workflow_id == workflow_id).order_by(R.c.created_at)
        with self.engine.connect() as conn:
            return [runs._record(r) for r in conn.execute(query)]

    def statuses(self, wf: Workflow, record: WorkflowRecord) -> dict[str, StepStatus]:
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
        wf: Workflow,
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
            return self._end(record, status, WorkflowState.CANCELLED, "timeout")
        failed = [n for n, st in status.items() if st.state in UNSUCCESSFUL]
        if failed and wf.failure == "fail_fast":
            return self._end(record, status, WorkflowState.FAILED, f"step {failed[0]!r} failed")
        for s in wf.steps:
            problem = self._start_if_ready(s, record, status, registry, (publish, sealer))
            if problem:
                return self._end(record, status, WorkflowState.FAILED, problem)
        if all(st.state in ("succeeded", "skipped", *UNSUCCESSFUL) for st in status.values()):
            end = WorkflowState.FAILED if failed else WorkflowState.COMPLETED
            return self._end(record, status, end, f"step {failed[0]!r} failed" if failed else None)
        return self.get(workflow_id)

    def _start_if_ready(
        self,
        s: Step,
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
            rows = self._rows(s, record, status, registry, sealer)
        except (errors.InvalidInput, errors.UnknownJob) as exc:
            return f"step {s.name!r}: {exc}"
        except (OverflowError, ValueError) as exc:  # a run stored before delays were bounded
            return f"step {s.name!r}: cannot be scheduled ({exc})"
        spec = registry.get(s.job)
        if rows and self.store.insert_new(rows):
            for row in rows:
                publish(spec, row, s.delay)
        status[s.name] = StepStatus(s.name, "running" if rows else "succeeded", [])
        return None

    def _rows(
        self,
        s: Step,
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
        now = runs.utcnow()
        rows = []
        for index, item in enumerate(items):
            data = {k: _resolve(v, record.input, status, item) for k, v in s.input.items()}
            try:
                model = spec.input_model.model_validate(data)
            except pydantic.ValidationError as exc:
                from jobsys.worker import execute

                raise errors.InvalidInput(spec.name, execute.field_errors(exc)) from None
            payload, hidden = sealing.split(model, sealing.secret_paths(spec.input_model))
            rows.append(
                {
                    "id": runs.new_run_id(),
                    "job": spec.name,
                    "job_version": spec.version,
                    "queue": spec.queue,
                    "priority": spec.priority,
                    "input": payload,
                    "max_attempts": (s.retry or spec.retry).max_attempts,
                    "timeout": s.timeout or spec.timeout,
                    "meta": {"step": s.name, "index": index, **_retry_meta(s)},
                    "tags": sorted(spec.tags),
                    "principal": principal.model_dump(mode="json"),
                    "principal_id": principal.id,
                    "tenant": principal.tenant,
                    "idempotency_key": f"{record.id}:{s.name}:{index}",
                    "parent_id": None,
                    "workflow_id": record.id,
                    "sealed": _seal(sealer, hidden),
                    # A delayed step is not "lost" to the reconciler before it is due.
                    "next_attempt_at": now + dt.timedelta(seconds=s.delay) if s.delay else None,
                }
            )
        return rows

    def _skip(self, workflow_id: str, step: str) -> None:
        record = self.get(workflow_id)
        if step in record.skipped:
            return
        with self.engine.begin() as conn:
            conn.execute(
                W.update()
                .where(W.c.id == workflow_id, W.c.state == WorkflowState.RUNNING.value)
                .values(skipped=[*record.skipped, step])
            )

    def _end(
        self,
        record: WorkflowRecord,
        status: dict[str, StepStatus],
        state: WorkflowState,
        reason: str | None,
    ) -> WorkflowRecord:
        if state is not WorkflowState.COMPLETED:
            for st in status.values():  # pending and running steps are cancelled
                for r in st.runs:
                    if not r.terminal:
                        self.store.request_cancel(r.id)
        output = {
            name: (st.runs[0].output if len(st.runs) == 1 else [r.output for r in st.runs])
            for name, st in status.items()
            if st.state == "succeeded"
        }
        error = {"message": reason, "reason": state.value} if reason else None
        with self.engine.begin() as conn:
            conn.execute(
                W.update()
                .where(W.c.id == record.id, W.c.state == WorkflowState.RUNNING.value)
                .values(state=state.value, output=output, error=error, finished_at=runs.utcnow())
            )
        return self.get(record.id)

    def abandon(self, wf: Workflow, workflow_id: str, reason: str) -> WorkflowRecord:
        """End a workflow run failed (its steps cancelled): starting it failed."""
        record = self.get(workflow_id)
        return self._end(record, self.statuses(wf, record), WorkflowState.FAILED, reason[:500])

    def cancel(self, wf: Workflow, workflow_id: str, tenant: str | None = None) -> WorkflowRecord:
        record = self.get(workflow_id, tenant)
        if record.terminal:
            raise errors.InvalidTransition(workflow_id, record.state.value, "cancel", "workflow")
        return self._end(record, self.statuses(wf, record), WorkflowState.CANCELLED, "cancelled")


def _retry_meta(s: Step) -> dict[str, Any]:
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
    wf: Workflow, record: WorkflowRecord, sealer: sealing.Sealer | None
) -> tuple[Workflow, WorkflowRecord]:
    """The workflow and the record with their secrets in place (to make the steps' runs)."""
    if not record.sealed:
        return wf, record
    if sealer is None:
        raise errors.ConfigError(f"workflow run {record.id} has secrets: advance it with a key")
    hidden = sealer.open(record.sealed)
    steps = from_data(sealing.merge(record.definition, hidden, ("definition",))).steps
    revealed = sealing.merge(record.input, hidden, ("input",))
    return dataclasses.replace(wf, steps=steps), dataclasses.replace(record, input=revealed)


def _record(row: sa.Row[Any]) -> WorkflowRecord:
    data = row._asdict()
    data["definition"] = dict(data["definition"])
    data["sealed"] = data["definition"].pop(SEALED_KEY, None)
    data["state"] = WorkflowState(data["state"])
    data["skipped"] = list(data["skipped"] or [])
    return WorkflowRecord(**data)
