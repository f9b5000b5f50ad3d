"""``jobsys workflows``: list, show (with the DAG and each step's state), submit, cancel."""

from __future__ import annotations

import json

import click
from rich.table import Table
from rich.tree import Tree

from jobsys.base import bounds, errors
from jobsys.cli.base import DURATION, emit_json, handle_errors, main, make_client, out, parse_input
from jobsys.declare import workflows
from jobsys.service import client as client_mod
from jobsys.store import workflow_runs

STATE_STYLE = {
    "succeeded": "green",
    "running": "yellow",
    "waiting": "dim",
    "failed": "red",
    "cancelled": "magenta",
    "skipped": "dim",
}


@main.group("workflows")
def workflows_group() -> None:
    """Workflows: DAGs of jobs (declared in the catalog) and their runs."""


@workflows_group.command("list")
@click.option("--runs", "show_runs", is_flag=True, help="List workflow runs, not workflows.")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def workflows_list(show_runs: bool, as_json: bool) -> None:
    """The declared workflows (or, with --runs, the newest workflow runs)."""
    c = make_client()
    if show_runs:
        found = c.workflows.list()
        if as_json:
            emit_json([r.to_json() for r in found])
            return
        table = Table("id", "workflow", "state", "created (UTC)")
        for r in found:
            table.add_row(r.id, r.workflow, r.state.value, f"{r.created_at:%Y-%m-%d %H:%M:%S}")
        out.print(table)
        return
    declared = sorted(c.registry.workflows.values(), key=lambda w: w.name)
    if as_json:
        emit_json(
            [
                {"name": w.name, "description": w.description, "steps": [s.name for s in w.steps]}
                for w in declared
            ]
        )
        return
    table = Table("workflow", "steps", "description")
    for w in declared:
        table.add_row(w.name, " ".join(s.name for s in w.steps), w.description)
    out.print(table)


@workflows_group.command("submit")
@click.argument("name")
@click.option("--input", "input_text", default="{}", show_default=True, help="JSON input.")
@click.option("--wait", is_flag=True, help="Wait for the workflow run, then print its output.")
@click.option(
    "--timeout", type=DURATION, default=600.0, show_default=True, help="Seconds, or 30s, 10m."
)
@click.option(
    "--priority",
    type=click.IntRange(bounds.LOWEST_PRIORITY, bounds.HIGHEST_PRIORITY),
    default=None,
    help=f"Of the steps that set none: {bounds.PRIORITY_HELP}. Default: each step's job's.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the workflow run as JSON.")
@handle_errors
def workflows_submit(
    name: str, input_text: str, wait: bool, timeout: float, priority: int | None, as_json: bool
) -> None:
    """Start a run of workflow NAME; prints its id (or, with --wait, its output)."""
    c = make_client()
    workflow_id = c.workflows.submit(name, parse_input(input_text), priority)
    if not wait:
        if as_json:
            emit_json(c.workflows.get(workflow_id).to_json())
        else:
            click.echo(workflow_id)
        return
    record = c.workflows.wait(workflow_id, timeout)
    if as_json:
        emit_json(record.to_json())
    if record.state is not workflows.WorkflowState.COMPLETED:
        raise errors.RunFailed(workflow_id, record.state.value, record.error)
    if not as_json:
        click.echo(json.dumps(record.output))


@workflows_group.command("show")
@click.argument("workflow_id")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def workflows_show(workflow_id: str, as_json: bool) -> None:
    """A workflow run: its state and the DAG of its steps, with their runs."""
    show(make_client(), workflow_id, as_json)


def show(c: client_mod.Client, workflow_id: str, as_json: bool) -> None:
    record = c.workflows.get(workflow_id)
    steps = c.workflows.steps(workflow_id)
    if as_json:
        emit_json(
            {
                **record.to_json(),
                "steps": {
                    n: {"state": s.state, "runs": [r.id for r in s.runs]} for n, s in steps.items()
                },
            }
        )
        return
    wf = record.workflow_def
    out.print(f"{record.workflow} {record.id}: {record.state.value}")
    if record.error:
        out.print(f"  {record.error.get('message')}")
    out.print(_dag(wf, steps))


def _dag(wf: workflows.Workflow, steps: dict[str, workflow_runs.StepStatus]) -> Tree:
    """The steps as a tree from the roots; a step with several parents appears under each."""
    tree = Tree(f"[bold]{wf.name}[/bold]")
    children: dict[str, list[str]] = {s.name: [] for s in wf.steps}
    for s in wf.steps:
        for dep in s.depends_on:
            children[dep].append(s.name)

    def label(name: str) -> str:
        st = steps[name]
        runs = f" ({len(st.runs)} runs)" if len(st.runs) > 1 else ""
        runs += " (withheld)" if st.withheld else ""
        style = STATE_STYLE.get(st.state, "")
        return f"{name} [{style}]{st.state}[/{style}]{runs}" if style else f"{name} {st.state}"

    def grow(node: Tree, name: str) -> None:
        branch = node.add(label(name))
        for child in children[name]:
            grow(branch, child)

    for s in wf.steps:
        if not s.depends_on:
            grow(tree, s.name)
    return tree


@workflows_group.command("cancel")
@click.argument("workflow_id")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def workflows_cancel(workflow_id: str, as_json: bool) -> None:
    """Cancel a workflow run and its running and pending steps."""
    record = make_client().workflows.cancel(workflow_id)
    if as_json:
        emit_json(record.to_json())
        return
    click.echo(f"{record.id}: {record.state.value}")
