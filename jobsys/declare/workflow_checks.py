"""Checking a workflow declaration before it is accepted: shape, cycles, durations (delays,
timeouts, retry backoffs: finite and bounded, ``bounds.py``), and every input reference
against the jobs' schemas (``$input.f``, ``$steps.S.output.f``, ``$item``), so a workflow
that cannot run is refused with the step and field named, not found out mid-run. The one
path for workflows of the catalog, registered at runtime and given ad hoc to submit.
"""

from __future__ import annotations

import types
import typing
from typing import Any

import pydantic

from jobsys.base import bounds, errors
from jobsys.declare import jobs
from jobsys.declare.workflows import WHEN, Step, Workflow


def check(wf: Workflow, registry: jobs.Registry) -> None:
    """Refuse a workflow that cannot run, naming the step and the field."""
    try:
        problems = _problems(wf, registry)
    except (TypeError, ValueError, AttributeError) as exc:  # a workflow given as data, mistyped
        raise errors.WorkflowDeclarationError(
            wf.name, "-", "definition", f"a field has the wrong type ({exc}); see Workflow.to_data"
        ) from None
    if problems:
        step, field, problem = problems[0]
        raise errors.WorkflowDeclarationError(wf.name, step, field, problem)


def _problems(wf: Workflow, registry: jobs.Registry) -> list[tuple[str, str, str]]:
    if not wf.steps:
        return [("-", "steps", "a workflow needs at least one step")]
    found = _shape_problems(wf)
    names = {s.name for s in wf.steps}
    for s in wf.steps:
        found.extend(
            (s.name, "depends_on", f"no step named {d!r}") for d in s.depends_on if d not in names
        )
        if s.when not in WHEN:
            found.append((s.name, "when", f"must be one of {', '.join(WHEN)}"))
        if s.job not in registry:
            found.append((s.name, "job", f"unknown job {s.job!r}"))
        if s.retry is not None:
            found.extend((s.name, f, p) for f, p in s.retry.problems())
        found.extend(_option_problems(s))
    if found:
        return found
    cycle = _cycle(wf)
    if cycle:
        return [(cycle[0], "depends_on", f"cycle: {' -> '.join(cycle)}")]
    for s in wf.steps:
        found.extend(_input_problems(wf, s, registry))
    return found


def _shape_problems(wf: Workflow) -> list[tuple[str, str, str]]:
    names = [s.name for s in wf.steps]
    found = [
        (dup, "name", "two steps have this name")
        for dup in {n for n in names if names.count(n) > 1}
    ]
    if wf.failure not in ("fail_fast", "continue"):
        found.append(("-", "failure", "must be fail_fast or continue"))
    problem = bounds.seconds(wf.timeout, bounds.MAX_WORKFLOW_TIMEOUT, positive=True)
    if problem:
        found.append(("-", "timeout", problem))
    return found


def _option_problems(s: Step) -> list[tuple[str, str, str]]:
    """A step's delay and timeout: finite, within their bounds (``bounds.py``); and its
    priority, on the scale of every priority."""
    found = []
    if s.priority is not None and (problem := bounds.priority(s.priority)):
        found.append((s.name, "priority", problem))
    problem = bounds.seconds(s.delay, bounds.MAX_STEP_DELAY)
    if problem:
        found.append((s.name, "delay", problem))
    if s.timeout is not None:
        problem = bounds.seconds(s.timeout, bounds.MAX_STEP_TIMEOUT, positive=True)
        if problem:
            found.append((s.name, "timeout", problem))
    return found


def _cycle(wf: Workflow) -> list[str] | None:
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for dep in wf.step(name).depends_on:
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        path.pop()
        state[name] = 2
        return None

    for s in wf.steps:
        if s.name not in state:
            found = visit(s.name)
            if found:
                return found
    return None


def _input_problems(wf: Workflow, s: Step, registry: jobs.Registry) -> list[tuple[str, str, str]]:
    spec = registry.get(s.job)
    fields = spec.input_model.model_fields
    found = []
    if s.for_each is not None:
        kind = _ref_type(wf, s, s.for_each, registry)
        if isinstance(kind, str):
            found.append((s.name, "for_each", kind))
    for field, value in s.input.items():
        if field not in fields:
            found.append((s.name, f"input.{field}", f"{s.job} has no input field {field!r}"))
            continue
        if isinstance(value, str) and value.startswith("$"):
            kind = _ref_type(wf, s, value, registry)
            if isinstance(kind, str):
                found.append((s.name, f"input.{field}", kind))
            elif not _compatible(kind, fields[field].annotation):
                wanted = _name(fields[field].annotation)
                problem = f"{value} is {_name(kind)}, but {s.job} wants {wanted}"
                found.append((s.name, f"input.{field}", problem))
    for field, info in fields.items():
        if info.is_required() and field not in s.input:
            found.append((s.name, f"input.{field}", f"{s.job} needs {field!r}; map it"))
    return found


NOT_KNOWN = object()
"""The type of a reference that cannot be checked (a whole output, an item of a list)."""


def _ref_type(wf: Workflow, s: Step, ref: str, registry: jobs.Registry) -> Any:
    """The type a reference gives, or a string saying what is wrong with it."""
    parts = ref[1:].split(".")
    head = parts[0]
    if head == "input":
        return _field_type(wf.input_model, parts[1:], "the workflow input")
    if head == "item":
        if s.for_each is None:
            return "$item is only known in a step with for_each"
        return NOT_KNOWN
    if head == "steps" and len(parts) >= 3 and parts[2] in ("output", "outputs"):
        source = parts[1]
        if source not in {x.name for x in wf.steps}:
            return f"no step named {source!r}"
        if source not in wf.upstream(s.name):
            return f"step {source!r} is not upstream of {s.name!r} (add it to depends_on)"
        model = registry.get(wf.step(source).job).output_model
        kind = _field_type(model, parts[3:], f"the output of {source!r}")
        if parts[2] == "outputs" and not isinstance(kind, str):
            return list if kind is NOT_KNOWN else typing.List[kind]  # type: ignore[valid-type]  # noqa: UP006
        return kind
    return f"{ref!r} is not a reference ($input.f, $steps.S.output.f, $steps.S.outputs, $item)"


def _field_type(model: type[pydantic.BaseModel], path: list[str], what: str) -> Any:
    if not path:
        return NOT_KNOWN
    current: Any = model
    for part in path:
        if not (isinstance(current, type) and issubclass(current, pydantic.BaseModel)):
            return NOT_KNOWN
        if part not in current.model_fields:
            if current.model_config.get("extra") == "allow":
                return NOT_KNOWN  # an open input (a workflow declared as data)
            return f"{what} has no field {part!r}"
        current = current.model_fields[part].annotation
    return current


def _compatible(given: Any, wanted: Any) -> bool:
    if given is NOT_KNOWN or wanted is Any or given == wanted:
        return True
    if typing.get_origin(wanted) in (typing.Union, types.UnionType):
        return any(_compatible(given, w) for w in typing.get_args(wanted))
    g, w = typing.get_origin(given) or given, typing.get_origin(wanted) or wanted
    if g is w and g in (list, dict, tuple):
        gi, wi = typing.get_args(given), typing.get_args(wanted)
        return not gi or not wi or all(_compatible(a, b) for a, b in zip(gi, wi, strict=False))
    return bool(g is int and w is float)


def _name(kind: Any) -> str:
    return getattr(kind, "__name__", None) or str(kind)
