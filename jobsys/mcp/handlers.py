"""What each generic MCP tool does, over a ``Client``: ``list_jobs``, ``execute_job``, ...,
``job_search``, each taking the client and its parsed arguments and returning the answer.

* ``list_jobs`` and ``describe_job`` (over ``jobsys.service.views``, as the CLI and HTTP API),
  ``execute_job`` (inline or background), ``get_job_status``, ``register_job``, ``remove_job``
  (runtime job definitions, ``jobsys.declare.definitions``);
* durable work: ``job_create`` (a background run, or a schedule), ``job_list``, ``job_show``,
  ``job_update``, ``job_pause``, ``job_resume``, ``job_cancel``, ``job_result``, ``job_search``;
* the cluster: ``list_workers`` (admin roles).

They raise jobsys errors; the caller (``tools.call``) turns them into tool errors. Also here:
the jobs a client may run (the name of a job's own tool, ``tool_name``, is in ``names.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from jobsys.base import errors
from jobsys.declare import cadence, definitions, jobs, workflows
from jobsys.mcp import args, queue_handlers
from jobsys.mcp.answers import bad_argument, run_status, run_summary, schedule_json, workflow_status
from jobsys.mcp.names import tool_name
from jobsys.service import searching, views
from jobsys.service.client import Client
from jobsys.store import runs

# --- jobs ----------------------------------------------------------------------------------


def runnable_jobs(c: Client) -> Iterator[jobs.JobSpec]:
    """The visible jobs this principal may execute."""
    allowed = c.visible_jobs("execute")
    for spec in c.registry:
        if not spec.hidden and (allowed is None or spec.name in allowed):
            yield spec


def job_json(c: Client, spec: jobs.JobSpec) -> dict[str, Any]:
    """A job as every interface shows it (``views.job_json``), with the name of its tool."""
    return {**views.job_json(spec, c), "tool": tool_name(spec.name)}


def list_jobs(c: Client, a: args.ListJobsArgs) -> dict[str, Any]:
    where = views.JobFilter.parse(a.tag, [a.label] if a.label else (), a.query)
    listing = views.list_jobs(c, where, a.include_hidden)
    return {
        "jobs": [job_json(c, s) for s in listing.jobs],
        "workflows": [views.workflow_json(wf, c.registry) for wf in listing.workflows],
    }


def describe_job(c: Client, a: args.DescribeArgs) -> dict[str, Any]:
    return {**views.describe_job(c, a.job), "tool": tool_name(a.job)}


def _is_workflow(c: Client, name: str) -> bool:
    return name not in c.registry and name in c.registry.workflows


def execute_job(c: Client, a: args.ExecuteArgs) -> dict[str, Any]:
    if _is_workflow(c, a.job):
        a.no_start("a workflow")
        workflow_id = c.workflows.submit(a.job, a.input, a.priority)
        if a.mode == "background" or not a.timeout:
            return {"workflow_run_id": workflow_id, "state": "running"}
        try:
            record = c.workflows.wait(workflow_id, a.timeout)
        except errors.WaitTimeout:
            return {**workflow_status(c, c.workflows.get(workflow_id)), "waited": a.timeout}
        if record.state is not workflows.WorkflowState.COMPLETED:
            raise errors.RunFailed(workflow_id, record.state.value, record.error)
        return workflow_status(c, record)
    run_id = c.submit(a.job, a.input, a.submit_options())
    if a.mode == "background" or not a.timeout:
        return {
            "run_id": run_id,
            "job": a.job,
            "state": c.status(run_id).state.value,
            "next": "poll get_job_status (or job_result with wait) with this run_id",
        }
    return wait_for_output(c, run_id, a.timeout)


def wait_for_output(c: Client, run_id: str, timeout: float) -> dict[str, Any]:
    """The run's output once it completes; a ``RunFailed`` error if it fails; its state and
    the advice to poll if it is still going after ``timeout`` s."""
    try:
        record = c.wait(run_id, timeout)
    except errors.WaitTimeout:
        record = c.status(run_id)
        return {
            **run_status(c, record, 0),
            "next": f"still {record.state.value} after {timeout:g} s: poll get_job_status",
        }
    if record.state is not runs.RunState.COMPLETED:
        raise errors.RunFailed(run_id, record.state.value, record.error)
    return run_status(c, record, 0)


def get_job_status(c: Client, a: args.StatusArgs) -> dict[str, Any]:
    if a.run_id.startswith("wf_"):
        return workflow_status(c, c.workflows.get(a.run_id))
    return run_status(c, c.status(a.run_id), a.logs)


def get_job_events(c: Client, a: args.RunArgs) -> dict[str, Any]:
    return c.events(a.run_id).to_json()


def definition_schema() -> dict[str, Any]:
    """The input schema of ``register_job``: the fields of every kind of definition."""
    properties: dict[str, Any] = {}
    defs: dict[str, Any] = {}
    for model in (
        definitions.AliasDefinition,
        definitions.HttpDefinition,
        definitions.WorkflowDefinition,
    ):
        schema = model.model_json_schema()
        defs.update(schema.get("$defs", {}))
        for key, value in schema.get("properties", {}).items():
            properties.setdefault(key, value)
    properties["kind"] = {
        "type": "string",
        "enum": ["alias", "http", "workflow"],
        "description": "alias: a catalog job (`target`) with bound `defaults`, `metadata` and "
        "an optional `schedule`; http: a call to `url` (allow-listed hosts only); workflow: "
        "`workflow` steps of registered jobs.",
    }
    out: dict[str, Any] = {"type": "object", "properties": properties, "required": ["name", "kind"]}
    if defs:
        out["$defs"] = defs
    return out


def register_job(c: Client, arguments: dict[str, Any]) -> dict[str, Any]:
    registered = c.definitions.register(arguments)
    return {"registered": registered, "tool": tool_name(str(arguments.get("name")))}


def remove_job(c: Client, a: args.RemoveArgs) -> dict[str, Any]:
    c.definitions.remove(a.name)
    return {"removed": a.name}


# --- durable work --------------------------------------------------------------------------


def job_create(c: Client, a: args.CreateArgs) -> dict[str, Any]:
    if a.schedule is None:
        if _is_workflow(c, a.job):
            a.no_start("a workflow")
            workflow_id = c.workflows.submit(a.job, a.input, a.priority)
            return {"kind": "workflow_run", "workflow_run_id": workflow_id}
        run_id = c.submit(a.job, a.input, a.submit_options())
        return {"kind": "run", "run_id": run_id, "state": c.status(run_id).state.value}
    a.no_start("a schedule (give the schedule a `start`)")
    changes = a.schedule.changes()
    if "kind" not in changes:
        raise bad_argument("schedule", "give one of every, cron, once, ongoing")
    definition = cadence.schedule(
        **changes, input=a.input, metadata=a.metadata or None, priority=a.priority
    )
    record = c.schedules.create(a.job, definition, name=a.name)
    return {"kind": "schedule", "schedule": schedule_json(record)}


def job_list(c: Client, a: args.ListArgs) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if a.what in ("all", "runs"):
        found = c.list(
            job=a.job,
            state=a.state,
            tag=a.tag,
            limit=a.limit,
            schedule_id=a.schedule,
            workflow_id=a.workflow,
            parent_id=a.parent,
            exhausted=a.exhausted,
            paused=a.paused,
            archived=a.archived,
        )
        out["runs"] = [run_summary(r) for r in found]
    if a.what in ("all", "schedules"):
        state = a.state if a.what == "schedules" else None
        found_s = c.schedules.list(state=state, job=a.job, limit=a.limit, archived=a.archived)
        out["schedules"] = [schedule_json(s) for s in found_s]
    if a.what in ("all", "workflow_runs"):
        flows = [w for w in c.workflows.list(limit=a.limit) if a.job in (None, w.workflow)]
        out["workflow_runs"] = [
            {"workflow_run_id": w.id, "workflow": w.workflow, "state": w.state.value}
            | ({"withheld": list(w.withheld)} if w.withheld else {})
            for w in flows
        ]
    return out


def _schedule_id(id: str, action: str) -> str:
    if not id.startswith("sch_"):
        raise bad_argument(
            "id",
            f"only schedules (ids sch_...) can be {action}; job_cancel stops a run "
            "and job_create starts a new one",
        )
    return id


def job_show(c: Client, a: args.IdArgs) -> dict[str, Any]:
    if a.id.startswith("sch_"):
        record = c.schedules.get(a.id)
        return {**schedule_json(record), "versions": c.schedules.versions(a.id)}
    if a.id.startswith("wf_"):
        return workflow_status(c, c.workflows.get(a.id))
    return run_status(c, c.status(a.id), 20)


def job_update(c: Client, a: args.UpdateArgs) -> dict[str, Any]:
    changes = a.changes()
    if a.input is not None:
        changes["input"] = a.input
    if a.metadata is not None:
        changes["metadata"] = a.metadata
    if a.priority is not None:
        changes["priority"] = a.priority
    if not changes:
        raise bad_argument("id", "nothing to change: give a cadence, input, metadata or an option")
    return {"schedule": schedule_json(c.schedules.update(_schedule_id(a.id, "updated"), **changes))}


def job_pause(c: Client, a: args.PauseArgs) -> dict[str, Any]:
    if _paused_job(a) is not None:
        return queue_handlers.pause_job(c, str(a.job))
    return {"schedule": schedule_json(c.schedules.pause(_schedule_id(str(a.id), "paused")))}


def job_resume(c: Client, a: args.PauseArgs) -> dict[str, Any]:
    if _paused_job(a) is not None:
        return queue_handlers.resume_job(c, str(a.job))
    return {"schedule": schedule_json(c.schedules.resume(_schedule_id(str(a.id), "resumed")))}


def _paused_job(a: args.PauseArgs) -> str | None:
    """The job named (``job``), or ``None`` for a schedule (``id``); exactly one is given."""
    if (a.id is None) == (a.job is None):
        raise bad_argument("id", "give a schedule's id (sch_...) or a job's name (job), not both")
    return a.job


def job_cancel(c: Client, a: args.IdArgs) -> dict[str, Any]:
    if a.id.startswith("sch_"):
        return {"schedule": schedule_json(c.schedules.delete(a.id)), "deleted": True}
    if a.id.startswith("wf_"):
        return workflow_status(c, c.workflows.cancel(a.id))
    done = c.cancel(a.id)
    answer = run_status(c, done.record, 0)
    if done.warning:
        answer["warning"] = done.warning
    return answer


def job_result(c: Client, a: args.ResultArgs) -> dict[str, Any]:
    if a.id.startswith("sch_"):
        raise bad_argument("id", "a schedule has no result: job_show gives its last_run_id")
    if a.id.startswith("wf_"):
        try:
            record = c.workflows.wait(a.id, a.wait) if a.wait else c.workflows.get(a.id)
        except errors.WaitTimeout:
            record = c.workflows.get(a.id)
        if record.terminal and record.state is not workflows.WorkflowState.COMPLETED:
            raise errors.RunFailed(a.id, record.state.value, record.error)
        out_wf: dict[str, Any] = {
            "id": a.id,
            "state": record.state.value,
            "finished": record.terminal,
        }
        if record.withheld:  # the steps whose output the caller may not read
            out_wf["withheld"] = list(record.withheld)
        return out_wf | ({"output": record.output} if record.terminal else {})
    try:
        run = c.wait(a.id, a.wait) if a.wait else c.status(a.id)
    except errors.WaitTimeout:
        run = c.status(a.id)
    if run.terminal and run.state is not runs.RunState.COMPLETED:
        raise errors.RunFailed(a.id, run.state.value, run.error)
    out = {"id": a.id, "job": run.job, "state": run.state.value, "finished": run.terminal}
    return out | ({"output": run.output} if run.terminal else {"progress": run.progress})


def job_search(c: Client, a: args.SearchArgs) -> dict[str, Any]:
    """Jobs and runs the query finds, by ``a.mode`` (``service/searching.py``), each with its
    score: none for keyword matches (runs newest first), a similarity (semantic) or a fused
    rank score (hybrid), best first."""
    mode, found = c.search(a.query, a.mode, a.limit)
    where = views.JobFilter.parse(query=a.query)
    specs = views.list_jobs(c, where, include_hidden=True).jobs
    ranked: list[tuple[str, float | None]] = [(s.name, None) for s in specs]
    if mode != "keyword":
        near = c.nearest_jobs(a.query, a.limit)
        ranked = list(
            near
            if mode == "semantic"
            else searching.fuse([s.name for s in specs], [n for n, _ in near])[: a.limit]
        )
    about = {s.name: s.description for s in c.job_specs(include_hidden=True)}
    return {
        "mode": mode,
        "jobs": [
            {"name": n, "description": about.get(n, ""), "tool": tool_name(n), "score": score}
            for n, score in ranked
        ],
        "runs": [run_summary(r) | {"score": score} for r, score in found],
        "schedules": _schedules_found(c, a, mode),
    }


def _schedules_found(c: Client, a: args.SearchArgs, mode: str) -> list[dict[str, Any]]:
    """This tenant's schedules (of jobs the principal may list) whose name holds the query
    (keyword), or whose name and description mean it (semantic), or both fused (hybrid)."""
    named = {s.id: s for s in c.schedules.list(name=a.query, limit=a.limit)}
    scores: dict[str, float | None] = dict.fromkeys(named)
    if mode != "keyword":
        near = c.schedules.nearest(a.query, a.limit)
        fused = near if mode == "semantic" else searching.fuse(list(named), [i for i, _ in near])
        scores = dict(fused[: a.limit])
    ranked = list(scores.items())
    out = []
    for schedule_id, score in ranked:
        s = named.get(schedule_id) or c.store.schedules.get(schedule_id, c.principal.tenant)
        out.append(
            {"id": s.id, "name": s.name, "job": s.job, "state": s.state.value, "score": score}
        )
    return out


# --- the cluster ---------------------------------------------------------------------------


def list_workers(c: Client, _: args.NoArgs) -> dict[str, Any]:
    return c.admin.workers()
