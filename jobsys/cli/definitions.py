"""``jobsys jobs register`` / ``remove`` / ``definitions``: jobs registered at runtime."""

from __future__ import annotations

import json
import sys

import click
from rich.table import Table

from jobsys.cli.base import emit_json, fail, handle_errors, make_client, out
from jobsys.cli.jobs import jobs_group


@jobs_group.command("register")
@click.argument("source", default="-")
@click.option("--json", "as_json", is_flag=True, help="Print the definition's record as JSON.")
@handle_errors
def jobs_register(source: str, as_json: bool) -> None:
    """Register (or replace) a job from a JSON definition: a FILE, or - for stdin.

    \b
    {"name": "team.add10", "kind": "alias", "target": "examples.add", "defaults": {"b": 10}}
    {"name": "team.ping", "kind": "http", "url": "http://hooks.internal/ping"}
    {"name": "team.flow", "kind": "workflow", "workflow": {"steps": [...]}}
    """
    text = sys.stdin.read() if source == "-" else _read(source)
    try:
        data = json.loads(text)
    except ValueError as exc:
        fail(f"definition is not valid JSON: {exc}", 2)
    record = make_client().definitions.register(data)
    if as_json:
        emit_json(record)
        return
    out.print(f"registered {record['name']} ({record['kind']}, version {record['version']})")


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}", 2)
    raise AssertionError("unreachable")


@jobs_group.command("remove")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def jobs_remove(name: str, as_json: bool) -> None:
    """Remove a job registered at runtime (its schedule goes with it)."""
    make_client().definitions.remove(name)
    if as_json:
        emit_json({"name": name, "removed": True})
        return
    out.print(f"removed {name}")


@jobs_group.command("definitions")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def jobs_definitions(as_json: bool) -> None:
    """List the jobs registered at runtime, with their definitions."""
    found = make_client().definitions.list()
    if as_json:
        emit_json(found)
        return
    table = Table("name", "kind", "version", "by", "updated")
    for d in found:
        table.add_row(d["name"], d["kind"], str(d["version"]), d["created_by"], d["updated_at"])
    out.print(table)
