"""``jobsys runs cancel|retry|delete --where KEY=VALUE [--dry-run]``: bulk actions on the runs
a filter matches (``service/bulk.py``). ``runs cancel`` and ``runs retry`` with a run id stay
single actions (``cli/runs.py``); ``runs delete`` is bulk only."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import click

from jobsys.base import errors
from jobsys.cli.base import emit_json, err, handle_errors, make_client
from jobsys.service import bulk

WHERE_HELP = (
    "A condition KEY=VALUE, repeatable (all must hold): "
    + ", ".join(k for k in bulk.WHERE_KEYS if k != "all")
    + "; or `all` for every run of your tenant."
)
PAST = {"cancel": "cancelled", "retry": "retried", "delete": "deleted"}


def where_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--where`` (repeatable) and ``--dry-run``."""
    fn = click.option("--dry-run", is_flag=True, help="Count the runs; change nothing.")(fn)
    return click.option("--where", "where", multiple=True, metavar="KEY=VALUE", help=WHERE_HELP)(fn)


def check_target(action: str, run_id: str | None, where: Sequence[str], dry_run: bool) -> bool:
    """Whether the command is a bulk one (``--where``); a run id and ``--where`` together, or
    neither, or ``--dry-run`` without ``--where``, is refused (exit 2)."""
    problem = None
    if run_id and where:
        problem = "give a run id or --where conditions, not both"
    elif not run_id and not where:
        which = "" if action == "delete" else "a run id, or "
        problem = f"give {which}--where KEY=VALUE conditions (`--where all` for every run)"
    elif dry_run and not where:
        problem = "--dry-run counts the runs --where matches: give --where conditions"
    if problem:
        raise errors.InvalidFilter(
            f"runs {action}", [{"loc": ["where"], "msg": problem, "type": "usage"}]
        )
    return bool(where)


def run_bulk(action: bulk.Action, where: Sequence[str], dry_run: bool, as_json: bool) -> None:
    """Act (or count, ``dry_run``) and print what was done."""
    result = make_client().bulk.act(action, list(where), dry_run)
    if result.warning:
        err.print(f"[yellow]warning:[/yellow] {result.warning}", markup=True, soft_wrap=True)
    if as_json:
        emit_json(result.to_json())
        return
    click.echo(summary(result))


def _runs(n: int) -> str:
    return f"{n} run" if n == 1 else f"{n} runs"


def summary(result: bulk.BulkResult) -> str:
    """The lines a person reads: how many matched, were acted on, skipped and why."""
    skipped = ", ".join(f"{n} {reason}" for reason, n in sorted(result.skipped.items()) if n)
    if result.dry_run:
        verb = "matches" if result.matched == 1 else "match"
        lines = [
            f"{_runs(result.matched)} {verb}; {result.done} would be {PAST[result.action]}"
            + (f", {sum(result.skipped.values())} skipped ({skipped})" if skipped else "")
            + " (dry run: nothing changed)"
        ]
    else:
        lines = [
            f"{_runs(result.matched)} matched: {result.done} {PAST[result.action]}"
            + (f" ({result.stopping} running, asked to stop)" if result.stopping else "")
            + (f", {sum(result.skipped.values())} skipped ({skipped})" if skipped else "")
        ]
    if result.sample:
        more = " ..." if result.done > len(result.sample) else ""
        lines.append("runs: " + " ".join(result.sample) + more)
    return "\n".join(lines)


def delete_command(group: click.Group) -> None:
    """Add ``runs delete`` to the ``runs`` group."""

    @group.command("delete")
    @where_option
    @click.option("--json", "as_json", is_flag=True)
    @handle_errors
    def runs_delete(where: tuple[str, ...], dry_run: bool, as_json: bool) -> None:
        """Delete the ended runs --where matches, with their logs (`--dry-run` counts them)."""
        check_target("delete", None, where, dry_run)
        run_bulk("delete", where, dry_run, as_json)
