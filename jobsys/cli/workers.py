"""``jobsys workers list``: the worker processes of the cluster, from their heartbeats (admin
roles only; see ``jobsys.service.cluster_view``)."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from jobsys.cli.base import emit_json, handle_errors, main, make_client, out


@main.group("workers")
def workers_group() -> None:
    """The worker processes of the cluster: what they read, run and hold, and whether they
    run this jobsys version and catalog."""


@workers_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def workers_list(as_json: bool) -> None:
    """Each worker process, by host: live or lost (no heartbeat for 3 intervals), its queues,
    the runs it holds, its last heartbeat, its jobsys version and catalog hash; MISMATCH names
    what differs from this jobsys (version, catalog)."""
    view = make_client().admin.workers()
    if as_json:
        emit_json(view["workers"])
        return
    want = view["expected"]
    table = Table(
        "host",
        "worker",
        "pid",
        "state",
        "pool",
        "queues",
        "running",
        "last heartbeat",
        "version",
        "catalog",
        "mismatch",
    )
    for w in view["workers"]:
        table.add_row(
            w["host"] or "?",
            w["name"],
            str(w["pid"] or ""),
            w["state"],
            f"{w['pool']} x{w['concurrency']}" if w["pool"] else "",
            ",".join(w["queues"] or []),
            _running(w),
            "" if w["seen_seconds_ago"] is None else f"{w['seen_seconds_ago']:.1f} s ago",
            w["version"] or "?",
            w["catalog_hash"] or "?",
            ",".join(w["mismatch"]) or "-",
        )
    out.print(table)
    s = view["summary"]
    out.print(
        f"{s['workers']} workers on {s['hosts']} hosts: {s['live']} live, {s['lost']} lost, "
        f"{s['mismatched']} mismatched, {s['running']} runs running; this jobsys: version "
        f"{want['version']}, catalog {want['catalog_hash']} ({','.join(want['catalog'])})"
    )


def _running(w: dict[str, Any]) -> str:
    ids = [r["id"] for r in w["runs"]]
    if not ids:
        return str(w["running"])
    more = w["running"] - len(ids)
    return f"{w['running']}: " + " ".join(ids) + (f" +{more}" if more > 0 else "")
