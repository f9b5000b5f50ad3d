"""The jobsys MCP tools: their table, the tool list and the dispatch of a call.

Generic tools (the names agents and the issue use), each a ``ToolDef`` of ``TOOLS`` whose
input schema is its argument model's (``args.py``) and whose work is done in ``handlers.py``:

* ``list_jobs``, ``describe_job``, ``execute_job`` (inline or background), ``get_job_status``,
  ``get_job_events`` (a run's history), ``register_job``, ``remove_job`` (runtime job
  definitions, ``jobsys.declare.definitions``);
* durable work: ``job_create`` (a background run, or a schedule), ``job_list``, ``job_show``,
  ``job_update``, ``job_pause``, ``job_resume``, ``job_cancel``, ``job_result``, ``job_search``;
* the cluster: ``list_workers`` (admin roles); the queues: ``queue_list``, ``queue_pause``,
  ``queue_resume`` (``job_pause`` and ``job_resume`` also pause a job by name).
* runs driven from outside (``mcp/actors.py``): ``job_take``, ``job_report``,
  ``job_complete``, ``job_fail``: an agent takes a run of an external job and does it;
* bulk actions on the runs a filter matches (``mcp/bulk.py``): ``runs_bulk_cancel``,
  ``runs_bulk_retry``, ``runs_bulk_delete``, each with a ``dry_run``, and ``runs_prune``.
* webhook subscriptions (``mcp/subscriptions.py``): ``subscription_create``,
  ``subscription_list``, ``subscription_test``, ``subscription_delete``,
  ``subscription_deliveries``.

Besides them, one tool per job the caller may execute, ``run__<job>`` (``names.tool_name``:
``run__examples__add`` for ``examples.add``), whose input schema is the job's input JSON
schema (from its pydantic model): it runs the job and waits up to ``JOB_TOOL_WAIT`` seconds for
the output. The tool list is computed on every ``tools/list``, so jobs registered at runtime
appear (and removed ones go) without restarting the server.

``call`` checks the arguments, runs the tool and raises jobsys errors; unknown tools are
refused with ``ToolError`` (naming the closest tools). The server turns errors into tool
results (``answers.failed``). Every name is snake_case and matches ``names.TOOL_NAME_RE``; the
deprecated names (``list-jobs`` ..., ``run__examples.add``) are still answered, with a
``deprecated`` note in the answer and a warning in the log, but not listed.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import logging
from collections.abc import Callable
from typing import Any

import mcp.types as types
import pydantic

from jobsys.base import errors
from jobsys.base.errors import ToolError
from jobsys.declare import definitions, jobs
from jobsys.mcp import actors, bulk, subscriptions
from jobsys.mcp.answers import InvalidArguments
from jobsys.mcp.args import (
    Args,
    CreateArgs,
    DescribeArgs,
    ExecuteArgs,
    IdArgs,
    ListArgs,
    ListJobsArgs,
    NoArgs,
    PauseArgs,
    QueueArgs,
    RemoveArgs,
    ResultArgs,
    RunArgs,
    SearchArgs,
    StatusArgs,
    UpdateArgs,
    check_shape,
)
from jobsys.mcp.handlers import (
    definition_schema,
    describe_job,
    execute_job,
    get_job_events,
    get_job_status,
    job_cancel,
    job_create,
    job_list,
    job_pause,
    job_result,
    job_resume,
    job_search,
    job_show,
    job_update,
    list_jobs,
    list_workers,
    register_job,
    remove_job,
    runnable_jobs,
    wait_for_output,
)
from jobsys.mcp.names import (
    DEPRECATED_TOOLS,
    JOB_TOOL_PREFIX,
    deprecation,
    legacy_tool_name,
    tool_name,
)
from jobsys.mcp.queue_handlers import queue_list, queue_pause, queue_resume
from jobsys.service.client import Client

log = logging.getLogger("jobsys.mcp")

JOB_TOOL_WAIT = 60.0
"""Seconds a per-job tool waits for the output before answering with the run id."""

# --- the tool table ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ToolDef:
    name: str
    description: str
    args: type[Args] | None
    """``None``: the arguments are passed on as they are (validated by the callee)."""
    run: Callable[[Client, Any], dict[str, Any]]
    read_only: bool = False
    changes_tools: bool = False

    def schema(self) -> dict[str, Any]:
        if self.args is None:
            return definition_schema()
        schema = self.args.model_json_schema()
        schema.pop("title", None)
        schema.pop("description", None)
        return schema


TOOLS: tuple[ToolDef, ...] = (
    ToolDef(
        "list_jobs",
        "List the jobs you may see (filter by tag, label `key=value` or `key`, keywords), each "
        "with its name, description, kind (code, alias, http), tags, labels, input and output "
        "JSON schemas, what you may do with it (`may`) and its tool, and the workflows.",
        ListJobsArgs,
        list_jobs,
        read_only=True,
    ),
    ToolDef(
        "describe_job",
        "One job as list_jobs shows it: its description, kind, tags, labels, queue, timeout, "
        "retry policy, input and output JSON schemas, `may` and its tool.",
        DescribeArgs,
        describe_job,
        read_only=True,
    ),
    ToolDef(
        "execute_job",
        "Run a job (or workflow) with an input. mode inline waits up to `timeout` s and returns "
        "the output (or, if it takes longer, the run id to poll); mode background returns the "
        "run id at once. Poll with get_job_status.",
        ExecuteArgs,
        execute_job,
    ),
    ToolDef(
        "get_job_status",
        "The state, progress, output or error, attempts and last log lines of a run (or the "
        "steps of a workflow run, wf_...).",
        StatusArgs,
        get_job_status,
        read_only=True,
    ),
    ToolDef(
        "register_job",
        "Register (or replace) a job at runtime from a declarative definition, never code: an "
        "alias of a job with bound defaults, metadata and an optional schedule; an HTTP call to "
        "an allow-listed host; or a workflow of registered jobs. Every worker runs it without a "
        "restart; its own tool (`tool` in the answer) appears in tools/list.",
        None,
        register_job,
        changes_tools=True,
    ),
    ToolDef(
        "remove_job",
        "Remove a job registered at runtime (runs already made keep their records).",
        RemoveArgs,
        remove_job,
        changes_tools=True,
    ),
    ToolDef(
        "job_create",
        "Create durable work: one background run of a job (no `schedule`; `countdown` or "
        "`start_at` to start it later, hours or weeks ahead), or a schedule of "
        "it: `schedule` with one of every (seconds), cron (+ timezone), once (ISO time), "
        "ongoing (seconds, until the job says done). Returns the run id or the schedule.",
        CreateArgs,
        job_create,
    ),
    ToolDef(
        "job_list",
        "List runs (newest first), schedules and workflow runs; filter by job, state, tag.",
        ListArgs,
        job_list,
        read_only=True,
    ),
    ToolDef(
        "job_show",
        "Show a run (with its last logs), a schedule (sch_..., with its versions) or a workflow "
        "run (wf_..., with its steps).",
        IdArgs,
        job_show,
        read_only=True,
    ),
    ToolDef(
        "job_update",
        "Change a schedule (sch_...): its cadence (every, cron, timezone, once, ongoing), input, "
        "metadata or options; fields not given keep their value. Makes a new version.",
        UpdateArgs,
        job_update,
    ),
    ToolDef(
        "job_pause",
        "Pause a schedule (`id`: sch_...): it stops firing until job_resume. Or pause a job "
        "(`job`: its name; admin roles unless its rules say otherwise): none of its runs starts "
        "until job_resume; they stay pending, running ones finish.",
        PauseArgs,
        job_pause,
    ),
    ToolDef(
        "job_resume",
        "Resume a paused schedule (`id`: sch_...): it fires again from now (missed fires are "
        "not replayed). Or resume a paused job (`job`): its runs are queued, highest priority "
        "first.",
        PauseArgs,
        job_resume,
    ),
    ToolDef(
        "queue_list",
        "List the queues the jobs use: paused or not (by whom, since when), runs waiting and "
        "how many of them a pause holds; and every pause (queues, jobs, everything).",
        NoArgs,
        queue_list,
        read_only=True,
    ),
    ToolDef(
        "queue_pause",
        "Pause a queue (`name`), or everything (`all: true`) (admin roles): none of its runs "
        "starts until queue_resume; they stay pending, running ones finish.",
        QueueArgs,
        queue_pause,
    ),
    ToolDef(
        "queue_resume",
        "Resume a paused queue (`name`), or everything (`all: true`): the runs it held are "
        "queued, highest priority first.",
        QueueArgs,
        queue_resume,
    ),
    ToolDef(
        "job_cancel",
        "Cancel: a run (a waiting run never starts, a running one is stopped); a workflow run "
        "(wf_..., with its pending steps); a schedule (sch_...) is DELETED: it never fires again "
        "and its runs keep their history (use job_pause to stop it for a while).",
        IdArgs,
        job_cancel,
    ),
    ToolDef(
        "job_result",
        "The output of a run or workflow run, waiting up to `wait` s; an error if it failed; "
        "`finished: false` if it is still going.",
        ResultArgs,
        job_result,
        read_only=True,
    ),
    ToolDef(
        "get_job_events",
        "The history of a run: each change of its state (from, to, attempt, worker, error), "
        "who cancelled or retried it, and its attempts with their timings and errors.",
        RunArgs,
        get_job_events,
        read_only=True,
    ),
    ToolDef(
        "job_search",
        "Search jobs and runs: by keywords (mode keyword: jobs whose name, description, tags "
        "or labels hold them, runs whose error or logs hold them or whose job matches), by "
        "meaning (mode semantic, when the server has an embedder), or both fused (hybrid); "
        "also the schedules whose name holds or means it; each result with its score, best "
        "first in the ranked modes.",
        SearchArgs,
        job_search,
        read_only=True,
    ),
    ToolDef(
        "list_workers",
        "List the worker processes of the cluster (admin roles only): host, pid, live or lost "
        "(no heartbeat for 3 intervals), queues, runs held, last heartbeat, jobsys version and "
        "catalog hash; `mismatch` names what differs from this server (version, catalog).",
        NoArgs,
        list_workers,
        read_only=True,
    ),
    *(ToolDef(name, about, args, run) for name, (about, args, run) in actors.TOOLS.items()),
    *(
        ToolDef(name, bulk.DESCRIPTIONS[name], bulk.BulkArgs, run)
        for name, run in (
            ("runs_bulk_cancel", bulk.runs_bulk_cancel),
            ("runs_bulk_retry", bulk.runs_bulk_retry),
            ("runs_bulk_delete", bulk.runs_bulk_delete),
        )
    ),
    ToolDef("runs_prune", bulk.DESCRIPTIONS["runs_prune"], bulk.PruneArgs, bulk.runs_prune),
    *(
        ToolDef(name, about, args or NoArgs, run, read_only=read_only)
        for name, (about, args, run, read_only) in subscriptions.TOOLS.items()
    ),
)
BY_NAME = {t.name: t for t in TOOLS}


@functools.cache
def generic_tools() -> tuple[types.Tool, ...]:
    return tuple(
        types.Tool(
            name=t.name,
            description=t.description,
            input_schema=t.schema(),
            annotations=types.ToolAnnotations(read_only_hint=t.read_only),
        )
        for t in TOOLS
    )


def job_tool(spec: jobs.JobSpec) -> types.Tool | None:
    schema = spec.input_schema()
    if schema.get("type") != "object":
        return None  # execute_job still runs it
    kind = definitions.kind_of(spec)
    about = f" ({kind} job)" if kind != "code" else ""
    return types.Tool(
        name=tool_name(spec.name),
        description=f"Run job {spec.name}{about} and wait up to {JOB_TOOL_WAIT:g} s for its "
        f"output (longer runs answer with the run id: poll get_job_status). {spec.description}",
        input_schema=schema,
    )


def list_tools(c: Client) -> list[types.Tool]:
    tools = list(generic_tools())
    for spec in runnable_jobs(c):
        tool = job_tool(spec)
        if tool is not None:
            tools.append(tool)
    return tools


def resolve(name: str) -> ToolDef | None:
    """The generic tool called ``name``, by its name or a deprecated one."""
    return BY_NAME.get(DEPRECATED_TOOLS.get(name, name))


def job_for_tool(c: Client, name: str) -> jobs.JobSpec | None:
    """The visible job the caller may execute whose tool is ``name`` (its current name or its
    deprecated dotted one); ``None`` if there is none. Found by computing the names of the
    jobs, never by decoding ``name``; a current name wins over a deprecated one."""
    if not name.startswith(JOB_TOOL_PREFIX):
        return None
    legacy = None
    for spec in runnable_jobs(c):
        if tool_name(spec.name) == name:
            return spec
        if legacy is None and legacy_tool_name(spec.name) == name:
            legacy = spec
    return legacy


def call(c: Client, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """Run tool ``name``; raises jobsys errors (turned into tool errors by the caller)."""
    check_shape(name, arguments)
    tool = resolve(name)
    if tool is not None:
        if tool.args is None:
            return _noting_deprecated(name, tool.name, tool.run(c, arguments))
        try:
            parsed = tool.args.model_validate(arguments)
        except pydantic.ValidationError as exc:
            raise InvalidArguments(tool.name, errors.field_errors(exc)) from None
        return _noting_deprecated(name, tool.name, tool.run(c, parsed))
    spec = job_for_tool(c, name)
    if spec is not None:
        run_id = c.submit(spec.name, arguments)
        answer = wait_for_output(c, run_id, JOB_TOOL_WAIT)
        return _noting_deprecated(name, tool_name(spec.name), answer)
    raise unknown_tool(c, name)


def _noting_deprecated(called: str, current: str, answer: dict[str, Any]) -> dict[str, Any]:
    """``answer``, with a ``deprecated`` note (and a warning logged) if the tool was called
    by a deprecated name."""
    if called == current:
        return answer
    note = deprecation(called, current)
    log.warning("jobsys mcp: %s", note)
    return {**answer, "deprecated": note}


def unknown_tool(c: Client, name: str) -> ToolError:
    known = [t.name for t in TOOLS] + [tool_name(s.name) for s in runnable_jobs(c)]
    close = difflib.get_close_matches(name[:200], known, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return ToolError(f"unknown tool {name[:200]!r}{hint} (tools/list gives the tools)")
