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
``always``; a step whose condition fails is skipped. ``delay`` holds a step's runs back;
``priority``, ``retry`` and ``timeout`` replace its job's for the step's runs.

Secrets: a field of the workflow input is secret when its input model says so, or when a
step passes it (``$input.f``, or the items of ``for_each: $input.xs``) to a secret field of
its job; a value written into a step's input for a secret field is secret too. They are
sealed like a run's (``sealing.py``): the workflow run keeps them redacted in its ``input`` and
in its copy of the workflow (``run_copy``, the ``definition`` column), and sealed beside them;
each step's run seals its own.

A workflow run is a row of ``jobsys_workflow_runs``; each step's runs are normal runs with
its ``workflow_id`` and an idempotency key (workflow run, step, item), so a step never starts
twice whoever advances the workflow. ``advance`` moves a workflow on from what the store
says: a worker calls it when a step's run ends, and every reaper pass calls it for running
workflows (a worker killed between steps stalls nothing; timeouts are enforced there too).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Sequence
from typing import Any

import pydantic

from jobsys.base import errors, sealing
from jobsys.declare import jobs

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
    priority: int | None = None
    """This step's priority instead of its job's: 0 (lowest) to 9 (highest)."""

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
        priority: int | None = None,
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
            ("priority", priority),
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

    def at_priority(self, priority: int | None) -> Workflow:
        """This workflow with ``priority`` for each step that gives none of its own (a
        workflow run submitted, or a schedule's fire, at a priority); as it is for ``None``."""
        if priority is None:
            return self
        steps = tuple(
            s if s.priority is not None else dataclasses.replace(s, priority=priority)
            for s in self.steps
        )
        return dataclasses.replace(self, steps=steps)

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
                priority=_priority_or_none(s.get("priority")),
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


def _priority_or_none(value: Any) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise TypeError(f"priority must be a whole number from 0 to 9, got {value!r}")
    return value


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
    if s.priority is not None:
        out["priority"] = s.priority
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


def run_copy(wf: Workflow, registry: jobs.Registry) -> dict[str, Any]:
    """The copy of the workflow each of its runs keeps and advances by: ``to_data()`` with
    the secrets of its steps' inputs redacted (stored in the workflow run's ``definition``
    column, a name the schema keeps; it is not a runtime definition)."""
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


def seal_hidden(sealer: sealing.Sealer | None, hidden: dict[str, Any]) -> str | None:
    if not hidden:
        return None
    if sealer is None:
        raise errors.ConfigError("a workflow run with secrets needs the installation's key")
    return sealer.seal(hidden)
